//! Bulk campaign bookkeeping: every operation `flowctl bulk` asks of the store.
//!
//! Bulk writes are batched: a chunk of rows is issued in one transaction, the rows whose
//! requests are about to leave are marked `sending` in one transaction (group commit), and
//! outcomes are recorded in batches. One transaction per message would cap a run at a few
//! hundred messages per second on a slow disk; batches keep bookkeeping off the critical path.

use super::{Failure, NewToken, Result, SendState};
use crate::phone::Phone;
use crate::time::Timestamp;

/// What a campaign already knows about one phone.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkMember {
    /// The token issued for this phone in this campaign (reused on a retry).
    pub token: String,
    pub state: SendState,
    /// For a failed row: whether the failure may clear up (transient, not the recipient's fault).
    pub retryable: bool,
    /// For a failed or unknown row: the stored reason.
    pub error: Option<String>,
    /// For a failed or deferred row: the Graph error code.
    pub error_code: Option<i64>,
    /// True when the message was accepted and a `failed` status settled it afterwards (a
    /// resend needs a fresh token: see [`BulkQueries::bulk_supersede`]).
    pub failed_after_acceptance: bool,
    /// For a deferred row: not sent before this time.
    pub not_before: Option<Timestamp>,
    /// The wamid of the accepted message, if one was.
    pub message_id: Option<String>,
}

/// The result of issuing one row's token in its campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum Issued {
    /// A fresh `pending` token was stored.
    New,
    /// The campaign already had a token for this phone; nothing was inserted.
    Existing(BulkMember),
}

/// A recorded outcome of one bulk send.
#[derive(Clone, Debug, PartialEq)]
pub enum BulkOutcome {
    Sent {
        token: String,
        message_id: String,
        wa_id: Option<String>,
        /// Requests beyond the first (the first was counted when the row was marked sending).
        extra_attempts: i64,
    },
    /// Held back by a per-user limit (131049, or 131056 after its retries): not sent before
    /// `until`.
    Deferred {
        token: String,
        until: Timestamp,
        failure: Failure,
        extra_attempts: i64,
    },
    /// A refusal (`Failed`) or a request with no answer (`Unknown`).
    NotSent {
        token: String,
        state: SendState,
        failure: Failure,
        extra_attempts: i64,
    },
}

/// `bulk`'s batched bookkeeping.
pub trait BulkQueries {
    /// Issues `pending` bulk tokens for a chunk of rows in ONE transaction. A row whose
    /// (campaign, phone) already has a token keeps it, and its stored state is returned so
    /// the caller decides to skip, resume or report it. A kept token that no message has
    /// carried yet (`pending`, or failed with a retryable error) takes the file's current
    /// name and data, since it is about to be sent with them.
    fn bulk_issue(&mut self, rows: &[NewToken]) -> Result<Vec<Issued>>;

    /// In ONE transaction: records finished outcomes, then marks `sending` the tokens whose
    /// requests leave right after the commit. After a crash, `sending` is therefore left only
    /// on rows whose request may really have left.
    fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<()>;

    /// In ONE transaction, for each `(old token, new token)`: the old row is marked superseded
    /// (it stays valid, so a late completion of it is still joined) and the new one is issued
    /// `pending` as the campaign's member for that phone. For a resend with a fresh token
    /// (`bulk --retry-failed`, `--template` after 131047).
    fn bulk_supersede(&mut self, pairs: &[(String, NewToken)]) -> Result<()>;

    /// What the campaign already holds for each phone (read only, for `--dry-run`).
    fn bulk_members(&self, campaign: &str, phones: &[Phone]) -> Result<Vec<Option<BulkMember>>>;

    /// Counts a campaign's bulk tokens per state (tests and summaries).
    fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>>;
}
