//! Queries of the message webhook: the inbox of signed bodies, completions that arrive by
//! webhook (matched or not), delivery statuses and recorded alerts.
//!
//! Every event is applied in one transaction and is idempotent, so that replaying an inbox
//! row (after a crash between an event and the row's `processed_at`) or a retried webhook
//! from Meta changes nothing.

use rusqlite::{params, OptionalExtension};
use serde_json::{Map, Value};

use super::flow::{response_from_row, RESPONSE_COLUMNS};
use super::{Completion, CompletionInput, Result, Store, StoredResponse};

/// One stored webhook body waiting to be processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxRow {
    pub id: i64,
    /// The exact bytes that were signed.
    pub body: Vec<u8>,
}

/// A Flow completion received through the webhook (`interactive.nfm_reply`).
#[derive(Clone, Debug)]
pub struct WebhookCompletion<'a> {
    /// The `flow_token` inside `response_json`, if any.
    pub flow_token: Option<&'a str>,
    /// `context.id`: the wamid of the message that carried the Flow (second join key).
    pub context_id: Option<&'a str>,
    /// `response_json` without the `flow_token`.
    pub answers: &'a Map<String, Value>,
    /// The sender's `wa_id`/`from`, or the business-scoped user id.
    pub sender: Option<&'a str>,
    /// The webhook message id (deduplication).
    pub event_id: &'a str,
    /// When the user sent it (stored form).
    pub completed_at: &'a str,
}

/// What became of a webhook completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookCompletionOutcome {
    /// Joined to its token and stored as the token's response (new row id).
    Stored { id: i64, token: String },
    /// Joined, but the token already had a response (kept as a duplicate row when it came
    /// first by the data endpoint), or this message id was seen before.
    Duplicate,
    /// No token could be found: stored with `matched = 0` (new row id).
    Unmatched { id: i64 },
}

/// A delivery status received through the webhook.
#[derive(Clone, Debug)]
pub struct StatusInput<'a> {
    /// The wamid the status is about.
    pub message_id: &'a str,
    /// `sent`, `delivered`, `read`, `played`, `failed`, or anything Meta adds later.
    pub status: &'a str,
    /// When it happened (stored form).
    pub at: &'a str,
    pub recipient: Option<&'a str>,
    pub error_code: Option<i64>,
    pub error_title: Option<&'a str>,
    /// `biz_opaque_callback_data`, which flowctl sets to the message's flow token.
    pub callback: Option<&'a str>,
}

/// What became of a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusOutcome {
    /// First time seen; `matched` says whether a token carries this wamid.
    Recorded { matched: bool },
    /// Already received (Meta retries and duplicates).
    Duplicate,
}

/// One row of `message_statuses`, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRecord {
    pub message_id: String,
    pub status: String,
    pub at: String,
    pub recipient: Option<String>,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
    pub matched: bool,
}

/// Where a token's message stands according to the statuses received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// `sent`, `delivered`, `read` or `failed`; `None` before any status.
    pub delivery: Option<String>,
    pub rank: i64,
    pub at: Option<String>,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
}

/// Rank of a status in the delivery order (`played` is a voice message's `read`); 0 for
/// statuses that do not move the delivery state.
pub fn delivery_rank(status: &str) -> i64 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" | "played" => 3,
        _ => 0,
    }
}

/// E.164 for a sender id made of digits (a `wa_id`); `None` for a business-scoped id.
fn sender_e164(sender: Option<&str>) -> Option<String> {
    sender
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .map(|s| format!("+{s}"))
}

