//! PostgreSQL queries for the `tokens` area of the store seam.

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

impl crate::store::TokenQueries for PgStore {
    fn insert_token(&mut self, t: &NewToken, state: SendState) -> Result<bool> {
        todo!("postgres: TokenQueries")
    }

    fn find_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        todo!("postgres: TokenQueries")
    }

    fn find_token_by_message_id(&self, message_id: &str) -> Result<Option<TokenRecord>> {
        todo!("postgres: TokenQueries")
    }

    fn open_token_of_whatsapp_id(&self, wa_id: &str) -> Result<Option<TokenRecord>> {
        todo!("postgres: TokenQueries")
    }

    fn tokens_of_campaign(&self, campaign: &str) -> Result<Vec<TokenRecord>> {
        todo!("postgres: TokenQueries")
    }

    fn mark_sending(&mut self, token: &str) -> Result<()> {
        todo!("postgres: TokenQueries")
    }

    fn record_sent(&mut self, token: &str, message_id: &str, wa_id: Option<&str>) -> Result<()> {
        todo!("postgres: TokenQueries")
    }

    fn record_failed(&mut self, token: &str, failure: &Failure) -> Result<()> {
        todo!("postgres: TokenQueries")
    }

    fn record_unknown(&mut self, token: &str, failure: &Failure) -> Result<()> {
        todo!("postgres: TokenQueries")
    }

    fn record_sent_after(
        &mut self,
        token: &str,
        message_id: &str,
        wa_id: Option<&str>,
        attempts: i64,
    ) -> Result<()> {
        todo!("postgres: TokenQueries")
    }

    fn record_outcome_after(
        &mut self,
        token: &str,
        state: SendState,
        f: &Failure,
        attempts: i64,
    ) -> Result<()> {
        todo!("postgres: TokenQueries")
    }
}
