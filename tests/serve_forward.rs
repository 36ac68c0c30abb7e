//! End-to-end tests of forward mode (`serve --forward URL`): the shipped Python handler
//! (`examples/forward/handler.py`) decides the screens, `serve` stores what it decided.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const DAY: Duration = Duration::from_secs(86_400);
const FORWARD_SECRET: &str = "test-forward-secret-31e7";

fn have_python() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: no python3");
    }
    found
}

/// The example handler on a free port; its `url` ends with `/`.
fn start_handler() -> Running {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/forward/handler.py");
    let mut c = Command::new("python3");
    c.arg(script)
        .args(["--port", "0"])
        .env("FLOW_FORWARD_SECRET", FORWARD_SECRET);
    Running::start(c)
}

fn serve_forwarding(env: &Env, url: &str) -> Running {
    env.serve_with_env(
        &[("FLOW_FORWARD_SECRET", FORWARD_SECRET)],
        &["--forward", url],
    )
}

/// INIT for `token` answers 500 (never 427) and counts one forward failure for `reason`.
async fn assert_init_fails_with(server: &Running, token: &str, reason: &str) {
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
        .await;
    assert_eq!(a.status, 500, "{}", server.stderr());
    let m = metrics(server);
    let line = format!("flowctl_forward_failures_total{{reason=\"{reason}\"}} 1");
    assert!(m.contains(&line), "{m}");
}

fn metrics(server: &Running) -> String {
    http_get(&format!("{}/metrics", server.url))
}

