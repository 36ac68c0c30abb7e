//! End to end over the binary: `serve` beside a Chatwoot-based inbox (Chatwoot, Voom) that
//! owns Meta's webhook and forwards its own `message_created` webhooks to
//! `POST /api/chatwoot-webhook/<CHATWOOT_WEBHOOK_SECRET>` (Option B of the README).
//!
//! The bodies are Chatwoot's format (tests/fixtures/chatwoot/, see its README): the Flow
//! submission under `content_attributes.whatsapp_flow_response` as chatwoot/chatwoot PR 15279
//! stores it (<https://github.com/chatwoot/chatwoot/pull/15279>); signed deliveries carry
//! `X-Chatwoot-Signature: sha256=HMAC(secret, "{X-Chatwoot-Timestamp}.{body}")`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);
const CW_SECRET: &str = "cw-path-secret-5f1e2d3c4b5a6978";
const CW_SIGNING: &str = "cw-signing-secret-a1b2";

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chatwoot")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The Flow submission fixture for `token` from WhatsApp id `wa_id`, as Chatwoot message `id`.
fn flow_submission(token: &str, wa_id: &str, id: u64) -> String {
    fixture("message_created_flow.json")
        .replace("__FLOW_TOKEN__", token)
        .replace("__WA_ID__", wa_id)
        .replace("\"id\": 4512,", &format!("\"id\": {id},"))
}

fn chatwoot_server(env: &Env, signing: bool) -> Running {
    let mut vars = vec![("CHATWOOT_WEBHOOK_SECRET", CW_SECRET)];
    if signing {
        vars.push(("CHATWOOT_SIGNING_SECRET", CW_SIGNING));
    }
    env.serve_with_env(&vars, &[])
}

/// Posts `body` to the Chatwoot route with `secret` in the path, signed with `signing` (if
/// any) as Chatwoot signs; returns the status and the JSON answer.
async fn post(server: &Running, secret: &str, body: &str, signing: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/chatwoot-webhook/{secret}", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = signing {
        let ts = "1785802814";
        req = req.header("X-Chatwoot-Timestamp", ts).header(
            "X-Chatwoot-Signature",
            flowctl::chatwoot_events::sign(key.as_bytes(), ts, body.as_bytes()),
        );
    }
    let r = req.send().await.expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn response_count(env: &Env) -> i64 {
    env.store().response_count().unwrap()
}

#[tokio::test]
async fn a_forwarded_flow_submission_is_joined_by_its_token() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Ahmed"), None, DAY);
    let server = chatwoot_server(&env, false);
    let (status, answer) = post(
        &server,
        CW_SECRET,
        &flow_submission(&token, "212610059159", 4512),
        None,
    )
    .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("stored")));
    let rs = env.store().responses_for_token(&token).unwrap();
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(rs[0].source, "chatwoot");
    assert_eq!(rs[0].phone.as_deref(), Some("+212610059159"));
    assert_eq!(rs[0].answers["q1_accueil"], "Excellent");
    assert!(!rs[0].answers.contains_key("flow_token"));
    assert!(!rs[0].sender_mismatch);
}

#[tokio::test]
async fn a_chatwoot_retry_of_the_same_message_is_stored_once() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = chatwoot_server(&env, false);
    let body = flow_submission(&token, "212610059159", 4513);
    assert_eq!(post(&server, CW_SECRET, &body, None).await.0, 200);
    let (status, answer) = post(&server, CW_SECRET, &body, None).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(response_count(&env), 1);
}

#[tokio::test]
async fn a_submission_for_an_unknown_token_is_kept_unmatched() {
    let env = Env::new();
    let server = chatwoot_server(&env, false);
    let body = flow_submission("not-a-token-of-ours", "212699999999", 4514);
    let (status, answer) = post(&server, CW_SECRET, &body, None).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("unmatched"))
    );
    let unmatched = env.store().unmatched_responses().unwrap();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert_eq!(unmatched[0].source, "chatwoot");
    assert_eq!(unmatched[0].token.as_deref(), Some("not-a-token-of-ours"));
    assert_eq!(unmatched[0].phone.as_deref(), Some("+212699999999"));
    assert_eq!(
        unmatched[0].answers["commentaire"],
        "Accueil parfait, merci !"
    );
}

#[tokio::test]
async fn without_a_token_the_senders_one_open_token_is_joined() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = chatwoot_server(&env, false);
    let body = flow_submission("", "212610059159", 4515).replace("\"flow_token\": \"\",", "");
    assert!(!body.contains("flow_token"));
    let (status, answer) = post(&server, CW_SECRET, &body, None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("stored")));
    let rs = env.store().responses_for_token(&token).unwrap();
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(rs[0].source, "chatwoot");
}

