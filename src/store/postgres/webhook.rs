//! PostgreSQL queries for the `webhook` area of the store seam.

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

impl crate::store::WebhookQueries for PgStore {
    fn insert_inbox(&mut self, body: &[u8]) -> Result<i64> {
        todo!("postgres: WebhookQueries")
    }

    fn pending_inbox(&self, after: i64, limit: usize) -> Result<Vec<InboxRow>> {
        todo!("postgres: WebhookQueries")
    }

    fn finish_inbox(&mut self, id: i64, error: Option<&str>) -> Result<()> {
        todo!("postgres: WebhookQueries")
    }

    fn inbox_pending_count(&self) -> Result<i64> {
        todo!("postgres: WebhookQueries")
    }

    fn inbox_rows(&self) -> Result<Vec<(i64, bool, Option<String>)>> {
        todo!("postgres: WebhookQueries")
    }

    fn store_unmatched(
        &mut self,
        c: &WebhookCompletion<'_>,
        source: &'static str,
    ) -> Result<WebhookCompletionOutcome> {
        todo!("postgres: WebhookQueries")
    }

    fn record_status(&mut self, s: &StatusInput<'_>) -> Result<StatusOutcome> {
        todo!("postgres: WebhookQueries")
    }

    fn record_webhook_event(
        &mut self,
        kind: &str,
        reference: &str,
        token: Option<&str>,
        detail: &Value,
    ) -> Result<bool> {
        todo!("postgres: WebhookQueries")
    }

    fn statuses_for_message(&self, message_id: &str) -> Result<Vec<StatusRecord>> {
        todo!("postgres: WebhookQueries")
    }

    fn delivery(&self, token: &str) -> Result<Option<Delivery>> {
        todo!("postgres: WebhookQueries")
    }

    fn unmatched_responses(&self) -> Result<Vec<StoredResponse>> {
        todo!("postgres: WebhookQueries")
    }

    fn response_count(&self) -> Result<i64> {
        todo!("postgres: WebhookQueries")
    }
}
