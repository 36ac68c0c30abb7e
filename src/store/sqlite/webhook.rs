//! Queries of the message webhook: the inbox of signed bodies, unmatched completions,
//! delivery statuses and recorded alerts (the join of a matched completion is the seam's,
//! see [`WebhookQueries::webhook_completion`]).

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::flow::ResponseColumns;
use super::types::{json_text, TimeText};
use super::{FromRow, SqliteStore};
use crate::phone::Phone;
use crate::store::webhook::sender_e164;
use crate::store::{
    delivery_rank, Delivery, InboxRow, Result, SendState, Settlement, StatusInput, StatusOutcome,
    StatusRecord, StoredResponse, WebhookCompletion, WebhookCompletionOutcome, WebhookQueries,
};
use crate::time::Timestamp;

columns!(
    /// The columns of an [`InboxRow`].
    InboxColumns { id, body }
);

impl FromRow for InboxRow {
    type Columns = InboxColumns;

    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<InboxColumns> {
        InboxColumns::of(stmt)
    }

    fn from_row(r: &rusqlite::Row<'_>, c: &InboxColumns) -> rusqlite::Result<InboxRow> {
        Ok(InboxRow {
            id: r.get(c.id)?,
            body: r.get(c.body)?,
        })
    }
}

columns!(
    /// The columns of a [`StatusRecord`].
    StatusColumns { message_id, status, at, recipient, error_code, error_title, matched }
);

impl FromRow for StatusRecord {
    type Columns = StatusColumns;

    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<StatusColumns> {
        StatusColumns::of(stmt)
    }

    fn from_row(r: &rusqlite::Row<'_>, c: &StatusColumns) -> rusqlite::Result<StatusRecord> {
        Ok(StatusRecord {
            message_id: r.get(c.message_id)?,
            status: r.get(c.status)?,
            at: r.get(c.at)?,
            recipient: r.get(c.recipient)?,
            error_code: r.get(c.error_code)?,
            error_title: r.get(c.error_title)?,
            matched: r.get(c.matched)?,
        })
    }
}

columns!(
    /// The columns of a token's [`Delivery`].
    DeliveryColumns {
        delivery, delivery_rank, delivery_at, delivery_error_code, delivery_error_title,
    }
);

impl FromRow for Delivery {
    type Columns = DeliveryColumns;

    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<DeliveryColumns> {
        DeliveryColumns::of(stmt)
    }

    fn from_row(r: &rusqlite::Row<'_>, c: &DeliveryColumns) -> rusqlite::Result<Delivery> {
        Ok(Delivery {
            delivery: r.get(c.delivery)?,
            rank: r.get(c.delivery_rank)?,
            at: r.get(c.delivery_at)?,
            error_code: r.get(c.delivery_error_code)?,
            error_title: r.get(c.delivery_error_title)?,
        })
    }
}

/// A status naming its flow token (`biz_opaque_callback_data`) proves the API accepted that
/// message: it settles a send whose answer was lost (a crash, a timeout, a reset), and joins a
/// status that overtook the send's own commit. The recipient must be the token's phone, or the
/// WhatsApp id Meta uses for it (which may differ from the number sent to).
fn settle_lost_answer(
    tx: &rusqlite::Connection,
    token: &str,
    message_id: &str,
    recipient: Option<&str>,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let row: Option<(Phone, Option<String>)> = tx
        .query_row(
            "SELECT phone, wa_id FROM tokens
             WHERE token = ?1 AND message_id IS NULL AND state IN ('sending', 'unknown')",
            [token],
            |r| Ok((r.get("phone")?, r.get("wa_id")?)),
        )
        .optional()?;
    let Some((phone, wa_id)) = row else {
        return Ok(());
    };
    let same = recipient.is_none_or(|r| phone.is_whatsapp_id(r) || wa_id.as_deref() == Some(r));
    if same {
        tx.execute(
            "UPDATE tokens SET state = 'sent', message_id = ?2,
                sent_at = COALESCE(sent_at, ?3), error_code = NULL,
                error_message = NULL, error_retryable = NULL
             WHERE token = ?1",
            params![token, message_id, now],
        )?;
    }
    Ok(())
}

