//! What `flowctl export` reads: the union of answer keys and the responses, streamed row by
//! row inside one read snapshot.

use std::ops::ControlFlow;

use super::{Result, StoreError, StoredResponse};

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

/// `export`'s reads.
pub trait ExportQueries {
    /// Starts a read snapshot for an export.
    fn export_snapshot(&self) -> Result<ExportSnapshot<'_>>;
}
