//! Queries of `flowctl export`: the union of answer keys and the responses, streamed row by
//! row inside one read snapshot.

use std::ops::ControlFlow;

use super::flow::ResponseColumns;
use super::{FromRow, SqliteStore};
use crate::store::{
    ExportFilter, ExportQueries, ExportSnapshot, FailedSend, MediaRecord, Result, SendState,
    SnapshotReader, StoredResponse,
};

/// The rows of [`ExportFilter`], as a condition on `responses r` with named parameters.
const FILTER: &str = "r.duplicate_of IS NULL
    AND (r.matched = 1 OR :unmatched)
    AND (:since IS NULL OR r.completed_at >= :since)
    AND (:campaign IS NULL OR r.campaign = :campaign)";

/// Export order: completion time, then arrival.
const ORDER: &str = "r.completed_at, r.id";

fn filter_params(f: &ExportFilter) -> [(&'static str, &dyn rusqlite::ToSql); 3] {
    [
        (":unmatched", &f.include_unmatched),
        (":since", &f.since),
        (":campaign", &f.campaign),
    ]
}

/// One read transaction on the store's connection.
struct Snapshot<'a> {
    store: &'a SqliteStore,
    _tx: rusqlite::Transaction<'a>,
}

impl ExportQueries for SqliteStore {
    fn export_snapshot(&self) -> Result<ExportSnapshot<'_>> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        Ok(ExportSnapshot::new(Box::new(Snapshot {
            store: self,
            _tx: tx,
        })))
    }

    fn failed_sends(&self, campaign: Option<&str>) -> Result<Vec<FailedSend>> {
        self.rows(
            "SELECT token, phone, customer_name, campaign, state, failed_after_acceptance,
                    CASE WHEN delivery IS 'failed' THEN COALESCE(delivery_error_code, error_code)
                         ELSE error_code END AS code,
                    CASE WHEN delivery IS 'failed' THEN COALESCE(delivery_error_title, error_message)
                         ELSE error_message END AS error,
                    not_before, message_id, created_at
             FROM tokens
             WHERE superseded_by IS NULL
               AND (state IN ('failed', 'deferred', 'unknown') OR delivery IS 'failed')
               AND (?1 IS NULL OR campaign = ?1)
             ORDER BY campaign, created_at, rowid",
            rusqlite::params![campaign],
            |r| {
                let after: bool = r.get("failed_after_acceptance")?;
                let state: SendState = r.get("state")?;
                Ok(FailedSend {
                    flow_token: r.get("token")?,
                    phone_number: r.get("phone")?,
                    customer_name: r.get("customer_name")?,
                    campaign: r.get("campaign")?,
                    // A `failed` delivery on a row still marked sent (an older database)
                    // is a failure after acceptance too.
                    state: if state == SendState::Sent { SendState::Failed } else { state },
                    stage: if after || state == SendState::Sent { "status" } else { "send" },
                    error_code: r.get("code")?,
                    error: r.get("error")?,
                    not_before: r.get("not_before")?,
                    message_id: r.get("message_id")?,
                    created_at: r.get("created_at")?,
                })
            },
        )
    }
}

impl SnapshotReader for Snapshot<'_> {
    fn answer_keys(&self, filter: &ExportFilter) -> Result<Vec<String>> {
        // Answers are always stored as JSON objects; the guard keeps one corrupt row from
        // failing the whole export (json_each raises on malformed JSON). SQLite extracts the
        // keys while walking the completion index (no sort); only the distinct keys are held.
        let sql = format!(
            "SELECT j.key
             FROM responses r,
                  json_each(CASE WHEN json_valid(r.answers) AND json_type(r.answers) = 'object'
                                 THEN r.answers ELSE '{{}}' END) j
             WHERE {FILTER}
             ORDER BY {ORDER}"
        );
        // No `j.id` in the ORDER BY: it would make SQLite sort every (row, key) pair in a
        // temporary b-tree. The responses are walked in index order and, as the inner loop
        // of the join, json_each yields each object's keys in document order.
        let store = self.store;
        let mut stmt = store.conn.prepare(&sql).map_err(|e| store.err(e))?;
        let mut rows = stmt
            .query(&filter_params(filter)[..])
            .map_err(|e| store.err(e))?;
        let mut seen = std::collections::HashSet::new();
        let mut keys = Vec::new();
        while let Some(row) = rows.next().map_err(|e| store.err(e))? {
            let key = row.get_ref("key").map_err(|e| store.err(e))?;
            let key = key.as_str().map_err(|e| store.err(e.into()))?;
            if !seen.contains(key) {
                seen.insert(key.to_string());
                keys.push(key.to_string());
            }
        }
        Ok(keys)
    }

    fn visit_responses(
        &self,
        filter: &ExportFilter,
        each: &mut dyn FnMut(StoredResponse) -> ControlFlow<()>,
    ) -> Result<()> {
        let store = self.store;
        let sql = format!(
            "SELECT {} FROM responses r WHERE {FILTER} ORDER BY {ORDER}",
            ResponseColumns::LIST
        );
        let mut stmt = store.conn.prepare(&sql).map_err(|e| store.err(e))?;
        let columns = StoredResponse::columns(&stmt).map_err(|e| store.err(e))?;
        let mut rows = stmt
            .query(&filter_params(filter)[..])
            .map_err(|e| store.err(e))?;
        while let Some(row) = rows.next().map_err(|e| store.err(e))? {
            let response = StoredResponse::from_row(row, &columns).map_err(|e| store.err(e))?;
            if each(response).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn has_media(&self, filter: &ExportFilter) -> Result<bool> {
        let store = self.store;
        let sql = format!(
            "SELECT EXISTS(SELECT 1 FROM responses r JOIN media m ON m.token = r.token
                           WHERE {FILTER})"
        );
        let mut stmt = store.conn.prepare(&sql).map_err(|e| store.err(e))?;
        stmt.query_row(&filter_params(filter)[..], |r| r.get(0))
            .map_err(|e| store.err(e))
    }

    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>> {
        crate::store::MediaQueries::media_of(self.store, token)
    }
}
