//! PostgreSQL queries for the `suppressions` area of the store seam.

#![allow(unused_variables)]

use super::PgStore;
#[allow(unused_imports)]
use crate::store::Result;
#[allow(unused_imports)]
use crate::store::*;
#[allow(unused_imports)]
use crate::{media::MediaSource, phone::Phone, time::Timestamp, token::FlowToken};
#[allow(unused_imports)]
use serde_json::{Map, Value};
#[allow(unused_imports)]
use std::ops::ControlFlow;

impl crate::store::SuppressionQueries for PgStore {
    fn suppress(&mut self, phone: &str, reason: &str, source: &str) -> Result<bool> {
        todo!("postgres: SuppressionQueries")
    }

    fn unsuppress(&mut self, phone: &str) -> Result<bool> {
        todo!("postgres: SuppressionQueries")
    }

    fn suppression(&self, phone: &str) -> Result<Option<Suppression>> {
        todo!("postgres: SuppressionQueries")
    }

    fn suppressed_among(&self, phones: &[Phone]) -> Result<Vec<bool>> {
        todo!("postgres: SuppressionQueries")
    }

    fn suppressions(&self) -> Result<Vec<Suppression>> {
        todo!("postgres: SuppressionQueries")
    }
}
