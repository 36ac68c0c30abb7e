//! Load generator for `flowctl serve` (not part of the test suite).
//!
//!     cargo build --release && cargo run --release --example bench_serve -- [SECONDS] [CONNECTIONS]
//!
//! 1. Measures the crypto floor: `decrypt_request` ops/s on all cores, in this process.
//! 2. Starts `target/release/flowctl serve` on loopback with the test key and a database
//!    holding 1,000 tokens, pre-encrypts INIT requests, and drives the server with N
//!    keep-alive connections (closed loop) for the given time: requests/s, p50/p99, server
//!    CPU per request, and the ratio to the crypto floor.
//! 3. Open loop at 70 % of that throughput: p99.
//! 4. `/healthz` latency while the server is saturated.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowctl::crypto::{self, PrivateKey, PublicKey};
use flowctl::store::{NewToken, Origin, SendState, Store};

const SECRET: &str = "bench-app-secret";

fn vectors() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/flow-endpoint.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("vectors")).expect("json")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn crypto_floor(key: &PrivateKey, pk: &PublicKey, secs: f64) -> f64 {
    let plain = br#"{"version":"3.0","action":"INIT","flow_token":"flow_bench"}"#;
    let (env, _) = crypto::encrypt_request(pk, plain);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while start.elapsed().as_secs_f64() < secs {
                    let d = crypto::decrypt_request(key, &env).expect("decrypt");
                    let _ = crypto::encrypt_response(&d.key, br#"{"screen":"A","data":{}}"#);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

struct Load {
    url: String,
    bodies: Arc<Vec<(String, String)>>,
}

/// Closed loop with `conns` connections for `secs`; or open loop at `rate` req/s when given.
async fn drive(load: &Load, conns: usize, secs: f64, rate: Option<f64>) -> (f64, Vec<f64>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .expect("client");
    let lat = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (client, lat, done, stop, bodies, url) = (
            client.clone(),
            lat.clone(),
            done.clone(),
            stop.clone(),
            load.bodies.clone(),
            load.url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rate {
                    next += Duration::from_secs_f64(conns as f64 / r);
                    tokio::time::sleep_until(next.into()).await;
                }
                let (body, sig) = &bodies[i % bodies.len()];
                i += conns;
                let t = Instant::now();
                let ok = client
                    .post(&url)
                    .header("x-hub-signature-256", sig)
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 200)
                    .unwrap_or(false);
                if ok {
                    lat.lock()
                        .expect("lat")
                        .push(t.elapsed().as_secs_f64() * 1000.0);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = lat.lock().expect("lat").clone();
    l.sort_by(|a, b| a.total_cmp(b));
    (done.load(Ordering::Relaxed) as f64 / elapsed, l)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let v = vectors();
    let pem = v["keys"]["private_key_pkcs8_pem"].as_str().expect("pem");
    let key = PrivateKey::from_pem(pem, None).expect("key");
    let pk = key.public_key();

    let floor = crypto_floor(&key, &pk, secs.min(3.0));
    println!("crypto floor (decrypt+encrypt, all cores): {floor:.0} ops/s");

    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("bench.db");
    let mut store = Store::open(&db).expect("db");
    let mut tokens = Vec::new();
    for i in 0..1000u32 {
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

    let bin = std::env::var("FLOWCTL_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/flowctl").into());
    let flow = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/survey_flow.json");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--flow-json",
            flow,
            "--private-key-file",
        ])
        .arg(&keyfile)
        .env("FLOWCTL_DB", &db)
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
    let pid = child.id();

    let bodies: Vec<(String, String)> = tokens
        .iter()
        .map(|t| {
            let plain = serde_json::json!({"version": "3.0", "action": "INIT", "flow_token": t})
                .to_string();
            let (env, _) = crypto::encrypt_request(&pk, plain.as_bytes());
            let body = env.to_json();
            let sig = crypto::sign(SECRET.as_bytes(), body.as_bytes());
            (body, sig)
        })
        .collect();
    let load = Load {
        url: format!("{base}/api/flow"),
        bodies: Arc::new(bodies),
    };

    // Warm-up.
    let _ = drive(&load, conns, 1.0, None).await;

    let cpu0 = cpu_seconds(pid);
    let (rps, lat) = drive(&load, conns, secs, None).await;
    let cpu = cpu_seconds(pid) - cpu0;
    println!(
        "saturating load, {conns} connections: {rps:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, server CPU {:.2} ms/request",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        cpu * 1000.0 / (rps * secs).max(1.0)
    );
    println!(
        "throughput / crypto floor: {:.2} (target >= 0.85)",
        rps / floor
    );

    let target = rps * 0.7;
    let (rps70, lat70) = drive(&load, conns, secs, Some(target)).await;
    println!(
        "open loop at 70% ({target:.0} req/s): achieved {rps70:.0} req/s, p50 {:.1} ms, p99 {:.1} ms (target p99 < 50 ms)",
        percentile(&lat70, 0.5),
        percentile(&lat70, 0.99)
    );

    // /healthz under saturation.
    let health_url = format!("{base}/healthz");
    let probe = tokio::spawn(async move {
        let c = reqwest::Client::new();
        let mut l = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            let t = Instant::now();
            if c.get(&health_url)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
            {
                l.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        l
    });
    let _ = drive(&load, conns, secs, None).await;
    let mut hl = probe.await.unwrap_or_default();
    hl.sort_by(|a, b| a.total_cmp(b));
    println!(
        "/healthz during saturation: {} probes, p50 {:.2} ms, p99 {:.2} ms (target p99 < 5 ms)",
        hl.len(),
        percentile(&hl, 0.5),
        percentile(&hl, 0.99)
    );
    let _ = child.kill();
    let _ = child.wait();
}
