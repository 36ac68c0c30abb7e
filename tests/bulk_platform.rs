//! `flowctl bulk` against the real platform's awkward behaviours, as the sandbox plays them:
//! Meta's throttle of the app or account, a wrong setting refused for every row, per-user
//! limits, and failures that arrive on the status webhook after the send was accepted (with
//! `serve` receiving them). Each test runs the real binary with its own directory, database
//! and in-process sandbox.

mod support;

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flowctl::sandbox::{start, FailRule, RecordedRequest, SandboxHandle, SandboxOptions};
use serde_json::Value;
use support::{Env, Running, APP_SECRET};

/// A working directory with its database, an in-process sandbox and, when the test needs the
/// status webhook, `serve`.
struct Platform {
    env: Env,
    rt: tokio::runtime::Runtime,
    sandbox: Option<SandboxHandle>,
    serve: Option<Running>,
}

impl Platform {
    /// A sandbox with these `--fail` rules, without webhook.
    fn new(rules: &[&str]) -> Platform {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let mut p = Platform {
            env: Env::new(),
            rt,
            sandbox: None,
            serve: None,
        };
        p.start_sandbox(rules);
        p
    }

    /// `serve` on this database, and a sandbox with these rules posting statuses to it (the
    /// `failed` ones of `@status` rules, and the people's `sent`/`delivered`/`read`).
    fn with_serve(rules: &[&str]) -> Platform {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let env = Env::new();
        let serve = env.serve(&[]);
        let mut p = Platform {
            env,
            rt,
            sandbox: None,
            serve: Some(serve),
        };
        p.start_sandbox(rules);
        p
    }

    /// (Re)starts the sandbox with `rules`; a new sandbox has a new address and an empty log.
    fn start_sandbox(&mut self, rules: &[&str]) {
        if let Some(old) = self.sandbox.take() {
            let _ = self.rt.block_on(old.shutdown());
        }
        let webhook = self
            .serve
            .as_ref()
            .map(|s| format!("{}/api/message-webhook", s.url));
        let users = webhook
            .as_ref()
            .map(|_| flowctl::sandbox::user::UserOptions {
                complete_via: flowctl::sandbox::user::CompleteVia::Webhook,
                endpoint: None,
                public_key: None,
                flow: None,
                delay: Duration::from_millis(50),
            });
        let opts = SandboxOptions {
            failures: rules
                .iter()
                .map(|r| r.parse::<FailRule>().expect("rule"))
                .collect(),
            app_secret: webhook.as_ref().map(|_| APP_SECRET.to_string()),
            webhook,
            users,
            status_delay: Duration::from_millis(100),
            ..SandboxOptions::default()
        };
        self.sandbox = Some(self.rt.block_on(start(opts)).expect("sandbox"));
    }

    fn sandbox(&self) -> &SandboxHandle {
        self.sandbox.as_ref().expect("sandbox")
    }

    /// `flowctl bulk ARGS` pointed at the sandbox.
    fn bulk(&self, args: &[&str]) -> Command {
        let mut c = self
            .env
            .graph_cmd(&format!("http://{}", self.sandbox().addr()));
        c.env("FLOWCTL_PROGRESS_INTERVAL_MS", "300")
            .arg("bulk")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        support::run(self.bulk(args), Duration::from_secs(150))
    }

    /// Writes `NAME.csv` with these phones.
    fn csv(&self, name: &str, phones: &[String]) -> String {
        let mut text = String::from("phone_number,customer_name\n");
        for (i, p) in phones.iter().enumerate() {
            text.push_str(&format!("{p},Client {i}\n"));
        }
        let path = self.env.write(&format!("{name}.csv"), &text);
        path.to_str().expect("utf-8 path").to_string()
    }

    /// The `/messages` requests the sandbox received, oldest first.
    fn messages(&self) -> Vec<RecordedRequest> {
        self.sandbox()
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/messages"))
            .collect()
    }

