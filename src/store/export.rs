//! What `flowctl export` reads: the union of answer keys and the responses, streamed row by
//! row inside one read snapshot.

use std::ops::ControlFlow;

use serde::Serialize;

use super::{MediaRecord, Result, SendState, StoreError, StoredResponse};
use crate::phone::Phone;
use crate::time::Timestamp;

/// Which responses an export covers. Duplicates (`duplicate_of` set) are never exported:
/// one response per token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// Only responses completed at or after this stored-form time.
    pub since: Option<String>,
    /// Only this campaign (unmatched completions have none unless the webhook knew it).
    pub campaign: Option<String>,
    /// Also export completions that could not be joined to a token (`matched = 0`).
    pub include_unmatched: bool,
}

/// What a backend implements for one export snapshot (see [`ExportSnapshot`]).
pub trait SnapshotReader {
    /// Every answer key of the selected responses, once, in order of first appearance (rows
    /// in export order, keys in the order they were stored). Memory must not grow with the
    /// number of responses, only with the number of distinct keys.
    fn answer_keys(&self, filter: &ExportFilter) -> Result<Vec<String>>;

    /// Hands every selected response to `each`, in export order (completion time, then
    /// arrival), one at a time; stops when `each` breaks.
    fn visit_responses(
        &self,
        filter: &ExportFilter,
        each: &mut dyn FnMut(StoredResponse) -> ControlFlow<()>,
    ) -> Result<()>;

    /// True when some selected response has attached files (Flow media): `export` then adds
    /// its media columns.
    fn has_media(&self, filter: &ExportFilter) -> Result<bool>;

    /// The attached files of one token, in the order they were queued.
    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>>;
}

/// A consistent view of the responses for one export: the key pass and the row pass see the
/// same rows even while `serve` keeps writing (a row arriving in between would otherwise bring
/// a key that has no column). Dropping it ends the read transaction.
pub struct ExportSnapshot<'a>(Box<dyn SnapshotReader + 'a>);

impl<'a> ExportSnapshot<'a> {
    /// Wraps a backend's snapshot.
    pub fn new(reader: Box<dyn SnapshotReader + 'a>) -> ExportSnapshot<'a> {
        ExportSnapshot(reader)
    }

    /// See [`SnapshotReader::answer_keys`].
    pub fn answer_keys(&self, filter: &ExportFilter) -> Result<Vec<String>> {
        self.0.answer_keys(filter)
    }

    /// See [`SnapshotReader::has_media`].
    pub fn has_media(&self, filter: &ExportFilter) -> Result<bool> {
        self.0.has_media(filter)
    }

    /// See [`SnapshotReader::media_of`].
    pub fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>> {
        self.0.media_of(token)
    }

    /// Calls `each` with every selected response, in export order, one at a time: memory
    /// stays flat whatever the number of rows. Stops at the first error `each` returns.
    pub fn for_each_response<E: From<StoreError>>(
        &self,
        filter: &ExportFilter,
        mut each: impl FnMut(StoredResponse) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut failed = None;
        self.0.visit_responses(filter, &mut |r| match each(r) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })?;
        failed.map_or(Ok(()), Err)
    }
}

/// A send that did not reach its recipient (`export --failures`): refused, failed after
/// acceptance, deferred by a per-user limit, or of unknown outcome. Rows replaced by a resend
/// with a fresh token are left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedSend {
    pub flow_token: String,
    pub phone_number: Phone,
    pub customer_name: Option<String>,
    pub campaign: String,
    /// `failed`, `deferred` or `unknown`.
    pub state: SendState,
    /// `send` (the API's answer refused it) or `status` (accepted, then a `failed` status).
    pub stage: &'static str,
    pub error_code: Option<i64>,
    pub error: Option<String>,
    /// For a deferred send: not before this time.
    pub not_before: Option<Timestamp>,
    /// The wamid, when the API accepted the message.
    pub message_id: Option<String>,
    pub created_at: Timestamp,
}

/// `export`'s reads.
pub trait ExportQueries {
    /// Starts a read snapshot for an export.
    fn export_snapshot(&self) -> Result<ExportSnapshot<'_>>;

    /// The sends that did not reach their recipient, by campaign then issue time.
    fn failed_sends(&self, campaign: Option<&str>) -> Result<Vec<FailedSend>>;
}
