//! End-to-end tests of `POST /api/flow` over the real binary, acting as the WhatsApp client.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn ping_answers_active() {
    let env = Env::new();
    let server = env.serve(&[]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "ping"}))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json, Some(json!({"data": {"status": "active"}})));
}

#[tokio::test]
async fn init_answers_the_first_screen_with_the_recipients_data() {
    let env = Env::new();
    let token = issue_token(
        &env.db(),
        "+212610059159",
        Some("Ahmed"),
        Some(json!({"city": "Rabat"})),
        DAY,
    );
    let flow = survey_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
        .await;
    assert_eq!(a.status, 200, "{}", server.stderr());
    let j = a.json.unwrap();
    assert_eq!(j["screen"], "ACCUEIL_SERVICE");
    assert_eq!(j["data"]["customer_name"], "Ahmed");
    // The screen declares only the name: nothing else is sent.
    assert_eq!(j["data"].as_object().unwrap().len(), 1, "{j}");
}

/// `__example__` in the Flow JSON is Meta's preview of a screen, never data: a recipient
/// without a name is greeted with an empty name, not the example's "Ahmed".
#[tokio::test]
async fn a_recipient_without_a_value_never_gets_the_flow_jsons_example() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let flow = survey_flow();
    let example: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&flow).unwrap()).unwrap();
    assert_eq!(
        example["screens"][0]["data"]["customer_name"]["__example__"], "Ahmed",
        "the example Flow declares an example name"
    );
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
        .await;
    assert_eq!(a.status, 200, "{}", server.stderr());
    let j = a.json.unwrap();
    assert_eq!(j["data"]["customer_name"], "", "{j}");
}

#[tokio::test]
async fn a_multi_screen_survey_completes_joined_to_the_phone() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Ahmed"), None, DAY);
    let flow = survey_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let c = FlowClient::new(&server.url);
    let step = |screen: &str, data: serde_json::Value| json!({"version": "3.0", "action": "data_exchange", "screen": screen, "data": data, "flow_token": token});
    let a = c
        .call(&step(
            "ACCUEIL_SERVICE",
            json!({"q1_accueil": "5_etoiles", "q2_delai": "4_etoiles"}),
        ))
        .await;
    assert_eq!(a.json.unwrap()["screen"], "QUALITE_PRIX");
    let a = c
        .call(&step(
            "QUALITE_PRIX",
            json!({"q3_qualite": "5_etoiles", "q4_prix": "3_etoiles"}),
        ))
        .await;
    assert_eq!(a.json.unwrap()["screen"], "RECOMMANDATION");
    // Back from the last screen shows the previous one.
    let back = c.call(&json!({"version": "3.0", "action": "BACK", "screen": "RECOMMANDATION", "flow_token": token})).await;
    assert_eq!(back.json.unwrap()["screen"], "QUALITE_PRIX");
    let a = c
        .call(&step(
            "RECOMMANDATION",
            json!({"q5_recommandation": "5_etoiles", "commentaire": "Très bien ⭐"}),
        ))
        .await;
    assert_eq!(a.status, 200);
    let j = a.json.unwrap();
    assert_eq!(j["screen"], "SUCCESS");
    let params = &j["data"]["extension_message_response"]["params"];
    assert_eq!(params["flow_token"], token.as_str());
    // Only the token by default: these params reach every app subscribed to the account.
    assert_eq!(params.as_object().unwrap().len(), 1, "{params}");

    let store = flowctl::store::Store::open(env.db()).unwrap();
    let responses = store.responses_for_token(&token).unwrap();
    assert_eq!(responses.len(), 1);
    let r = &responses[0];
    assert_eq!(r.phone.as_deref(), Some("+212610059159"));
    assert_eq!(r.customer_name.as_deref(), Some("Ahmed"));
    assert_eq!(r.source, "endpoint");
    assert_eq!(r.answers["q1_accueil"], "5_etoiles");
    assert_eq!(r.answers["q4_prix"], "3_etoiles");
    assert_eq!(r.answers["commentaire"], "Très bien ⭐");
    assert!(store
        .find_token(&token)
        .unwrap()
        .unwrap()
        .completed_at
        .is_some());

    // A new request for the completed token is 427.
    let again = c
        .call(&step("ACCUEIL_SERVICE", json!({"q1_accueil": "1_etoile"})))
        .await;
    assert_eq!(again.status, 427);
    assert!(again.json.unwrap()["error_msg"].is_string());
}

#[tokio::test]
async fn without_flow_json_a_data_exchange_completes() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = env.serve(&[]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "data_exchange", "screen": "Q1", "data": {"q1": "oui"}, "flow_token": token}))
        .await;
    assert_eq!(a.json.unwrap()["screen"], "SUCCESS");
}

