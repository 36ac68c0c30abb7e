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

    fn pending_inbox(&self, after: i64, limit: usize) -> Result<Vec<InboxRow>> {
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

    fn store_unmatched(&mut self, c: &WebhookCompletion<'_>) -> Result<WebhookCompletionOutcome> {
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
                 VALUES (?1, ?2, ?3, 'webhook', ?4, 0, 0, ?5, ?6, ?7, ?8)",
                params![
                    claimed,
                    phone,
                    c.sender,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::test_util::temp_store;
    use crate::store::{FlowQueries, SendState, TokenQueries};
    use serde_json::Map;

    fn sent_token(s: &mut SqliteStore, wamid: &str) -> String {
        let t = crate::store::sqlite::test_util::issue(s, SendState::Sending);
        s.record_sent_after(&t, wamid, None, 1).unwrap();
        t
    }

    fn status<'a>(id: &'a str, st: &'a str) -> StatusInput<'a> {
        StatusInput {
            message_id: id,
            status: st,
            at: "2026-01-01T00:00:00.000Z",
            recipient: None,
            error_code: None,
            error_title: None,
            callback: None,
            settle: None,
        }
    }

    fn failed_with(id: &'static str, code: i64, settle: Settlement) -> StatusInput<'static> {
        StatusInput {
            error_code: Some(code),
            error_title: Some("Re-engagement message"),
            settle: Some(settle),
            ..status(id, "failed")
        }
    }

    const FAILED: Settlement = Settlement {
        state: SendState::Failed,
        retryable: false,
        not_before: None,
    };

    #[test]
    fn a_completion_naming_no_token_is_joined_through_its_sender_when_one_token_is_open() {
        let (_d, mut s) = temp_store();
        let br = crate::store::NewToken {
            token: crate::token::FlowToken::generate(),
            phone: crate::phone::Phone::parse("+5511987654321", None).unwrap(),
            customer_name: None,
            campaign: "c".into(),
            origin: crate::store::Origin::Send,
            initial_data: None,
            ttl: std::time::Duration::from_secs(600),
        };
        s.insert_token(&br, SendState::Sending).unwrap();
        s.record_sent_after(br.token.as_str(), "wamid.BR1", Some("551187654321"), 1)
            .unwrap();
        let answers = Map::new();
        let c = WebhookCompletion {
            flow_token: None,
            context_id: None,
            answers: &answers,
            sender: Some("551187654321"),
            event_id: "wamid.in.br",
            completed_at: "2026-01-01T00:00:00.000Z",
        };
        assert!(matches!(
            s.webhook_completion(&c).unwrap(),
            WebhookCompletionOutcome::Stored { token, .. } if token == br.token.as_str()
        ));
        // Naming a token flowctl does not know: kept unmatched, not re-attributed.
        let named = WebhookCompletion {
            flow_token: Some("flow_forged"),
            event_id: "wamid.in.br2",
            ..c.clone()
        };
        assert!(matches!(
            s.webhook_completion(&named).unwrap(),
            WebhookCompletionOutcome::Unmatched { .. }
        ));
        // Two open tokens for one person: never guessed.
        let a = sent_token(&mut s, "wamid.M1");
        let _b = sent_token(&mut s, "wamid.M2");
        let two = WebhookCompletion {
            sender: Some("212610059159"),
            event_id: "wamid.in.two",
            ..c.clone()
        };
        assert!(matches!(
            s.webhook_completion(&two).unwrap(),
            WebhookCompletionOutcome::Unmatched { .. }
        ));
        assert!(s.responses_for_token(&a).unwrap().is_empty());
    }

    #[test]
    fn a_failed_status_settles_an_accepted_send_with_its_code() {
        let (_d, mut s) = temp_store();
        let t = sent_token(&mut s, "wamid.L");
        s.record_status(&failed_with("wamid.L", 131047, FAILED))
            .unwrap();
        let row = s.find_token(&t).unwrap().unwrap();
        assert_eq!(row.state, SendState::Failed);
        assert_eq!(row.error_code, Some(131047));
        assert_eq!(row.error_message.as_deref(), Some("Re-engagement message"));
        assert!(row.failed_after_acceptance);
        assert_eq!(
            row.message_id.as_deref(),
            Some("wamid.L"),
            "the wamid stays"
        );

        // Already delivered: a late `failed` (another device) does not undo it.
        let d = sent_token(&mut s, "wamid.D");
        s.record_status(&status("wamid.D", "delivered")).unwrap();
        s.record_status(&failed_with("wamid.D", 131026, FAILED))
            .unwrap();
        let row = s.find_token(&d).unwrap().unwrap();
        assert_eq!(
            (row.state, row.failed_after_acceptance),
            (SendState::Sent, false)
        );
    }

    #[test]
    fn a_failed_status_naming_its_token_is_not_undone_by_the_late_answer() {
        let (_d, mut s) = temp_store();
        let t = crate::store::sqlite::test_util::issue(&mut s, SendState::Sending);
        let token: &'static str = Box::leak(t.clone().into_boxed_str());
        // The status carries the token (callback data) and arrives before the send's answer.
        s.record_status(&StatusInput {
            recipient: Some("212610059159"),
            callback: Some(token),
            ..failed_with("wamid.RACE", 131026, FAILED)
        })
        .unwrap();
        assert_eq!(s.find_token(&t).unwrap().unwrap().state, SendState::Failed);
        // Then the answer is recorded: the failure stays, the wa_id is added.
        s.record_sent_after(&t, "wamid.RACE", Some("212610059159"), 1)
            .unwrap();
        let row = s.find_token(&t).unwrap().unwrap();
        assert_eq!(
            (row.state, row.error_code),
            (SendState::Failed, Some(131026))
        );
        assert_eq!(row.wa_id.as_deref(), Some("212610059159"));
    }

    #[test]
    fn a_per_user_limit_after_acceptance_defers_the_recipient() {
        let (_d, mut s) = temp_store();
        let t = sent_token(&mut s, "wamid.U");
        let until = Timestamp::parse("2026-01-02T00:00:00.000Z").unwrap();
        let defer = Settlement {
            state: SendState::Deferred,
            retryable: false,
            not_before: Some(until),
        };
        s.record_status(&failed_with("wamid.U", 131049, defer))
            .unwrap();
        let row = s.find_token(&t).unwrap().unwrap();
        assert_eq!(row.state, SendState::Deferred);
        assert_eq!(row.not_before, Some(until));
        assert_eq!(row.error_code, Some(131049));
    }

    #[test]
    fn a_status_that_overtakes_its_send_is_joined_when_the_send_is_recorded() {
        let (_d, mut s) = temp_store();
        let t = crate::store::sqlite::test_util::issue(&mut s, SendState::Sending);
        // The failed status arrives first: nothing carries this wamid yet.
        assert_eq!(
            s.record_status(&failed_with("wamid.E", 131026, FAILED))
                .unwrap(),
            StatusOutcome::Recorded { matched: false }
        );
        assert_eq!(s.find_token(&t).unwrap().unwrap().state, SendState::Sending);
        // Then the send's answer is recorded: the status applies in the same transaction.
        s.record_sent_after(&t, "wamid.E", None, 1).unwrap();
        let row = s.find_token(&t).unwrap().unwrap();
        assert_eq!(
            (row.state, row.error_code),
            (SendState::Failed, Some(131026))
        );
        assert_eq!(row.delivery.as_deref(), Some("failed"));
        assert!(s
            .statuses_for_message("wamid.E")
            .unwrap()
            .iter()
            .all(|r| r.matched));
    }

    #[test]
    fn a_status_from_the_whatsapp_id_of_a_brazilian_number_settles_its_lost_answer() {
        let (_d, mut s) = temp_store();
        let t = crate::store::NewToken {
            token: crate::token::FlowToken::generate(),
            phone: crate::phone::Phone::parse("+5511987654321", None).unwrap(),
            customer_name: None,
            campaign: "c".into(),
            origin: crate::store::Origin::Send,
            initial_data: None,
            ttl: std::time::Duration::from_secs(600),
        };
        s.insert_token(&t, SendState::Sending).unwrap();
        let token: &'static str = Box::leak(t.token.as_str().to_string().into_boxed_str());
        s.record_status(&StatusInput {
            recipient: Some("551187654321"),
            callback: Some(token),
            ..status("wamid.BR", "delivered")
        })
        .unwrap();
        let row = s.find_token(token).unwrap().unwrap();
        assert_eq!(row.state, SendState::Sent, "no false mismatch on the wa_id");
    }

    #[test]
    fn statuses_never_move_backwards_and_are_deduplicated() {
        let (_d, mut s) = temp_store();
        let t = sent_token(&mut s, "wamid.A");
        assert_eq!(
            s.record_status(&status("wamid.A", "read")).unwrap(),
            StatusOutcome::Recorded { matched: true }
        );
        s.record_status(&status("wamid.A", "delivered")).unwrap();
        s.record_status(&status("wamid.A", "sent")).unwrap();
        assert_eq!(
            s.record_status(&status("wamid.A", "read")).unwrap(),
            StatusOutcome::Duplicate
        );
        assert_eq!(
            s.delivery(&t).unwrap().unwrap().delivery.as_deref(),
            Some("read")
        );
        assert_eq!(s.statuses_for_message("wamid.A").unwrap().len(), 3);
    }

    #[test]
    fn failed_sticks_against_sent_but_not_against_read() {
        let (_d, mut s) = temp_store();
        let t = sent_token(&mut s, "wamid.F");
        let failed = StatusInput {
            error_code: Some(131026),
            error_title: Some("Message undeliverable"),
            ..status("wamid.F", "failed")
        };
        s.record_status(&failed).unwrap();
        s.record_status(&status("wamid.F", "sent")).unwrap();
        let d = s.delivery(&t).unwrap().unwrap();
        assert_eq!(d.delivery.as_deref(), Some("failed"));
        assert_eq!(d.error_code, Some(131026));

        let t2 = sent_token(&mut s, "wamid.R");
        s.record_status(&status("wamid.R", "played")).unwrap();
        s.record_status(&StatusInput {
            error_code: Some(1),
            ..status("wamid.R", "failed")
        })
        .unwrap();
        assert_eq!(
            s.delivery(&t2).unwrap().unwrap().delivery.as_deref(),
            Some("read")
        );
    }

    #[test]
    fn a_status_naming_its_token_settles_a_send_whose_answer_was_lost() {
        let (_d, mut s) = temp_store();
        let sending = crate::store::sqlite::test_util::issue(&mut s, SendState::Sending);
        let unknown = crate::store::sqlite::test_util::issue(&mut s, SendState::Unknown);
        let pending = crate::store::sqlite::test_util::issue(&mut s, SendState::Pending);
        let sent = sent_token(&mut s, "wamid.S");
        let with = |id: &'static str, token: &'static str| StatusInput {
            recipient: Some("212610059159"),
            callback: Some(token),
            ..status(id, "delivered")
        };
        let leak = |t: &String| -> &'static str { Box::leak(t.clone().into_boxed_str()) };

        for (id, token) in [("wamid.1", &sending), ("wamid.2", &unknown)] {
            assert_eq!(
                s.record_status(&with(id, leak(token))).unwrap(),
                StatusOutcome::Recorded { matched: true }
            );
            let row = s.find_token(token).unwrap().unwrap();
            assert_eq!(row.state, SendState::Sent, "{token}");
            assert_eq!(row.message_id.as_deref(), Some(id));
            assert_eq!(row.delivery.as_deref(), Some("delivered"));
        }
        // A pending row never left; a sent row keeps its own wamid.
        s.record_status(&with("wamid.3", leak(&pending))).unwrap();
        assert_eq!(
            s.find_token(&pending).unwrap().unwrap().state,
            SendState::Pending
        );
        s.record_status(&with("wamid.4", leak(&sent))).unwrap();
        assert_eq!(
            s.find_token(&sent).unwrap().unwrap().message_id.as_deref(),
            Some("wamid.S")
        );
        // A status for another recipient does not adopt the token.
        let other = crate::store::sqlite::test_util::issue(&mut s, SendState::Sending);
        s.record_status(&StatusInput {
            recipient: Some("33612345678"),
            ..with("wamid.5", leak(&other))
        })
        .unwrap();
        assert_eq!(
            s.find_token(&other).unwrap().unwrap().state,
            SendState::Sending
        );
    }

    #[test]
    fn unknown_wamid_status_is_kept_unmatched() {
        let (_d, mut s) = temp_store();
        assert_eq!(
            s.record_status(&status("wamid.X", "sent")).unwrap(),
            StatusOutcome::Recorded { matched: false }
        );
        assert!(!s.statuses_for_message("wamid.X").unwrap()[0].matched);
    }

    #[test]
    fn completion_joins_by_context_id_and_unknown_is_unmatched() {
        let (_d, mut s) = temp_store();
        let t = sent_token(&mut s, "wamid.C");
        let answers = Map::new();
        let c = WebhookCompletion {
            flow_token: None,
            context_id: Some("wamid.C"),
            answers: &answers,
            sender: Some("212610059159"),
            event_id: "wamid.in1",
            completed_at: "2026-01-01T00:00:00.000Z",
        };
        assert!(matches!(
            s.webhook_completion(&c).unwrap(),
            WebhookCompletionOutcome::Stored { token, .. } if token == t
        ));
        assert_eq!(
            s.webhook_completion(&c).unwrap(),
            WebhookCompletionOutcome::Duplicate
        );
        let u = WebhookCompletion {
            flow_token: Some("unused"),
            context_id: Some("wamid.nope"),
            event_id: "wamid.in2",
            ..c.clone()
        };
        assert!(matches!(
            s.webhook_completion(&u).unwrap(),
            WebhookCompletionOutcome::Unmatched { .. }
        ));
        let u2 = WebhookCompletion {
            event_id: "wamid.in3",
            ..u.clone()
        };
        assert!(matches!(
            s.webhook_completion(&u2).unwrap(),
            WebhookCompletionOutcome::Unmatched { .. }
        ));
        assert_eq!(
            s.webhook_completion(&u).unwrap(),
            WebhookCompletionOutcome::Duplicate
        );
        let un = s.unmatched_responses().unwrap();
        assert_eq!(un.len(), 2);
        assert_eq!(un[0].phone.as_deref(), Some("+212610059159"));
        assert_eq!(un[1].duplicate_of, Some(un[0].id));
    }

    #[test]
    fn webhook_events_are_recorded_once_per_reference() {
        let (_d, mut s) = temp_store();
        let v = serde_json::json!({"a": 1});
        assert!(s
            .record_webhook_event("flow_alert", "inbox:1/0", None, &v)
            .unwrap());
        assert!(!s
            .record_webhook_event("flow_alert", "inbox:1/0", None, &v)
            .unwrap());
        assert_eq!(s.events("flow_alert").unwrap().len(), 1);
    }
}