#[tokio::test]
async fn a_wrong_secret_is_404_and_stores_nothing() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = chatwoot_server(&env, false);
    let body = flow_submission(&token, "212610059159", 4516);
    for wrong in [
        "cw-path-secret-5f1e2d3c4b5a6979",
        "cw-path-secret",
        "",
        "cw-path-secret-5f1e2d3c4b5a6978/extra",
    ] {
        let (status, _) = post(&server, wrong, &body, None).await;
        assert_eq!(status, 404, "{wrong:?}");
    }
    assert_eq!(response_count(&env), 0);
    assert!(
        !server.stderr().contains(CW_SECRET),
        "the secret is never logged"
    );
}

#[tokio::test]
async fn the_route_is_off_without_a_secret() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = env.serve(&[]);
    let body = flow_submission(&token, "212610059159", 4517);
    let (status, _) = post(&server, CW_SECRET, &body, None).await;
    assert_eq!(status, 404);
    assert_eq!(response_count(&env), 0);
}

#[tokio::test]
async fn a_malformed_event_is_400_and_stores_nothing() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = chatwoot_server(&env, false);
    let good = flow_submission(&token, "212610059159", 4518);
    let no_id = good.replace("\"id\": 4518,", "");
    let bad_response = good.replace("\"response\": {", "\"response\": [{").replace(
        "\"commentaire\": \"Accueil parfait, merci !\"\n      }",
        "\"commentaire\": \"x\"\n      }]",
    );
    for (what, body) in [
        ("not JSON", "{\"event\": \"message_created\",".to_string()),
        ("not a JSON object", "[1, 2]".to_string()),
        ("no \"event\"", "{\"id\": 3}".to_string()),
        ("without a message \"id\"", no_id),
        (
            "whatsapp_flow_response.response is not an object",
            bad_response,
        ),
    ] {
        let (status, answer) = post(&server, CW_SECRET, &body, None).await;
        assert_eq!(status, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(what), "{what}: {answer}");
    }
    assert_eq!(response_count(&env), 0);
    assert!(env
        .store()
        .find_token(&token)
        .unwrap()
        .unwrap()
        .completed_at
        .is_none());
}

#[tokio::test]
async fn other_events_are_acknowledged_and_ignored() {
    let env = Env::new();
    let server = chatwoot_server(&env, false);
    for name in ["conversation_created.json", "message_created_text.json"] {
        let (status, answer) = post(&server, CW_SECRET, &fixture(name), None).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("ignored")),
            "{name}"
        );
    }
    assert_eq!(response_count(&env), 0);
}

#[tokio::test]
async fn a_status_chatwoot_reports_for_a_flow_message_reaches_its_token() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    env.store()
        .record_sent(&token, "wamid.FLOWCTL-SENT-1", Some("212610059159"))
        .unwrap();
    let server = chatwoot_server(&env, false);
    let ours = fixture("message_updated_status.json").replace("__WAMID__", "wamid.FLOWCTL-SENT-1");
    let (status, answer) = post(&server, CW_SECRET, &ours, None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("recorded")));
    let record = env.store().find_token(&token).unwrap().unwrap();
    assert_eq!(record.delivery.as_deref(), Some("delivered"));
    // An agent's message is none of flowctl's business.
    let other = fixture("message_updated_status.json").replace("__WAMID__", "wamid.AGENT");
    let (_, answer) = post(&server, CW_SECRET, &other, None).await;
    assert_eq!(answer["status"], "ignored");
    assert!(env
        .store()
        .statuses_for_message("wamid.AGENT")
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn with_a_signing_secret_an_unsigned_or_badly_signed_delivery_is_401() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = chatwoot_server(&env, true);
    let body = flow_submission(&token, "212610059159", 4520);
    assert_eq!(post(&server, CW_SECRET, &body, None).await.0, 401);
    assert_eq!(
        post(&server, CW_SECRET, &body, Some("not-the-secret"))
            .await
            .0,
        401
    );
    assert_eq!(response_count(&env), 0);
    let (status, answer) = post(&server, CW_SECRET, &body, Some(CW_SIGNING)).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("stored")));
}

