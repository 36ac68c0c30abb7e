//! Throughput of `flowctl sandbox`: starts it in-process (latency 0) and drives it with N
//! concurrent keep-alive HTTP/1.1 connections sending valid interactive Flow messages.
//!
//! `cargo run --release --example bench_sandbox -- [CONNECTIONS] [SECONDS]` (default 32, 5).
//! The load generator runs in the same process on the same cores: on a small machine the
//! figure is a lower bound of what the sandbox alone can serve.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use flowctl::sandbox::{start, SandboxOptions};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let connections: usize = args
        .next()
        .map_or(Ok(32), |a| a.parse())
        .context("CONNECTIONS")?;
    let seconds: u64 = args
        .next()
        .map_or(Ok(5), |a| a.parse())
        .context("SECONDS")?;

    let sandbox = start(SandboxOptions::default()).await?;
    let addr = sandbox.addr();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    println!("sandbox on {addr}: {connections} keep-alive connections for {seconds} s");

    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..connections {
        workers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body = json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": "212610059159",
                    "type": "interactive",
                    "interactive": {
                        "type": "flow",
                        "body": { "text": "Deux minutes pour nous dire ce que vous avez pensé de votre visite ?" },
                        "action": { "name": "flow", "parameters": {
                            "flow_message_version": "3",
                            "flow_token": format!("flow_bench_{worker}_{i}"),
                            "flow_id": "1234567890123456",
                            "flow_cta": "Répondre",
                            "flow_action": "navigate",
                            "flow_action_payload": { "screen": "Q1_RATING", "data": { "title": "Votre avis" } }
                        } }
                    }
                });
                let req = Request::post(format!("http://{addr}/v21.0/106540352242922/messages"))
                    .header("host", addr.to_string())
                    .header("authorization", "Bearer bench")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
                let sent = Instant::now();
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let ok = resp.status().is_success();
                resp.into_body().collect().await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }

    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, err) = w.await??;
        all.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} requests in {elapsed:.2} s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {errors}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
    );
    println!("recorded in memory: {}", sandbox.requests().len());
    sandbox.shutdown().await
}