/// Moves the delivery state of the token that carries `message_id` forward (sent < delivered
/// < read = played), and lets a `failed` status settle the send as `settle` says, unless the
/// message was already delivered or read.
pub(super) fn apply_status_tx(
    tx: &rusqlite::Connection,
    message_id: &str,
    status: &str,
    at: TimeText<'_>,
    error_code: Option<i64>,
    error_title: Option<&str>,
    settle: Option<&Settlement>,
) -> rusqlite::Result<()> {
    let rank = delivery_rank(status);
    if status == "failed" {
        if let Some(x) = settle {
            tx.execute(
                "UPDATE tokens SET state = ?2, error_code = ?3, error_message = ?4,
                    error_retryable = ?5, not_before = ?6, failed_after_acceptance = 1
                 WHERE message_id = ?1 AND delivery_rank < 2 AND state = 'sent'",
                params![
                    message_id,
                    x.state,
                    error_code,
                    error_title,
                    x.retryable,
                    x.not_before
                ],
            )?;
        }
        tx.execute(
            "UPDATE tokens SET delivery = 'failed', delivery_rank = MAX(delivery_rank, 1),
                delivery_at = ?2, delivery_error_code = ?3, delivery_error_title = ?4
             WHERE message_id = ?1 AND delivery_rank < 2",
            params![message_id, at, error_code, error_title],
        )?;
    } else if rank > 0 {
        let status = if status == "played" { "read" } else { status };
        tx.execute(
            "UPDATE tokens SET delivery = ?2, delivery_rank = ?3, delivery_at = ?4
             WHERE message_id = ?1 AND delivery_rank < ?3",
            params![message_id, status, rank, at],
        )?;
    }
    Ok(())
}

/// A status stored before its send was recorded: status, time, code, title, settlement.
type EarlyStatus = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<Settlement>,
);

