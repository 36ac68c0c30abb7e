//! What the wrk-based benchmarks share: signed request bodies for a wrk Lua script, one wrk run
//! and its figures, a server's CPU time, a `flowctl serve` started on a free port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The app secret the benchmarks' servers check signatures with.
pub const SECRET: &str = "bench-app-secret";

/// The test vectors (keys) shipped in tests/vectors.
pub fn vectors() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/flow-endpoint.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("vectors")).expect("json")
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A wrk script that posts `bodies` in turn, each with its signature.
pub fn lua_script(path: &Path, bodies: &[String]) {
    let mut f = std::fs::File::create(path).expect("lua file");
    writeln!(f, "local bodies = {{").expect("write");
    for b in bodies {
        let sig = flowctl::crypto::sign(SECRET.as_bytes(), b.as_bytes());
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
pub struct Run {
    pub rps: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub total: u64,
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

/// Starts wrk (one thread, closed loop) on `url`.
pub fn wrk(url: &str, script: Option<&Path>, conns: usize, secs: u64) -> Child {
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

/// Waits for a wrk run and reads its figures.
pub fn finish(child: Child) -> Run {
    let out = child.wait_with_output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = Run {
        rps: f64::NAN,
        p99_ms: f64::NAN,
        non_2xx: 0,
        total: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v, ..] => run.rps = v.parse().unwrap_or(f64::NAN),
            ["99%", v, ..] => run.p99_ms = parse_ms(v),
            ["Non-2xx", "or", "3xx", "responses:", v, ..] => run.non_2xx = v.parse().unwrap_or(0),
            [n, "requests", "in", ..] => run.total = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    run
}

/// True when wrk can be run.
pub fn have_wrk() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// Starts `flowctl serve` on a free loopback port with `args`, the database `db` (a SQLite
/// path or a postgres:// URL) and the benchmark's secret; its process and base URL.
pub fn start_server(bin: &str, db: &str, keyfile: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
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

/// The release binary the benchmarks run (`FLOWCTL_BIN` to use another).
pub fn flowctl_bin() -> String {
    std::env::var("FLOWCTL_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/flowctl").into())
}

/// The survey Flow shipped in examples/, which the benchmarks' servers route.
pub const SURVEY_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/survey_flow.json");

/// The first screen of the survey Flow and an answer to each of its fields (the first option,
/// or a text): a `data_exchange` that the server stores and routes onward.
pub fn first_screen_answers() -> (String, serde_json::Map<String, serde_json::Value>) {
    let flow = flowctl::flow_json::FlowJson::load(Path::new(SURVEY_FLOW)).expect("flow json");
    let first = flow.entry_screen();
    let answers = first
        .fields
        .iter()
        .map(|f| {
            let v = first
                .options
                .get(f)
                .and_then(|o| o.first())
                .map(|o| serde_json::json!(o))
                .unwrap_or(serde_json::json!("bench answer"));
            (f.clone(), v)
        })
        .collect();
    (first.id.clone(), answers)
}

/// Issues `n` sent tokens in the database `db` (a SQLite path or a postgres:// URL).
pub fn issue_tokens(db: &str, n: usize) -> Vec<String> {
    use flowctl::store::{DbTarget, NewToken, Origin, SendState, Store};
    let target: DbTarget = db.parse().expect("database");
    let mut store = Store::open(target).expect("open the database");
    (0..n)
        .map(|i| {
            let t = flowctl::token::FlowToken::generate();
            let phone =
                flowctl::phone::Phone::parse(&format!("+2126100{i:05}"), None).expect("phone");
            let new = NewToken {
                token: t.clone(),
                phone,
                customer_name: Some("Bench".into()),
                campaign: "bench".into(),
                origin: Origin::Send,
                initial_data: None,
                ttl: std::time::Duration::from_secs(86_400),
            };
            store.insert_token(&new, SendState::Sent).expect("insert");
            t.as_str().to_string()
        })
        .collect()
}
