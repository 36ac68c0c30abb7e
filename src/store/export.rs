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

/// The behaviour of every backend, run on each ([`each_backend`](crate::store::test_util)).
#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::phone::Phone;
    use crate::store::test_util::each_backend;
    use crate::store::{
        CompletionInput, NewToken, Origin, SendState, Store, WebhookCompletion,
        WebhookCompletionOutcome,
    };
    use crate::token::FlowToken;
    use serde_json::{json, Map, Value};

    fn token(s: &mut Store, campaign: &str) -> String {
        let t = NewToken {
            token: FlowToken::generate(),
            phone: Phone::parse("+212610059159", None).unwrap(),
            customer_name: Some("Ahmed".into()),
            campaign: campaign.into(),
            origin: Origin::Send,
            initial_data: None,
            ttl: std::time::Duration::from_secs(60),
        };
        s.insert_token(&t, SendState::Sent).unwrap();
        t.token.as_str().to_string()
    }

    fn complete(s: &mut Store, t: &str, source: &str, answers: Value, at: &str) {
        let answers = answers.as_object().unwrap().clone();
        s.complete(&CompletionInput {
            token: t,
            answers: &answers,
            source,
            sender: None,
            event_id: None,
            completed_at: at,
        })
        .unwrap();
    }

    fn rows(s: &Store, f: &ExportFilter) -> Vec<StoredResponse> {
        let snap = s.export_snapshot().unwrap();
        let mut out = Vec::new();
        snap.for_each_response::<StoreError>(f, |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn export_keys_are_the_union_in_first_seen_order() {
        each_backend("export_keys_are_the_union_in_first_seen_order", |s| {
            let (a, b) = (token(s, "c"), token(s, "c"));
            // b completed first: its keys come first.
            complete(
                s,
                &a,
                "endpoint",
                json!({"z": 1, "a": 2}),
                "2026-01-02T00:00:00.000Z",
            );
            complete(
                s,
                &b,
                "endpoint",
                json!({"m": 1, "z": 3}),
                "2026-01-01T00:00:00.000Z",
            );
            let snap = s.export_snapshot().unwrap();
            let keys = snap.answer_keys(&ExportFilter::default()).unwrap();
            assert_eq!(keys, ["m", "z", "a"]);
        });
    }

    #[test]
    fn export_rows_skip_duplicates_and_unmatched_unless_asked() {
        each_backend(
            "export_rows_skip_duplicates_and_unmatched_unless_asked",
            |s| {
                let a = token(s, "c");
                complete(
                    s,
                    &a,
                    "endpoint",
                    json!({"q": 1}),
                    "2026-01-01T00:00:00.000Z",
                );
                complete(
                    s,
                    &a,
                    "webhook",
                    json!({"q": 1}),
                    "2026-01-01T00:00:01.000Z",
                );
                let answers = json!({"q": 2}).as_object().unwrap().clone();
                let u = WebhookCompletion {
                    flow_token: Some("flow_unknown"),
                    context_id: None,
                    sender: Some("212600000001"),
                    answers: &answers,
                    event_id: "wamid.u1",
                    completed_at: "2026-01-03T00:00:00.000Z",
                };
                assert!(matches!(
                    s.webhook_completion(&u).unwrap(),
                    WebhookCompletionOutcome::Unmatched { .. }
                ));
                assert_eq!(
                    s.webhook_completion(&u).unwrap(),
                    WebhookCompletionOutcome::Duplicate
                );
                let base = ExportFilter::default();
                assert_eq!(rows(s, &base).len(), 1);
                let all = rows(
                    s,
                    &ExportFilter {
                        include_unmatched: true,
                        ..base.clone()
                    },
                );
                assert_eq!(all.len(), 2);
                assert!(!all[1].matched);
                assert_eq!(all[1].phone.as_deref(), Some("+212600000001"));
                let since = ExportFilter {
                    include_unmatched: true,
                    since: Some("2026-01-02T00:00:00.000Z".into()),
                    ..base.clone()
                };
                assert_eq!(rows(s, &since).len(), 1);
                let campaign = ExportFilter {
                    include_unmatched: true,
                    campaign: Some("c".into()),
                    ..base
                };
                assert_eq!(rows(s, &campaign).len(), 1);
            },
        );
    }

    #[test]
    fn a_business_scoped_sender_has_no_phone() {
        each_backend("a_business_scoped_sender_has_no_phone", |s| {
            let answers = Map::new();
            let outcome = s
                .webhook_completion(&WebhookCompletion {
                    flow_token: None,
                    context_id: None,
                    sender: Some("US.13491208655302741918"),
                    answers: &answers,
                    event_id: "wamid.bsuid.1",
                    completed_at: "2026-01-03T00:00:00.000Z",
                })
                .unwrap();
            assert!(matches!(
                outcome,
                WebhookCompletionOutcome::Unmatched { .. }
            ));
            let r = &rows(
                s,
                &ExportFilter {
                    include_unmatched: true,
                    ..Default::default()
                },
            )[0];
            assert_eq!(r.phone, None);
            assert_eq!(r.sender.as_deref(), Some("US.13491208655302741918"));
        });
    }
}
