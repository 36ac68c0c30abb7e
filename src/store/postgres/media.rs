//! PostgreSQL queries for the `media` area of the store seam.

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

impl crate::store::MediaQueries for PgStore {
    fn enqueue_media(
        &mut self,
        token: &str,
        files: &[(String, MediaSource)],
        now: &Timestamp,
    ) -> Result<usize> {
        todo!("postgres: MediaQueries")
    }

    fn due_media(&self, now: &Timestamp, limit: usize) -> Result<Vec<MediaJob>> {
        todo!("postgres: MediaQueries")
    }

    fn media_retry(&mut self, id: i64, error: &str, next: &Timestamp) -> Result<()> {
        todo!("postgres: MediaQueries")
    }

    fn media_done(&mut self, id: i64, path: &str, size: u64, at: &Timestamp) -> Result<()> {
        todo!("postgres: MediaQueries")
    }

    fn media_failed(&mut self, id: i64, error: &str, at: &Timestamp) -> Result<()> {
        todo!("postgres: MediaQueries")
    }

    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>> {
        todo!("postgres: MediaQueries")
    }
}