/// The client lost the `SUCCESS` answer and submits the last screen again: it gets the same
/// `SUCCESS` (200), not 427 (which would disable the button and say the form failed).
#[tokio::test]
async fn a_repeated_final_submit_gets_the_same_success_and_stores_nothing_new() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Ahmed"), None, DAY);
    let flow = survey_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let c = FlowClient::new(&server.url);
    let last = json!({"version": "3.0", "action": "data_exchange", "screen": "RECOMMANDATION",
        "data": {"q5_recommandation": "5_etoiles", "commentaire": "RAS"}, "flow_token": token});
    let first = c.call(&last).await;
    assert_eq!(first.status, 200);
    let again = c.call(&last).await;
    assert_eq!(again.status, 200, "the final submit again is not 427");
    assert_eq!(again.json, first.json, "the same SUCCESS");
    assert_eq!(env.store().responses_for_token(&token).unwrap().len(), 1);
    // Opening the finished form again, or a screen in the middle, is still 427.
    let init = c
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
        .await;
    assert_eq!(init.status, 427);
    let middle = c
        .call(
            &json!({"version": "3.0", "action": "data_exchange", "screen": "ACCUEIL_SERVICE",
            "data": {"q1_accueil": "1_etoile"}, "flow_token": token}),
        )
        .await;
    assert_eq!(middle.status, 427);
}

#[tokio::test]
async fn the_answers_ride_in_the_success_params_only_when_asked() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = env.serve(&["--success-answers"]);
    let c = FlowClient::new(&server.url);
    let submit = json!({"version": "3.0", "action": "data_exchange", "screen": "Q1", "data": {"q1": "oui"}, "flow_token": token});
    let a = c.call(&submit).await;
    let params = a.json.unwrap()["data"]["extension_message_response"]["params"].clone();
    assert_eq!(params, json!({"flow_token": token, "q1": "oui"}));
    // The replayed SUCCESS carries the stored answers too.
    let again = c.call(&submit).await;
    assert_eq!(
        again.json.unwrap()["data"]["extension_message_response"]["params"],
        params
    );
}

#[tokio::test]
async fn a_replayed_completion_creates_nothing_new() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = env.serve(&[]);
    let c = FlowClient::new(&server.url);
    let (body, key) = c.encrypt(&json!({"version": "3.0", "action": "data_exchange", "screen": "Q1", "data": {"q1": "oui"}, "flow_token": token}));
    let first = c.send_encrypted(body.clone(), &key).await;
    assert_eq!(first.status, 200);
    let replay = c.send_encrypted(body, &key).await;
    assert!(
        replay.status == 427 || replay.status == 200,
        "{}",
        replay.status
    );
    let store = flowctl::store::Store::open(env.db()).unwrap();
    assert_eq!(store.responses_for_token(&token).unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_and_expired_tokens_get_427() {
    let env = Env::new();
    let expired = issue_token(
        &env.db(),
        "+33612345678",
        None,
        None,
        Duration::from_secs(0),
    );
    let server = env.serve(&[]);
    let c = FlowClient::new(&server.url);
    for token in ["flow_unknown", expired.as_str()] {
        let a = c
            .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
            .await;
        assert_eq!(a.status, 427, "{token}");
        assert!(
            a.json.unwrap()["error_msg"].is_string(),
            "427 body is encrypted JSON"
        );
    }
}

#[tokio::test]
async fn error_notifications_are_acknowledged_and_stored() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = env.serve(&[]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "data_exchange", "screen": "Q3", "flow_token": token,
                      "data": {"error": "payload-schema-error", "error_message": "Property 'x' expected number"}}))
        .await;
    assert_eq!(a.json, Some(json!({"data": {"acknowledged": true}})));
    let store = flowctl::store::Store::open(env.db()).unwrap();
    let events = store.events("error_notification").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.as_deref(), Some(token.as_str()));
    assert_eq!(events[0].1["data"]["error"], "payload-schema-error");
    assert!(
        store.responses_for_token(&token).unwrap().is_empty(),
        "not a completion"
    );
}

