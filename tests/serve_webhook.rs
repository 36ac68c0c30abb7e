//! End-to-end tests of `GET|POST /api/message-webhook` over the real binary, acting as Meta.

mod support;

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);

fn hook(env: &Env) -> Running {
    env.serve_with_env(&[("WEBHOOK_VERIFY_TOKEN", VERIFY_TOKEN)], &[])
}

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.expect("get");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, r.text().await.expect("body"))
}

#[tokio::test]
async fn verification_echoes_the_challenge_for_our_token_only() {
    let env = Env::new();
    let server = hook(&env);
    let base = format!("{}/api/message-webhook", server.url);
    let (status, ctype, body) = get(&format!(
        "{base}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let (status, _, body) = get(&format!(
        "{base}?hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong"
    ))
    .await;
    assert_eq!(status, 403);
    assert!(!body.contains('1'));
    let (status, _, _) = get(&format!(
        "{base}?hub.mode=unsubscribe&hub.challenge=1&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn verification_is_refused_when_no_verify_token_is_configured() {
    let env = Env::new();
    let server = env.serve(&[]);
    let (status, _, _) = get(&format!(
        "{}/api/message-webhook?hub.mode=subscribe&hub.challenge=1&hub.verify_token=",
        server.url
    ))
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn forged_webhooks_get_403_and_nothing_is_stored() {
    let env = Env::new();
    let server = hook(&env);
    let body = status_body("wamid.X", "delivered", None);
    assert_eq!(post_webhook(&server.url, &body, None).await.status(), 403);
    assert_eq!(
        post_webhook(&server.url, &body, Some("not-the-secret"))
            .await
            .status(),
        403
    );
    assert!(env.store().inbox_rows().unwrap().is_empty());
    assert!(env
        .store()
        .statuses_for_message("wamid.X")
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn every_signature_vector_is_judged_like_meta_signs() {
    let env = Env::new();
    let v = webhook_vectors();
    let secret = v["app_secret"].as_str().unwrap();
    let mut c = env.cmd();
    c.env("APP_SECRET", secret)
        .env("FLOW_SCREEN", DEFAULT_SCREEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(env.key_file());
    let server = Running::start(c);
    let http = reqwest::Client::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for (cases, expected) in [("valid_cases", 200), ("invalid_cases", 403)] {
        for case in v[cases].as_array().unwrap() {
            let body = b64.decode(case["body_base64"].as_str().unwrap()).unwrap();
            let r = http
                .post(format!("{}/api/message-webhook", server.url))
                .header("content-type", "application/json")
                .header(
                    "x-hub-signature-256",
                    case["x_hub_signature_256"].as_str().unwrap(),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), expected, "case {}", case["id"]);
        }
    }
    env.wait_inbox_drained();
    let valid = v["valid_cases"].as_array().unwrap().len();
    assert_eq!(env.store().inbox_rows().unwrap().len(), valid);
    // The two completions of the vectors are the same message: stored once, unmatched.
    let unmatched = env.store().unmatched_responses().unwrap();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert_eq!(unmatched[0].answers["q3_comment"], "Très bien ⭐");
}

#[tokio::test]
async fn nfm_reply_is_joined_to_the_phone_through_its_token() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", Some("Renée"), None, DAY);
    let server = hook(&env);
    let body = nfm_reply(
        "wamid.IN1",
        "33612345678",
        None,
        json!({"flow_token": token, "q1_rating": "5_etoiles"}),
    );
    assert_eq!(
        post_webhook(&server.url, &body, Some(APP_SECRET))
            .await
            .status(),
        200
    );
    env.wait_inbox_drained();
    let store = env.store();
    let rows = store.responses_for_token(&token).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.phone.as_deref(), Some("+33612345678"));
    assert_eq!(r.sender.as_deref(), Some("33612345678"));
    assert_eq!(r.source, "webhook");
    assert!(r.matched && !r.sender_mismatch);
    assert_eq!(
        r.answers,
        *json!({"q1_rating": "5_etoiles"}).as_object().unwrap()
    );
    assert_eq!(r.completed_at.to_string(), "2026-01-01T00:00:00.000Z");
    assert!(store
        .find_token(&token)
        .unwrap()
        .unwrap()
        .completed_at
        .is_some());
}

#[tokio::test]
async fn a_replayed_webhook_changes_nothing() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = hook(&env);
    let body = nfm_reply(
        "wamid.IN2",
        "33612345678",
        None,
        json!({"flow_token": token, "q": "1"}),
    );
    for _ in 0..3 {
        assert_eq!(
            post_webhook(&server.url, &body, Some(APP_SECRET))
                .await
                .status(),
            200
        );
    }
    env.wait_inbox_drained();
    assert_eq!(env.store().response_count().unwrap(), 1);
    assert_eq!(env.store().responses_for_token(&token).unwrap().len(), 1);
}

#[tokio::test]
async fn a_completion_without_token_is_joined_through_context_id() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    env.store()
        .record_sent_after(&token, "wamid.SENT1", Some("33612345678"), 1)
        .unwrap();
    let server = hook(&env);
    let body = nfm_reply(
        "wamid.IN3",
        "33612345678",
        Some("wamid.SENT1"),
        json!({"q": "2"}),
    );
    post_webhook(&server.url, &body, Some(APP_SECRET)).await;
    env.wait_inbox_drained();
    let rows = env.store().responses_for_token(&token).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].phone.as_deref(), Some("+33612345678"));
    assert!(env.store().unmatched_responses().unwrap().is_empty());
}

