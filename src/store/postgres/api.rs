//! PostgreSQL queries for the `api` area of the store seam.

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

impl crate::store::ApiQueries for PgStore {
    fn api_responses(&self, q: &ResponsesQuery) -> Result<ResponsesPage> {
        todo!("postgres: ApiQueries")
    }
}
