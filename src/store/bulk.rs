//! Bulk campaign bookkeeping: every operation `flowctl bulk` asks of the store.
//!
//! Bulk writes are batched: a chunk of rows is issued in one transaction, the rows whose
//! requests are about to leave are marked `sending` in one transaction (group commit), and
//! outcomes are recorded in batches. One transaction per message would cap a run at a few
//! hundred messages per second on a slow disk; batches keep bookkeeping off the critical path.

use super::{Failure, NewToken, Result, SendState};
use crate::phone::Phone;

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

    /// What the campaign already holds for each phone (read only, for `--dry-run`).
    fn bulk_members(&self, campaign: &str, phones: &[Phone]) -> Result<Vec<Option<BulkMember>>>;

    /// Counts a campaign's bulk tokens per state (tests and summaries).
    fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>>;
}
