//! PostgreSQL queries for the `flow_alerts` area of the store seam.

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

impl crate::store::FlowAlertQueries for PgStore {
    fn last_flow_alert_id(&self) -> Result<i64> {
        todo!("postgres: FlowAlertQueries")
    }

    fn flow_alerts_after(&self, after: i64, limit: usize) -> Result<Vec<FlowAlert>> {
        todo!("postgres: FlowAlertQueries")
    }
}