#[tokio::test]
async fn bad_requests_get_their_documented_status() {
    let env = Env::new();
    let server = env.serve(&["--max-body", "4096"]);
    let c = FlowClient::new(&server.url);
    let sign = |b: &str| Some(flowctl::crypto::sign(APP_SECRET.as_bytes(), b.as_bytes()));

    // 432: missing, wrong, and signed with another secret.
    let (body, _) = c.encrypt(&json!({"version": "3.0", "action": "ping"}));
    assert_eq!(c.post_raw(body.clone(), None).await.status().as_u16(), 432);
    assert_eq!(
        c.post_raw(body.clone(), Some("sha256=00".into()))
            .await
            .status()
            .as_u16(),
        432
    );
    let other = flowctl::crypto::sign(b"another-secret", body.as_bytes());
    assert_eq!(
        c.post_raw(body.clone(), Some(other))
            .await
            .status()
            .as_u16(),
        432
    );

    // 421: tampered ciphertext, wrong key.
    let mut env_json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = env_json["encrypted_flow_data"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = if data.starts_with('A') {
        data.replacen('A', "B", 1)
    } else {
        format!("A{}", &data[1..])
    };
    env_json["encrypted_flow_data"] = json!(flipped);
    let tampered = env_json.to_string();
    assert_eq!(
        c.post_raw(tampered.clone(), sign(&tampered))
            .await
            .status()
            .as_u16(),
        421
    );
    let v = vectors();
    let wrong = v["negative_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "wrong_rsa_key")
        .unwrap();
    let wrong_body = wrong["request_body_raw"].as_str().unwrap();
    assert_eq!(
        c.post_raw(wrong_body.to_string(), sign(wrong_body))
            .await
            .status()
            .as_u16(),
        421
    );

    // 400: not the envelope; decrypts to something that is not a Flow request.
    let junk = r#"{"hello":"world"}"#;
    assert_eq!(c.post_raw(junk, sign(junk)).await.status().as_u16(), 400);
    let (not_request, _) = c.encrypt(&json!(["not", "an", "object"]));
    assert_eq!(
        c.post_raw(not_request.clone(), sign(&not_request))
            .await
            .status()
            .as_u16(),
        400
    );

    // 413: over --max-body.
    let big = "x".repeat(5000);
    assert_eq!(
        c.post_raw(big.clone(), sign(&big)).await.status().as_u16(),
        413
    );

    // The server is still up.
    let a = c.call(&json!({"version": "3.0", "action": "ping"})).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn the_vectors_are_answered_as_expected_over_http() {
    // The vectors' requests are signed with their own app secret: run with it.
    let env = Env::new();
    let v = vectors();
    let key = env.key_file();
    let mut cmd = env.cmd();
    cmd.env("APP_SECRET", v["app_secret"].as_str().unwrap())
        .env("FLOW_SCREEN", DEFAULT_SCREEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(key);
    let server = Running::start(cmd);
    let http = reqwest::Client::new();
    let all = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["negative_cases"].as_array().unwrap());
    for case in all {
        let resp = http
            .post(format!("{}/api/flow", server.url))
            .header(
                "x-hub-signature-256",
                case["x_hub_signature_256"].as_str().unwrap(),
            )
            .body(case["request_body_raw"].as_str().unwrap().to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let id = case["id"].as_str().unwrap();
        match id {
            "ping" => assert_eq!(status, 200, "{id}"),
            // The vectors' tokens were never issued here: 427 (ping and error notifications excepted).
            "error_notification" => assert_eq!(status, 200, "{id}"),
            _ if case.get("expected_http_status").is_some() => {
                assert_eq!(
                    status,
                    case["expected_http_status"].as_u64().unwrap() as u16,
                    "{id}"
                )
            }
            _ => assert_eq!(status, 427, "{id}"),
        }
    }
}

#[tokio::test]
async fn refuses_to_start_without_app_secret_unless_allowed() {
    let env = Env::new();
    let key = env.key_file();
    let mut c = env.cmd();
    c.args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(&key);
    let out = run(c, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("APP_SECRET"), "{}", stderr(&out));

    let mut c = env.cmd();
    c.env("FLOW_SCREEN", DEFAULT_SCREEN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-unsigned",
            "--private-key-file",
        ])
        .arg(&key);
    let server = Running::start(c);
    let client = FlowClient::new(&server.url);
    let (body, key) = client.encrypt(&json!({"version": "3.0", "action": "ping"}));
    let resp = client.post_raw(body, None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let plain = flowctl::crypto::decrypt_response(&key, &resp.text().await.unwrap()).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&plain).unwrap(),
        json!({"data": {"status": "active"}})
    );
}

#[tokio::test]
async fn healthz_and_graceful_shutdown() {
    let env = Env::new();
    let mut server = env.serve(&[]);
    let r = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    server.signal("TERM");
    let status = server
        .wait(Duration::from_secs(10))
        .expect("serve stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn logs_one_line_per_request_without_secrets_or_answers() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+33612345678", None, None, DAY);
    let server = env.serve(&[]);
    let a = FlowClient::new(&server.url)
        .call(&json!({"version": "3.0", "action": "data_exchange", "screen": "Q", "data": {"secret_answer": "zebra-42"}, "flow_token": token}))
        .await;
    assert_eq!(a.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("request")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("status=200") && lines[0].contains("/api/flow"),
        "{log}"
    );
    for secret in ["zebra-42", APP_SECRET, token.as_str(), "BEGIN PRIVATE KEY"] {
        assert!(!log.contains(secret), "log leaks {secret}: {log}");
    }
}

#[test]
fn an_unusable_server_limit_is_refused_with_exit_2_naming_it() {
    let env = Env::new();
    let key = env.key_file();
    for (var, value) in [
        ("FLOWCTL_HEADER_TIMEOUT", "soon"),
        ("FLOWCTL_MAX_CONNECTIONS", "0"),
        ("FLOWCTL_BODY_MEMORY", "12"),
    ] {
        let mut c = env.cmd();
        c.env("APP_SECRET", support::APP_SECRET)
            .env(var, value)
            .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
            .arg(&key);
        let out = support::run(c, Duration::from_secs(20));
        let stderr = support::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(value),
            "{var}: {stderr}"
        );
    }
}

/// A connection whose first request is a data endpoint `POST` is served on the RSA lane (its
/// own threads, RSA in the request's task); any other stays on the main runtime, and a data
/// endpoint request arriving there later is still answered (through the RSA queue).
#[tokio::test]
async fn data_endpoint_connections_go_to_the_rsa_lane_and_others_stay() {
    let env = Env::new();
    let server = env.serve(&[]);
    let ping = json!({"version": "3.0", "action": "ping"});
    let lane = FlowClient::new(&server.url);
    for _ in 0..3 {
        let a = lane.call(&ping).await;
        assert_eq!(a.json, Some(json!({"data": {"status": "active"}})));
    }
    // One keep-alive connection: /healthz first, then the data endpoint on it.
    let mixed = FlowClient::new(&server.url);
    let health = mixed
        .http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let a = mixed.call(&ping).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json, Some(json!({"data": {"status": "active"}})));

    let metrics = mixed
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Each client kept its one connection: one on each lane.
    assert!(
        metrics.contains("flowctl_connections_total{lane=\"rsa\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowctl_connections_total{lane=\"main\"} 1\n"),
        "{metrics}"
    );
}