impl Store {
    /// Stores a signed webhook body before it is acknowledged; returns its inbox id.
    pub fn insert_inbox(&mut self, body: &[u8]) -> Result<i64> {
        let now = crate::time::now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO webhook_inbox (body, received_at) VALUES (?1, ?2)",
                params![body, now],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// The oldest unprocessed inbox rows after `after` (exclusive), at most `limit`.
    pub fn pending_inbox(&self, after: i64, limit: usize) -> Result<Vec<InboxRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, body FROM webhook_inbox WHERE processed_at IS NULL AND id > ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok(InboxRow {
                    id: r.get(0)?,
                    body: r.get(1)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Marks an inbox row processed, with the reason when it could not be used.
    pub fn finish_inbox(&mut self, id: i64, error: Option<&str>) -> Result<()> {
        let now = crate::time::now();
        self.write(|tx| {
            tx.execute(
                "UPDATE webhook_inbox SET processed_at = ?2, error = ?3 WHERE id = ?1",
                params![id, now, error],
            )
        })
        .map(drop)
    }

    /// Number of inbox rows not processed yet.
    pub fn inbox_pending_count(&self) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM webhook_inbox WHERE processed_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Every inbox row as `(id, processed, error)`, oldest first.
    pub fn inbox_rows(&self) -> Result<Vec<(i64, bool, Option<String>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, processed_at IS NOT NULL, error FROM webhook_inbox ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Records a webhook completion: joined through its `flow_token`, else through
    /// `context.id`; stored unmatched (with the sender's number) when neither finds a token.
    /// A message id already seen changes nothing.
    pub fn webhook_completion(
        &mut self,
        c: &WebhookCompletion<'_>,
    ) -> Result<WebhookCompletionOutcome> {
        let token = match c.flow_token.filter(|t| !t.is_empty()) {
            Some(t) => self.find_token(t)?.map(|r| r.token),
            None => None,
        };
        let token = match (token, c.context_id) {
            (Some(t), _) => Some(t),
            (None, Some(wamid)) => self.find_token_by_message_id(wamid)?.map(|r| r.token),
            (None, None) => None,
        };
        if let Some(token) = token {
            let outcome = self.complete(&CompletionInput {
                token: &token,
                answers: c.answers,
                source: "webhook",
                sender: c.sender,
                event_id: Some(c.event_id),
                completed_at: c.completed_at,
            })?;
            return Ok(match outcome {
                Completion::Stored(id) => WebhookCompletionOutcome::Stored { id, token },
                // The token cannot vanish between the lookup and the write; both mean
                // nothing new became primary.
                Completion::AlreadyCompleted | Completion::UnknownToken => {
                    WebhookCompletionOutcome::Duplicate
                }
            });
        }
        self.store_unmatched(c)
    }

    fn store_unmatched(&mut self, c: &WebhookCompletion<'_>) -> Result<WebhookCompletionOutcome> {
        let now = crate::time::now();
        let phone = sender_e164(c.sender);
        let answers = Value::Object(c.answers.clone()).to_string();
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
            // Several unknown completions may claim the same token (Meta's default token is
            // "unused"): the first is primary, later ones are kept as its duplicates.
            let first: Option<i64> = match claimed {
                Some(t) => tx
                    .query_row(
                        "SELECT id FROM responses WHERE token = ?1 AND duplicate_of IS NULL",
                        [t],
                        |r| r.get(0),
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
                    c.completed_at,
                    now
                ],
            )?;
            Ok(WebhookCompletionOutcome::Unmatched {
                id: tx.last_insert_rowid(),
            })
        })
    }

    /// Records a delivery status once per (message, status) and moves the token's delivery
    /// state forward only: sent < delivered < read (= played); `failed` applies unless the
    /// message was already delivered or read, and a later `sent` does not hide it.
    pub fn record_status(&mut self, s: &StatusInput<'_>) -> Result<StatusOutcome> {
        let now = crate::time::now();
        let rank = delivery_rank(s.status);
        self.write(|tx| {
            if let Some(token) = s.callback {
                // A status naming its flow token proves the API accepted that message: it
                // settles a send whose answer was lost (a crash, a timeout, a reset), and
                // joins a status that overtook the send's own commit.
                tx.execute(
                    "UPDATE tokens SET state = 'sent', message_id = ?2,
                        sent_at = COALESCE(sent_at, ?3), error_code = NULL,
                        error_message = NULL, error_retryable = NULL
                     WHERE token = ?1 AND message_id IS NULL AND state IN ('sending', 'unknown')
                       AND (?4 IS NULL OR phone = '+' || ?4)",
                    params![token, s.message_id, now, s.recipient],
                )?;
            }
            let matched: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM tokens WHERE message_id = ?1)",
                [s.message_id],
                |r| r.get(0),
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO message_statuses
                    (message_id, status, at, recipient, error_code, error_title, matched, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.message_id,
                    s.status,
                    s.at,
                    s.recipient,
                    s.error_code,
                    s.error_title,
                    matched,
                    now
                ],
            )?;
            if inserted == 0 {
                return Ok(StatusOutcome::Duplicate);
            }
            if !matched {
                return Ok(StatusOutcome::Recorded { matched });
            }
            if s.status == "failed" {
                tx.execute(
                    "UPDATE tokens SET delivery = 'failed', delivery_rank = MAX(delivery_rank, 1),
                        delivery_at = ?2, delivery_error_code = ?3, delivery_error_title = ?4
                     WHERE message_id = ?1 AND delivery_rank < 2",
                    params![s.message_id, s.at, s.error_code, s.error_title],
                )?;
            } else if rank > 0 {
                let status = if s.status == "played" {
                    "read"
                } else {
                    s.status
                };
                tx.execute(
                    "UPDATE tokens SET delivery = ?2, delivery_rank = ?3, delivery_at = ?4
                     WHERE message_id = ?1 AND delivery_rank < ?3",
                    params![s.message_id, status, rank, s.at],
                )?;
            }
            Ok(StatusOutcome::Recorded { matched })
        })
    }

