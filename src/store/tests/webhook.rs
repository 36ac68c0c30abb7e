//! Tests of the message webhook's queries, run on every backend (`each_backend`).

use super::*;
use crate::store::test_util::each_backend;
use crate::store::{SendState, Store};
use serde_json::Map;

fn issue(s: &mut Store, state: SendState) -> String {
    crate::store::sqlite::test_util::issue(&mut **s, state)
}

fn sent_token(s: &mut Store, wamid: &str) -> String {
    let t = issue(s, SendState::Sending);
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

/// Issues a `sending` token for a Brazilian mobile written with its ninth digit.
fn issue_brazilian(s: &mut Store) -> crate::store::NewToken {
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
    t
}

#[test]
fn a_completion_naming_no_token_is_joined_through_its_sender_when_one_token_is_open() {
    each_backend(
        "a_completion_naming_no_token_is_joined_through_its_sender_when_one_token_is_open",
        |s| {
            let br = issue_brazilian(s);
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
            let a = sent_token(s, "wamid.M1");
            let _b = sent_token(s, "wamid.M2");
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
        },
    );
}

#[test]
fn a_failed_status_settles_an_accepted_send_with_its_code() {
    each_backend(
        "a_failed_status_settles_an_accepted_send_with_its_code",
        |s| {
            let t = sent_token(s, "wamid.L");
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
            let d = sent_token(s, "wamid.D");
            s.record_status(&status("wamid.D", "delivered")).unwrap();
            s.record_status(&failed_with("wamid.D", 131026, FAILED))
                .unwrap();
            let row = s.find_token(&d).unwrap().unwrap();
            assert_eq!(
                (row.state, row.failed_after_acceptance),
                (SendState::Sent, false)
            );
        },
    );
}

#[test]
fn a_failed_status_naming_its_token_is_not_undone_by_the_late_answer() {
    each_backend(
        "a_failed_status_naming_its_token_is_not_undone_by_the_late_answer",
        |s| {
            let t = issue(s, SendState::Sending);
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
        },
    );
}

#[test]
fn a_per_user_limit_after_acceptance_defers_the_recipient() {
    each_backend(
        "a_per_user_limit_after_acceptance_defers_the_recipient",
        |s| {
            let t = sent_token(s, "wamid.U");
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
        },
    );
}

#[test]
fn a_status_that_overtakes_its_send_is_joined_when_the_send_is_recorded() {
    each_backend(
        "a_status_that_overtakes_its_send_is_joined_when_the_send_is_recorded",
        |s| {
            let t = issue(s, SendState::Sending);
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
        },
    );
}

#[test]
fn a_status_from_the_whatsapp_id_of_a_brazilian_number_settles_its_lost_answer() {
    each_backend(
        "a_status_from_the_whatsapp_id_of_a_brazilian_number_settles_its_lost_answer",
        |s| {
            let t = issue_brazilian(s);
            let token: &'static str = Box::leak(t.token.as_str().to_string().into_boxed_str());
            s.record_status(&StatusInput {
                recipient: Some("551187654321"),
                callback: Some(token),
                ..status("wamid.BR", "delivered")
            })
            .unwrap();
            let row = s.find_token(token).unwrap().unwrap();
            assert_eq!(row.state, SendState::Sent, "no false mismatch on the wa_id");
        },
    );
}

#[test]
fn statuses_never_move_backwards_and_are_deduplicated() {
    each_backend("statuses_never_move_backwards_and_are_deduplicated", |s| {
        let t = sent_token(s, "wamid.A");
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
    });
}

#[test]
fn failed_sticks_against_sent_but_not_against_read() {
    each_backend("failed_sticks_against_sent_but_not_against_read", |s| {
        let t = sent_token(s, "wamid.F");
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

        let t2 = sent_token(s, "wamid.R");
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
    });
}

#[test]
fn a_status_naming_its_token_settles_a_send_whose_answer_was_lost() {
    each_backend(
        "a_status_naming_its_token_settles_a_send_whose_answer_was_lost",
        |s| {
            let sending = issue(s, SendState::Sending);
            let unknown = issue(s, SendState::Unknown);
            let pending = issue(s, SendState::Pending);
            let sent = sent_token(s, "wamid.S");
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
            let other = issue(s, SendState::Sending);
            s.record_status(&StatusInput {
                recipient: Some("33612345678"),
                ..with("wamid.5", leak(&other))
            })
            .unwrap();
            assert_eq!(
                s.find_token(&other).unwrap().unwrap().state,
                SendState::Sending
            );
        },
    );
}

#[test]
fn unknown_wamid_status_is_kept_unmatched() {
    each_backend("unknown_wamid_status_is_kept_unmatched", |s| {
        assert_eq!(
            s.record_status(&status("wamid.X", "sent")).unwrap(),
            StatusOutcome::Recorded { matched: false }
        );
        assert!(!s.statuses_for_message("wamid.X").unwrap()[0].matched);
    });
}

#[test]
fn completion_joins_by_context_id_and_unknown_is_unmatched() {
    each_backend(
        "completion_joins_by_context_id_and_unknown_is_unmatched",
        |s| {
            let t = sent_token(s, "wamid.C");
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
        },
    );
}

#[test]
fn webhook_events_are_recorded_once_per_reference() {
    each_backend("webhook_events_are_recorded_once_per_reference", |s| {
        let v = serde_json::json!({"a": 1});
        assert!(s
            .record_webhook_event("flow_alert", "inbox:1/0", None, &v)
            .unwrap());
        assert!(!s
            .record_webhook_event("flow_alert", "inbox:1/0", None, &v)
            .unwrap());
        assert_eq!(s.events("flow_alert").unwrap().len(), 1);
    });
}
