//! Load-test helpers of the reliability harnesses: latency percentiles, status histograms,
//! the server's memory from /proc, raw HTTP over a socket, tokens issued in bulk.
#![allow(dead_code)]

use flowctl::store::DbTarget;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latencies of one kind of request.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: &Latencies) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0 < p ≤ 100), nearest-rank; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    /// `n=… p50_ms=… p99_ms=… max_ms=…`
    pub fn summary(&self) -> String {
        format!(
            "n={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            self.len(),
            ms(self.p50()),
            ms(self.p99()),
            ms(self.max())
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Counts of outcomes (statuses, "closed", "reset", …).
#[derive(Debug, Default, Clone)]
pub struct Histogram(pub BTreeMap<String, u64>);

impl Histogram {
    pub fn add(&mut self, key: impl Into<String>) {
        *self.0.entry(key.into()).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `{200:12,421:3}`
    pub fn render(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", parts.join(","))
    }
}

/// Peak and current resident memory of a process, in KiB (VmHWM, VmRSS).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// `host:port` of an `http://host:port` URL.
pub fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// What a raw exchange ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// The server closed the connection without answering.
    Closed,
    /// The connection was reset (or another I/O error) before an answer.
    Reset(String),
    /// Nothing happened within the client's own deadline.
    Hung,
}

impl Outcome {
    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Closed => "closed".into(),
            Outcome::Reset(_) => "reset".into(),
            Outcome::Hung => "hung".into(),
        }
    }
}

/// Reads a response head (or the end of the connection) within `deadline`.
pub async fn read_head(stream: &mut TcpStream, deadline: Duration) -> Outcome {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return Outcome::Hung,
            Ok(Ok(0)) => return status_of(&buf).unwrap_or(Outcome::Closed),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(o) = status_of(&buf) {
                    return o;
                }
            }
            Ok(Err(e)) => return status_of(&buf).unwrap_or(Outcome::Reset(e.to_string())),
        }
    }
}

fn status_of(buf: &[u8]) -> Option<Outcome> {
    let text = String::from_utf8_lossy(buf);
    let line = text.split("\r\n").next()?;
    if !text.contains("\r\n") {
        return None;
    }
    let code = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Outcome::Status(code))
}

/// Waits until the server closes the connection (EOF or reset), reading and discarding
/// whatever it sends; `None` when it is still open after `deadline`.
pub async fn wait_closed(stream: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The head of a POST with the given extra header lines (each ending in `\r\n`).
pub fn post_head(host: &str, path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}\r\n")
}

/// Connects, writes `bytes`, reads the answer's status.
pub async fn exchange(host: &str, bytes: &[u8], deadline: Duration) -> Outcome {
    let mut s = match TcpStream::connect(host).await {
        Ok(s) => s,
        Err(e) => return Outcome::Reset(format!("connect: {e}")),
    };
    if let Err(e) = s.write_all(bytes).await {
        return Outcome::Reset(format!("write: {e}"));
    }
    read_head(&mut s, deadline).await
}

/// Issues `n` tokens (one transaction each, one connection) for phones `+336<base+i>`.
pub fn issue_tokens(db: &DbTarget, n: usize, campaign: &str, base: u64) -> Vec<(String, String)> {
    use flowctl::store::{NewToken, Origin, SendState, Store};
    let mut store = Store::open(db).expect("open store");
    (0..n)
        .map(|i| {
            let phone = format!("+336{:08}", base + i as u64);
            let token = flowctl::token::FlowToken::generate();
            let new = NewToken {
                token: token.clone(),
                phone: flowctl::phone::Phone::parse(&phone, None).expect("phone"),
                customer_name: Some(format!("Client {i}")),
                campaign: campaign.into(),
                origin: Origin::Send,
                initial_data: None,
                ttl: Duration::from_secs(86_400),
            };
            assert!(store.insert_token(&new, SendState::Sent).expect("insert"));
            (token.as_str().to_string(), phone)
        })
        .collect()
}

/// One number from a SQL count over the database.
pub fn count(db: &DbTarget, sql: &str) -> i64 {
    crate::support::db::Sql::open(db).int(sql, &[])
}

#[path = "rng.rs"]
mod rng;
pub use rng::Rng;

/// The example survey (`examples/survey_flow.json`) answered screen by screen as a WhatsApp
/// client: each request with the screen the server must answer with.
pub fn survey_steps(token: &str) -> [(serde_json::Value, &'static str); 4] {
    use serde_json::json;
    [
        (
            json!({"version": "3.0", "action": "INIT", "flow_token": token}),
            "ACCUEIL_SERVICE",
        ),
        (
            json!({"version": "3.0", "action": "data_exchange", "screen": "ACCUEIL_SERVICE",
                   "data": {"q1_accueil": "5_etoiles", "q2_delai": "4_etoiles"}, "flow_token": token}),
            "QUALITE_PRIX",
        ),
        (
            json!({"version": "3.0", "action": "data_exchange", "screen": "QUALITE_PRIX",
                   "data": {"q3_qualite": "5_etoiles", "q4_prix": "3_etoiles"}, "flow_token": token}),
            "RECOMMANDATION",
        ),
        (
            json!({"version": "3.0", "action": "data_exchange", "screen": "RECOMMANDATION",
                   "data": {"q5_recommandation": "5_etoiles", "commentaire": "ok"}, "flow_token": token}),
            "SUCCESS",
        ),
    ]
}
