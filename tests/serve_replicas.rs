//! Two `serve` replicas on one PostgreSQL database, each receiving the same webhook bodies at
//! the same moment — what a load balancer does with Meta's retries, since Meta delivers every
//! notification at least once (<https://developers.facebook.com/docs/whatsapp/api/webhooks>).
//! Every completion and every status must be stored once, joined to the right phone, and every
//! inbox row processed. Skipped without `FLOWCTL_TEST_POSTGRES`.

mod support;

use std::time::{Duration, Instant};

use flowctl::store::{DbTarget, Store};
use serde_json::json;
use support::*;

/// A fresh database on the test server, as a `postgres://` URL; `None` (and why) without one.
fn fresh_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("FLOWCTL_TEST_POSTGRES") else {
        eprintln!("{test}: skipped: no PostgreSQL (set FLOWCTL_TEST_POSTGRES to a server URL; scripts/pg-cluster starts one)");
        return None;
    };
    let name = format!(
        "replicas_{}_{}",
        std::process::id(),
        flowctl::token::FlowToken::generate().as_str()[..10].to_ascii_lowercase()
    )
    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("test server");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    Some(format!("{base}/{name}"))
}

fn open(url: &str) -> Store {
    Store::open(url.parse::<DbTarget>().expect("a postgres URL")).expect("open the database")
}

/// Waits until every inbox row is processed (`expected` of them).
fn wait_processed(url: &str, expected: usize) {
    let start = Instant::now();
    loop {
        let rows = open(url).inbox_rows().expect("inbox rows");
        if rows.len() == expected && rows.iter().all(|r| r.1) {
            assert!(rows.iter().all(|r| r.2.is_none()), "{rows:?}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "inbox not processed: {} of {expected} rows, {} processed",
            rows.len(),
            rows.iter().filter(|r| r.1).count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_receiving_the_same_webhooks_store_each_event_once() {
    // The blocking client drives its own runtime: off this one's worker.
    let Some(url) = tokio::task::block_in_place(|| fresh_database("two replicas")) else {
        return;
    };
    let env = Env::new();
    let vars = [("FLOWCTL_DB", url.as_str())];
    let a = env.serve_with_env(&vars, &[]);
    let b = env.serve_with_env(&vars, &[]);

    const PEOPLE: usize = 30;
    let mut people = Vec::new();
    {
        let mut store = open(&url);
        for i in 0..PEOPLE {
            let phone = format!("+336{:08}", 10_000_000 + i);
            let token = issue_token_in(&mut store, &phone);
            let wamid = format!("wamid.out{i}");
            store
                .record_sent_after(&token, &wamid, None, 1)
                .expect("record the send");
            people.push((phone, token, wamid));
        }
    }
    // Each body reaches both replicas at once.
    let mut bodies = Vec::new();
    for (i, (phone, token, wamid)) in people.iter().enumerate() {
        let from = phone.trim_start_matches('+');
        bodies.push(nfm_reply(
            &format!("wamid.in{i}"),
            from,
            Some(wamid),
            json!({"flow_token": token, "q1": format!("answer {i}")}),
        ));
        bodies.push(status_body(wamid, "delivered", None));
    }
    for body in &bodies {
        let (ra, rb) = tokio::join!(
            post_webhook(&a.url, body, Some(APP_SECRET)),
            post_webhook(&b.url, body, Some(APP_SECRET))
        );
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    }
    tokio::task::block_in_place(|| wait_processed(&url, 2 * bodies.len()));
    // No replica's write was refused on the way (a refused row is retried, which would hide a
    // race in the final counts).
    for (name, replica) in [("a", &a), ("b", &b)] {
        let log = replica.stderr();
        assert!(!log.contains("processing paused"), "replica {name}: {log}");
    }

    let store = open(&url);
    for (i, (phone, token, wamid)) in people.iter().enumerate() {
        let responses = store.responses_for_token(token).expect("responses");
        assert_eq!(
            responses.len(),
            1,
            "{token}: one response, no duplicate row"
        );
        let r = &responses[0];
        assert_eq!(
            r.phone.as_deref(),
            Some(phone.as_str()),
            "joined to its phone"
        );
        assert_eq!(r.answers["q1"], format!("answer {i}"));
        assert_eq!(
            store.statuses_for_message(wamid).expect("statuses").len(),
            1
        );
        let delivery = store.delivery(token).expect("delivery").expect("a token");
        assert_eq!(delivery.delivery.as_deref(), Some("delivered"));
    }
    assert_eq!(store.response_count().expect("count"), PEOPLE as i64);
    assert!(store.unmatched_responses().expect("unmatched").is_empty());
}

/// Issues a sent token for `phone` (as `send` does before sending).
fn issue_token_in(store: &mut Store, phone: &str) -> String {
    use flowctl::store::{NewToken, Origin, SendState};
    let token = flowctl::token::FlowToken::generate();
    let new = NewToken {
        token: token.clone(),
        phone: flowctl::phone::Phone::parse(phone, None).expect("phone"),
        customer_name: None,
        campaign: "replicas".into(),
        origin: Origin::Send,
        initial_data: None,
        ttl: Duration::from_secs(3600),
    };
    store
        .insert_token(&new, SendState::Sending)
        .expect("insert token");
    token.as_str().to_string()
}