/// Applies the statuses of `message_id` that arrived before its send was recorded (they are
/// stored unmatched), in the order of their times, and marks them matched. Called in the
/// transaction that records the send.
pub(crate) fn join_early_statuses_tx(
    tx: &rusqlite::Connection,
    message_id: &str,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "SELECT status, at, error_code, error_title, settle_state, settle_retryable,
                settle_not_before
         FROM message_statuses WHERE message_id = ?1 AND matched = 0 ORDER BY at, rowid",
    )?;
    let early: Vec<EarlyStatus> = stmt
        .query_map([message_id], |r| {
            let state: Option<SendState> = r.get("settle_state")?;
            let settle = match state {
                Some(state) => Some(Settlement {
                    state,
                    retryable: r
                        .get::<_, Option<bool>>("settle_retryable")?
                        .unwrap_or(false),
                    not_before: r.get("settle_not_before")?,
                }),
                None => None,
            };
            Ok((
                r.get("status")?,
                r.get("at")?,
                r.get("error_code")?,
                r.get("error_title")?,
                settle,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if early.is_empty() {
        return Ok(());
    }
    for (status, at, code, title, settle) in &early {
        apply_status_tx(
            tx,
            message_id,
            status,
            TimeText(at),
            *code,
            title.as_deref(),
            settle.as_ref(),
        )?;
    }
    tx.execute(
        "UPDATE message_statuses SET matched = 1 WHERE message_id = ?1 AND matched = 0",
        [message_id],
    )?;
    Ok(())
}

impl WebhookQueries for SqliteStore {
    fn insert_inbox(&mut self, body: &[u8]) -> Result<i64> {
        let now = Timestamp::now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO webhook_inbox (body, received_at) VALUES (?1, ?2)",
                params![body, now],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// One writer: nobody else processes the inbox, so the claim is the read of the pending
    /// rows (the worker and the lease play no part).
    fn claim_inbox(
        &mut self,
        _worker: &str,
        after: i64,
        limit: usize,
        _lease: std::time::Duration,
    ) -> Result<Vec<InboxRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.records(
            &format!(
                "SELECT {} FROM webhook_inbox WHERE processed_at IS NULL AND id > ?1
                 ORDER BY id LIMIT ?2",
                InboxColumns::LIST
            ),
            params![after, limit],
        )
    }

    fn finish_inbox(&mut self, id: i64, error: Option<&str>) -> Result<()> {
        let now = Timestamp::now();
        self.write(|tx| {
            tx.execute(
                "UPDATE webhook_inbox SET processed_at = ?2, error = ?3 WHERE id = ?1",
                params![id, now, error],
            )
        })
        .map(drop)
    }

    fn inbox_pending_count(&self) -> Result<i64> {
        self.value(
            "SELECT COUNT(*) FROM webhook_inbox WHERE processed_at IS NULL",
            [],
        )
    }

    fn inbox_rows(&self) -> Result<Vec<(i64, bool, Option<String>)>> {
        self.rows(
            "SELECT id, processed_at IS NOT NULL AS processed, error FROM webhook_inbox ORDER BY id",
            [],
            |r| Ok((r.get("id")?, r.get("processed")?, r.get("error")?)),
        )
    }

    fn store_unmatched(
        &mut self,
        c: &WebhookCompletion<'_>,
        source: &'static str,
    ) -> Result<WebhookCompletionOutcome> {
        let now = Timestamp::now();
        let phone = sender_e164(c.sender);
        let answers = json_text(c.answers);
        let claimed = c.flow_token.filter(|t| !t.is_empty());
        self.write(|tx| {
            let seen: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM responses WHERE event_id = ?1)",
                [c.event_id],
                |r| r.get(0),
            )?;
            if seen {
                return Ok(WebhookCompletionOutcome::Duplicate);
            }
            let first: Option<i64> = match claimed {
                Some(t) => tx
                    .query_row(
                        "SELECT id FROM responses WHERE token = ?1 AND duplicate_of IS NULL",
                        [t],
                        |r| r.get("id"),
                    )
                    .optional()?,
                None => None,
            };
            tx.execute(
                "INSERT INTO responses (token, phone, sender, source, answers, matched,
                    sender_mismatch, duplicate_of, event_id, completed_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, ?7, ?8, ?9)",
                params![
                    claimed,
                    phone,
                    c.sender,
                    source,
                    answers,
                    first,
                    c.event_id,
                    TimeText(c.completed_at),
                    now
                ],
            )?;
            Ok(WebhookCompletionOutcome::Unmatched {
                id: tx.last_insert_rowid(),
            })
        })
    }

    fn record_status(&mut self, s: &StatusInput<'_>) -> Result<StatusOutcome> {
        let now = Timestamp::now();
        self.write(|tx| {
            if let Some(token) = s.callback {
                settle_lost_answer(tx, token, s.message_id, s.recipient, now)?;
            }
            let matched: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM tokens WHERE message_id = ?1)",
                [s.message_id],
                |r| r.get(0),
            )?;
            let settle = s.settle.as_ref();
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO message_statuses
                    (message_id, status, at, recipient, error_code, error_title, matched, received_at,
                     settle_state, settle_retryable, settle_not_before)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    s.message_id,
                    s.status,
                    TimeText(s.at),
                    s.recipient,
                    s.error_code,
                    s.error_title,
                    matched,
                    now,
                    settle.map(|x| x.state),
                    settle.map(|x| x.retryable),
                    settle.and_then(|x| x.not_before),
                ],
            )?;
            if inserted == 0 {
                return Ok(StatusOutcome::Duplicate);
            }
            if matched {
                apply_status_tx(tx, s.message_id, s.status, TimeText(s.at), s.error_code, s.error_title, settle)?;
            }
            Ok(StatusOutcome::Recorded { matched })
        })
    }

    fn record_webhook_event(
        &mut self,
        kind: &str,
        reference: &str,
        token: Option<&str>,
        detail: &Value,
    ) -> Result<bool> {
        let now = Timestamp::now();
        self.write(|tx| {
            let seen: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM events WHERE kind = ?1 AND reference = ?2)",
                params![kind, reference],
                |r| r.get(0),
            )?;
            if seen {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO events (kind, token, reference, detail, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind, token, reference, detail.to_string(), now],
            )?;
            Ok(true)
        })
    }

    fn statuses_for_message(&self, message_id: &str) -> Result<Vec<StatusRecord>> {
        self.records(
            &format!(
                "SELECT {} FROM message_statuses WHERE message_id = ?1 ORDER BY rowid",
                StatusColumns::LIST
            ),
            [message_id],
        )
    }

    fn delivery(&self, token: &str) -> Result<Option<Delivery>> {
        self.record(
            &format!(
                "SELECT {} FROM tokens WHERE token = ?1",
                DeliveryColumns::LIST
            ),
            [token],
        )
    }

    fn unmatched_responses(&self) -> Result<Vec<StoredResponse>> {
        self.records(
            &format!(
                "SELECT {} FROM responses WHERE matched = 0 ORDER BY id",
                ResponseColumns::LIST
            ),
            [],
        )
    }

    fn response_count(&self) -> Result<i64> {
        self.value("SELECT COUNT(*) FROM responses", [])
    }
}
