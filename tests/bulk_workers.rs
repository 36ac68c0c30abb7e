//! Several `flowctl bulk` workers on one campaign, sharing one PostgreSQL database and one
//! sandbox, each given the same CSV: nobody is messaged twice, the rows of a worker killed
//! with SIGKILL are finished by the survivor once that worker's lease has run out, and
//! `--rate` is the sending number's rate across all workers.
//!
//! Skipped ("skipped: no PostgreSQL") without FLOWCTL_TEST_POSTGRES (a server URL the tests
//! may create databases on; `scripts/pg-cluster start DIR` starts one). The rate measurement
//! scales with FLOWCTL_ROWS (default 200; the figure in the README used 600):
//! `cargo test --test bulk_workers -- --nocapture two_workers_share_one_rate`.

#[path = "support/campaign.rs"]
mod campaign;
mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use campaign::{knob, summary, Campaign};
use support::db;

/// The campaign's database URL, when the suite runs on PostgreSQL; `None` after saying why.
fn database(test: &str, c: &Campaign) -> Option<String> {
    if !db::on_postgres() {
        eprintln!("{test}: skipped: no PostgreSQL (set FLOWCTL_TEST_POSTGRES to a server URL; scripts/pg-cluster starts one)");
        return None;
    }
    Some(db::arg(&c.db()).to_string_lossy().into_owned())
}