/// A `ping` touches no database (Meta's health check must not depend on it, and it is the
/// hottest path): with every flowctl table dropped under the running server, `ping` still
/// answers `active`, while an `INIT`, which looks its token up, can no longer be answered.
#[tokio::test]
async fn a_ping_answers_without_the_database() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Ahmed"), None, DAY);
    let flow = survey_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let client = FlowClient::new(&server.url);
    let init = json!({"version": "3.0", "action": "INIT", "flow_token": token});
    assert_eq!(client.call(&init).await.status, 200, "{}", server.stderr());

    let mut sql = env.sql();
    let tables = if support::db::on_postgres() {
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    };
    let tables: Vec<String> = sql
        .rows(tables, &[])
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Val::Text(name)) => Some(name),
            _ => None,
        })
        .collect();
    assert!(tables.iter().any(|t| t == "tokens"), "{tables:?}");
    let cascade = if support::db::on_postgres() {
        " CASCADE"
    } else {
        ""
    };
    for table in &tables {
        sql.execute(&format!("DROP TABLE IF EXISTS {table}{cascade}"), &[]);
    }

    for _ in 0..3 {
        let a = client
            .call(&json!({"version": "3.0", "action": "ping"}))
            .await;
        assert_eq!(a.status, 200, "{}", server.stderr());
        assert_eq!(a.json, Some(json!({"data": {"status": "active"}})));
    }
    let broken = client.call(&init).await;
    assert_eq!(
        broken.status, 500,
        "the token lookup no longer works: {:?}",
        broken.json
    );
}

/// A screen's answers are stored and the next screen answered while another process holds
/// the SQLite file's write lock for a moment (a `bulk` run writing its outcomes): the request
/// waits for the lock on the general path (the fast path on the RSA thread never waits).
#[tokio::test]
async fn a_screen_is_stored_while_another_process_holds_the_write_lock() {
    if skip_on_postgres("about SQLite's file lock") {
        return;
    }
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Ahmed"), None, DAY);
    let flow = survey_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let c = FlowClient::new(&server.url);

    let other = rusqlite::Connection::open(env.db_file()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let a = c
        .call(
            &json!({"version": "3.0", "action": "data_exchange", "screen": "ACCUEIL_SERVICE",
            "data": {"q1_accueil": "5_etoiles", "q2_delai": "4_etoiles"}, "flow_token": token}),
        )
        .await;
    holder.join().unwrap();
    assert_eq!(a.status, 200, "{}", server.stderr());
    assert_eq!(a.json.unwrap()["screen"], "QUALITE_PRIX");
    let stored = env
        .sql()
        .value(
            "SELECT flow_answers FROM tokens WHERE token = ?1",
            &[Val::Text(token)],
        )
        .text();
    assert!(stored.contains("\"q1_accueil\":\"5_etoiles\""), "{stored}");
}
