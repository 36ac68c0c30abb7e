//! PostgreSQL queries for the `flow` area of the store seam.

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

impl crate::store::FlowQueries for PgStore {
    fn merge_screen_answers(
        &mut self,
        token: &str,
        screen: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        todo!("postgres: FlowQueries")
    }

    fn complete(&mut self, c: &CompletionInput<'_>) -> Result<Completion> {
        todo!("postgres: FlowQueries")
    }

    fn record_event(
        &mut self,
        kind: &str,
        token: Option<&str>,
        reference: Option<&str>,
        detail: &Value,
    ) -> Result<i64> {
        todo!("postgres: FlowQueries")
    }

    fn events(&self, kind: &str) -> Result<Vec<(Option<String>, Value)>> {
        todo!("postgres: FlowQueries")
    }

    fn responses_for_token(&self, token: &str) -> Result<Vec<StoredResponse>> {
        todo!("postgres: FlowQueries")
    }
}