/// The whole of Option B: the sandbox plays the Graph API, the recipients, and the Chatwoot
/// inbox that owns Meta's webhook and forwards (signed) each Flow submission; `export` joins
/// every answer to the phone it was sent to.
#[test]
fn the_full_loop_through_a_chatwoot_forward_joins_every_phone() {
    let env = Env::new();
    let server = chatwoot_server(&env, true);
    let mut sb = env.cmd();
    sb.env("CHATWOOT_SIGNING_SECRET", CW_SIGNING)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--complete-via",
            "chatwoot",
            "--user-delay-ms",
            "50",
            "--chatwoot-webhook",
        ])
        .arg(format!("{}/api/chatwoot-webhook/{CW_SECRET}", server.url))
        .arg("--flow-json")
        .arg(survey_flow());
    let sandbox = Running::start(sb);

    let phones = [
        "+212610059159",
        "+212600000001",
        "+5511987654321",
        "+33612345678",
    ];
    let mut csv = String::from("phone_number,customer_name\n");
    for (i, p) in phones.iter().enumerate() {
        csv.push_str(&format!("{p},Client {i}\n"));
    }
    let file = env.write("contacts.csv", &csv);
    let mut bulk = env.graph_cmd(&sandbox.url);
    bulk.args(["bulk", "--rate", "50", "--campaign", "cw"])
        .arg(&file);
    let out = run(bulk, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let stats = wait_for_people(&sandbox.url, phones.len() as u64);
    assert_eq!(stats["completed"], phones.len() as u64, "{stats}");

    let mut export = env.cmd();
    export.args(["export", "--csv"]);
    let out = run(export, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    let (token_c, phone_c, name_c, source_c) = (
        col("flow_token"),
        col("phone_number"),
        col("customer_name"),
        col("source"),
    );
    let store = env.store();
    let mut seen = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[source_c], "chatwoot", "{line}");
        let sent = store
            .find_token(f[token_c])
            .unwrap()
            .expect("a token we issued");
        assert_eq!(
            f[phone_c],
            sent.phone.e164(),
            "joined to the phone it was sent to: {line}"
        );
        assert_eq!(Some(f[name_c].to_string()), sent.customer_name, "{line}");
        seen.push(f[phone_c].to_string());
    }
    seen.sort();
    let mut want: Vec<String> = phones.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
    // The Brazilian recipient's WhatsApp id lacks the ninth digit: still no mismatch.
    for t in store.tokens_of_campaign("cw").unwrap() {
        let rs = store.responses_for_token(t.token.as_str()).unwrap();
        assert_eq!(rs.len(), 1, "{rs:?}");
        assert!(!rs[0].sender_mismatch, "{rs:?}");
    }
}

#[test]
fn the_demo_runs_beside_a_chatwoot_inbox() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["demo", "--inbox", "chatwoot", "--dir"])
        .arg(env.path("demo"));
    let out = run(c, Duration::from_secs(90));
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "stdout: {o}\nstderr: {e}");
    assert!(e.contains("/api/chatwoot-webhook/<secret>"), "{e}");
    assert!(e.contains("4 people answered"), "{e}");
    let rows: Vec<&str> = o.lines().filter(|l| l.contains(",chatwoot,")).collect();
    assert!(
        !rows.is_empty(),
        "the export's rows came through the forward: {o}"
    );
    assert!(o.contains("+212610059159") && o.contains("Ahmed"), "{o}");
    assert!(!o.contains(",webhook,") && !o.contains(",endpoint,"), "{o}");
}

#[test]
fn the_sandbox_refuses_to_play_chatwoot_without_a_forward_url() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args([
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--complete-via",
        "chatwoot",
    ]);
    let out = run(c, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--chatwoot-webhook"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn neither_chatwoot_secret_shows_in_trace_logs() {
    use base64::Engine;
    for format in ["text", "json"] {
        let env = Env::new();
        let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
        let server = env.serve_with_env(
            &[
                ("CHATWOOT_WEBHOOK_SECRET", CW_SECRET),
                ("CHATWOOT_SIGNING_SECRET", CW_SIGNING),
                ("FLOWCTL_LOG", "trace"),
                ("FLOWCTL_LOG_FORMAT", format),
            ],
            &[],
        );
        let good = flow_submission(&token, "212610059159", 4530);
        let mut answers = Vec::new();
        for (secret, signing, body) in [
            (CW_SECRET, Some(CW_SIGNING), good.as_str()),
            (CW_SECRET, Some(CW_SIGNING), good.as_str()),
            (CW_SECRET, None, good.as_str()),
            (CW_SECRET, Some("wrong-signing"), good.as_str()),
            (
                "cw-path-secret-5f1e2d3c4b5a6970",
                Some(CW_SIGNING),
                good.as_str(),
            ),
            (CW_SECRET, Some(CW_SIGNING), "{\"event\": 1}"),
        ] {
            answers.push(post(&server, secret, body, signing).await);
        }
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        assert_eq!(statuses, [200, 200, 401, 401, 404, 400], "{format}");
        let seen = format!("{}\n{answers:?}", server.stderr());
        for secret in [CW_SECRET, CW_SIGNING] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
            assert!(!seen.contains(secret), "{format}: {secret} in {seen}");
            assert!(
                !seen.contains(b64.trim_end_matches('=')),
                "{format}: base64 of {secret}"
            );
        }
        assert!(
            seen.contains("/api/chatwoot-webhook"),
            "{format}: the route is logged by its label"
        );
    }
}
