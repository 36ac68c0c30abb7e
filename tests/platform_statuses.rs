//! The real platform's statuses, end to end over the real binaries: a send Meta accepts and
//! then reports failed on the status webhook, a status that overtakes the send's answer, a
//! per-user limit reported later, and a recipient whose WhatsApp id differs from the number
//! sent to. Meta: "Cloud API errors are returned either synchronously as a Graph API response,
//! asynchronously via Webhook, or sometimes through both methods"
//! (<https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>).

mod support;

use std::time::{Duration, Instant};

use flowctl::store::SendState;
use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// `serve`, and a sandbox that posts its statuses to it with `rules`.
fn serve_and_sandbox(env: &Env, rules: &[&str], extra: &[&str]) -> (Running, Running) {
    let server = env.serve(&[]);
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--user-delay-ms",
            "50",
        ])
        .arg("--webhook")
        .arg(format!("{}/api/message-webhook", server.url))
        .args(extra);
    for r in rules {
        sb.arg("--fail").arg(r);
    }
    (server, Running::start(sb))
}

fn send(env: &Env, sandbox: &Running, phone: &str) -> Value {
    let mut c = env.graph_cmd(&sandbox.url);
    c.args(["send", phone]);
    let out = run(c, LIMIT);
    serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)))
}

/// Waits until the token is in `state` (the webhook is processed asynchronously).
fn wait_state(env: &Env, token: &str, state: SendState) -> flowctl::store::TokenRecord {
    let started = Instant::now();
    loop {
        let t = env.store().find_token(token).unwrap().unwrap();
        if t.state == state {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "token stayed {:?} (wanted {state:?}): {t:?}",
            t.state
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stats_json(env: &Env) -> Value {
    let mut c = env.cmd();
    c.args(["stats", "--json"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn a_send_accepted_then_reported_failed_is_settled_failed_with_its_code() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &["+212610059159=131047@status"], &[]);
    let j = send(&env, &sandbox, "+212610059159");
    assert_eq!(j["success"], true, "Meta accepted it: {j}");
    let token = j["flowToken"].as_str().unwrap();
    let t = wait_state(&env, token, SendState::Failed);
    assert_eq!(t.error_code, Some(131047));
    assert_eq!(t.error_message.as_deref(), Some("Re-engagement message"));
    assert!(t.failed_after_acceptance);
    assert_eq!(t.message_id.as_deref(), j["messageId"].as_str());

    let s = stats_json(&env);
    let c = &s["campaigns"][0];
    assert_eq!(c["failed"], 1, "{s}");
    assert_eq!(c["sent"], 0, "{s}");
    assert_eq!(c["failed_after_acceptance"], 1, "{s}");
    assert_eq!(c["failed_by_code"]["131047"], 1, "{s}");

    // `export --failures` names the phone, the stage and the code.
    let mut e = env.cmd();
    e.args(["export", "--failures"]);
    let out = run(e, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let csv = stdout(&out);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("flow_token,phone_number,customer_name,campaign,state,stage,error_code,error,not_before,message_id,created_at")
    );
    let row = lines.next().expect("one failed send");
    assert!(
        row.starts_with(&format!(
            "{token},+212610059159,,send,failed,status,131047,Re-engagement message,,wamid."
        )),
        "{row}"
    );
    assert_eq!(lines.next(), None);
    let mut e = env.cmd();
    e.args(["export", "--failures", "--ndjson"]);
    let out = run(e, LIMIT);
    let j: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (j["stage"].as_str(), j["error_code"].as_i64()),
        (Some("status"), Some(131047))
    );
}

#[test]
fn a_failed_status_that_overtakes_the_send_is_joined_when_the_send_is_recorded() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &["*=131026@early"], &[]);
    let j = send(&env, &sandbox, "+212610059159");
    let token = j["flowToken"].as_str().unwrap();
    // The status reached serve before `send` recorded the wamid; the join happens on record.
    let t = wait_state(&env, token, SendState::Failed);
    assert_eq!(t.error_code, Some(131026));
    assert_eq!(t.delivery.as_deref(), Some("failed"));
    let statuses = env
        .store()
        .statuses_for_message(j["messageId"].as_str().unwrap())
        .unwrap();
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].matched, "joined, not left unmatched forever");
}

