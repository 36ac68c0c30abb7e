//! Queries of `flowctl export` on PostgreSQL: the union of answer keys and the responses,
//! streamed inside one read snapshot, with the results and order of `sqlite/export.rs`.
//!
//! The snapshot is a `REPEATABLE READ READ ONLY` transaction on the store's connection, so
//! the key pass and the row pass see the same rows while `serve` replicas keep writing
//! (<https://www.postgresql.org/docs/current/transaction-iso.html#XACT-REPEATABLE-READ>).
//! Rows are read in keyset pages of [`PAGE`] (position `(completed_at, id)`), so memory stays
//! flat whatever the number of responses, and no borrow of the connection is held while the
//! caller's callback runs.

use std::ops::ControlFlow;

use postgres::Row;
use serde_json::Value;

use super::flow::stored_response;
use super::PgStore;
use crate::store::{
    ExportFilter, ExportQueries, ExportSnapshot, FailedSend, MediaRecord, Result, SendState,
    SnapshotReader, StoreError, StoredResponse,
};

/// Rows per keyset page.
pub(super) const PAGE: i64 = 2000;

/// The rows of [`ExportFilter`], as a condition on `responses r`: `$1` include unmatched,
/// `$2` since, `$3` campaign.
const FILTER: &str = "r.duplicate_of IS NULL
    AND (r.matched = 1 OR $1::boolean)
    AND ($2::text IS NULL OR r.completed_at >= $2)
    AND ($3::text IS NULL OR r.campaign = $3)";

/// After the position `($4, $5)` of the last row of the previous page (none for the first),
/// in export order (completion time, then arrival), one page (`$6`).
const PAGE_AFTER: &str = "($4::text IS NULL OR (r.completed_at, r.id) > ($4, $5))
    ORDER BY r.completed_at, r.id
    LIMIT $6";

/// The columns of a [`StoredResponse`], for a SELECT list on `responses r` (read by name by
/// `flow::stored_response`).
const RESPONSE_COLUMNS: &str = "r.id, r.token, r.phone, r.sender, r.customer_name, r.campaign, \
    r.source, r.answers, r.matched, r.sender_mismatch, r.duplicate_of, r.completed_at";

/// One read snapshot on the store's connection; dropping it ends the transaction.
struct Snapshot<'a> {
    store: &'a PgStore,
    /// The server process of the connection the snapshot was taken on: a connection lost
    /// and reopened meanwhile (see [`PgStore::with`]) no longer reads from the snapshot, so
    /// a page read from another one is an error, not a silently different export.
    backend: i32,
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // Read only: nothing to keep or lose. A connection lost meanwhile has no transaction
        // left to end, which is no error worth reporting here.
        if let Err(e) = self.store.batch("COMMIT") {
            tracing::debug!(error = %e, "ending an export snapshot");
        }
    }
}

impl Snapshot<'_> {
    /// Calls `each` with every page of the selected responses (`columns` selected), in export
    /// order, until the pages run out or `each` breaks. The connection is free while `each`
    /// runs.
    fn pages(
        &self,
        filter: &ExportFilter,
        columns: &str,
        mut each: impl FnMut(&[Row]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {columns}, pg_backend_pid() AS backend
             FROM responses r WHERE {FILTER} AND {PAGE_AFTER}"
        );
        let mut after: Option<(String, i64)> = None;
        loop {
            let (at, id) = match &after {
                Some((at, id)) => (Some(at.as_str()), *id),
                None => (None, 0),
            };
            let rows = self.store.rows(
                &sql,
                &[
                    &filter.include_unmatched,
                    &filter.since,
                    &filter.campaign,
                    &at,
                    &id,
                    &PAGE,
                ],
            )?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            let backend: i32 = last.try_get("backend").map_err(|e| self.store.err(e))?;
            if backend != self.backend {
                return Err(StoreError::Pg {
                    url: self.store.url().clone(),
                    message: "the connection was lost during the export; run it again".into(),
                    code: None,
                    closed: true,
                });
            }
            after = Some((
                last.try_get("completed_at")
                    .map_err(|e| self.store.err(e))?,
                last.try_get("id").map_err(|e| self.store.err(e))?,
            ));
            let full = rows.len() as i64 == PAGE;
            if each(&rows)?.is_break() || !full {
                return Ok(());
            }
        }
    }
}

