//! Benchmark of `flowctl bulk` (outside the test suite).
//!
//! Starts the Graph API sandbox in this process with 50 ms latency, runs the release binary
//! under `/usr/bin/time` at --rate 80, 1,000 and 5,000 (the last shows the tool's own
//! ceiling), then a 1M-row `--dry-run`, and prints achieved/target rate, CPU seconds per
//! 1,000 messages and peak RSS. The CSVs are generated in a temporary directory.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_bulk
//! ```
//! The sandbox shares the machine's cores with flowctl: on a 2-core box the ceiling measured
//! is that of flowctl and sandbox together.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use flowctl::sandbox::{start, SandboxOptions};

/// One measured run.
struct Run {
    sent: f64,
    elapsed: f64,
    cpu: f64,
    rss_mb: f64,
}

fn write_csv(path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "phone_number,customer_name,city")?;
    for i in 0..rows {
        // French mobiles: +33 6 followed by 8 digits, all valid and distinct.
        writeln!(f, "+336{:08},Customer {i},Rabat", 10_000_000 + i)?;
    }
    Ok(f.flush()?)
}

fn flowctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/bench_bulk -> target/release/flowctl
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("flowctl"))
        .unwrap_or_else(|| PathBuf::from("flowctl"))
}

fn run(dir: &Path, graph_url: &str, args: &[&str]) -> anyhow::Result<Run> {
    let timing = dir.join("time.txt");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(&timing)
        .arg(flowctl())
        .arg("bulk")
        .args(args)
        .arg("--json")
        .env_clear()
        .env("WHATSAPP_ACCESS_TOKEN", "bench-token")
        .env("PHONE_NUMBER_ID", "106540352242922")
        .env("FLOW_ID", "1234567890123456")
        .env("GRAPH_API_URL", graph_url)
        .env("FLOWCTL_DB", dir.join("bench.db"))
        .env("FLOWCTL_PROGRESS_INTERVAL_MS", "3600000")
        .current_dir(dir)
        .output()
        .context("cannot run /usr/bin/time flowctl")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .with_context(|| {
            format!(
                "no JSON summary; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let t = std::fs::read_to_string(&timing)?;
    let f: Vec<f64> = t
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(f.len() == 3, "cannot read /usr/bin/time output {t:?}");
    let sent =
        summary["sent"].as_f64().unwrap_or(0.0) + summary["would_send"].as_f64().unwrap_or(0.0);
    Ok(Run {
        sent,
        elapsed: summary["elapsed_s"].as_f64().unwrap_or(0.0),
        cpu: f[0] + f[1],
        rss_mb: f[2] / 1024.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sandbox = start(SandboxOptions {
        latency: Duration::from_millis(50),
        ..SandboxOptions::default()
    })
    .await?;
    let url = format!("http://{}", sandbox.addr());
    let dir = tempfile::tempdir()?;
    println!(
        "flowctl bulk benchmark (sandbox latency 50 ms, binary {})",
        flowctl().display()
    );
    for (rate, rows) in [(80u32, 800usize), (1000, 10_000), (5000, 50_000)] {
        let csv = dir.path().join(format!("rate{rate}.csv"));
        write_csv(&csv, rows)?;
        let d = dir.path().to_path_buf();
        let u = url.clone();
        let before = sandbox.requests().len();
        let r = tokio::task::spawn_blocking(move || {
            run(
                &d,
                &u,
                &[csv.to_str().unwrap_or(""), "--rate", &rate.to_string()],
            )
        })
        .await??;
        let achieved = r.sent / r.elapsed.max(1e-9);
        // The rate the API sees, first to last request received: without the process's
        // start-up (numbering-plan metadata, database open) and the last answer's latency.
        let times: Vec<_> = sandbox.requests()[before..]
            .iter()
            .filter_map(|q| chrono::DateTime::parse_from_rfc3339(&q.at).ok())
            .collect();
        let seen = match (times.first(), times.last()) {
            (Some(a), Some(b)) if b > a => {
                (times.len() - 1) as f64 / ((*b - *a).num_milliseconds() as f64 / 1000.0)
            }
            _ => 0.0,
        };
        println!(
            "--rate {rate:>5}: {} rows in {:.2}s = {achieved:.0} msg/s end to end; {seen:.0} msg/s at the API = {:.3} of target; CPU {:.3}s per 1,000 msgs; peak RSS {:.1} MB",
            r.sent,
            r.elapsed,
            seen / f64::from(rate),
            r.cpu / r.sent.max(1.0) * 1000.0,
            r.rss_mb
        );
    }
    let csv = dir.path().join("million.csv");
    write_csv(&csv, 1_000_000)?;
    let d = dir.path().to_path_buf();
    let u = url.clone();
    let r = tokio::task::spawn_blocking(move || {
        run(
            &d,
            &u,
            &[
                csv.to_str().unwrap_or(""),
                "--dry-run",
                "--campaign",
                "million",
            ],
        )
    })
    .await??;
    println!(
        "dry run of 1,000,000 rows: {:.2}s, CPU {:.2}s, peak RSS {:.1} MB",
        r.elapsed, r.cpu, r.rss_mb
    );
    sandbox.shutdown().await
}