/// `nfm_reply` also carries other native replies: an `address_message` reply is recorded as
/// such, never as an (unmatched) Flow completion.
#[tokio::test]
async fn an_address_message_reply_is_not_taken_for_a_flow_completion() {
    let env = Env::new();
    let server = hook(&env);
    let body = String::from_utf8(nfm_reply(
        "wamid.ADDR",
        "212610059159",
        None,
        json!({"city": "Rabat", "address": "1 rue X"}),
    ))
    .unwrap()
    .replace(r#""name":"flow""#, r#""name":"address_message""#);
    assert!(body.contains("address_message"));
    post_webhook(&server.url, body.as_bytes(), Some(APP_SECRET)).await;
    env.wait_inbox_drained();
    assert!(env.store().unmatched_responses().unwrap().is_empty());
    assert_eq!(env.store().response_count().unwrap(), 0);
    let other = env.store().events("nfm_reply_other").unwrap();
    assert_eq!(other.len(), 1, "{other:?}");
    assert_eq!(other[0].1["name"], "address_message");
}

#[tokio::test]
async fn an_unknown_token_is_stored_unmatched_with_the_senders_number() {
    let env = Env::new();
    let server = hook(&env);
    let body = nfm_reply(
        "wamid.IN4",
        "212610059159",
        Some("wamid.nobody"),
        json!({"flow_token": "flow_unknownunknownunknown", "q": "3"}),
    );
    post_webhook(&server.url, &body, Some(APP_SECRET)).await;
    env.wait_inbox_drained();
    let rows = env.store().unmatched_responses().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].phone.as_deref(), Some("+212610059159"));
    assert_eq!(rows[0].token.as_deref(), Some("flow_unknownunknownunknown"));
    assert_eq!(rows[0].answers["q"], "3");
    assert!(!rows[0].matched);
}

#[tokio::test]
async fn a_sender_other_than_the_recipient_is_flagged_not_dropped() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = hook(&env);
    let body = nfm_reply(
        "wamid.IN5",
        "447700900123",
        None,
        json!({"flow_token": token, "q": "4"}),
    );
    post_webhook(&server.url, &body, Some(APP_SECRET)).await;
    env.wait_inbox_drained();
    let rows = env.store().responses_for_token(&token).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].sender_mismatch);
    assert_eq!(rows[0].phone.as_deref(), Some("+33612345678"));
    assert_eq!(rows[0].sender.as_deref(), Some("447700900123"));
}

#[tokio::test]
async fn a_completion_from_the_endpoint_then_the_webhook_is_one_response() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = env.serve_with_env(&[("FLOWCTL_API_KEY", API_KEY)], &[]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "data_exchange", "screen": "S", "data": {"q": "5"}, "flow_token": token}))
        .await;
    assert_eq!(a.status, 200, "{}", server.stderr());
    let body = nfm_reply(
        "wamid.IN6",
        "33612345678",
        None,
        json!({"flow_token": token, "q": "5"}),
    );
    post_webhook(&server.url, &body, Some(APP_SECRET)).await;
    env.wait_inbox_drained();
    let rows = env.store().responses_for_token(&token).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].source, "endpoint");
    assert_eq!(rows[0].duplicate_of, None);
    assert_eq!(rows[1].duplicate_of, Some(rows[0].id));
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/responses", server.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["responses"].as_array().unwrap().len(), 1);
    assert_eq!(listed["responses"][0]["source"], "endpoint");
}

#[tokio::test]
async fn statuses_out_of_order_never_move_backwards() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    env.store()
        .record_sent_after(&token, "wamid.S1", None, 1)
        .unwrap();
    let server = hook(&env);
    for st in ["read", "delivered", "sent"] {
        post_webhook(
            &server.url,
            &status_body("wamid.S1", st, None),
            Some(APP_SECRET),
        )
        .await;
    }
    env.wait_inbox_drained();
    let d = env.store().delivery(&token).unwrap().unwrap();
    assert_eq!(d.delivery.as_deref(), Some("read"));
    assert_eq!(d.rank, 3);
    assert_eq!(
        env.store().statuses_for_message("wamid.S1").unwrap().len(),
        3
    );
}