/// `flowctl bulk ARGS` of `campaign` on the PostgreSQL database `url`.
fn worker(c: &Campaign, args: &[&str]) -> Command {
    let mut cmd = c.bulk(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn wait(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().expect(what);
    eprintln!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Rows per state of the campaign, from the database.
fn states(url: &str, campaign: &str) -> HashMap<String, i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.query(
        "SELECT state, COUNT(*) FROM tokens WHERE campaign = $1 GROUP BY state",
        &[&campaign],
    )
    .expect("states")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Accepted messages per recipient (digits), from the sandbox's record.
fn accepted_per_phone(c: &Campaign) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for r in c.sandbox().requests() {
        if r.path.ends_with("/messages") && r.status == Some(200) {
            *per.entry(r.to.unwrap_or_default()).or_default() += 1;
        }
    }
    per
}

fn twice(per: &HashMap<String, usize>) -> Vec<&String> {
    per.iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn two_workers_message_every_phone_exactly_once() {
    let c = Campaign::new(Duration::from_millis(20));
    let Some(url) = database("two workers", &c) else {
        return;
    };
    let rows = 400;
    let csv = c.contacts(rows);
    let csv = csv.to_str().unwrap();
    let args = ["--rate", "100", "--campaign", "w", "--json", csv];
    // Both start at the same instant.
    let a = worker(&c, &args).spawn().expect("spawn a");
    let b = worker(&c, &args).spawn().expect("spawn b");
    let (a, b) = (wait(a, "worker a"), wait(b, "worker b"));
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(b.status.code(), Some(0));

    let per = accepted_per_phone(&c);
    assert!(twice(&per).is_empty(), "messaged twice: {:?}", twice(&per));
    assert_eq!(per.len(), rows, "every phone messaged");
    // Each summary says what its worker sent; together, the campaign.
    let (sa, sb) = (summary(&a), summary(&b));
    let sent = |s: &serde_json::Value| s["sent"].as_u64().unwrap();
    assert_eq!(sent(&sa) + sent(&sb), rows as u64, "{sa}\n{sb}");
    // Claims are about a second of sends ahead: both workers took part.
    assert!(sent(&sa) > 0 && sent(&sb) > 0, "{sa}\n{sb}");
    assert_eq!(states(&url, "w").get("sent"), Some(&(rows as i64)));
}

#[test]
fn the_survivor_finishes_the_rows_of_a_killed_worker_after_its_lease() {
    let c = Campaign::new(Duration::from_millis(20));
    let Some(url) = database("killed worker", &c) else {
        return;
    };
    let rows = 300;
    let csv = c.contacts(rows);
    let csv = csv.to_str().unwrap();
    let args = [
        "--rate",
        "60",
        "--campaign",
        "k",
        "--lease",
        "2s",
        "--json",
        csv,
    ];
    let mut a = worker(&c, &args).spawn().expect("spawn a");
    // A claims the file's rows as it reads them; B starts once A is sending.
    c.wait_accepted(20);
    let b = worker(&c, &args).spawn().expect("spawn b");
    c.wait_accepted(80);
    a.kill().expect("SIGKILL a");
    let _ = a.wait();
    let killed_at = Instant::now();
    let b = wait(b, "worker b");
    eprintln!(
        "the survivor ended {:.1}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );

    let per = accepted_per_phone(&c);
    assert!(twice(&per).is_empty(), "messaged twice: {:?}", twice(&per));
    let st = states(&url, "k");
    let count = |s: &str| st.get(s).copied().unwrap_or(0);
    // Every row was sent, but the few A's kill left `sending` (their requests may have
    // left): reported unknown by the survivor, never resent.
    assert_eq!(count("pending"), 0, "{st:?}");
    assert_eq!(count("sent") + count("sending"), rows as i64, "{st:?}");
    assert!(
        count("sending") <= 40,
        "at most A's requests in flight: {st:?}"
    );
    let s = summary(&b);
    assert!(
        s["sent"].as_u64().unwrap() > 0,
        "the survivor sent A's rows: {s}"
    );
    assert_eq!(s["unknown"].as_i64().unwrap_or(0), count("sending"), "{s}");
    // The accepted messages are the rows recorded sent (plus any of the unknown ones).
    assert!(per.len() as i64 >= count("sent"), "{} < {st:?}", per.len());
}

/// Seconds since midnight of a sandbox record's RFC 3339 time.
fn seconds(at: &str) -> f64 {
    let time = &at[11..at.len() - 1];
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn two_workers_share_one_rate() {
    let c = Campaign::new(Duration::from_millis(20));
    if database("shared rate", &c).is_none() {
        return;
    }
    let rows = knob("ROWS", 200) as usize;
    let csv = c.contacts(rows);
    let csv = csv.to_str().unwrap();
    let args = ["--rate", "20", "--campaign", "r", "--json", csv];
    let a = worker(&c, &args).spawn().expect("spawn a");
    let b = worker(&c, &args).spawn().expect("spawn b");
    let (a, b) = (wait(a, "worker a"), wait(b, "worker b"));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)));
    let (sa, sb) = (summary(&a), summary(&b));
    let mut times: Vec<f64> = c
        .sandbox()
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages") && r.status == Some(200))
        .map(|r| seconds(&r.at))
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), rows);
    let span = times[rows - 1] - times[0];
    let span = if span < 0.0 { span + 86_400.0 } else { span };
    let achieved = (rows - 1) as f64 / span;
    println!(
        "two workers, --rate 20, {rows} rows: achieved {achieved:.2} msg/s, achieved/target {:.3} (worker a sent {}, worker b sent {})",
        achieved / 20.0,
        sa["sent"],
        sb["sent"]
    );
    // Not a timed test: a generous bound only (two workers without a shared rate would
    // reach about twice the target).
    assert!(achieved / 20.0 < 1.2, "{achieved}");
    assert!(achieved / 20.0 > 0.7, "{achieved}");
}

#[test]
fn a_lost_database_connection_is_waited_for_and_the_run_resumes() {
    let c = Campaign::new(Duration::from_millis(20));
    let Some(url) = database("lost connection", &c) else {
        return;
    };
    let rows = 200;
    let csv = c.contacts(rows);
    let csv = csv.to_str().unwrap();
    let run = worker(&c, &["--rate", "50", "--campaign", "l", "--json", csv])
        .spawn()
        .expect("spawn");
    c.wait_accepted(40);
    // What a PostgreSQL restart does to the worker's connections: all cut at once.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let cut: i64 = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("terminate")
        .get(0);
    assert!(cut > 0, "the worker's connections were cut");
    let out = wait(run, "worker");
    assert_eq!(out.status.code(), Some(0));
    let per = accepted_per_phone(&c);
    assert!(twice(&per).is_empty(), "messaged twice: {:?}", twice(&per));
    assert_eq!(per.len(), rows);
    assert_eq!(summary(&out)["sent"].as_u64(), Some(rows as u64));
    assert_eq!(states(&url, "l").get("sent"), Some(&(rows as i64)));
}