impl SnapshotReader for Snapshot<'_> {
    fn answer_keys(&self, filter: &ExportFilter) -> Result<Vec<String>> {
        // jsonb keeps no key order, so the stored text is parsed here (serde_json keeps the
        // document's order), as SQLite's json_each walks it. Anything but an object has no
        // keys (one damaged row does not fail the export). Only the distinct keys are held.
        let mut seen = std::collections::HashSet::new();
        let mut keys = Vec::new();
        self.pages(filter, "r.id, r.completed_at, r.answers", |rows| {
            for row in rows {
                let text: &str = row.try_get("answers").map_err(|e| self.store.err(e))?;
                if let Ok(Value::Object(answers)) = serde_json::from_str::<Value>(text) {
                    for key in answers.keys() {
                        if !seen.contains(key) {
                            seen.insert(key.clone());
                            keys.push(key.clone());
                        }
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(keys)
    }

    fn visit_responses(
        &self,
        filter: &ExportFilter,
        each: &mut dyn FnMut(StoredResponse) -> ControlFlow<()>,
    ) -> Result<()> {
        self.pages(filter, RESPONSE_COLUMNS, |rows| {
            for row in rows {
                let response = stored_response(row).map_err(|e| self.store.err(e))?;
                if each(response).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })
    }

    fn has_media(&self, filter: &ExportFilter) -> Result<bool> {
        self.store.value(
            &format!(
                "SELECT EXISTS(SELECT 1 FROM responses r JOIN media m ON m.token = r.token
                               WHERE {FILTER})"
            ),
            &[&filter.include_unmatched, &filter.since, &filter.campaign],
        )
    }

    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>> {
        crate::store::MediaQueries::media_of(self.store, token)
    }
}

impl ExportQueries for PgStore {
    fn export_snapshot(&self) -> Result<ExportSnapshot<'_>> {
        self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let backend = match self.value("SELECT pg_backend_pid()", &[]) {
            Ok(backend) => backend,
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                return Err(e);
            }
        };
        Ok(ExportSnapshot::new(Box::new(Snapshot {
            store: self,
            backend,
        })))
    }

    fn failed_sends(&self, campaign: Option<&str>) -> Result<Vec<FailedSend>> {
        // SQLite orders ties of one millisecond by rowid (insertion order); PostgreSQL rows
        // have no such order, so the token decides among them. Text is compared byte by byte,
        // as SQLite does, whatever the database's collation.
        self.rows(
            "SELECT token, phone, customer_name, campaign, state, failed_after_acceptance,
                    CASE WHEN delivery IS NOT DISTINCT FROM 'failed'
                         THEN COALESCE(delivery_error_code, error_code)
                         ELSE error_code END AS code,
                    CASE WHEN delivery IS NOT DISTINCT FROM 'failed'
                         THEN COALESCE(delivery_error_title, error_message)
                         ELSE error_message END AS error,
                    not_before, message_id, created_at
             FROM tokens
             WHERE superseded_by IS NULL
               AND (state IN ('failed', 'deferred', 'unknown')
                    OR delivery IS NOT DISTINCT FROM 'failed')
               AND ($1::text IS NULL OR campaign = $1)
             ORDER BY campaign COLLATE \"C\", created_at, seq, token COLLATE \"C\"",
            &[&campaign],
        )?
        .iter()
        .map(|r| failed_send(r).map_err(|e| self.err(e)))
        .collect()
    }
}

fn failed_send(r: &Row) -> std::result::Result<FailedSend, postgres::Error> {
    let after = r.try_get::<_, i64>("failed_after_acceptance")? != 0;
    let state: SendState = r.try_get("state")?;
    Ok(FailedSend {
        flow_token: r.try_get("token")?,
        phone_number: r.try_get("phone")?,
        customer_name: r.try_get("customer_name")?,
        campaign: r.try_get("campaign")?,
        // A `failed` delivery on a row still marked sent (an older database) is a failure
        // after acceptance too.
        state: if state == SendState::Sent {
            SendState::Failed
        } else {
            state
        },
        stage: if after || state == SendState::Sent {
            "status"
        } else {
            "send"
        },
        error_code: r.try_get("code")?,
        error: r.try_get("error")?,
        not_before: r.try_get("not_before")?,
        message_id: r.try_get("message_id")?,
        created_at: r.try_get("created_at")?,
    })
}
