//! The whole loop on one machine: `sandbox` playing the Graph API and the recipients,
//! `serve`, `bulk`; every completion must end up joined to the right phone.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn every_completion_of_a_bulk_run_is_joined_to_the_right_phone() {
    let env = Env::new();
    let pub_key = env.write(
        "public.pem",
        vectors()["keys"]["public_key_pem"].as_str().unwrap(),
    );
    let flow = survey_flow();
    let server = env.serve_with_env(
        &[("WEBHOOK_VERIFY_TOKEN", VERIFY_TOKEN)],
        &["--flow-json", flow.to_str().unwrap()],
    );
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--complete-via",
            "both",
            "--user-delay-ms",
            "100",
        ])
        .arg("--endpoint")
        .arg(format!("{}/api/flow", server.url))
        .arg("--webhook")
        .arg(format!("{}/api/message-webhook", server.url))
        .arg("--public-key")
        .arg(&pub_key)
        .arg("--flow-json")
        .arg(&flow);
    let sandbox = Running::start(sb);

    let mut csv = String::from("phone_number,customer_name,city\n");
    let mut expected: HashMap<String, String> = HashMap::new();
    for i in 0..20 {
        let phone = format!("+2126100{i:05}");
        let name = format!("Client {i}");
        csv.push_str(&format!("{phone},{name},Rabat\n"));
        expected.insert(phone, name);
    }
    let file = env.write("loop.csv", &csv);
    let mut bulk = env.graph_cmd(&sandbox.url);
    bulk.args(["bulk", "--rate", "50"]).arg(&file);
    let out = run(bulk, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let stats = wait_for_people(&sandbox.url, 20);
    assert_eq!(stats["completed"], 20, "{stats}");
    env.wait_inbox_drained();

    let store = env.store();
    let tokens = store.tokens_of_campaign("loop").unwrap();
    assert_eq!(tokens.len(), 20);
    for t in &tokens {
        let responses = store.responses_for_token(t.token.as_str()).unwrap();
        // The endpoint's answer is primary; the webhook's nfm_reply of the same completion
        // is kept as its duplicate, never as a second response.
        let primary: Vec<_> = responses
            .iter()
            .filter(|r| r.duplicate_of.is_none())
            .collect();
        assert_eq!(primary.len(), 1, "{t:?}: {responses:?}");
        let r = primary[0];
        assert_eq!(r.phone.as_deref(), Some(t.phone.e164()));
        assert_eq!(r.customer_name.as_ref(), expected.get(t.phone.e164()));
        assert_eq!(r.source, "endpoint");
        assert!(
            r.answers.contains_key("q1_accueil") && r.answers.contains_key("commentaire"),
            "{r:?}"
        );
        assert!(!r.sender_mismatch);
        assert_eq!(t.state, flowctl::store::SendState::Sent);
        let now = store.find_token(t.token.as_str()).unwrap().unwrap();
        assert_eq!(
            now.delivery.as_deref(),
            Some("read"),
            "statuses reached the token"
        );
        assert!(now.completed_at.is_some());
    }
    let funnel = store.funnel(Some("loop")).unwrap();
    let loop_c = &funnel.campaigns[0];
    assert_eq!(
        (loop_c.issued, loop_c.sent, loop_c.read, loop_c.completed),
        (20, 20, 20, 20)
    );
}

#[test]
fn the_demo_runs_to_completion() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["demo", "--dir"]).arg(env.path("demo"));
    let started = Instant::now();
    let out = run(c, Duration::from_secs(90));
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "stdout: {o}\nstderr: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the demo takes under a minute"
    );
    assert!(o.contains("== flowctl stats =="), "{o}");
    assert!(
        o.contains("flow_token,phone_number,customer_name,campaign,source,completed_at"),
        "{o}"
    );
    // Answers joined to the sample's phones.
    assert!(o.contains("+212610059159") && o.contains("Ahmed"), "{o}");
    assert!(e.contains("4 people answered"), "{e}");
}
