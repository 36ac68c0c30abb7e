//! End-to-end tests of the CRM API of `serve` (`POST /api/send-flow`, `GET /api/responses`)
//! over the real binary.

mod support;

use std::time::Duration;

use flowctl::sandbox::{SandboxHandle, SandboxOptions};
use flowctl::store::CompletionInput;
use serde_json::{json, Map, Value};
use support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// `serve` with the API key and, when given, Graph settings pointing at `graph_url`.
fn api_server(env: &Env, graph_url: Option<&str>) -> Running {
    let mut vars = vec![("FLOWCTL_API_KEY", API_KEY)];
    if let Some(url) = graph_url {
        vars.extend([
            ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
            ("PHONE_NUMBER_ID", "106540352242922"),
            ("FLOW_ID", "1234567890123456"),
            ("GRAPH_API_URL", url),
            ("GRAPH_API_TIMEOUT", "5s"),
        ]);
    }
    env.serve_with_env(&vars, &[])
}

async fn send_flow(server: &Running, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/send-flow", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn responses(server: &Running, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/responses{query}", server.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_routes_do_not_exist_without_an_api_key() {
    let env = Env::new();
    let server = env.serve(&[]);
    let (status, _) = send_flow(&server, Some("anything"), "{}").await;
    assert_eq!(status, 404);
    let r = reqwest::get(format!("{}/api/responses", server.url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_routes_refuse_a_missing_or_wrong_key_with_401() {
    let env = Env::new();
    let server = api_server(&env, None);
    for key in [None, Some("wrong-key")] {
        let (status, body) = send_flow(&server, key, r#"{"phoneNumber":"+33612345678"}"#).await;
        assert_eq!(status, 401);
        assert!(body["error"].as_str().unwrap().contains("API key"));
    }
    let r = reqwest::Client::new()
        .get(format!("{}/api/responses", server.url))
        .bearer_auth("wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_answers_503_when_sending_is_not_configured() {
    let env = Env::new();
    let server = api_server(&env, None);
    let (status, body) =
        send_flow(&server, Some(API_KEY), r#"{"phoneNumber":"+33612345678"}"#).await;
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("PHONE_NUMBER_ID"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_rejects_bad_input_with_400_naming_the_problem() {
    let env = Env::new();
    let (sandbox, url) = sandbox(&[]).await;
    let server = api_server(&env, Some(&url));
    for (body, needle) in [
        ("not json", "not valid JSON"),
        (r#"{"customerName":"Ahmed"}"#, "missing phoneNumber"),
        (r#"{"phoneNumber":"12"}"#, "invalid phone number \"12\""),
        (
            r#"{"phoneNumber":"+33612345678","data":[1]}"#,
            "data must be a JSON object",
        ),
    ] {
        let (status, answer) = send_flow(&server, Some(API_KEY), body).await;
        assert_eq!(status, 400, "{body}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert!(sandbox.requests().is_empty());
}

/// An in-process Graph API sandbox with the given failure rules (`PHONE=CODE`).
async fn sandbox(failures: &[&str]) -> (SandboxHandle, String) {
    let handle = flowctl::sandbox::start(SandboxOptions {
        failures: failures.iter().map(|f| f.parse().unwrap()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", handle.addr());
    (handle, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_sends_like_the_send_command() {
    let env = Env::new();
    let (sandbox, url) = sandbox(&[]).await;
    let server = api_server(&env, Some(&url));
    let (status, body) = send_flow(
        &server,
        Some(API_KEY),
        r#"{"phoneNumber":"+33 6 12 34 56 78","customerName":"Renée","data":{"city":"Paris"},"campaign":"crm"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["phoneNumber"], "+33612345678");
    let wamid = body["messageId"].as_str().unwrap();
    assert!(wamid.starts_with("wamid."), "{body}");
    let token = body["flowToken"].as_str().unwrap();
    assert!(token.starts_with("flow_"));
    let record = env.store().find_token(token).unwrap().unwrap();
    assert_eq!(record.origin, flowctl::store::Origin::Api);
    assert_eq!(record.campaign, "crm");
    assert_eq!(record.message_id.as_deref(), Some(wamid));
    assert_eq!(record.customer_name.as_deref(), Some("Renée"));
    let requests = sandbox.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].to.as_deref(), Some("33612345678"));
    assert_eq!(requests[0].flow_token.as_deref(), Some(token));
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("flowctl_api_sends_total{outcome=\"sent\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_sent_by_the_api_is_tracked_and_joined_through_the_webhook() {
    let env = Env::new();
    let (_sandbox, url) = sandbox(&[]).await;
    let server = env.serve_with_env(
        &[
            ("FLOWCTL_API_KEY", API_KEY),
            ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
            ("PHONE_NUMBER_ID", "106540352242922"),
            ("FLOW_ID", "1234567890123456"),
            ("GRAPH_API_URL", &url),
        ],
        &[],
    );
    let (status, body) =
        send_flow(&server, Some(API_KEY), r#"{"phoneNumber":"+33612345678"}"#).await;
    assert_eq!(status, 200, "{body}");
    let wamid = body["messageId"].as_str().unwrap();
    let token = body["flowToken"].as_str().unwrap();
    post_webhook(
        &server.url,
        &status_body(wamid, "delivered", None),
        Some(APP_SECRET),
    )
    .await;
    // A client that leaves the token out: joined through context.id.
    let reply = nfm_reply(
        "wamid.REPLY",
        "33612345678",
        Some(wamid),
        json!({"q": "ok"}),
    );
    post_webhook(&server.url, &reply, Some(APP_SECRET)).await;
    env.wait_inbox_drained();
    let store = env.store();
    assert_eq!(
        store.delivery(token).unwrap().unwrap().delivery.as_deref(),
        Some("delivered")
    );
    let rows = store.responses_for_token(token).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].phone.as_deref(), Some("+33612345678"));
    let (_, listed) = responses(&server, "?campaign=api").await;
    assert_eq!(listed["responses"][0]["flow_token"], token);
    assert_eq!(listed["responses"][0]["source"], "webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_flow_answers_502_with_the_outcome_when_the_graph_api_refuses() {
    let env = Env::new();
    let (_sandbox, url) = sandbox(&["33612345678=131026"]).await;
    let server = api_server(&env, Some(&url));
    let (status, body) =
        send_flow(&server, Some(API_KEY), r#"{"phoneNumber":"+33612345678"}"#).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], 131026);
    assert_eq!(body["error"]["retryable"], false);
    let token = body["flowToken"].as_str().unwrap();
    assert_eq!(
        env.store().find_token(token).unwrap().unwrap().state,
        flowctl::store::SendState::Failed
    );
}

/// Stores a completed response for a new token.
fn completed(env: &Env, phone: &str, campaign: &str, at: &str, answers: Value) -> String {
    use flowctl::store::{NewToken, Origin, SendState};
    let mut store = env.store();
    let token = flowctl::token::FlowToken::generate();
    store
        .insert_token(
            &NewToken {
                token: token.clone(),
                phone: flowctl::phone::Phone::parse(phone, None).unwrap(),
                customer_name: Some("Client".into()),
                campaign: campaign.into(),
                origin: Origin::Send,
                initial_data: None,
                ttl: DAY,
            },
            SendState::Sent,
        )
        .unwrap()
        .then_some(())
        .expect("token issued");
    let answers: Map<String, Value> = answers.as_object().cloned().unwrap_or_default();
    store
        .complete(&CompletionInput {
            token: token.as_str(),
            answers: &answers,
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: at,
        })
        .unwrap();
    token.as_str().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_listed_newest_first_with_phone_numbers() {
    let env = Env::new();
    completed(
        &env,
        "+33612345678",
        "a",
        "2026-01-01T10:00:00.000Z",
        json!({"q": "old"}),
    );
    let newest = completed(
        &env,
        "+212610059159",
        "b",
        "2026-01-02T10:00:00.000Z",
        json!({"q": "new"}),
    );
    let server = api_server(&env, None);
    let (status, body) = responses(&server, "").await;
    assert_eq!(status, 200);
    let list = body["responses"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["flow_token"], newest.as_str());
    assert_eq!(list[0]["phone_number"], "+212610059159");
    assert_eq!(list[0]["customer_name"], "Client");
    assert_eq!(list[0]["campaign"], "b");
    assert_eq!(list[0]["source"], "endpoint");
    assert_eq!(list[0]["completed_at"], "2026-01-02T10:00:00.000Z");
    assert_eq!(list[0]["answers"], json!({"q": "new"}));
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_page_with_cursor_limit_since_and_campaign() {
    let env = Env::new();
    let mut tokens = Vec::new();
    for day in 1..=5 {
        let campaign = if day % 2 == 0 { "even" } else { "odd" };
        tokens.push(completed(
            &env,
            "+33612345678",
            campaign,
            &format!("2026-01-0{day}T00:00:00.000Z"),
            json!({"day": day}),
        ));
    }
    let server = api_server(&env, None);
    // Pages of two, newest first, no gap, no repeat.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let (status, body) = responses(&server, &query).await;
        assert_eq!(status, 200, "{body}");
        let page = body["responses"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|r| r["answers"]["day"].as_i64().unwrap()));
        match body["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![5, 4, 3, 2, 1]);
    let (_, body) = responses(&server, "?since=2026-01-03").await;
    let days: Vec<i64> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["answers"]["day"].as_i64().unwrap())
        .collect();
    assert_eq!(days, vec![5, 4, 3]);
    let (_, body) = responses(&server, "?campaign=even").await;
    assert_eq!(body["responses"].as_array().unwrap().len(), 2);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?since=someday",
        "?cursor=%21%21",
    ] {
        let (status, body) = responses(&server, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string());
    }
}