    /// Records a webhook event (alert, error, unhandled change) once per `reference`: an
    /// inbox row processed again after a crash does not record it twice.
    pub fn record_webhook_event(
        &mut self,
        kind: &str,
        reference: &str,
        token: Option<&str>,
        detail: &Value,
    ) -> Result<bool> {
        let now = crate::time::now();
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

    /// The statuses received for a message, in the order they were stored.
    pub fn statuses_for_message(&self, message_id: &str) -> Result<Vec<StatusRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT message_id, status, at, recipient, error_code, error_title, matched
                 FROM message_statuses WHERE message_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([message_id], |r| {
                Ok(StatusRecord {
                    message_id: r.get(0)?,
                    status: r.get(1)?,
                    at: r.get(2)?,
                    recipient: r.get(3)?,
                    error_code: r.get(4)?,
                    error_title: r.get(5)?,
                    matched: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// The delivery state of a token's message (`None` for an unknown token).
    pub fn delivery(&self, token: &str) -> Result<Option<Delivery>> {
        self.conn
            .query_row(
                "SELECT delivery, delivery_rank, delivery_at, delivery_error_code, delivery_error_title
                 FROM tokens WHERE token = ?1",
                [token],
                |r| {
                    Ok(Delivery {
                        delivery: r.get(0)?,
                        rank: r.get(1)?,
                        at: r.get(2)?,
                        error_code: r.get(3)?,
                        error_title: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Completions stored unmatched (no token found), oldest first.
    pub fn unmatched_responses(&self) -> Result<Vec<StoredResponse>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RESPONSE_COLUMNS} FROM responses WHERE matched = 0 ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], response_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Number of response rows (primary and duplicates, matched or not).
    pub fn response_count(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM responses", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::temp_store;
    use crate::store::SendState;

    fn sent_token(s: &mut Store, wamid: &str) -> String {
        let t = crate::store::test_util::issue(s, SendState::Sending);
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
        }
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
        let sending = crate::store::test_util::issue(&mut s, SendState::Sending);
        let unknown = crate::store::test_util::issue(&mut s, SendState::Unknown);
        let pending = crate::store::test_util::issue(&mut s, SendState::Pending);
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
        let other = crate::store::test_util::issue(&mut s, SendState::Sending);
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
