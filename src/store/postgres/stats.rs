//! PostgreSQL queries for the `stats` area of the store seam.

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

impl crate::store::StatsQueries for PgStore {
    fn funnel(&self, campaign: Option<&str>) -> Result<FunnelReport> {
        todo!("postgres: StatsQueries")
    }

    fn campaign_names(&self) -> Result<Vec<String>> {
        todo!("postgres: StatsQueries")
    }
}