#[tokio::test]
async fn the_handlers_logic_drives_the_flow_and_the_completion_is_joined_to_the_phone() {
    if !have_python() {
        return;
    }
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Amina"), None, DAY);
    let handler = start_handler();
    let server = serve_forwarding(&env, &handler.url);
    let c = FlowClient::new(&server.url);
    let step = |screen: &str, data: Value| json!({"version": "3.0", "action": "data_exchange", "screen": screen, "data": data, "flow_token": token});

    let init = c
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
        .await;
    assert_eq!(init.status, 200, "{}", server.stderr());
    let j = init.json.unwrap();
    assert_eq!(j["screen"], "ORDER");
    // The handler received the phone number and the name, which Meta's request lacks.
    assert_eq!(j["data"]["phone"], "+212610059159", "{j}");
    assert_eq!(j["data"]["greeting"], "Hello Amina");
    assert_eq!(j["data"]["cities"], json!([]));

    // Choosing a region refreshes the same screen with that region's cities.
    let refresh = c.call(&step("ORDER", json!({"region": "north"}))).await;
    let j = refresh.json.unwrap();
    assert_eq!(j["screen"], "ORDER");
    assert_eq!(j["data"]["cities"][0]["id"], "tanger", "{j}");

    let next = c
        .call(&step("ORDER", json!({"region": "north", "city": "tanger"})))
        .await;
    let j = next.json.unwrap();
    assert_eq!(j["screen"], "DETAILS");
    assert_eq!(j["data"]["city"], "tanger");

    // A field the handler refuses re-shows the screen with its message.
    let invalid = c.call(&step("DETAILS", json!({"quantity": "lots"}))).await;
    assert_eq!(invalid.status, 200);
    let j = invalid.json.unwrap();
    assert_eq!(j["screen"], "DETAILS");
    assert!(j["data"]["error_message"].is_string(), "{j}");

    let done = c.call(&step("DETAILS", json!({"quantity": "3"}))).await;
    assert_eq!(done.status, 200, "{}", server.stderr());
    let j = done.json.unwrap();
    assert_eq!(j["screen"], "SUCCESS");
    let params = &j["data"]["extension_message_response"]["params"];
    assert_eq!(params, &json!({"flow_token": token}));

    let responses = env.store().responses_for_token(&token).unwrap();
    assert_eq!(responses.len(), 1);
    let r = &responses[0];
    assert_eq!(r.phone.as_deref(), Some("+212610059159"));
    assert_eq!(r.source, "endpoint");
    assert_eq!(r.answers["region"], "north");
    assert_eq!(r.answers["city"], "tanger");
    assert_eq!(r.answers["quantity"], 3);

    let m = metrics(&server);
    assert!(
        m.contains("flowctl_forward_requests_total{outcome=\"screen\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("flowctl_forward_requests_total{outcome=\"complete\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn the_handler_refuses_a_request_without_the_forward_signature() {
    if !have_python() {
        return;
    }
    let handler = start_handler();
    let body =
        json!({"version": "3.0", "action": "INIT", "phone_number": "+212610059159", "data": {}})
            .to_string();
    let post = |signature: String| {
        reqwest::Client::new()
            .post(&handler.url)
            .header("X-Flowctl-Signature-256", signature)
            .body(body.clone())
            .send()
    };
    let forged = post(flowctl::crypto::sign(b"not-the-secret", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let genuine = post(flowctl::crypto::sign(
        FORWARD_SECRET.as_bytes(),
        body.as_bytes(),
    ))
    .await
    .unwrap();
    assert_eq!(genuine.status().as_u16(), 200);
}

#[tokio::test]
async fn a_handler_that_is_down_answers_500_never_427() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let server = serve_forwarding(&env, &url);
    assert_init_fails_with(&server, &token, "connect").await;
}

#[tokio::test]
async fn an_unknown_token_is_427_without_calling_the_handler() {
    let env = Env::new();
    issue_token(&env.db(), "+212610059159", None, None, DAY);
    // Nothing listens there: a call would be counted as a failure.
    let server = serve_forwarding(&env, "http://127.0.0.1:9/");
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": "flowctl-unknown-0001"}))
        .await;
    assert_eq!(a.status, 427);
    assert!(!metrics(&server).contains("flowctl_forward"));
}

#[test]
fn forward_mode_needs_a_safe_url_and_its_secret() {
    let env = Env::new();
    let key = env.key_file();
    let serve = |url: &str, secret: Option<&str>| {
        let mut c = env.cmd();
        c.env("APP_SECRET", APP_SECRET)
            .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
            .arg(&key)
            .args(["--forward", url]);
        if let Some(s) = secret {
            c.env("FLOW_FORWARD_SECRET", s);
        }
        run(c, Duration::from_secs(20))
    };
    let plain = serve("http://hooks.example.com/flow", Some(FORWARD_SECRET));
    assert_eq!(plain.status.code(), Some(2));
    assert!(
        stderr(&plain).contains("FLOW_FORWARD_URL"),
        "{}",
        stderr(&plain)
    );
    let unsigned = serve("https://hooks.example.com/flow", None);
    assert_eq!(unsigned.status.code(), Some(2));
    assert!(
        stderr(&unsigned).contains("FLOW_FORWARD_SECRET"),
        "{}",
        stderr(&unsigned)
    );
}

#[tokio::test]
async fn a_handler_that_does_not_answer_in_time_answers_500() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let server = env.serve_with_env(
        &[("FLOW_FORWARD_SECRET", FORWARD_SECRET)],
        &["--forward", &url, "--forward-timeout", "300ms"],
    );
    assert_init_fails_with(&server, &token, "timeout").await;
    held.abort();
}

#[tokio::test]
async fn a_handler_that_refuses_the_request_answers_500_never_427() {
    if !have_python() {
        return;
    }
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let handler = start_handler();
    // serve signs with another secret: the handler answers 401.
    let server = env.serve_with_env(
        &[("FLOW_FORWARD_SECRET", "a-different-secret")],
        &["--forward", &handler.url],
    );
    assert_init_fails_with(&server, &token, "status").await;
}

#[tokio::test]
async fn the_handlers_refusal_of_a_token_is_a_427_with_its_message() {
    if !have_python() {
        return;
    }
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let handler = start_handler();
    let server = serve_forwarding(&env, &handler.url);
    // The example handler refuses a screen it does not know.
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "data_exchange", "screen": "RETIRED", "data": {"x": "1"}, "flow_token": token}))
        .await;
    assert_eq!(a.status, 427, "{}", server.stderr());
    let msg = a.json.unwrap()["error_msg"].as_str().unwrap().to_string();
    assert!(msg.contains("changed"), "{msg}");
    assert!(env.store().responses_for_token(&token).unwrap().is_empty());
}
