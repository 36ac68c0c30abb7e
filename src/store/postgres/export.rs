//! PostgreSQL queries for the `export` area of the store seam.

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

impl crate::store::ExportQueries for PgStore {
    fn export_snapshot(&self) -> Result<ExportSnapshot<'_>> {
        todo!("postgres: ExportQueries")
    }

    fn failed_sends(&self, campaign: Option<&str>) -> Result<Vec<FailedSend>> {
        todo!("postgres: ExportQueries")
    }
}
