//! End-to-end tests of `flowctl send` against the sandbox.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn json_out(o: &std::process::Output) -> Value {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

#[test]
fn success_prints_the_outcome_and_stores_the_token() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args([
        "send",
        "+212610059159",
        "--name",
        "Ahmed",
        "--data",
        r#"{"city":"Rabat"}"#,
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "stderr is silent on success");
    let j = json_out(&out);
    assert_eq!(j["success"], true);
    assert_eq!(j["phoneNumber"], "+212610059159");
    let token = j["flowToken"].as_str().unwrap();
    assert!(token.starts_with("flow_") && token.len() >= 27);
    assert!(j["messageId"].as_str().unwrap().starts_with("wamid."));
    assert!(j["timestamp"].as_str().unwrap().ends_with('Z'));

    let msgs = sandbox_messages(&sb.url);
    assert_eq!(msgs.len(), 1);
    let body = &msgs[0]["body"];
    assert_eq!(body["to"], "212610059159");
    assert_eq!(
        body["interactive"]["action"]["parameters"]["flow_token"],
        token
    );
    assert_eq!(
        body["interactive"]["action"]["parameters"]["flow_id"],
        "1234567890123456"
    );

    let store = flowctl::store::Store::open(env.db()).unwrap();
    let t = store.find_token(token).unwrap().unwrap();
    assert_eq!(t.phone.e164(), "+212610059159");
    assert_eq!(t.customer_name.as_deref(), Some("Ahmed"));
    assert_eq!(t.state, flowctl::store::SendState::Sent);
    assert_eq!(t.message_id.as_deref(), j["messageId"].as_str());
    assert_eq!(t.initial_data.unwrap()["city"], "Rabat");
}

#[test]
fn a_national_number_is_normalised_with_the_default_country() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.env("DEFAULT_COUNTRY", "MA")
        .args(["send", "06 10 05 91 59"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out)["phoneNumber"], "+212610059159");
    assert_eq!(sandbox_messages(&sb.url)[0]["body"]["to"], "212610059159");
}

#[test]
fn an_invalid_number_exits_2_without_any_request() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["send", "12ab"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\"12ab\"") && err.lines().count() == 1,
        "{err}"
    );
    assert!(sandbox_messages(&sb.url).is_empty());
}

#[test]
fn a_missing_access_token_exits_2_naming_it() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.env_remove("WHATSAPP_ACCESS_TOKEN")
        .args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("WHATSAPP_ACCESS_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(sandbox_messages(&sb.url).is_empty());
}

#[test]
fn a_missing_setting_names_the_variable_and_the_flag() {
    let env = Env::new();
    let mut c = env.graph_cmd("http://127.0.0.1:9");
    c.env_remove("FLOW_ID").args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "flowctl: missing FLOW_ID (set FLOW_ID or pass --flow-id)"
    );
}

#[test]
fn dotenv_is_read_and_the_environment_wins_over_it() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    env.write(".env", "FLOW_ID=from-dotenv\nDEFAULT_COUNTRY=MA\n");
    let mut c = env.graph_cmd(&sb.url);
    c.env_remove("FLOW_ID").args(["send", "0610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        sandbox_messages(&sb.url)[0]["body"]["interactive"]["action"]["parameters"]["flow_id"],
        "from-dotenv"
    );
    let mut c = env.graph_cmd(&sb.url);
    c.args(["send", "0610059159", "--flow-id", "from-flag"]);
    assert_eq!(run(c, LIMIT).status.code(), Some(0));
    assert_eq!(
        sandbox_messages(&sb.url)[1]["body"]["interactive"]["action"]["parameters"]["flow_id"],
        "from-flag"
    );
}

#[test]
fn a_permanent_error_fails_once_without_retry() {
    let env = Env::new();
    let sb = env.sandbox(&["--fail", "+212610059159=131026"]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let j = json_out(&out);
    assert_eq!(j["success"], false);
    assert_eq!(j["error"]["code"], 131026);
    assert_eq!(j["error"]["retryable"], false);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("131026"));
    assert_eq!(sandbox_messages(&sb.url).len(), 1, "exactly one request");
    let store = flowctl::store::Store::open(env.db()).unwrap();
    let t = store
        .find_token(j["flowToken"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.state, t.error_code),
        (flowctl::store::SendState::Failed, Some(131026))
    );
}

#[test]
fn a_rate_limit_is_retried_until_success() {
    let env = Env::new();
    let sb = env.sandbox(&["--fail", "+212610059159=130429x2"]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["send", "+212610059159"]);
    let started = Instant::now();
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out)["success"], true);
    assert_eq!(json_out(&out)["attempts"], 3);
    let msgs = sandbox_messages(&sb.url);
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["error_code"], 130429);
    // Meta asks for about a second between retries after 130429.
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The same token was retried, not a new one per attempt.
    let tokens: Vec<_> = msgs.iter().map(|m| m["flow_token"].clone()).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]));
}

