//! Opt-outs end to end over the real binaries: a STOP reply (posted by the sandbox's simulated
//! person to `serve`'s webhook) suppresses its sender, `bulk` skips and counts them, a START
//! lifts it; Meta's `user_preferences` webhook
//! (<https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences>)
//! stops and resumes; a 131050 refusal ("this recipient has chosen to stop receiving marketing
//! messages", <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>)
//! suppresses, whether it comes with the answer or on the status webhook; `send` and
//! `/api/send-flow` refuse a suppressed number unless forced; `flowctl suppress` by hand.

mod support;

use std::time::{Duration, Instant};

use flowctl::store::Suppression;
use serde_json::{json, Value};
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// `serve`, and a sandbox posting to its webhook, signed, with `extra` arguments.
fn serve_and_sandbox(env: &Env, extra: &[&str]) -> (Running, Running) {
    let server = env.serve(&[]);
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args(["sandbox", "--listen", "127.0.0.1:0", "--webhook"])
        .arg(format!("{}/api/message-webhook", server.url))
        .args(extra);
    (server, Running::start(sb))
}

/// Waits until the suppression entry of `phone` is present (`true`) or absent (`false`).
fn wait_suppressed(env: &Env, phone: &str, present: bool) -> Option<Suppression> {
    let started = Instant::now();
    loop {
        let entry = env.store().suppression(phone).unwrap();
        if entry.is_some() == present {
            return entry;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{phone}: suppression still {entry:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bulk_json(
    env: &Env,
    sandbox: &Running,
    csv: &std::path::Path,
    args: &[&str],
) -> (i32, Value, String) {
    let mut c = env.graph_cmd(&sandbox.url);
    c.arg("bulk")
        .arg(csv)
        .args(["--json", "--rate", "50"])
        .args(args);
    let out = run(c, LIMIT);
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or("null");
    let v: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text} {}", stderr(&out)));
    (out.status.code().unwrap_or(-1), v, stderr(&out))
}

fn sent_to(sandbox: &Running) -> Vec<String> {
    sandbox_messages(&sandbox.url)
        .iter()
        .filter(|r| r["status"] == 200)
        .filter_map(|r| r["to"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn stop_reply_suppresses_bulk_skips_and_counts_start_lifts() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &[]);
    let (status, _) = http_post_json(
        &format!("{}/_sandbox/inbound", sandbox.url),
        r#"{"from": "+212610059159", "text": " Arrêt! "}"#,
    );
    assert_eq!(status, 200);
    let entry = wait_suppressed(&env, "+212610059159", true).unwrap();
    assert_eq!(entry.source, "keyword");
    assert!(entry.reason.contains("Arrêt"), "{entry:?}");
    // A text that merely contains the word is no opt-out.
    http_post_json(
        &format!("{}/_sandbox/inbound", sandbox.url),
        r#"{"from": "+212610059160", "text": "please do not stop"}"#,
    );

    let csv = env.write(
        "people.csv",
        "phone_number,customer_name\n+212610059159,Stopped\n+212610059160,Kept\n+212610059161,Also kept\n",
    );
    let (code, dry, _) = bulk_json(&env, &sandbox, &csv, &["--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(
        (dry["suppressed"].as_u64(), dry["would_send"].as_u64()),
        (Some(1), Some(2)),
        "{dry}"
    );

    let (code, summary, err) = bulk_json(&env, &sandbox, &csv, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["sent"], 2, "{summary}");
    assert_eq!(summary["suppressed"], 1, "{summary}");
    assert!(err.contains("line 2: +212610059159 is suppressed"), "{err}");
    assert!(err.contains("suppressed: 1 row"), "{err}");
    let to = sent_to(&sandbox);
    assert!(!to.iter().any(|p| p.contains("212610059159")), "{to:?}");
    assert_eq!(to.len(), 2, "{to:?}");
    // No token was issued for the suppressed row: a later run after START can send it.
    assert!(env
        .store()
        .bulk_members(
            "people",
            &[flowctl::phone::Phone::from_e164("+212610059159").unwrap()]
        )
        .unwrap()[0]
        .is_none());

    http_post_json(
        &format!("{}/_sandbox/inbound", sandbox.url),
        r#"{"from": "212610059159", "text": "START"}"#,
    );
    wait_suppressed(&env, "+212610059159", false);
    let (code, summary, err) = bulk_json(&env, &sandbox, &csv, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (summary["sent"].as_u64(), summary["suppressed"].as_u64()),
        (Some(1), Some(0)),
        "{summary}"
    );
    assert_eq!(summary["skipped"], 2, "{summary}");
}

#[test]
fn marketing_preference_webhook_stops_and_resumes() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &[]);
    let url = format!("{}/_sandbox/user-preferences", sandbox.url);
    let (status, _) = http_post_json(&url, r#"{"wa_id": "33612345678", "value": "stop"}"#);
    assert_eq!(status, 200);
    let entry = wait_suppressed(&env, "+33612345678", true).unwrap();
    assert_eq!(entry.source, "user_preferences");
    assert_eq!(entry.reason, "User requested to stop marketing messages");
    http_post_json(&url, r#"{"wa_id": "33612345678", "value": "resume"}"#);
    wait_suppressed(&env, "+33612345678", false);
}

#[test]
fn a_131050_refusal_suppresses_and_send_then_refuses_unless_forced() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(
        &env,
        &[
            "--fail",
            "+212610059159=131050",
            "--fail",
            "+212610059170=131050@status",
        ],
    );
    // Refused in the answer.
    let mut c = env.graph_cmd(&sandbox.url);
    c.args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let entry = env
        .store()
        .suppression("+212610059159")
        .unwrap()
        .expect("suppressed");
    assert_eq!(entry.source, "131050");
    // Refused later, on the status webhook.
    let mut c = env.graph_cmd(&sandbox.url);
    c.args(["send", "+212610059170"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let entry = wait_suppressed(&env, "+212610059170", true).unwrap();
    assert_eq!(entry.source, "131050");

    let before = sandbox_messages(&sandbox.url).len();
    let mut c = env.graph_cmd(&sandbox.url);
    c.args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("+212610059159 is on the suppression list"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(sandbox_messages(&sandbox.url).len(), before, "nothing left");

    let mut c = env.graph_cmd(&sandbox.url);
    c.args(["send", "+212610059159", "--force"]);
    let out = run(c, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(1),
        "Meta refuses it again: {}",
        stderr(&out)
    );
    assert_eq!(
        sandbox_messages(&sandbox.url).len(),
        before + 1,
        "--force sent it"
    );
}

#[test]
fn suppress_add_list_import_and_remove() {
    let env = Env::new();
    let suppress = |args: &[&str]| {
        let mut c = env.cmd();
        c.arg("suppress").args(args);
        run(c, LIMIT)
    };
    let out = suppress(&["add", "+212610059159", "--reason", "=asked by phone"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = suppress(&["add", "not-a-number"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not-a-number"), "{}", stderr(&out));

    env.write(
        "unsubscribed.csv",
        "Phone;Name\n+33612345678;A\nbad-one;B\n+212610059159;C\n",
    );
    let out = suppress(&["import", "unsubscribed.csv"]);
    assert_eq!(out.status.code(), Some(1), "one line is bad");
    let err = stderr(&out);
    assert!(err.contains("line 3") && err.contains("bad-one"), "{err}");
    assert!(
        err.contains("1 suppressed, 1 already were, 1 invalid"),
        "{err}"
    );
    env.write("plain.txt", "+4915112345678\n\n");
    assert_eq!(suppress(&["import", "plain.txt"]).status.code(), Some(0));

    let out = suppress(&["list", "--csv"]);
    assert_eq!(out.status.code(), Some(0));
    let csv = stdout(&out);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("phone_number,reason,source,suppressed_at")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "{csv}");
    // The reason is escaped against spreadsheet formulas; the time is kept.
    assert!(
        rows[0].starts_with("+212610059159,'=asked by phone,manual,20"),
        "{csv}"
    );
    assert!(
        rows[1].starts_with("+33612345678,imported,import,"),
        "{csv}"
    );

    let out = suppress(&["list", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    assert_eq!(v[2]["phone_number"], "+4915112345678");

    assert_eq!(suppress(&["remove", "+33612345678"]).status.code(), Some(0));
    let again = suppress(&["remove", "+33612345678"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("was not suppressed"));
    assert!(env.store().suppression("+33612345678").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_api_refuses_a_suppressed_number_unless_forced() {
    let env = Env::new();
    let sandbox = env.sandbox(&[]);
    env.store()
        .suppress("+212610059159", "replied \"STOP\"", "keyword")
        .unwrap();
    let server = env.serve_with_env(
        &[
            ("FLOWCTL_API_KEY", API_KEY),
            ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
            ("PHONE_NUMBER_ID", "106540352242922"),
            ("FLOW_ID", "1234567890123456"),
            ("GRAPH_API_URL", sandbox.url.as_str()),
        ],
        &[],
    );
    let post = |body: Value| {
        let url = format!("{}/api/send-flow", server.url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = post(json!({"phoneNumber": "+212610059159"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("suppression list"), "{body}");
    assert!(sandbox_messages(&sandbox.url).is_empty());
    let (status, body) = post(json!({"phoneNumber": "+212610059159", "force": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(sandbox_messages(&sandbox.url).len(), 1);
}

#[test]
fn simulated_people_who_reply_stop_are_skipped_by_the_next_campaign() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(
        &env,
        &[
            "--complete-via",
            "webhook",
            "--stop",
            "100",
            "--user-delay-ms",
            "20",
        ],
    );
    let csv = env.write(
        "spring.csv",
        "phone_number,customer_name\n+212610059159,A\n+212610059160,B\n+212610059161,C\n",
    );
    let (code, first, err) = bulk_json(&env, &sandbox, &csv, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first["sent"], 3, "{first}");
    for p in ["+212610059159", "+212610059160", "+212610059161"] {
        let entry = wait_suppressed(&env, p, true).unwrap();
        assert_eq!(
            (entry.source.as_str(), entry.reason.as_str()),
            ("keyword", "replied \"STOP\"")
        );
    }
    let users: Value = serde_json::from_str(&http_get(&format!("{}/_sandbox/users", sandbox.url)))
        .unwrap_or(Value::Null);
    assert_eq!(users["stopped"], 3, "{users}");
    assert_eq!(users["completed"], 0, "{users}");
    let (code, second, err) = bulk_json(&env, &sandbox, &csv, &["--campaign", "summer"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (second["sent"].as_u64(), second["suppressed"].as_u64()),
        (Some(0), Some(3)),
        "{second}"
    );
}
