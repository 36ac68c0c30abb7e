//! The whole loop on PostgreSQL, the way a larger business runs it: two `serve` replicas on one
//! database (the sandbox's people answer through the data endpoint of one and the webhook of
//! the other), two `bulk` workers started together on the same CSV. Every phone is messaged
//! exactly once, and every completion is joined to the right phone, once.
//!
//! Needs `FLOWCTL_TEST_POSTGRES`; without it the test says "skipped: no PostgreSQL".

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::store::{DbTarget, Store};
use serde_json::Value;
use support::*;

const PEOPLE: usize = 40;

/// A fresh database on the test server, or `None` after saying the test is skipped.
fn database(test: &str) -> Option<String> {
    let admin = match std::env::var("FLOWCTL_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!("{test}: skipped: no PostgreSQL (FLOWCTL_TEST_POSTGRES is not set)");
            return None;
        }
    };
    let name = format!(
        "loop_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let out = Command::new("psql")
        .arg(&admin)
        .args(["-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut url = url::Url::parse(&admin).expect("URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

#[test]
fn two_replicas_and_two_workers_join_every_completion_and_message_no_one_twice() {
    let Some(db) = database("full loop on PostgreSQL") else {
        return;
    };
    let env = Env::new();
    let pub_key = env.write(
        "public.pem",
        vectors()["keys"]["public_key_pem"].as_str().unwrap(),
    );
    let flow = survey_flow();
    let flow_arg = ["--flow-json", flow.to_str().unwrap()];
    let vars = [
        ("FLOWCTL_DB", db.as_str()),
        ("WEBHOOK_VERIFY_TOKEN", VERIFY_TOKEN),
    ];
    // The first replica creates the tables; the second finds them.
    let endpoint_replica = env.serve_with_env(&vars, &flow_arg);
    let webhook_replica = env.serve_with_env(&vars, &flow_arg);
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
        .arg(format!("{}/api/flow", endpoint_replica.url))
        .arg("--webhook")
        .arg(format!("{}/api/message-webhook", webhook_replica.url))
        .arg("--public-key")
        .arg(&pub_key)
        .arg("--flow-json")
        .arg(&flow);
    let sandbox = Running::start(sb);

    let mut csv = String::from("phone_number,customer_name\n");
    let mut expected: HashMap<String, String> = HashMap::new();
    for i in 0..PEOPLE {
        let phone = format!("+2126100{i:05}");
        let name = format!("Client {i}");
        csv.push_str(&format!("{phone},{name}\n"));
        expected.insert(phone, name);
    }
    let file = env.write("loop.csv", &csv);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut bulk = env.graph_cmd(&sandbox.url);
            bulk.env("FLOWCTL_DB", &db)
                .args(["bulk", "--rate", "20", "--json"])
                .arg(&file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start bulk")
        })
        .collect();
    let mut sent_by_workers = 0;
    for w in workers {
        let out = w.wait_with_output().expect("bulk");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "stdout: {o}\nstderr: {e}");
        let summary: Value = o
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON summary in {o}"));
        sent_by_workers += summary["sent"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        sent_by_workers, PEOPLE as u64,
        "each worker reports what it sent; together, everyone once"
    );

    // Exactly one message per phone reached the Graph API.
    let mut per_phone: HashMap<String, usize> = HashMap::new();
    for m in sandbox_messages(&sandbox.url) {
        if m["status"] == 200 {
            *per_phone
                .entry(m["to"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(per_phone.len(), PEOPLE, "{per_phone:?}");
    assert!(per_phone.values().all(|&n| n == 1), "{per_phone:?}");

    let stats = wait_for_people(&sandbox.url, PEOPLE as u64);
    assert_eq!(stats["completed"], PEOPLE as u64, "{stats}");
    let store = Store::open(db.parse::<DbTarget>().unwrap()).unwrap();
    let start = Instant::now();
    while store.inbox_pending_count().unwrap() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "inbox never drained"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tokens = store.tokens_of_campaign("loop").unwrap();
    assert_eq!(tokens.len(), PEOPLE);
    for t in &tokens {
        let responses = store.responses_for_token(t.token.as_str()).unwrap();
        let primary: Vec<_> = responses
            .iter()
            .filter(|r| r.duplicate_of.is_none())
            .collect();
        assert_eq!(primary.len(), 1, "{t:?}: {responses:?}");
        let r = primary[0];
        assert_eq!(r.phone.as_deref(), Some(t.phone.e164()));
        assert_eq!(r.customer_name.as_ref(), expected.get(t.phone.e164()));
        assert!(r.answers.contains_key("q1_accueil"), "{r:?}");
    }
    let funnel = store.funnel(Some("loop")).unwrap();
    let c = &funnel.campaigns[0];
    assert_eq!((c.issued, c.sent, c.completed), (40, 40, 40));
    drop((endpoint_replica, webhook_replica, sandbox));
}
