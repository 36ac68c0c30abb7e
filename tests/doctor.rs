//! `flowctl doctor` over the real binary and the sandbox, which plays the account's phone
//! number, Flows and token (`--flow`, `POST /_sandbox/account`).

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const FLOW_ID: &str = "1234567890123456";
const VERIFY_TOKEN: &str = "doctor-verify-token-77a1";

/// A free loopback address for FLOWCTL_LISTEN.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A healthy setup: a sandbox that owns the Flow, the key uploaded, the database created,
/// every setting and secret set. Returns the sandbox and `doctor --json` ready to run.
fn healthy(env: &Env) -> (Running, Command) {
    let sb = env.sandbox(&["--flow", FLOW_ID]);
    let key = env.key_file();
    let mut up = env.graph_cmd(&sb.url);
    up.args(["keys", "upload", "--private-key-file"]).arg(&key);
    let out = run(up, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(flowctl::store::Store::open(env.db()).unwrap());
    let mut c = env.graph_cmd(&sb.url);
    c.env("APP_SECRET", APP_SECRET)
        .env("WEBHOOK_VERIFY_TOKEN", VERIFY_TOKEN)
        .env("PRIVATE_KEY_FILE", &key)
        .env("FLOWCTL_LISTEN", free_addr())
        .arg("doctor");
    (sb, c)
}

/// Runs `doctor --json`: exit code and the report.
fn doctor_json(mut c: Command) -> (Option<i32>, Value, String) {
    c.arg("--json");
    let out = run(c, LIMIT);
    let report: Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&out), stderr(&out)));
    (out.status.code(), report, stderr(&out))
}

/// The check named `name` (the first one, for `settings`).
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn set_account(sandbox_url: &str, changes: &str) {
    let (code, body) = http_post_json(&format!("{sandbox_url}/_sandbox/account"), changes);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn all_good_exits_0_with_one_line_per_check_and_no_secret() {
    let env = Env::new();
    let (sb, c) = healthy(&env);
    let out = run(c, LIMIT);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for name in [
        "settings",
        "graph_version",
        "access_token",
        "phone_number",
        "quality_rating",
        "messaging_limit",
        "throughput",
        "flow",
        "endpoint_uri",
        "public_key",
        "database",
        "listen",
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{text}"));
        assert!(line.starts_with('✓'), "{line}\n{text}");
    }
    assert!(!text.contains('✗'), "{text}");
    assert!(text.contains("no problem found"), "{text}");
    assert!(text.contains("GREEN"), "{text}");
    assert!(
        text.contains(FLOW_ID) && text.contains("PUBLISHED"),
        "{text}"
    );
    for secret in [ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN] {
        assert!(!text.contains(secret) && !stderr(&out).contains(secret));
    }
    // What it read, and how: the fields Meta documents, the token debugging itself.
    let reqs = sandbox_requests(&sb.url);
    let paths: Vec<&str> = reqs.iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("/debug_token")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with(&format!("/{FLOW_ID}"))),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with("/106540352242922")),
        "{paths:?}"
    );
}

#[test]
fn every_missing_setting_is_listed_in_one_run() {
    let env = Env::new();
    let mut c = env.cmd();
    c.env("FLOWCTL_LISTEN", free_addr()).arg("doctor");
    let out = run(c, LIMIT);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for var in [
        "PHONE_NUMBER_ID",
        "WHATSAPP_ACCESS_TOKEN",
        "FLOW_ID",
        "PRIVATE_KEY_FILE",
        "APP_SECRET",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("✗ settings") && l.contains(var)),
            "{var} not listed:\n{text}"
        );
    }
    // The live checks say what they wait for instead of failing with a raw error.
    assert!(
        text.lines()
            .any(|l| l.starts_with("- flow") && l.contains("not checked")),
        "{text}"
    );
    assert!(text.contains("flowctl init"), "{text}");
}

#[test]
fn a_phone_number_given_as_phone_number_id_is_named_as_such() {
    let env = Env::new();
    let (_sb, mut c) = healthy(&env);
    c.env("PHONE_NUMBER_ID", "+212 612-345678");
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    let id = check(&report, "phone_number_id");
    assert_eq!(id["status"], "fail");
    assert!(
        id["detail"].as_str().unwrap().contains("is a phone number"),
        "{id}"
    );
    assert!(
        id["fix"].as_str().unwrap().contains("Phone number ID"),
        "{id}"
    );
    // Once, not twice, and no raw "Object with ID … does not exist".
    assert!(!report.to_string().contains("does not exist"), "{report}");
    // What does not need the phone number is still checked.
    assert_eq!(check(&report, "access_token")["status"], "ok", "{report}");
    assert_eq!(check(&report, "flow")["status"], "ok", "{report}");
    assert_eq!(check(&report, "public_key")["status"], "skip", "{report}");
    assert_eq!(report["failed"], 1, "{report}");
}

