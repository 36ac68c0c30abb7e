//! `flowctl bulk` over the real binary, against the Graph API sandbox (in this process, on
//! port 0), each test with its own directory, database and sandbox.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowctl::sandbox::{start, FailRule, SandboxHandle, SandboxOptions};

#[path = "support/db.rs"]
mod db;
use serde_json::Value;

const PHONES: [&str; 5] = [
    "+212610059159",
    "+33612345678",
    "+34612345678",
    "+447911123456",
    "+4915123456789",
];

struct Env {
    dir: tempfile::TempDir,
    /// `flowctl.db` in `dir`, or a PostgreSQL database of its own (support/db.rs).
    db: db::TestDb,
    sandbox: Option<SandboxHandle>,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Env {
        Env::with(0, &[])
    }

    fn with(latency_ms: u64, fail: &[&str]) -> Env {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let opts = SandboxOptions {
            latency: Duration::from_millis(latency_ms),
            failures: fail
                .iter()
                .map(|f| f.parse::<FailRule>().unwrap())
                .collect(),
            ..SandboxOptions::default()
        };
        let sandbox = rt.block_on(start(opts)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Env {
            db: db::TestDb::new(dir.path(), "flowctl.db"),
            dir,
            sandbox: Some(sandbox),
            rt,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn db(&self) -> flowctl::store::DbTarget {
        self.db.target()
    }

    /// `flowctl bulk ARGS` with a clean environment pointing at the sandbox.
    fn bulk(&self, args: &[&str]) -> Command {
        let addr = self.sandbox.as_ref().unwrap().addr();
        let mut c = Command::new(env!("CARGO_BIN_EXE_flowctl"));
        c.env_clear()
            .current_dir(self.dir.path())
            .env("WHATSAPP_ACCESS_TOKEN", "test-token")
            .env("PHONE_NUMBER_ID", "106540352242922")
            .env("FLOW_ID", "1234567890123456")
            .env("GRAPH_API_URL", format!("http://{addr}"))
            .env("FLOWCTL_DB", self.db.arg())
            .env("FLOWCTL_PROGRESS_INTERVAL_MS", "200")
            .arg("bulk")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.bulk(args).output().unwrap()
    }

    /// Messages the sandbox accepted, per recipient (`to`, digits without `+`).
    fn accepted(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.sandbox.as_ref().unwrap().requests() {
            if r.path.ends_with("/messages") && r.status == Some(200) {
                *m.entry(r.to.clone().unwrap_or_default()).or_default() += 1;
            }
        }
        m
    }

    fn requests(&self) -> usize {
        self.sandbox.as_ref().unwrap().requests().len()
    }

    fn token_rows(&self) -> i64 {
        if !db::exists(&self.db()) {
            return 0;
        }
        db::Sql::open(&self.db()).int("SELECT COUNT(*) FROM tokens", &[])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.sandbox.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn digits(p: &str) -> String {
    p.trim_start_matches('+').to_string()
}

/// The last line of stdout as JSON.
fn summary(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

/// A file with a BOM, CRLF, duplicates, invalid rows and an extra data column.
fn messy_csv() -> String {
    format!(
        "\u{feff}Phone,Name,city\r\n\
         {},Amal,Rabat\r\n\
         not-a-phone,Bad,X\r\n\
         {},Jean,Paris\r\n\
         {},Amal again,Rabat\r\n\
         ,Nobody,Y\r\n\
         {},Sam,NYC,extra\r\n\
         {},Sam,NYC\r\n",
        PHONES[0], PHONES[1], PHONES[0], PHONES[2], PHONES[2]
    )
}

#[test]
fn every_valid_unique_phone_gets_exactly_one_message() {
    let env = Env::new();
    let csv = env.write("survey.csv", &messy_csv());
    let out = env.run(&[csv.to_str().unwrap(), "--json"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid rows make exit 1: {stderr}"
    );
    let accepted = env.accepted();
    let expected: HashMap<String, usize> = PHONES[..3].iter().map(|p| (digits(p), 1)).collect();
    assert_eq!(accepted, expected, "{stderr}");
    let s = summary(&out);
    assert_eq!(s["sent"], 3);
    assert_eq!(s["invalid"], 3);
    assert_eq!(s["duplicates"], 1);
    assert_eq!(s["campaign"], "survey");
    // The extra column went into the Flow's initial data... for navigate only; the token row
    // keeps it either way.
    let data = db::Sql::open(&env.db())
        .value(
            "SELECT initial_data FROM tokens WHERE phone = ?1",
            &[PHONES[1].into()],
        )
        .text();
    assert_eq!(data, r#"{"city":"Paris"}"#);
}

#[test]
fn invalid_rows_are_reported_with_line_and_value() {
    let env = Env::new();
    let csv = env.write("survey.csv", &messy_csv());
    let out = env.run(&[csv.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 3:") && stderr.contains("\"not-a-phone\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6:") && stderr.contains("missing phone"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 7:") && stderr.contains("extra"),
        "{stderr}"
    );
}

#[test]
fn a_rerun_sends_nothing() {
    let env = Env::new();
    let rows: String = PHONES.iter().map(|p| format!("{p},X\n")).collect();
    let csv = env.write("c.csv", &format!("phone_number,customer_name\n{rows}"));
    let first = env.run(&[csv.to_str().unwrap(), "--json"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let before = env.requests();
    let again = env.run(&[csv.to_str().unwrap(), "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(env.requests(), before);
    let s = summary(&again);
    assert_eq!(
        (s["sent"].as_u64(), s["skipped"].as_u64()),
        (Some(0), Some(5))
    );
}

/// `n` distinct valid numbers (French mobiles).
fn many_phones(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("+336{:08}", 10_000_000 + i))
        .collect()
}

#[test]
fn sigint_mid_run_exits_130_with_the_resume_command_and_a_rerun_completes_once() {
    let env = Env::with(100, &[]);
    let phones = many_phones(40);
    let rows: String = phones.iter().map(|p| format!("{p}\n")).collect();
    let csv = env.write("long.csv", &format!("phone\n{rows}"));
    let child = env
        .bulk(&[csv.to_str().unwrap(), "--rate", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once a few messages are out (a debug build needs a moment to load the
    // numbering-plan metadata before the first row is parsed).
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.accepted().values().sum::<usize>() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("Resume with:") && stderr.contains("--rate 10"),
        "{stderr}"
    );
    let sent_first: usize = env.accepted().values().sum();
    assert!(sent_first > 0 && sent_first < 40, "{sent_first} {stderr}");

    let again = env.run(&[csv.to_str().unwrap(), "--rate", "200"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let accepted = env.accepted();
    assert_eq!(accepted.len(), 40);
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
}

#[test]
fn a_burst_of_rate_limits_slows_the_run_and_every_row_lands() {
    let env = Env::with(0, &["*=130429x5"]);
    let phones = many_phones(30);
    let rows: String = phones.iter().map(|p| format!("{p}\n")).collect();
    let csv = env.write("r.csv", &format!("phone\n{rows}"));
    let start = Instant::now();
    let out = env.run(&[csv.to_str().unwrap(), "--rate", "200", "--json"]);
    let elapsed = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(summary(&out)["sent"], 30);
    let accepted = env.accepted();
    assert_eq!(accepted.len(), 30);
    assert!(accepted.values().all(|n| *n == 1));
    // 30 rows at 200/s take 0.15 s; the rate-limit pause alone is 1 s.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn permanent_failures_are_reported_exit_1_and_written_to_failures_file_that_feeds_back() {
    let bad = digits(PHONES[1]);
    let env = Env::with(0, &[&format!("{bad}=131026")]);
    let csv = env.write(
        "p.csv",
        &format!(
            "phone,name,city\n{},A,Rabat\n{},B,Paris\nnope,C,X\n",
            PHONES[0], PHONES[1]
        ),
    );
    let failures = env.path("failed.csv");
    let out = env.run(&[
        csv.to_str().unwrap(),
        "--failures",
        failures.to_str().unwrap(),
        "--json",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("131026") && stderr.contains(PHONES[1]),
        "{stderr}"
    );
    let s = summary(&out);
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["failed"].as_u64(),
            s["invalid"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let written = std::fs::read_to_string(&failures).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("phone,name,city,line,error"));
    assert!(
        written.contains(&format!("{},B,Paris,3,", PHONES[1])),
        "{written}"
    );
    assert!(written.contains("nope,C,X,4,"), "{written}");

    // Fed back (same campaign): the header is accepted, the permanent failure is not resent.
    let before = env.requests();
    let again = env.run(&[failures.to_str().unwrap(), "--campaign", "p", "--json"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert_eq!(env.requests(), before);
    let s = summary(&again);
    assert_eq!(
        (s["previously_failed"].as_u64(), s["invalid"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn dry_run_sends_nothing_and_creates_no_token_rows() {
    let env = Env::new();
    let csv = env.write("survey.csv", &messy_csv());
    let out = env.run(&[csv.to_str().unwrap(), "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(env.requests(), 0);
    assert_eq!(env.token_rows(), 0);
    assert!(!db::exists(&env.db()));
    let s = summary(&out);
    assert_eq!(
        (s["would_send"].as_u64(), s["invalid"].as_u64()),
        (Some(3), Some(3))
    );

    // After a real run, the dry run sees what is already sent.
    env.run(&[csv.to_str().unwrap()]);
    let rows = env.token_rows();
    let out = env.run(&[csv.to_str().unwrap(), "--dry-run", "--json"]);
    let s = summary(&out);
    assert_eq!(
        (s["would_send"].as_u64(), s["skipped"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(env.token_rows(), rows);
}

#[test]
fn progress_lines_appear_when_stderr_is_not_a_terminal() {
    let env = Env::with(50, &[]);
    let phones = many_phones(12);
    let rows: String = phones.iter().map(|p| format!("{p}\n")).collect();
    let csv = env.write("slow.csv", &format!("phone\n{rows}"));
    let out = env.run(&[csv.to_str().unwrap(), "--rate", "10"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .count();
    assert!(lines >= 3, "{stderr}");
    assert!(
        stderr.contains("msg/s") && stderr.contains("sent"),
        "{stderr}"
    );
}

#[test]
fn json_summary_is_the_last_thing_on_stdout() {
    let env = Env::new();
    let csv = env.write("j.csv", &format!("phone\n{}\n{}\n", PHONES[0], PHONES[0]));
    let out = env.run(&[csv.to_str().unwrap(), "--json", "--campaign", "spring"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = summary(&out);
    for key in [
        "sent",
        "failed",
        "invalid",
        "skipped",
        "unknown",
        "campaign",
        "duplicates",
        "elapsed_s",
        "rate",
    ] {
        assert!(s.get(key).is_some(), "{key} missing in {s}");
    }
    assert_eq!(s["campaign"], "spring");
    assert_eq!(
        (s["sent"].as_u64(), s["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn bad_usage_exits_2_naming_the_header_found() {
    let env = Env::new();
    let csv = env.write("h.csv", "tel,nom\n+212610059159,A\n");
    let out = env.run(&[csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("tel,nom"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&[env.path("missing.csv").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.csv"));
}

#[test]
fn a_fatal_error_stops_the_run_with_exit_1_and_the_rows_stay_resumable() {
    let env = Env::with(0, &["*=190"]);
    let rows: String = many_phones(20).iter().map(|p| format!("{p}\n")).collect();
    let csv = env.write("f.csv", &format!("phone\n{rows}"));
    let out = env.run(&[csv.to_str().unwrap(), "--rate", "20", "--json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped taking rows") && stderr.contains("190"),
        "{stderr}"
    );
    let s = summary(&out);
    assert!(s["failed"].as_u64().unwrap() < 20, "{s}");
}