#[test]
fn template_mode_sends_a_template_with_a_flow_button() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args([
        "send",
        "+33612345678",
        "--name",
        "Camille",
        "--template",
        "enquete_v1",
        "--lang",
        "fr",
    ])
    .args([
        "--template-name-param",
        "--data",
        r#"{"title":"Votre avis"}"#,
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body = &sandbox_messages(&sb.url)[0]["body"];
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "enquete_v1");
    assert_eq!(body["template"]["language"]["code"], "fr");
    let comps = body["template"]["components"].as_array().unwrap();
    assert_eq!(comps[0]["parameters"][0]["text"], "Camille");
    assert_eq!(comps[1]["sub_type"], "flow");
    let action = &comps[1]["parameters"][0]["action"];
    assert_eq!(action["flow_token"], json_out(&out)["flowToken"]);
    assert_eq!(action["flow_action_data"]["title"], "Votre avis");
}

#[test]
fn the_token_row_exists_before_the_request_leaves() {
    let env = Env::new();
    // Create the database first so the sandbox can open it.
    drop(flowctl::store::Store::open(env.db()).unwrap());
    let db = env.db_arg();
    let sb = env.sandbox(&["--check-db", db.to_str().unwrap()]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let msgs = sandbox_messages(&sb.url);
    assert_eq!(msgs[0]["probe"]["token_stored"], true, "{:?}", msgs[0]);
    assert_eq!(msgs[0]["probe"]["phone"], "+212610059159");
    assert_eq!(msgs[0]["probe"]["state"], "sending");
}

#[test]
fn a_graph_api_that_never_answers_times_out_cleanly() {
    let env = Env::new();
    let sb = env.sandbox(&["--fail", "*=hang"]);
    let mut c = env.graph_cmd(&sb.url);
    c.env("GRAPH_API_TIMEOUT", "1s")
        .args(["send", "+212610059159"]);
    let started = Instant::now();
    let out = run(c, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert_eq!(out.status.code(), Some(1));
    let j = json_out(&out);
    assert_eq!(j["success"], false);
    assert_eq!(j["error"]["outcomeUnknown"], true);
    assert!(stderr(&out).contains("no answer"), "{}", stderr(&out));
    assert_eq!(
        sandbox_messages(&sb.url).len(),
        1,
        "an ambiguous send is not repeated"
    );
    let store = flowctl::store::Store::open(env.db()).unwrap();
    let t = store
        .find_token(j["flowToken"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(t.state, flowctl::store::SendState::Unknown);
}

#[test]
fn an_unreachable_graph_api_is_a_clear_failure() {
    let env = Env::new();
    // Nothing listens on port 9 of loopback.
    let mut c = env.graph_cmd("http://127.0.0.1:9");
    c.args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the Graph API"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json_out(&out)["error"]["retryable"], true);
}

#[test]
fn the_sandbox_rejects_a_malformed_message_naming_the_field() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let body = r#"{"messaging_product":"whatsapp","to":"212610059159","type":"interactive","interactive":{"type":"flow","body":{"text":"x"},"action":{"name":"flow","parameters":{"flow_token":"flow_x","flow_id":"1","flow_cta":"Go","flow_action":"navigate"}}}}"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, text) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}/v21.0/106540352242922/messages", sb.url))
            .bearer_auth("t")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 400);
    let j: Value = serde_json::from_str(&text).unwrap();
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flow_message_version"),
        "{text}"
    );
    assert!(j["error"]["code"].is_i64());
}

/// The default Graph API version is v25.0 (v21.0 ends on 2027-01-21, Meta's changelog); a
/// version that ends within 90 days, or has ended, is warned about once on stderr.
#[test]
fn the_default_graph_version_is_v25_and_an_expiring_one_is_warned_about() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let out = run(
        {
            let mut c = env.graph_cmd(&sb.url);
            c.env_remove("GRAPH_API_VERSION")
                .args(["send", "+212610059159"]);
            c
        },
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no warning for the default");
    let msgs = sandbox_messages(&sb.url);
    let path = msgs[0]["path"].as_str().unwrap();
    assert!(path.starts_with("/v25.0/"), "{path}");

    let mut c = env.graph_cmd(&sb.url);
    c.env("GRAPH_API_VERSION", "v20.0")
        .args(["send", "+212610059160"]);
    let out = run(c, LIMIT);
    let err = stderr(&out);
    assert_eq!(err.matches("warning").count(), 1, "warned once: {err}");
    assert!(err.contains("v20.0") && err.contains("2026-09-24"), "{err}");
    assert!(err.contains("GRAPH_API_VERSION"), "{err}");
}
