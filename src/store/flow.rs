//! The data endpoint's records: answers merged screen by screen, completions, events.

use serde_json::{Map, Value};

use super::Result;
use crate::phone::Phone;
use crate::time::Timestamp;

/// Result of recording a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Stored as the token's response (id of the new row).
    Stored(i64),
    /// The token already had a response: nothing new was stored.
    AlreadyCompleted,
    /// No such token.
    UnknownToken,
}

/// A completion to record against a token.
#[derive(Clone, Debug)]
pub struct CompletionInput<'a> {
    pub token: &'a str,
    pub answers: &'a Map<String, Value>,
    /// `endpoint`, `webhook`, or `chatwoot` (an inbox forwarding Meta's webhook).
    pub source: &'a str,
    /// Sender's wa_id or business-scoped id (webhook only).
    pub sender: Option<&'a str>,
    /// Webhook message id, for deduplication.
    pub event_id: Option<&'a str>,
    /// When the user completed the Flow (stored form, see [`crate::time`]).
    pub completed_at: &'a str,
}

/// A stored response, as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    pub id: i64,
    /// The token it joined, or for an unmatched completion the token it claimed (any text).
    pub token: Option<String>,
    /// The joined phone, or for an unmatched completion the sender's number (`+` and the
    /// sender's digits, as the webhook gave them).
    pub phone: Option<String>,
    pub sender: Option<String>,
    pub customer_name: Option<String>,
    pub campaign: Option<String>,
    /// `endpoint`, `webhook`, or `chatwoot` (an inbox forwarding Meta's webhook).
    pub source: String,
    pub answers: Map<String, Value>,
    pub matched: bool,
    pub sender_mismatch: bool,
    pub duplicate_of: Option<i64>,
    pub completed_at: Timestamp,
}