#[test]
fn a_per_user_limit_reported_later_defers_the_recipient_for_a_day() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &["*=131049@status"], &[]);
    let before = flowctl::time::Timestamp::now();
    let j = send(&env, &sandbox, "+212610059159");
    let t = wait_state(&env, j["flowToken"].as_str().unwrap(), SendState::Deferred);
    let not_before = t.not_before.expect("a time to try again");
    let day = before.saturating_add(Duration::from_secs(23 * 3600));
    assert!(not_before > day, "{not_before} should be about 24 h later");
    let s = stats_json(&env);
    assert_eq!(s["campaigns"][0]["deferred"], 1, "{s}");
    assert_eq!(
        s["campaigns"][0]["failed"], 0,
        "deferred is not failed: {s}"
    );
}

#[test]
fn a_brazilian_recipient_answering_from_their_whatsapp_id_is_no_sender_mismatch() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &[], &["--complete-via", "webhook"]);
    let j = send(&env, &sandbox, "+5511987654321");
    let token = j["flowToken"].as_str().unwrap();
    let started = Instant::now();
    let responses = loop {
        let r = env.store().responses_for_token(token).unwrap();
        if !r.is_empty() {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no completion");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!responses[0].sender_mismatch, "{:?}", responses[0]);
    assert_eq!(responses[0].phone.as_deref(), Some("+5511987654321"));
    let t = env.store().find_token(token).unwrap().unwrap();
    assert_eq!(
        t.wa_id.as_deref(),
        Some("551187654321"),
        "the alias is kept"
    );
    assert_eq!(
        t.delivery.as_deref(),
        Some("read"),
        "statuses joined by wamid"
    );
}

#[test]
fn notifications_meta_delivers_twice_at_once_are_applied_once() {
    // Meta delivers at least once (<https://developers.facebook.com/docs/whatsapp/api/webhooks>):
    // the sandbox posts every status and completion twice at the same moment.
    let env = Env::new();
    let pub_key = env.write(
        "public.pem",
        vectors()["keys"]["public_key_pem"].as_str().unwrap(),
    );
    let flow = survey_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--user-delay-ms",
            "50",
        ])
        .args(["--complete-via", "webhook", "--duplicate-webhooks", "100"])
        .arg("--endpoint")
        .arg(format!("{}/api/flow", server.url))
        .arg("--webhook")
        .arg(format!("{}/api/message-webhook", server.url))
        .arg("--public-key")
        .arg(&pub_key)
        .arg("--flow-json")
        .arg(&flow);
    let sandbox = Running::start(sb);
    let phones = ["+33610000001", "+33610000002", "+33610000003"];
    let tokens: Vec<String> = phones
        .iter()
        .map(|p| {
            send(&env, &sandbox, p)["flowToken"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let people = wait_for_people(&sandbox.url, phones.len() as u64);
    assert_eq!(people["completed"], phones.len() as u64, "{people}");
    for token in &tokens {
        wait_state(&env, token, SendState::Sent);
    }
    // Every body arrived twice: an even number of inbox rows, all processed.
    let started = Instant::now();
    let rows = loop {
        let rows = env.store().inbox_rows().unwrap();
        let read = tokens.iter().all(|t| {
            env.store()
                .delivery(t)
                .unwrap()
                .unwrap()
                .delivery
                .as_deref()
                == Some("read")
        });
        if read && rows.iter().all(|r| r.1) {
            break rows;
        }
        assert!(started.elapsed() < LIMIT, "{rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(rows.len() >= 2 * 4 * phones.len(), "{rows:?}");
    assert_eq!(rows.len() % 2, 0, "{rows:?}");
    let store = env.store();
    for token in &tokens {
        let responses = store.responses_for_token(token).unwrap();
        assert_eq!(responses.len(), 1, "one response, not two: {responses:?}");
        let t = store.find_token(token).unwrap().unwrap();
        let statuses = store
            .statuses_for_message(t.message_id.as_deref().unwrap())
            .unwrap();
        let kinds: Vec<&str> = statuses.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(kinds, ["sent", "delivered", "read"], "each status once");
    }
    assert_eq!(store.response_count().unwrap(), phones.len() as i64);
    let metrics = http_get(&format!("{}/metrics", server.url));
    assert!(
        metrics.contains("flowctl_webhook_duplicates_total{type=\"nfm_reply\"} 3"),
        "{metrics}"
    );
}
