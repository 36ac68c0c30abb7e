//! Behaviour tests over a real sandbox on 127.0.0.1:0, driven with reqwest.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

const PUBLIC_KEY_2048: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxXl4UBjGAwzwCtVUnUcm
CL+bX376t2CpbZauER9JrlI6oY34QUTRyoaTxrVFcwtKdF8rXkki8WgHiwBBpqib
tQLJ1ysfk6d2pcHWRzQp+AoviTDDhUXknVw3KjFPQgr8wNMmWbs2b5G1NdeoeVRp
bn1vYi25+CUbSfnrX6ziquh5jiE2tnlRg4l6TwijbjoPkSIMTMXwttITkU7FvINu
dS9+DOuzGqWeOlxxvF9MoVgUkFTB1wHjsyr3c2bkegkHJ2cD31w1jcxHhoSiv4zQ
K8G1ms8QsScLTD04NGeElrx0/Ni0TAM3aiqA4xXheruqkDXCJ+Wyc5cqkdLx94ik
jQIDAQAB
-----END PUBLIC KEY-----
";

const PUBLIC_KEY_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDWKBsi/b7LILh0wwRGne+2Vpvr
3Vp/Lprb2Xj6zdWIrqHR6nFFTOJlotp/0nNrMDY1+ESul4f6LOUTrrlqznWUqKAY
uWOiQzUe1yeO1X4q7/jvp+VWG0vaM6bEaPIkIAT/vTJgp5Fre/RJbT5Mq2qVDD90
TD7ER1UXET5C0a6SzwIDAQAB
-----END PUBLIC KEY-----
";

const TO: &str = "212610059159";

fn interactive(to: &str, token: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "interactive",
        "interactive": {
            "type": "flow",
            "body": { "text": "Deux minutes pour nous répondre ?" },
            "action": { "name": "flow", "parameters": {
                "flow_message_version": "3",
                "flow_token": token,
                "flow_id": "1234567890123456",
                "flow_cta": "Répondre",
                "flow_action": "data_exchange"
            } }
        }
    })
}

fn template(to: &str, token: Option<&str>) -> Value {
    let mut action = json!({ "flow_action_data": { "title": "Votre avis" } });
    if let Some(t) = token {
        action["flow_token"] = json!(t);
    }
    json!({
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {
            "name": "enquete_satisfaction_v1",
            "language": { "code": "fr" },
            "components": [
                { "type": "body", "parameters": [{ "type": "text", "text": "Camille" }] },
                { "type": "button", "sub_type": "flow", "index": "0",
                  "parameters": [{ "type": "action", "action": action }] }
            ]
        }
    })
}

