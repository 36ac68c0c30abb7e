//! Benchmark of the data endpoint's request paths (not part of the test suite).
//!
//!     cargo build --release && cargo run --release --example bench_serve -- [SECONDS [CONNS...]]
//!
//! CONNS: the connection counts to load with (default: 16 64). BENCH_ONLY=INIT (or ping,
//! data_exchange) runs that path alone, to profile it.
//!
//! Needs `wrk` (`apt-get install wrk`). `examples/bench_endpoint.sh` runs this and, when `wrk`
//! and `node` are present, the side-by-side comparison with the reference Node endpoint.
//!
//! 1. The cost of one RSA-2048 OAEP decryption on one core, in this process (the same
//!    aws-lc-rs call `serve` makes).
//! 2. `target/release/flowctl serve` on loopback, with a Flow JSON and a database of 1,000 sent
//!    tokens, loaded by `wrk` (closed loop, one wrk thread) at 16 and 64 connections on three
//!    paths: `ping`; `INIT` for a known token (the token lookup); a `data_exchange` from the first
//!    screen, which stores the answers (a database write). Each request of a path is a
//!    different encryption (and a different token), as from different phones.
//!    Printed: req/s, p99, non-2xx answers, the server's CPU per request (from /proc).
//! 3. `/healthz` latency (one wrk connection) while `ping` saturates the server at 64
//!    connections.
//! 4. The ratios the README records: INIT / ping, data_exchange / ping, server CPU per ping /
//!    one RSA decryption.

#[path = "bench_support/wrk.rs"]
mod wrk;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowctl::crypto::{self, PrivateKey, PublicKey};
use serde_json::{json, Value};
use wrk::{cpu_seconds, finish, lua_script, vectors};

const TOKENS: usize = 1000;

/// Milliseconds of one RSA-2048 OAEP decryption (with the AES-GCM open), on one core.
fn rsa_cost_ms(key: &PrivateKey, pk: &PublicKey) -> f64 {
    let (env, _) = crypto::encrypt_request(pk, br#"{"version":"3.0","action":"ping"}"#);
    for _ in 0..50 {
        let _ = crypto::decrypt_request(key, &env).expect("decrypt");
    }
    let n = 1000;
    let start = Instant::now();
    for _ in 0..n {
        let _ = crypto::decrypt_request(key, &env).expect("decrypt");
    }
    start.elapsed().as_secs_f64() * 1000.0 / n as f64
}

/// One path's figures: wrk's, and the server's CPU per request.
struct Run {
    rps: f64,
    p99_ms: f64,
    non_2xx: u64,
    cpu_ms_per_req: f64,
}

fn measure(url: &str, script: &Path, conns: usize, secs: u64, pid: u32) -> Run {
    let cpu0 = cpu_seconds(pid);
    let r = finish(wrk::wrk(url, Some(script), conns, secs));
    let cpu = cpu_seconds(pid) - cpu0;
    Run {
        rps: r.rps,
        p99_ms: r.p99_ms,
        non_2xx: r.non_2xx,
        cpu_ms_per_req: cpu * 1000.0 / (r.total.max(1) as f64),
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut conn_counts: Vec<usize> = std::env::args()
        .skip(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    if conn_counts.is_empty() {
        conn_counts = vec![16, 64];
    }
    if !wrk::have_wrk() {
        eprintln!("bench_serve needs wrk (apt-get install wrk)");
        std::process::exit(2);
    }
    let v = vectors();
    let pem = v["keys"]["private_key_pkcs8_pem"].as_str().expect("pem");
    let key = PrivateKey::from_pem(pem, None).expect("key");
    let pk = key.public_key();
    let rsa_ms = rsa_cost_ms(&key, &pk);
    println!("one RSA-2048 OAEP decryption (+ AES-GCM open), one core: {rsa_ms:.3} ms");

    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("bench.db").to_string_lossy().into_owned();
    let tokens = wrk::issue_tokens(&db, TOKENS);
    let keyfile = dir.path().join("private.pem");
    std::fs::write(&keyfile, pem).expect("key file");

    let (screen, answers) = wrk::first_screen_answers();

    let encrypt = |plain: Value| {
        crypto::encrypt_request(&pk, plain.to_string().as_bytes())
            .0
            .to_json()
    };
    let scripts: Vec<(&str, PathBuf)> = vec![
        ("ping", {
            let bodies: Vec<String> = (0..TOKENS)
                .map(|_| encrypt(json!({"version": "3.0", "action": "ping"})))
                .collect();
            let p = dir.path().join("ping.lua");
            lua_script(&p, &bodies);
            p
        }),
        ("INIT", {
            let bodies: Vec<String> = tokens
                .iter()
                .map(|t| encrypt(json!({"version": "3.0", "action": "INIT", "flow_token": t})))
                .collect();
            let p = dir.path().join("init.lua");
            lua_script(&p, &bodies);
            p
        }),
        ("data_exchange", {
            let bodies: Vec<String> = tokens
                .iter()
                .map(|t| {
                    encrypt(json!({"version": "3.0", "action": "data_exchange",
                        "screen": screen, "data": answers, "flow_token": t}))
                })
                .collect();
            let p = dir.path().join("exchange.lua");
            lua_script(&p, &bodies);
            p
        }),
    ];

    let bin = wrk::flowctl_bin();
    let (mut child, base) =
        wrk::start_server(&bin, &db, &keyfile, &["--flow-json", wrk::SURVEY_FLOW]);
    let pid = child.id();
    let url = format!("{base}/api/flow");

    // Warm-up.
    let _ = measure(&url, &scripts[0].1, 16, 2, pid);

    // BENCH_ONLY=INIT (or ping, data_exchange): that path alone, for a profile of it
    // (`perf record -g -p $(pgrep -n flowctl)` while it runs).
    let only = std::env::var("BENCH_ONLY").ok();
    let mut best = std::collections::HashMap::new();
    for &conns in &conn_counts {
        for (name, script) in &scripts {
            if only.as_deref().is_some_and(|o| o != *name) {
                continue;
            }
            let r = measure(&url, script, conns, secs, pid);
            println!(
                "{name:<14} conns={conns:<3} req/s={:>7.0} p99={:>6.1} ms non-2xx={} server CPU={:.3} ms/request",
                r.rps, r.p99_ms, r.non_2xx, r.cpu_ms_per_req
            );
            best.insert((*name, conns), r);
        }
    }

    if only.is_some() {
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    // /healthz while ping saturates the server.
    let load = wrk::wrk(&url, Some(&scripts[0].1), 64, secs);
    std::thread::sleep(Duration::from_millis(500));
    let health = finish(wrk::wrk(
        &format!("{base}/healthz"),
        None,
        1,
        secs.saturating_sub(1).max(1),
    ));
    let _ = finish(load);
    println!(
        "/healthz during saturation (64 conns of ping): {} probes, p99 {:.2} ms, non-2xx {} (target p99 < 5 ms)",
        health.total, health.p99_ms, health.non_2xx
    );

    for &conns in &conn_counts {
        let ping = &best[&("ping", conns)];
        let init = &best[&("INIT", conns)];
        let exch = &best[&("data_exchange", conns)];
        println!(
            "ratios at {conns} conns: INIT/ping = {:.2} (target >= 0.9)   data_exchange/ping = {:.2} (target >= 0.8)   CPU per ping / RSA decryption = {:.2} (target <= 1.2)",
            init.rps / ping.rps,
            exch.rps / ping.rps,
            ping.cpu_ms_per_req / rsa_ms
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