/// What the data endpoint stores.
pub trait FlowQueries {
    /// Merges one screen's answers into the token's answers so far; returns the merged set.
    /// Replaying the same screen gives the same result.
    fn merge_screen_answers(
        &mut self,
        token: &str,
        screen: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>>;

    /// Stores a completion joined to its token's phone and marks the token completed, in one
    /// transaction. A second completion of the same token stores nothing new (from the other
    /// path it is kept, flagged as a duplicate, so no answer is ever dropped).
    fn complete(&mut self, c: &CompletionInput<'_>) -> Result<Completion>;

    /// Records something that is not an answer (error notification, alert, unmatched event).
    fn record_event(
        &mut self,
        kind: &str,
        token: Option<&str>,
        reference: Option<&str>,
        detail: &Value,
    ) -> Result<i64>;

    /// Events of one kind, oldest first (`(token, detail)`).
    fn events(&self, kind: &str) -> Result<Vec<(Option<String>, Value)>>;

    /// Every response stored for a token (the primary first, then duplicates).
    fn responses_for_token(&self, token: &str) -> Result<Vec<StoredResponse>>;
}

/// True when a webhook sender id designates the stored phone: its digits, the WhatsApp id the
/// send answer reported for it (`wa_id`), or the other spelling Meta uses for Brazilian and
/// Mexican mobiles ([`Phone::is_whatsapp_id`]). Business-scoped ids (not digits) cannot be
/// compared and are not flagged.
pub(crate) fn sender_matches(sender: &str, phone: &Phone, wa_id: Option<&str>) -> bool {
    if !sender.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    phone.is_whatsapp_id(sender) || wa_id == Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_mismatch_only_for_phone_digits() {
        let ma = Phone::parse("+212610059159", None).unwrap();
        assert!(sender_matches("212610059159", &ma, None));
        assert!(!sender_matches("212600000000", &ma, None));
        assert!(sender_matches("US.13491208655302741918", &ma, None));
    }

    #[test]
    fn a_whatsapp_id_that_differs_from_the_number_is_no_mismatch() {
        let br = Phone::parse("+5511987654321", None).unwrap();
        assert!(
            sender_matches("551187654321", &br, None),
            "Brazil's ninth digit"
        );
        let mx = Phone::parse("+525512345678", None).unwrap();
        assert!(sender_matches("5215512345678", &mx, None), "Mexico's 521");
        // Whatever Meta reported at send time is the recipient too.
        let other = Phone::parse("+212610059159", None).unwrap();
        assert!(sender_matches("212699999999", &other, Some("212699999999")));
        assert!(!sender_matches(
            "212699999999",
            &other,
            Some("212610059159")
        ));
    }
}

/// The data endpoint's queries, on every backend.
#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::store::test_util::each_backend;
    use crate::store::{SendState, Store};

    fn token(s: &mut Store) -> String {
        crate::store::sqlite::test_util::issue(&mut **s, SendState::Sent)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn answers_merge_screen_by_screen_and_replay_is_idempotent() {
        each_backend("merge screens", |s| {
            let t = token(s);
            s.merge_screen_answers(&t, Some("A"), &obj(serde_json::json!({"q1": "5"})))
                .unwrap();
            let m = s
                .merge_screen_answers(&t, Some("B"), &obj(serde_json::json!({"q2": "4"})))
                .unwrap();
            let again = s
                .merge_screen_answers(&t, Some("B"), &obj(serde_json::json!({"q2": "4"})))
                .unwrap();
            assert_eq!(m, again);
            assert_eq!(m, obj(serde_json::json!({"q1": "5", "q2": "4"})));
            let row = s.find_token(&t).unwrap().unwrap();
            assert_eq!(row.flow_screen.as_deref(), Some("B"));
            assert_eq!(row.flow_answers, Some(m));
        });
    }

    #[test]
    fn one_response_per_token_and_the_other_path_is_kept_as_duplicate() {
        each_backend("one response per token", |s| {
            let t = token(s);
            let answers = obj(serde_json::json!({"q1": "5"}));
            let input = CompletionInput {
                token: &t,
                answers: &answers,
                source: "endpoint",
                sender: None,
                event_id: None,
                completed_at: "2026-01-01T00:00:00.000Z",
            };
            assert!(matches!(s.complete(&input).unwrap(), Completion::Stored(_)));
            assert_eq!(s.complete(&input).unwrap(), Completion::AlreadyCompleted);
            let hook = CompletionInput {
                source: "webhook",
                sender: Some("212610059159"),
                event_id: Some("wamid.1"),
                ..input
            };
            assert_eq!(s.complete(&hook).unwrap(), Completion::AlreadyCompleted);
            assert_eq!(s.complete(&hook).unwrap(), Completion::AlreadyCompleted);
            // A second webhook completion of the same token (new message id) is kept, as a
            // duplicate.
            let second = CompletionInput {
                event_id: Some("wamid.2"),
                ..hook.clone()
            };
            assert_eq!(s.complete(&second).unwrap(), Completion::AlreadyCompleted);
            let rows = s.responses_for_token(&t).unwrap();
            let primaries = rows.iter().filter(|r| r.duplicate_of.is_none()).count();
            assert_eq!(
                (s.response_count().unwrap(), rows.len(), primaries),
                (3, 3, 1)
            );
            assert_eq!(rows[0].source, "endpoint", "the primary first");
            assert!(rows[1..].iter().all(|r| r.duplicate_of == Some(rows[0].id)));
            assert!(s.find_token(&t).unwrap().unwrap().completed_at.is_some());
        });
    }

    #[test]
    fn a_webhook_completion_keeps_what_the_endpoint_collected_on_earlier_screens() {
        each_backend("webhook keeps collected", |s| {
            let t = token(s);
            s.merge_screen_answers(&t, Some("A"), &obj(serde_json::json!({"q1": "5"})))
                .unwrap();
            // The last screen completes on the client: its answers arrive by webhook only.
            let last = obj(serde_json::json!({"q2": "4", "q1": "4"}));
            let hook = CompletionInput {
                token: &t,
                answers: &last,
                source: "webhook",
                sender: Some("212610059159"),
                event_id: Some("wamid.w1"),
                completed_at: "2026-01-01T00:00:00.000Z",
            };
            assert!(matches!(s.complete(&hook).unwrap(), Completion::Stored(_)));
            let r = &s.responses_for_token(&t).unwrap()[0];
            assert_eq!(
                r.answers,
                obj(serde_json::json!({"q1": "4", "q2": "4"})),
                "union, newer wins"
            );
            assert!(r.matched && !r.sender_mismatch);
            assert_eq!(r.phone.as_deref(), Some("+212610059159"));
            assert_eq!(r.customer_name.as_deref(), Some("Ahmed"));
        });
    }

    #[test]
    fn the_other_paths_answers_join_the_primary_and_both_rows_are_kept() {
        each_backend("other path joins", |s| {
            let t = token(s);
            let endpoint = obj(serde_json::json!({"q1": "5"}));
            let input = CompletionInput {
                token: &t,
                answers: &endpoint,
                source: "endpoint",
                sender: None,
                event_id: None,
                completed_at: "2026-01-01T00:00:00.000Z",
            };
            s.complete(&input).unwrap();
            let webhook = obj(serde_json::json!({"q1": "1", "photo_caption": "x"}));
            let hook = CompletionInput {
                answers: &webhook,
                source: "webhook",
                sender: Some("212699999999"),
                event_id: Some("wamid.w2"),
                ..input
            };
            s.complete(&hook).unwrap();
            let rows = s.responses_for_token(&t).unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!(
                rows[0].answers,
                obj(serde_json::json!({"q1": "5", "photo_caption": "x"})),
                "the primary gains the missing key, keeps its own value"
            );
            assert_eq!(rows[1].answers, webhook, "the duplicate is kept as it came");
            assert_eq!(rows[0].sender.as_deref(), Some("212699999999"));
            assert!(
                rows[0].sender_mismatch && rows[1].sender_mismatch,
                "another number than the token's"
            );
        });
    }

    #[test]
    fn unknown_token_completion_is_reported() {
        each_backend("unknown token", |s| {
            let answers = Map::new();
            let input = CompletionInput {
                token: "flow_nope",
                answers: &answers,
                source: "endpoint",
                sender: None,
                event_id: None,
                completed_at: "x",
            };
            assert_eq!(s.complete(&input).unwrap(), Completion::UnknownToken);
        });
    }

    #[test]
    fn events_are_read_back_by_kind_oldest_first() {
        each_backend("events", |s| {
            let a = s
                .record_event(
                    "error_notification",
                    Some("flow_a"),
                    None,
                    &serde_json::json!({"n": 1}),
                )
                .unwrap();
            s.record_event("other", None, None, &serde_json::json!("x"))
                .unwrap();
            let b = s
                .record_event(
                    "error_notification",
                    None,
                    Some("r"),
                    &serde_json::json!({"n": 2}),
                )
                .unwrap();
            assert!(b > a);
            assert_eq!(
                s.events("error_notification").unwrap(),
                vec![
                    (Some("flow_a".to_string()), serde_json::json!({"n": 1})),
                    (None, serde_json::json!({"n": 2})),
                ]
            );
        });
    }
}