async fn sandbox(failures: &[&str]) -> SandboxHandle {
    start(SandboxOptions {
        failures: failures.iter().map(|f| f.parse().unwrap()).collect(),
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

fn messages_url(sb: &SandboxHandle) -> String {
    format!("http://{}/v21.0/106540352242922/messages", sb.addr())
}

async fn send(sb: &SandboxHandle, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(messages_url(sb))
        .bearer_auth("test-token")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn valid_interactive_message_gets_a_wamid_and_is_recorded() {
    let sb = sandbox(&[]).await;
    let (status, body) = send(&sb, &interactive(TO, "flow_tok1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["contacts"][0]["input"], TO);
    assert_eq!(body["contacts"][0]["wa_id"], TO);
    assert_eq!(body["messages"][0]["message_status"], "accepted");
    let wamid = body["messages"][0]["id"].as_str().unwrap();
    assert!(wamid.starts_with("wamid."));

    let recs = sb.requests();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].wamid.as_deref(), Some(wamid));
    assert_eq!(recs[0].to.as_deref(), Some(TO));
    assert_eq!(recs[0].flow_token.as_deref(), Some("flow_tok1"));
    assert_eq!(recs[0].phone_number_id.as_deref(), Some("106540352242922"));
    assert_eq!(recs[0].status, Some(200));

    let over_http: Vec<RecordedRequest> =
        reqwest::get(format!("http://{}/_sandbox/requests", sb.addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(over_http, recs);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn wamids_are_unique_across_200_requests() {
    let sb = sandbox(&[]).await;
    let client = reqwest::Client::new();
    let url = messages_url(&sb);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let body: Value = client
                .post(url)
                .bearer_auth("t")
                .json(&interactive(TO, &format!("flow_{i}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["messages"][0]["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 200);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_messages_get_400_naming_the_field() {
    let sb = sandbox(&[]).await;

    let mut m = interactive(TO, "t");
    m["interactive"]["action"]["parameters"]
        .as_object_mut()
        .unwrap()
        .remove("flow_message_version");
    let (status, body) = send(&sb, &m).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 131008);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("interactive.action.parameters.flow_message_version"));

    let mut m = interactive(TO, "t");
    m["interactive"]["action"]["parameters"]["flow_action_payload"] = json!({ "screen": "Q1" });
    let (status, body) = send(&sb, &m).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 100);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("interactive.action.parameters.flow_action_payload"));

    let (status, body) = send(&sb, &interactive("+212610059159", "t")).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("to must contain digits only"));
    assert_eq!(body["error"]["type"], "OAuthException");

    let resp = reqwest::Client::new()
        .post(messages_url(&sb))
        .bearer_auth("t")
        .body("not json {")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 100);

    let recs = sb.requests();
    assert_eq!(recs.len(), 4);
    assert!(recs
        .iter()
        .all(|r| r.status == Some(400) && r.wamid.is_none()));
    assert_eq!(recs[3].body, json!("not json {"));
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_bearer_is_401_code_190() {
    let sb = sandbox(&[]).await;
    for auth in [None, Some("Bearer "), Some("Basic abc")] {
        let mut req = reqwest::Client::new()
            .post(messages_url(&sb))
            .json(&interactive(TO, "t"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], 190);
    }
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn failure_rule_answers_the_graph_envelope() {
    let sb = sandbox(&["+212610059159=131026"]).await;
    let (status, body) = send(&sb, &interactive(TO, "t")).await;
    assert_eq!(status, 400);
    let e = &body["error"];
    assert_eq!(e["code"], 131026);
    assert_eq!(e["message"], "(#131026) Message undeliverable");
    assert_eq!(e["type"], "OAuthException");
    assert_eq!(e["error_data"]["messaging_product"], "whatsapp");
    assert!(e["error_data"]["details"].is_string());
    assert!(e["fbtrace_id"].is_string());
    assert_eq!(sb.requests()[0].error_code, Some(131026));
    // Another recipient is unaffected.
    assert_eq!(send(&sb, &interactive("33612345678", "t")).await.0, 200);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn limited_rule_fails_n_times_then_succeeds() {
    let sb = sandbox(&["212610059159=130429x2"]).await;
    for _ in 0..2 {
        let (status, body) = send(&sb, &interactive(TO, "t")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], 130429);
    }
    let (status, body) = send(&sb, &interactive(TO, "t")).await;
    assert_eq!(status, 200, "{body}");
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn wildcard_http503_is_plain_text() {
    let sb = sandbox(&["*=http503"]).await;
    let resp = reqwest::Client::new()
        .post(messages_url(&sb))
        .bearer_auth("t")
        .json(&interactive("33612345678", "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn hang_never_answers_and_reset_closes() {
    let sb = sandbox(&["212610059159=hang", "33612345678=reset"]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .post(messages_url(&sb))
        .bearer_auth("t")
        .json(&interactive(TO, "t"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));

    let err = client
        .post(messages_url(&sb))
        .bearer_auth("t")
        .json(&interactive("33612345678", "t"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err}");

    let faults: Vec<_> = sb
        .requests()
        .into_iter()
        .map(|r| (r.status, r.fault))
        .collect();
    assert_eq!(
        faults,
        [(None, Some("hang".into())), (None, Some("reset".into()))]
    );
    // Shutdown must not wait for the hanging request forever.
    tokio::time::timeout(Duration::from_secs(3), sb.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn latency_is_applied() {
    let sb = start(SandboxOptions {
        latency: Duration::from_millis(300),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let req = client.post(messages_url(&sb)).bearer_auth("t").json(&body);
        async move {
            let started = Instant::now();
            let status = req.send().await.unwrap().status().as_u16();
            (status, started.elapsed())
        }
    };
    // Two concurrent requests: both delayed, neither waiting for the other.
    let started = Instant::now();
    let (a, b) = tokio::join!(post(interactive(TO, "a")), post(interactive(TO, "b")));
    let elapsed = started.elapsed();
    assert_eq!((a.0, b.0), (200, 200));
    assert!(a.1 >= Duration::from_millis(300), "{a:?}");
    assert!(b.1 >= Duration::from_millis(300), "{b:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn key_upload_then_get_returns_the_same_pem() {
    let sb = sandbox(&[]).await;
    let url = format!(
        "http://{}/v21.0/106540352242922/whatsapp_business_encryption",
        sb.addr()
    );
    let client = reqwest::Client::new();

    let none: Value = client
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!({ "data": [] }));

    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("business_public_key", PUBLIC_KEY_2048)
        .finish();
    let resp = client
        .post(&url)
        .bearer_auth("t")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "success": true })
    );

    let got: Value = client
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"][0]["business_public_key"], PUBLIC_KEY_2048);
    assert_eq!(
        got["data"][0]["business_public_key_signature_status"],
        "VALID"
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_key_is_400_code_100() {
    let sb = sandbox(&[]).await;
    let url = format!(
        "http://{}/v21.0/106540352242922/whatsapp_business_encryption",
        sb.addr()
    );
    for key in [PUBLIC_KEY_1024, "not a key", ""] {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("business_public_key", key)
            .finish();
        let resp = reqwest::Client::new()
            .post(&url)
            .bearer_auth("t")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], 100);
        assert_eq!(
            body["error"]["message"],
            "(#100) Invalid parameter: business_public_key must be a valid 2048-bit RSA public key in PEM format"
        );
    }
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn record_file_has_one_line_per_request_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.ndjson");
    let sb = start(SandboxOptions {
        record: Some(path.clone()),
        failures: vec!["33612345678=131026".parse().unwrap()],
        probe: Some(Arc::new(|body: &Value| json!({ "seen": body["to"] }))),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    for i in 0..20 {
        send(&sb, &interactive(TO, &format!("flow_{i}"))).await;
    }
    send(&sb, &interactive("33612345678", "flow_x")).await;
    let resp = reqwest::get(format!("http://{}/v21.0/1/nope", sb.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], 100);
    sb.shutdown().await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 22);
    assert_eq!(lines[0]["flow_token"], "flow_0");
    assert_eq!(lines[0]["status"], 200);
    assert!(lines[0]["wamid"].as_str().unwrap().starts_with("wamid."));
    assert_eq!(lines[0]["probe"], json!({ "seen": TO }));
    assert_eq!(lines[0]["method"], "POST");
    assert!(lines[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[20]["error_code"], 131026);
    assert_eq!(lines[20]["wamid"], Value::Null);
    assert_eq!(lines[21]["status"], 404);
}

#[tokio::test]
async fn template_messages_are_validated() {
    let sb = sandbox(&[]).await;
    let (status, body) = send(&sb, &template(TO, Some("flow_t1"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sb.requests()[0].flow_token.as_deref(), Some("flow_t1"));

    let (status, body) = send(&sb, &template(TO, None)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 131008);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("template.components[1].parameters[0].action.flow_token"));

    let mut m = template(TO, Some("t"));
    m["template"]["components"][1]["index"] = json!(0);
    let (status, body) = send(&sb, &m).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("template.components[1].index"));
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let sb = sandbox(&[]).await;
    let ok = reqwest::get(format!("http://{}/healthz", sb.addr()))
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let resp = reqwest::get(format!("http://{}/whatever", sb.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 100);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Unsupported request"));
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_outage_covers_every_graph_route_until_cleared() {
    let sb = sandbox(&[]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", sb.addr());
    let set = |fault: Value| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let resp = client
                .post(format!("{base}/_sandbox/outage"))
                .json(&json!({ "fault": fault }))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let profile = || {
        client
            .get(format!("{base}/v21.0/106540352242922?fields=id"))
            .bearer_auth("t")
            .send()
    };
    // Up: the profile read answers, a message is accepted.
    assert_eq!(profile().await.unwrap().status().as_u16(), 200);
    assert_eq!(send(&sb, &interactive(TO, "t1")).await.0, 200);

    assert_eq!(
        set(json!("http503")).await,
        (200, json!({"fault": "http503"}))
    );
    assert_eq!(send(&sb, &interactive(TO, "t2")).await.0, 503);
    assert_eq!(profile().await.unwrap().status().as_u16(), 503);

    assert_eq!(set(json!("reset")).await.0, 200);
    assert!(
        profile().await.is_err(),
        "a reset outage drops the connection"
    );
    let dropped = client
        .post(messages_url(&sb))
        .bearer_auth("t")
        .json(&interactive(TO, "t3"))
        .send()
        .await;
    assert!(dropped.is_err());

    assert_eq!(set(json!("nonsense")).await.0, 400);
    assert_eq!(set(Value::Null).await, (200, json!({"fault": null})));
    assert_eq!(send(&sb, &interactive(TO, "t4")).await.0, 200);

    // The in-process handle does the same.
    sb.set_outage(Some(Fault::Http503));
    assert_eq!(send(&sb, &interactive(TO, "t5")).await.0, 503);
    sb.set_outage(None);

    // Only t1 and t4 were accepted; the outage's requests are recorded with their fault.
    let accepted: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(200) && r.wamid.is_some())
        .filter_map(|r| r.flow_token)
        .collect();
    assert_eq!(accepted, ["t1", "t4"]);
    let faults: Vec<_> = sb.requests().into_iter().filter_map(|r| r.fault).collect();
    assert_eq!(faults, ["http503", "http503", "reset", "reset", "http503"]);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_graph_client_probe_tells_an_outage_from_an_answer() {
    let sb = sandbox(&[]).await;
    let graph = crate::graph::GraphClient::new(crate::graph::GraphSettings {
        base_url: format!("http://{}", sb.addr()),
        version: "v21.0".into(),
        phone_number_id: "106540352242922".into(),
        access_token: crate::secret::Secret::new("t"),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    graph.probe().await.unwrap();
    sb.set_outage(Some(Fault::Http503));
    assert!(graph.probe().await.unwrap_err().is_outage());
    sb.set_outage(Some(Fault::Reset));
    assert!(graph.probe().await.is_err());
    // An error envelope is an answer: the API is up.
    sb.set_outage(Some(Fault::GraphError(100)));
    graph.probe().await.unwrap();
    sb.set_outage(None);
    graph.probe().await.unwrap();
    sb.shutdown().await.unwrap();
}

/// A webhook receiver on 127.0.0.1:0 that keeps what it is posted, with the moment it came, and
/// answers after `hold` (so that an awaited post is measurably before the send's answer).
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Value)>>>,
}

async fn receiver(hold: Duration) -> Receiver {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/message-webhook",
        listener.local_addr().unwrap()
    );
    let got: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Value)>>> = Default::default();
    let kept = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let kept = kept.clone();
                async move {
                    use http_body_util::BodyExt;
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    kept.lock().unwrap().push((Instant::now(), v));
                    tokio::time::sleep(hold).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Receiver { url, got }
}

impl Receiver {
    /// The statuses received so far.
    fn statuses(&self) -> Vec<(Instant, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, v)| {
                v.pointer("/entry/0/changes/0/value/statuses/0")
                    .map(|s| (*at, s.clone()))
            })
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<(Instant, Value)> {
        let started = Instant::now();
        while self.statuses().len() < n && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.statuses()
    }
}

async fn sandbox_with_webhook(failures: &[&str], webhook: &Receiver) -> SandboxHandle {
    start(SandboxOptions {
        failures: failures.iter().map(|f| f.parse().unwrap()).collect(),
        webhook: Some(webhook.url.clone()),
        app_secret: Some("sandbox-app-secret".into()),
        status_delay: Duration::from_millis(50),
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_status_failure_is_accepted_then_reported_failed_on_the_webhook() {
    let hook = receiver(Duration::ZERO).await;
    let sb = sandbox_with_webhook(&["+212610059159=131047@status"], &hook).await;
    let (status, body) = send(&sb, &interactive(TO, "flow_late")).await;
    assert_eq!(status, 200, "Meta accepts the message first: {body}");
    let wamid = body["messages"][0]["id"].as_str().unwrap().to_owned();
    let statuses = hook.wait_for(1).await;
    assert_eq!(statuses.len(), 1, "one failed status, nothing else");
    let s = &statuses[0].1;
    assert_eq!(s["id"], wamid);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["recipient_id"], TO);
    assert_eq!(s["errors"][0]["code"], 131047);
    assert_eq!(s["errors"][0]["title"], "Re-engagement message");
    let recs = sb.requests();
    assert_eq!(recs[0].status, Some(200));
    assert_eq!(recs[0].error_code, Some(131047));
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_early_status_overtakes_the_send_answer() {
    let hold = Duration::from_millis(300);
    let hook = receiver(hold).await;
    let sb = sandbox_with_webhook(&["*=131026@early"], &hook).await;
    let sent_at = Instant::now();
    let (status, body) = send(&sb, &interactive(TO, "flow_early")).await;
    let answered = Instant::now();
    assert_eq!(status, 200, "{body}");
    let statuses = hook.statuses();
    assert_eq!(
        statuses.len(),
        1,
        "the status was already there when the answer came"
    );
    assert!(statuses[0].0 < answered);
    assert!(
        answered - sent_at >= hold,
        "the answer waited for the webhook's"
    );
    assert_eq!(statuses[0].1["errors"][0]["code"], 131026);
    assert_eq!(statuses[0].1["id"], body["messages"][0]["id"]);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn brazilian_and_mexican_recipients_get_a_different_wa_id() {
    let hook = receiver(Duration::ZERO).await;
    let sb = sandbox_with_webhook(&["*=131026@status"], &hook).await;
    for (to, wa_id) in [
        ("5511987654321", "551187654321"),
        ("525512345678", "5215512345678"),
    ] {
        let (status, body) = send(&sb, &interactive(to, "flow_br")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["contacts"][0]["input"], to);
        assert_eq!(body["contacts"][0]["wa_id"], wa_id);
    }
    let statuses = hook.wait_for(2).await;
    let ids: HashSet<&str> = statuses
        .iter()
        .filter_map(|(_, s)| s["recipient_id"].as_str())
        .collect();
    assert_eq!(ids, HashSet::from(["551187654321", "5215512345678"]));
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_throttled_answer_says_when_access_returns() {
    let sb = sandbox(&["*=80007@regain=2x1"]).await;
    let resp = reqwest::Client::new()
        .post(messages_url(&sb))
        .bearer_auth("t")
        .json(&interactive(TO, "flow_buc"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let usage: Value = serde_json::from_str(
        resp.headers()
            .get("x-business-use-case-usage")
            .expect("the business-use-case header")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let entry = usage.as_object().unwrap().values().next().unwrap();
    assert_eq!(entry[0]["estimated_time_to_regain_access"], 2);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 80007);
    // x1: the next one goes through.
    assert_eq!(send(&sb, &interactive(TO, "flow_buc2")).await.0, 200);
    sb.shutdown().await.unwrap();
}
