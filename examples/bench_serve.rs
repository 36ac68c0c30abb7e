//! Benchmark of the data endpoint's request paths (not part of the test suite).
//!
//!     cargo build --release && cargo run --release --example bench_serve -- [SECONDS [CONNS...]]
//!
//! CONNS: the connection counts to load with (default: 16 64).
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

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::crypto::{self, PrivateKey, PublicKey};
use flowctl::flow_json::FlowJson;
use flowctl::store::{NewToken, Origin, SendState, Store};
use serde_json::{json, Value};

const SECRET: &str = "bench-app-secret";
const TOKENS: usize = 1000;

fn vectors() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/flow-endpoint.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("vectors")).expect("json")
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

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

/// A wrk script that posts `bodies` in turn, each with its signature.
fn lua_script(path: &Path, bodies: &[String]) {
    let mut f = std::fs::File::create(path).expect("lua file");
    writeln!(f, "local bodies = {{").expect("write");
    for b in bodies {
        let sig = crypto::sign(SECRET.as_bytes(), b.as_bytes());
        writeln!(f, "  {{ [==[{sig}]==], [==[{b}]==] }},").expect("write");
    }
    writeln!(
        f,
        r#"}}
local i = 0
request = function()
  i = i % #bodies + 1
  local headers = {{}}
  headers["Content-Type"] = "application/json"
  headers["X-Hub-Signature-256"] = bodies[i][1]
  return wrk.format("POST", nil, headers, bodies[i][2])
end"#
    )
    .expect("write");
}

/// One wrk run's figures.
struct Run {
    rps: f64,
    p99_ms: f64,
    non_2xx: u64,
    cpu_ms_per_req: f64,
}

fn parse_ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, script: Option<&Path>, conns: usize, secs: u64) -> Child {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ])
    .args(["--timeout", "5s"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wrk (apt-get install wrk)")
}

fn finish(child: Child) -> (f64, f64, u64, u64) {
    let out = child.wait_with_output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = f64::NAN;
    let mut p99 = f64::NAN;
    let mut non_2xx = 0;
    let mut total = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v, ..] => rps = v.parse().unwrap_or(f64::NAN),
            ["99%", v, ..] => p99 = parse_ms(v),
            ["Non-2xx", "or", "3xx", "responses:", v, ..] => non_2xx = v.parse().unwrap_or(0),
            [n, "requests", "in", ..] => total = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    (rps, p99, non_2xx, total)
}

fn measure(url: &str, script: &Path, conns: usize, secs: u64, pid: u32) -> Run {
    let cpu0 = cpu_seconds(pid);
    let (rps, p99_ms, non_2xx, total) = finish(wrk(url, Some(script), conns, secs));
    let cpu = cpu_seconds(pid) - cpu0;
    Run {
        rps,
        p99_ms,
        non_2xx,
        cpu_ms_per_req: cpu * 1000.0 / (total.max(1) as f64),
    }
}

fn start_server(bin: &str, db: &Path, keyfile: &Path, flow: &str) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--flow-json", flow])
        .arg("--private-key-file")
        .arg(keyfile)
        .env("FLOWCTL_DB", db)
        .env("APP_SECRET", SECRET)
        .env("FLOWCTL_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start flowctl serve (build it first: cargo build --release)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let base = line
        .split("listening on ")
        .nth(1)
        .expect("address")
        .trim()
        .to_string();
    (child, base)
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
    if Command::new("wrk").arg("--version").output().is_err() {
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
    let db = dir.path().join("bench.db");
    let mut store = Store::open(&db).expect("db");
    let mut tokens = Vec::new();
    for i in 0..TOKENS {
        let t = flowctl::token::FlowToken::generate();
        let phone = flowctl::phone::Phone::parse(&format!("+2126100{i:05}"), None).expect("phone");
        let new = NewToken {
            token: t.clone(),
            phone,
            customer_name: Some("Bench".into()),
            campaign: "bench".into(),
            origin: Origin::Send,
            initial_data: None,
            ttl: Duration::from_secs(86_400),
        };
        store.insert_token(&new, SendState::Sent).expect("insert");
        tokens.push(t.as_str().to_string());
    }
    drop(store);
    let keyfile = dir.path().join("private.pem");
    std::fs::write(&keyfile, pem).expect("key file");

    let flow_path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/survey_flow.json");
    let flow = FlowJson::load(Path::new(flow_path)).expect("flow json");
    let first = flow.entry_screen();
    let answers: serde_json::Map<String, Value> = first
        .fields
        .iter()
        .map(|f| {
            let v = first
                .options
                .get(f)
                .and_then(|o| o.first())
                .map(|o| json!(o))
                .unwrap_or(json!("bench answer"));
            (f.clone(), v)
        })
        .collect();

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
                        "screen": first.id, "data": answers, "flow_token": t}))
                })
                .collect();
            let p = dir.path().join("exchange.lua");
            lua_script(&p, &bodies);
            p
        }),
    ];

    let bin = std::env::var("FLOWCTL_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/flowctl").into());
    let (mut child, base) = start_server(&bin, &db, &keyfile, flow_path);
    let pid = child.id();
    let url = format!("{base}/api/flow");

    // Warm-up.
    let _ = measure(&url, &scripts[0].1, 16, 2, pid);

    let mut best = std::collections::HashMap::new();
    for &conns in &conn_counts {
        for (name, script) in &scripts {
            let r = measure(&url, script, conns, secs, pid);
            println!(
                "{name:<14} conns={conns:<3} req/s={:>7.0} p99={:>6.1} ms non-2xx={} server CPU={:.3} ms/request",
                r.rps, r.p99_ms, r.non_2xx, r.cpu_ms_per_req
            );
            best.insert((*name, conns), r);
        }
    }

    // /healthz while ping saturates the server.
    let load = wrk(&url, Some(&scripts[0].1), 64, secs);
    std::thread::sleep(Duration::from_millis(500));
    let (_, health_p99, health_bad, health_n) = finish(wrk(
        &format!("{base}/healthz"),
        None,
        1,
        secs.saturating_sub(1).max(1),
    ));
    let _ = finish(load);
    println!(
        "/healthz during saturation (64 conns of ping): {health_n} probes, p99 {health_p99:.2} ms, non-2xx {health_bad} (target p99 < 5 ms)"
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
