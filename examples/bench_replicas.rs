//! Benchmark: one `serve` on SQLite against two `serve` replicas on one PostgreSQL database
//! (not part of the test suite).
//!
//!     cargo build --release && cargo run --release --example bench_replicas -- [SECONDS]
//!
//! Needs `wrk` and PostgreSQL: the server named by `FLOWCTL_TEST_POSTGRES`, or a throwaway
//! cluster started with `scripts/pg-cluster` (the PostgreSQL server binaries installed).
//! On one machine, at 64 connections in all, two paths that write:
//! - the data endpoint: a `data_exchange` from the survey's first screen (decrypt, token
//!   lookup, answers stored, next screen encrypted);
//! - the message webhook: a signed Flow completion stored in the inbox before the 200.
//!
//! Configurations: 1 replica on SQLite; 1 replica on PostgreSQL; 2 replicas on PostgreSQL,
//! each given half the connections (as a load balancer would). Printed: req/s, p99, non-2xx,
//! and the ratios to the SQLite replica. Every process (wrk, the replicas, PostgreSQL) shares
//! this machine's cores, so two replicas here measure the cost of sharing one database, not
//! the capacity of two machines.

#[path = "bench_support/wrk.rs"]
mod wrk;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use flowctl::crypto::{self, PrivateKey};
use serde_json::json;

const TOKENS: usize = 2000;
const CONNS: usize = 64;

/// A PostgreSQL server to create the benchmark's database on: (admin URL, cluster dir to stop).
fn postgres() -> (String, Option<PathBuf>) {
    if let Ok(url) = std::env::var("FLOWCTL_TEST_POSTGRES") {
        return (url, None);
    }
    let dir = std::env::temp_dir().join(format!("flowctl-bench-pg-{}", std::process::id()));
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-cluster"))
        .arg("start")
        .arg(&dir)
        .output()
        .expect("scripts/pg-cluster");
    if !out.status.success() {
        eprintln!(
            "bench_replicas needs PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::process::exit(2);
    }
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Some(dir),
    )
}

fn create_database(admin: &str, name: &str) -> String {
    let ok = Command::new("psql")
        .arg(admin)
        .args(["-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .expect("psql")
        .success();
    assert!(ok, "CREATE DATABASE {name}");
    let mut url = url::Url::parse(admin).expect("URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Signed Flow completions, one per token, as the webhook carries them.
fn completions(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let message = json!({
                "from": format!("2126100{i:05}"), "id": format!("wamid.bench{i}"),
                "timestamp": "1767225600", "type": "interactive",
                "interactive": {"type": "nfm_reply", "nfm_reply": {
                    "name": "flow", "body": "Sent",
                    "response_json": json!({"flow_token": t, "q1": "bench"}).to_string()}}
            });
            json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
                "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                    "contacts": [{"profile": {"name": "Bench"}, "wa_id": format!("2126100{i:05}")}],
                    "messages": [message]}}]}]})
            .to_string()
        })
        .collect()
}

/// Loads the replicas at `bases` (the connections split between them) on `path` with `script`;
/// the summed req/s, the worst p99 and the non-2xx answers.
fn load(bases: &[String], path: &str, script: &Path, secs: u64) -> (f64, f64, u64) {
    let per = CONNS / bases.len();
    let runs: Vec<Child> = bases
        .iter()
        .map(|b| wrk::wrk(&format!("{b}{path}"), Some(script), per, secs))
        .collect();
    runs.into_iter()
        .map(wrk::finish)
        .fold((0.0, 0.0, 0), |(rps, p99, bad): (f64, f64, u64), r| {
            (rps + r.rps, p99.max(r.p99_ms), bad + r.non_2xx)
        })
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    if !wrk::have_wrk() {
        eprintln!("bench_replicas needs wrk (apt-get install wrk)");
        std::process::exit(2);
    }
    let v = wrk::vectors();
    let pem = v["keys"]["private_key_pkcs8_pem"].as_str().expect("pem");
    let pk = PrivateKey::from_pem(pem, None).expect("key").public_key();
    let dir = tempfile::tempdir().expect("tmp");
    let keyfile = dir.path().join("private.pem");
    std::fs::write(&keyfile, pem).expect("key file");
    let (admin, cluster) = postgres();
    let suffix = std::process::id();
    let sqlite = dir.path().join("bench.db").to_string_lossy().into_owned();
    let pg1 = create_database(&admin, &format!("bench_one_{suffix}"));
    let pg2 = create_database(&admin, &format!("bench_two_{suffix}"));

    let (screen, answers) = wrk::first_screen_answers();
    let mut scripts = Vec::new();
    for (name, db) in [("sqlite", &sqlite), ("pg1", &pg1), ("pg2", &pg2)] {
        let tokens = wrk::issue_tokens(db, TOKENS);
        let exchange: Vec<String> = tokens
            .iter()
            .map(|t| {
                let plain = json!({"version": "3.0", "action": "data_exchange",
                    "screen": screen, "data": answers, "flow_token": t});
                crypto::encrypt_request(&pk, plain.to_string().as_bytes())
                    .0
                    .to_json()
            })
            .collect();
        let e = dir.path().join(format!("{name}-exchange.lua"));
        wrk::lua_script(&e, &exchange);
        let w = dir.path().join(format!("{name}-webhook.lua"));
        wrk::lua_script(&w, &completions(&tokens));
        scripts.push((e, w));
    }

    let bin = wrk::flowctl_bin();
    let flow = ["--flow-json", wrk::SURVEY_FLOW];
    let mut results = Vec::new();
    for (label, db, replicas, (exchange, webhook)) in [
        ("1 replica, SQLite", &sqlite, 1, &scripts[0]),
        ("1 replica, PostgreSQL", &pg1, 1, &scripts[1]),
        ("2 replicas, PostgreSQL", &pg2, 2, &scripts[2]),
    ] {
        let servers: Vec<(Child, String)> = (0..replicas)
            .map(|_| wrk::start_server(&bin, db, &keyfile, &flow))
            .collect();
        let bases: Vec<String> = servers.iter().map(|s| s.1.clone()).collect();
        let _ = load(&bases, "/api/flow", exchange, 2); // warm-up
        let endpoint = load(&bases, "/api/flow", exchange, secs);
        let hook = load(&bases, "/api/message-webhook", webhook, secs);
        println!(
            "{label:<24} data_exchange {:>6.0} req/s p99 {:>6.1} ms non-2xx {:<4}  webhook {:>6.0} req/s p99 {:>6.1} ms non-2xx {}",
            endpoint.0, endpoint.1, endpoint.2, hook.0, hook.1, hook.2
        );
        results.push((endpoint.0, hook.0));
        for (mut child, _) in servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let base = results[0];
    for (label, r) in [
        ("1 replica on PostgreSQL", results[1]),
        ("2 replicas on PostgreSQL", results[2]),
    ] {
        println!(
            "{label} / 1 replica on SQLite: data_exchange {:.2}, webhook {:.2}",
            r.0 / base.0,
            r.1 / base.1
        );
    }
    if let Some(dir) = cluster {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-cluster"))
            .arg("stop")
            .arg(&dir)
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}
