//! PostgreSQL queries for the `bulk` area of the store seam.

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

impl crate::store::BulkQueries for PgStore {
    fn bulk_issue(&mut self, rows: &[NewToken]) -> Result<Vec<Issued>> {
        todo!("postgres: BulkQueries")
    }

    fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<()> {
        todo!("postgres: BulkQueries")
    }

    fn bulk_supersede(&mut self, pairs: &[(String, NewToken)]) -> Result<()> {
        todo!("postgres: BulkQueries")
    }

    fn bulk_members(&self, campaign: &str, phones: &[Phone]) -> Result<Vec<Option<BulkMember>>> {
        todo!("postgres: BulkQueries")
    }

    fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>> {
        todo!("postgres: BulkQueries")
    }
}