#[tokio::test]
async fn a_failed_status_keeps_its_error_code_and_duplicates_are_ignored() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    env.store()
        .record_sent_after(&token, "wamid.F1", None, 1)
        .unwrap();
    let server = hook(&env);
    let failed = status_body(
        "wamid.F1",
        "failed",
        Some((131026, "Message undeliverable")),
    );
    for _ in 0..2 {
        post_webhook(&server.url, &failed, Some(APP_SECRET)).await;
    }
    post_webhook(
        &server.url,
        &status_body("wamid.F1", "sent", None),
        Some(APP_SECRET),
    )
    .await;
    post_webhook(
        &server.url,
        &status_body("wamid.other", "sent", None),
        Some(APP_SECRET),
    )
    .await;
    env.wait_inbox_drained();
    let store = env.store();
    let d = store.delivery(&token).unwrap().unwrap();
    assert_eq!(d.delivery.as_deref(), Some("failed"));
    assert_eq!(d.error_code, Some(131026));
    assert_eq!(d.error_title.as_deref(), Some("Message undeliverable"));
    let statuses = store.statuses_for_message("wamid.F1").unwrap();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    let unknown = store.statuses_for_message("wamid.other").unwrap();
    assert_eq!(unknown.len(), 1);
    assert!(!unknown[0].matched);
}

#[tokio::test]
async fn unknown_events_flow_alerts_and_errors_are_accepted_and_recorded() {
    let env = Env::new();
    let server = hook(&env);
    let bodies = [
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "flows", "value": {"event": "FLOW_STATUS_CHANGE", "flow_id": "123", "old_status": "PUBLISHED", "new_status": "THROTTLED"}},
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}
        ]}]}),
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "messages", "value": {"messages": [{"id": "wamid.T", "type": "text", "text": {"body": "hi"}}],
             "errors": [{"code": 131000, "title": "Something went wrong"}], "brand_new_field": [1, 2]}}
        ]}]}),
        json!({"object": "something_else", "extra": true}),
    ];
    for b in &bodies {
        let raw = b.to_string().into_bytes();
        assert_eq!(
            post_webhook(&server.url, &raw, Some(APP_SECRET))
                .await
                .status(),
            200
        );
    }
    env.wait_inbox_drained();
    let store = env.store();
    let alerts = store.events("flow_alert").unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1["value"]["new_status"], "THROTTLED");
    assert_eq!(store.events("webhook_error").unwrap().len(), 1);
    assert_eq!(store.events("webhook_unhandled").unwrap().len(), 2);
    assert!(store.inbox_rows().unwrap().iter().all(|r| r.2.is_none()));
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_acknowledged_and_recorded() {
    let env = Env::new();
    let server = hook(&env);
    let r = post_webhook(&server.url, b"this is not json", Some(APP_SECRET)).await;
    assert_eq!(r.status(), 200);
    env.wait_inbox_drained();
    let store = env.store();
    let rows = store.inbox_rows().unwrap();
    assert!(rows[0].2.as_deref().unwrap_or("").contains("not JSON"));
    let events = store.events("webhook_invalid").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["prefix"], "this is not json");
}

#[tokio::test]
async fn inbox_rows_left_by_a_crash_are_processed_at_start() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let body = nfm_reply(
        "wamid.IN7",
        "33612345678",
        None,
        json!({"flow_token": token, "q": "7"}),
    );
    env.store().insert_inbox(&body).unwrap();
    assert_eq!(env.store().inbox_pending_count().unwrap(), 1);
    let _server = hook(&env);
    env.wait_inbox_drained();
    assert_eq!(env.store().responses_for_token(&token).unwrap().len(), 1);
}

#[tokio::test]
async fn metrics_count_webhook_events_completions_and_statuses() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    env.store()
        .record_sent_after(&token, "wamid.M1", None, 1)
        .unwrap();
    let server = hook(&env);
    let done = nfm_reply(
        "wamid.IN8",
        "33612345678",
        None,
        json!({"flow_token": token}),
    );
    let lost = nfm_reply(
        "wamid.IN9",
        "33612345678",
        None,
        json!({"flow_token": "flow_nope"}),
    );
    for b in [done, lost, status_body("wamid.M1", "delivered", None)] {
        post_webhook(&server.url, &b, Some(APP_SECRET)).await;
    }
    env.wait_inbox_drained();
    let (_, _, text) = get(&format!("{}/metrics", server.url)).await;
    for line in [
        "flowctl_completions_total{source=\"webhook\"} 1",
        "flowctl_unmatched_completions_total 1",
        "flowctl_webhook_events_total{type=\"nfm_reply\"} 2",
        "flowctl_webhook_events_total{type=\"status\"} 1",
        "flowctl_message_statuses_total{status=\"delivered\"} 1",
        "flowctl_http_requests_total{route=\"/api/message-webhook\",status=\"200\"} 3",
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}