#[test]
fn a_phone_number_in_digits_is_recognised_from_graphs_answer() {
    let env = Env::new();
    let (_sb, mut c) = healthy(&env);
    c.env("PHONE_NUMBER_ID", "212612345678");
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    let phone = check(&report, "phone_number");
    assert_eq!(phone["status"], "fail", "{phone}");
    assert!(
        phone["detail"]
            .as_str()
            .unwrap()
            .contains("reads like a phone number"),
        "{phone}"
    );
    assert!(
        phone["fix"].as_str().unwrap().contains("Phone number ID"),
        "{phone}"
    );
    assert_eq!(check(&report, "quality_rating")["status"], "skip");
    assert_eq!(check(&report, "public_key")["status"], "skip");
    assert_eq!(report["failed"], 1, "one cause, one failure: {report}");
}

#[test]
fn a_throttled_flow_fails_with_what_to_do() {
    let env = Env::new();
    let (sb, c) = healthy(&env);
    set_account(
        &sb.url,
        &format!(r#"{{"flows":{{"{FLOW_ID}":{{"status":"THROTTLED"}}}}}}"#),
    );
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    let flow = check(&report, "flow");
    assert_eq!(flow["status"], "fail", "{flow}");
    assert!(
        flow["detail"].as_str().unwrap().contains("THROTTLED"),
        "{flow}"
    );
    assert!(flow["fix"].as_str().unwrap().contains("endpoint"), "{flow}");
    assert_eq!(report["failed"], 1, "only the Flow: {report}");
}

#[test]
fn a_low_rating_and_limit_are_reported() {
    let env = Env::new();
    let (sb, c) = healthy(&env);
    set_account(
        &sb.url,
        r#"{"phone_number":{"quality_rating":"RED","whatsapp_business_manager_messaging_limit":"TIER_250"}}"#,
    );
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    assert_eq!(check(&report, "quality_rating")["status"], "fail");
    let limit = check(&report, "messaging_limit");
    assert_eq!(limit["status"], "warn", "{limit}");
    assert!(limit["detail"].as_str().unwrap().contains("250"), "{limit}");
}

#[test]
fn an_unknown_flow_and_a_token_without_scopes_fail() {
    let env = Env::new();
    let (sb, mut c) = healthy(&env);
    c.env("FLOW_ID", "999000111");
    set_account(
        &sb.url,
        r#"{"token":{"scopes":["whatsapp_business_messaging"]}}"#,
    );
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    let flow = check(&report, "flow");
    assert_eq!(flow["status"], "fail");
    assert!(
        flow["detail"].as_str().unwrap().contains("999000111"),
        "{flow}"
    );
    let token = check(&report, "access_token");
    assert_eq!(token["status"], "fail");
    assert!(
        token["detail"]
            .as_str()
            .unwrap()
            .contains("whatsapp_business_management"),
        "{token}"
    );
}

#[test]
fn a_key_mismatch_fails() {
    let env = Env::new();
    let (_sb, mut c) = healthy(&env);
    // Another key than the one uploaded.
    let mut g = env.cmd();
    g.args(["keygen", "--out"]).arg(env.path("other.pem"));
    assert_eq!(run(g, LIMIT).status.code(), Some(0));
    c.env("PRIVATE_KEY_FILE", env.path("other.pem"));
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    let key = check(&report, "public_key");
    assert_eq!(key["status"], "fail");
    assert!(
        key["fix"].as_str().unwrap().contains("keys upload"),
        "{key}"
    );
}

#[test]
fn a_busy_listen_address_fails() {
    let env = Env::new();
    let (_sb, mut c) = healthy(&env);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    c.env("FLOWCTL_LISTEN", busy.local_addr().unwrap().to_string());
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}{err}");
    let listen = check(&report, "listen");
    assert_eq!(listen["status"], "fail");
    assert!(
        listen["detail"].as_str().unwrap().contains("in use"),
        "{listen}"
    );
}

#[test]
fn json_shape() {
    let env = Env::new();
    let (_sb, c) = healthy(&env);
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(0), "{report}{err}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["failed"], 0);
    assert!(report["warnings"].is_u64() && report["skipped"].is_u64());
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 12, "{report}");
    for c in checks {
        assert!(c["name"].is_string(), "{c}");
        assert!(
            ["ok", "warn", "fail", "skip"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(c["detail"].is_string(), "{c}");
        assert!(c["fix"].is_null() || c["fix"].is_string(), "{c}");
    }
    assert!(!report.to_string().contains(ACCESS_TOKEN));
}

#[test]
fn an_unreachable_postgres_database_fails_its_check_without_showing_the_password() {
    let env = Env::new();
    let (_sb, mut c) = healthy(&env);
    // A port nothing listens on: the connection is refused at once.
    let port = free_addr().rsplit(':').next().unwrap().to_string();
    let url = format!("postgres://flowctl:pg-s3cret-pw@127.0.0.1:{port}/flowctl?sslmode=disable");
    c.env("FLOWCTL_DB", &url);
    let (code, report, err) = doctor_json(c);
    assert_eq!(code, Some(1), "{report}");
    let db = check(&report, "database");
    assert_eq!(db["status"], "fail", "{db}");
    let detail = db["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("cannot connect"), "{db}");
    assert!(
        detail.contains(&format!("postgres://flowctl:***@127.0.0.1:{port}/flowctl")),
        "{db}"
    );
    assert!(
        db["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("server is up"),
        "{db}"
    );
    let all = format!("{report}{err}");
    assert!(!all.contains("pg-s3cret-pw"), "{all}");
}
