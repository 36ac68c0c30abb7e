//! The message webhook's records: the inbox of signed bodies, completions that arrive by
//! webhook (matched or not), delivery statuses and recorded alerts.
//!
//! Every event is applied in one transaction and is idempotent, so that replaying an inbox
//! row (after a crash between an event and the row's `processed_at`) or a retried webhook
//! from Meta changes nothing.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    Completion, CompletionInput, FlowQueries, Result, SendState, StoredResponse, TokenQueries,
};
use crate::time::Timestamp;

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
    /// For a `failed` status: how it settles the send (see [`Settlement`]); `None` leaves
    /// the send as it is.
    pub settle: Option<Settlement>,
}

/// How a `failed` status settles the send of an accepted message: Meta answered 200, then
/// reported the failure on the status webhook (error codes page: errors arrive
/// "synchronously as a Graph API response, asynchronously via Webhook, or sometimes through
/// both"). It applies in the transaction that records the status, unless the message was
/// already delivered or read; a status that arrives before its send is recorded keeps it, and
/// recording the send applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// [`SendState::Failed`], or [`SendState::Deferred`] for a per-user limit.
    pub state: SendState,
    /// Whether a plain rerun may send it again.
    pub retryable: bool,
    /// For a deferred send: not before this time.
    pub not_before: Option<Timestamp>,
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
    /// As Meta sent it: statuses Meta adds later are kept, not refused.
    pub status: String,
    pub at: Timestamp,
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
    pub at: Option<Timestamp>,
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
pub(crate) fn sender_e164(sender: Option<&str>) -> Option<String> {
    sender
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .map(|s| format!("+{s}"))
}

/// What the webhook stores. The join of a completion to its token is the same whatever the
/// backend, so it is written once here ([`WebhookQueries::webhook_completion`]).
pub trait WebhookQueries: TokenQueries + FlowQueries {
    /// Stores a signed webhook body before it is acknowledged; returns its inbox id.
    fn insert_inbox(&mut self, body: &[u8]) -> Result<i64>;

    /// Claims for `worker` the oldest unprocessed inbox rows after `after` (exclusive), at
    /// most `limit`, in id order, for `lease`: rows another worker holds are skipped until it
    /// finishes them or its lease runs out, so two `serve` replicas never process one row at
    /// once. A worker's own rows are its again at once (a retry after an error keeps the
    /// order). With one writer (SQLite) every unprocessed row is claimable.
    fn claim_inbox(
        &mut self,
        worker: &str,
        after: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<InboxRow>>;

    /// Marks an inbox row processed, with the reason when it could not be used.
    fn finish_inbox(&mut self, id: i64, error: Option<&str>) -> Result<()>;

    /// Number of inbox rows not processed yet.
    fn inbox_pending_count(&self) -> Result<i64>;

    /// Every inbox row as `(id, processed, error)`, oldest first.
    fn inbox_rows(&self) -> Result<Vec<(i64, bool, Option<String>)>>;

    /// Records a webhook completion: joined through its `flow_token`, else through
    /// `context.id`, else — when it names no token — through the sender when exactly one open
    /// token was sent to them (their number or WhatsApp id); stored unmatched (with the
    /// sender's number) otherwise.
    /// A message id already seen changes nothing.
    fn webhook_completion(
        &mut self,
        c: &WebhookCompletion<'_>,
    ) -> Result<WebhookCompletionOutcome> {
        self.forwarded_completion(c, "webhook")
    }

    /// Records a completion that arrived by a message path — Meta's webhook (`source`
    /// `webhook`) or an inbox's forward of it (`chatwoot`) — joined as
    /// [`WebhookQueries::webhook_completion`] says and stored with that `source`.
    fn forwarded_completion(
        &mut self,
        c: &WebhookCompletion<'_>,
        source: &'static str,
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
        // Last, for a completion that names no token at all, the sender: their phone, its
        // other spelling or the WhatsApp id the send answer reported, when exactly one open
        // token was sent to them. A completion naming a token flowctl does not know is kept
        // unmatched, never re-attributed.
        let names_no_token = c.flow_token.is_none_or(str::is_empty);
        let token = match (token, c.sender) {
            (Some(t), _) => Some(t),
            (None, Some(s))
                if names_no_token && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                self.open_token_of_whatsapp_id(s)?.map(|r| r.token)
            }
            (None, _) => None,
        };
        let Some(token) = token else {
            return self.store_unmatched(c, source);
        };
        let outcome = self.complete(&CompletionInput {
            token: token.as_str(),
            answers: c.answers,
            source,
            sender: c.sender,
            event_id: Some(c.event_id),
            completed_at: c.completed_at,
        })?;
        Ok(match outcome {
            Completion::Stored(id) => WebhookCompletionOutcome::Stored {
                id,
                token: token.as_str().to_string(),
            },
            // The token cannot vanish between the lookup and the write; both mean nothing
            // new became primary.
            Completion::AlreadyCompleted | Completion::UnknownToken => {
                WebhookCompletionOutcome::Duplicate
            }
        })
    }

    /// Stores a webhook completion that no token claims (`matched = 0`, with the sender's
    /// number as phone when it is one), once per message id. Several such completions may
    /// claim the same token text (Meta's default token is "unused"): the first is primary,
    /// later ones are kept as its duplicates.
    fn store_unmatched(
        &mut self,
        c: &WebhookCompletion<'_>,
        source: &'static str,
    ) -> Result<WebhookCompletionOutcome>;

    /// Records a delivery status once per (message, status) and moves the token's delivery
    /// state forward only: sent < delivered < read (= played); `failed` applies unless the
    /// message was already delivered or read, and a later `sent` does not hide it. A status
    /// naming its flow token settles a send whose answer was lost.
    fn record_status(&mut self, s: &StatusInput<'_>) -> Result<StatusOutcome>;

    /// Records a webhook event (alert, error, unhandled change) once per `reference`: an
    /// inbox row processed again after a crash does not record it twice.
    fn record_webhook_event(
        &mut self,
        kind: &str,
        reference: &str,
        token: Option<&str>,
        detail: &Value,
    ) -> Result<bool>;

    /// The statuses received for a message, in the order they were stored.
    fn statuses_for_message(&self, message_id: &str) -> Result<Vec<StatusRecord>>;

    /// The delivery state of a token's message (`None` for an unknown token).
    fn delivery(&self, token: &str) -> Result<Option<Delivery>>;

    /// Completions stored unmatched (no token found), oldest first.
    fn unmatched_responses(&self) -> Result<Vec<StoredResponse>>;

    /// Number of response rows (primary and duplicates, matched or not).
    fn response_count(&self) -> Result<i64>;
}

/// The webhook's queries, on every backend.
#[cfg(test)]
#[path = "tests/webhook.rs"]
mod tests;