    /// Accepted messages per recipient (digits).
    fn accepted(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.messages() {
            if r.status == Some(200) {
                *m.entry(r.to.unwrap_or_default()).or_default() += 1;
            }
        }
        m
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.env.db()).expect("open db")
    }

    /// The campaign's bulk rows per state.
    fn states(&self, campaign: &str) -> HashMap<String, i64> {
        let c = self.db();
        let mut q = c
            .prepare("SELECT state, COUNT(*) FROM tokens WHERE campaign = ?1 GROUP BY state")
            .expect("query");
        q.query_map([campaign], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(s) = self.sandbox.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

/// `n` distinct valid numbers (French mobiles), from `first`.
fn phones(first: usize, n: usize) -> Vec<String> {
    (first..first + n)
        .map(|i| format!("+336{:08}", 20_000_000 + i))
        .collect()
}

fn digits(p: &str) -> String {
    p.trim_start_matches('+').to_string()
}

/// The last line of stdout as JSON (`--json`).
fn summary(out: &Output) -> Value {
    let stdout = support::stdout(out);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{e}: {stdout:?}, stderr {}", support::stderr(out)))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Milliseconds since the epoch of a sandbox record's `at`.
fn at_ms(r: &RecordedRequest) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&r.at)
        .expect("at")
        .timestamp_millis()
}

#[test]
fn metas_throttle_pauses_the_whole_run_for_the_time_it_gives_and_burns_no_row() {
    // Meta answers 80007 once, saying the account regains access in 1 minute (the header
    // counts whole minutes: this test waits that minute out).
    let p = Platform::new(&["*=80007@regain=1x1"]);
    let list = phones(0, 6);
    let csv = p.csv("throttled", &list);
    let out = p.run(&[&csv, "--rate", "20", "--json"]);
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("flowctl: paused by Meta until ") && err.contains("(app/account throttled)"),
        "the pause is told when it starts: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("progress:") && l.contains("paused by Meta until")),
        "the progress lines show it: {err}"
    );
    let s = summary(&out);
    assert_eq!((n(&s, "sent"), n(&s, "failed")), (6, 0), "{s}");
    assert_eq!(n(&s, "throttles"), 1, "{s}");
    assert!(s["throttle_s"].as_f64().unwrap() >= 59.0, "{s}");

    // No request left during the minute; then every row went out, once.
    let msgs = p.messages();
    let throttled = msgs
        .iter()
        .find(|r| r.error_code == Some(80007))
        .expect("the throttled answer");
    let t = at_ms(throttled);
    let during: Vec<&RecordedRequest> = msgs
        .iter()
        .filter(|r| at_ms(r) > t + 500 && at_ms(r) < t + 59_000)
        .collect();
    assert!(during.is_empty(), "requests during the pause: {during:?}");
    let accepted = p.accepted();
    assert_eq!(accepted.len(), 6, "{accepted:?}");
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    assert_eq!(p.states("throttled").get("sent"), Some(&6));
}

#[test]
fn five_sends_in_a_row_refused_for_a_wrong_setting_stop_the_run_and_the_rows_stay_retryable() {
    // The template is missing for the first 5 requests; "fixed" after them.
    let p = Platform::new(&["*=132001x5"]);
    let list = phones(100, 12);
    let csv = p.csv("wrong", &list);
    let out = p.run(&[&csv, "--rate", "50", "--concurrency", "1", "--json"]);
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "flowctl: stopped: 5 sends in a row failed with 132001: the template does not exist in that language or is not approved: check --template and --lang"
        ),
        "one sentence naming the likely cause: {err}"
    );
    let s = summary(&out);
    assert_eq!((n(&s, "sent"), n(&s, "failed")), (0, 5), "{s}");
    assert_eq!(
        n(&s, "not_attempted"),
        7,
        "the rest is left for the rerun: {s}"
    );
    assert_eq!(p.messages().len(), 5, "stopped early");

    // Rerun after the fix: the refused rows are sent with the rest, nobody twice.
    let again = p.run(&[&csv, "--rate", "50", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", support::stderr(&again));
    let s = summary(&again);
    assert_eq!((n(&s, "sent"), n(&s, "previously_failed")), (12, 0), "{s}");
    let accepted = p.accepted();
    assert_eq!(accepted.len(), 12);
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
}

#[test]
fn a_per_user_limit_does_not_stop_the_run() {
    let list = phones(200, 6);
    let limited = digits(&list[1]);
    let p = Platform::new(&[&format!("{limited}=131049")]);
    let csv = p.csv("peruser", &list);
    let out = p.run(&[&csv, "--rate", "50", "--json"]);
    let err = support::stderr(&out);
    assert!(!err.contains("stopped"), "{err}");
    let s = summary(&out);
    assert_eq!(n(&s, "sent"), 5, "every other row is sent: {s}");
    assert_eq!(n(&s, "not_attempted"), 0, "{s}");
    assert_eq!(
        p.messages()
            .iter()
            .filter(|r| r.to.as_deref() == Some(&limited))
            .count(),
        1,
        "not retried within the run"
    );
}
