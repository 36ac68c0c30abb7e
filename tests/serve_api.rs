//! End-to-end tests of the CRM API of `serve` (`POST /api/send-flow`, `GET /api/responses`)
//! over the real binary.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowctl::store::CompletionInput;
use serde_json::{json, Map, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DAY: Duration = Duration::from_secs(86_400);

/// A stand-in Graph API that gives every request the same answer and counts requests.
struct FakeGraph {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl FakeGraph {
    async fn start(status: u16, body: Value) -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let body = body.to_string();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head, then Content-Length bytes of body.
                    loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        FakeGraph { url, hits }
    }
}

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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
async fn send_flow_rejects_bad_input_with_400_naming_the_problem() {
    let env = Env::new();
    let graph = FakeGraph::start(200, json!({})).await;
    let server = api_server(&env, Some(&graph.url));
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
    assert_eq!(graph.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn send_flow_sends_like_the_send_command() {
    let env = Env::new();
    let graph = FakeGraph::start(
        200,
        json!({"messaging_product": "whatsapp", "contacts": [{"input": "33612345678", "wa_id": "33612345678"}], "messages": [{"id": "wamid.API1"}]}),
    )
    .await;
    let server = api_server(&env, Some(&graph.url));
    let (status, body) = send_flow(
        &server,
        Some(API_KEY),
        r#"{"phoneNumber":"+33 6 12 34 56 78","customerName":"Renée","data":{"city":"Paris"},"campaign":"crm"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["messageId"], "wamid.API1");
    assert_eq!(body["phoneNumber"], "+33612345678");
    let token = body["flowToken"].as_str().unwrap();
    assert!(token.starts_with("flow_"));
    let record = env.store().find_token(token).unwrap().unwrap();
    assert_eq!(record.origin, "api");
    assert_eq!(record.campaign, "crm");
    assert_eq!(record.message_id.as_deref(), Some("wamid.API1"));
    assert_eq!(record.customer_name.as_deref(), Some("Renée"));
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

#[tokio::test]
async fn send_flow_answers_502_with_the_outcome_when_the_graph_api_refuses() {
    let env = Env::new();
    let graph = FakeGraph::start(
        400,
        json!({"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}}),
    )
    .await;
    let server = api_server(&env, Some(&graph.url));
    let (status, body) =
        send_flow(&server, Some(API_KEY), r#"{"phoneNumber":"+33612345678"}"#).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], 100);
    assert_eq!(body["error"]["retryable"], false);
    assert_eq!(graph.hits.load(Ordering::SeqCst), 1);
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

#[tokio::test]
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

#[tokio::test]
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
