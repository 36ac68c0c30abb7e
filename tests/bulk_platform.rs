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
                habits: Default::default(),
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

    fn db(&self) -> support::Sql {
        self.env.sql()
    }

    /// The campaign's bulk rows per state.
    fn states(&self, campaign: &str) -> HashMap<String, i64> {
        self.db()
            .rows(
                "SELECT state, COUNT(*) FROM tokens WHERE campaign = ?1 GROUP BY state",
                &[campaign.into()],
            )
            .into_iter()
            .map(|r| (r[0].text(), r[1].int()))
            .collect()
    }
}

/// One stored token row, as a test reads it.
#[derive(Debug, Clone)]
struct Row {
    token: String,
    state: String,
    message_id: Option<String>,
    error_code: Option<i64>,
    not_before: Option<String>,
    superseded_by: Option<String>,
    failed_after_acceptance: bool,
}

impl Platform {
    /// The campaign's rows for `phone`, oldest first (a superseded row and its successor).
    fn rows(&self, campaign: &str, phone: &str) -> Vec<Row> {
        // Creation time orders a row before its resend on both backends (no rowid on
        // PostgreSQL); the successor is the row nobody superseded.
        self.db()
            .rows(
                "SELECT token, state, message_id, error_code, not_before, superseded_by,
                        failed_after_acceptance
                 FROM tokens WHERE campaign = ?1 AND phone = ?2
                 ORDER BY created_at, superseded_by IS NULL",
                &[campaign.into(), phone.into()],
            )
            .into_iter()
            .map(|r| Row {
                token: r[0].text(),
                state: r[1].text(),
                message_id: r[2].opt_text(),
                error_code: r[3].opt_int(),
                not_before: r[4].opt_text(),
                superseded_by: r[5].opt_text(),
                failed_after_acceptance: r[6].int() != 0,
            })
            .collect()
    }

    /// Waits until `serve` has settled the send to each of `phones` as failed after
    /// acceptance (their `failed` status reached the store).
    fn wait_failed_after_acceptance(&self, campaign: &str, phones: &[&str]) {
        let start = std::time::Instant::now();
        loop {
            let settled = phones.iter().all(|p| {
                self.rows(campaign, p)
                    .last()
                    .is_some_and(|r| r.failed_after_acceptance)
            });
            if settled {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the failed statuses did not settle: {:?}; serve: {}",
                phones
                    .iter()
                    .map(|p| self.rows(campaign, p))
                    .collect::<Vec<_>>(),
                self.serve.as_ref().map(|s| s.stderr()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves the time of the campaign's deferred rows into the past: their time has come.
    fn let_deferred_time_come(&self, campaign: &str) -> usize {
        self.db().execute(
            "UPDATE tokens SET not_before = '2000-01-01T00:00:00.000Z'
                 WHERE campaign = ?1 AND state = 'deferred'",
            &[campaign.into()],
        ) as usize
    }

    /// The messages to `phone` the sandbox received (accepted or not), oldest first.
    fn messages_to(&self, phone: &str) -> Vec<RecordedRequest> {
        let to = digits(phone);
        self.messages()
            .into_iter()
            .filter(|r| r.to.as_deref() == Some(to.as_str()))
            .collect()
    }
}

/// Seconds from now to a stored time.
fn secs_until(stored: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(stored)
        .expect("stored time")
        .signed_duration_since(chrono::Utc::now())
        .num_seconds()
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
fn a_per_user_limit_defers_the_row_24_hours_and_the_run_goes_on() {
    let list = phones(200, 6);
    let limited = &list[1];
    let p = Platform::new(&[&format!("{}=131049", digits(limited))]);
    let csv = p.csv("peruser", &list);
    let out = p.run(&[&csv, "--rate", "50", "--json"]);
    let err = support::stderr(&out);
    assert!(!err.contains("stopped"), "{err}");
    assert!(err.contains("deferred: 1 (next at "), "{err}");
    let s = summary(&out);
    assert_eq!(
        (n(&s, "sent"), n(&s, "deferred"), n(&s, "failed")),
        (5, 1, 0),
        "every other row is sent: {s}"
    );
    assert_eq!(n(&s, "not_attempted"), 0, "{s}");
    assert_eq!(out.status.code(), Some(1), "a row is left to send: {err}");
    assert_eq!(
        p.messages_to(limited).len(),
        1,
        "not retried within the run"
    );
    let row = p.rows("peruser", limited).pop().unwrap();
    assert_eq!(
        (row.state.as_str(), row.error_code),
        ("deferred", Some(131049))
    );
    let wait = secs_until(row.not_before.as_deref().unwrap());
    assert!((24 * 3600 - 60..=24 * 3600).contains(&wait), "{wait} s");
    assert_eq!(s["next_deferred_at"].as_str(), row.not_before.as_deref());

    // A rerun does not start by hitting the same wall: the row is counted, not sent.
    let again = p.run(&[&csv, "--rate", "50", "--json"]);
    let err = support::stderr(&again);
    assert!(err.contains("deferred: 1 (next at "), "{err}");
    let s = summary(&again);
    assert_eq!(
        (n(&s, "sent"), n(&s, "deferred"), n(&s, "skipped")),
        (0, 1, 5),
        "{s}"
    );
    assert_eq!(p.messages_to(limited).len(), 1);
}

#[test]
fn a_deferred_row_is_sent_by_the_rerun_once_its_time_has_come_with_its_own_token() {
    let list = phones(300, 3);
    let limited = &list[0];
    let mut p = Platform::new(&[&format!("{}=131049", digits(limited))]);
    let csv = p.csv("later", &list);
    let out = p.run(&[&csv, "--json"]);
    assert_eq!(n(&summary(&out), "deferred"), 1);
    let before = p.rows("later", limited);

    assert_eq!(p.let_deferred_time_come("later"), 1);
    p.start_sandbox(&[]);
    let again = p.run(&[&csv, "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", support::stderr(&again));
    let s = summary(&again);
    assert_eq!((n(&s, "sent"), n(&s, "deferred")), (1, 0), "{s}");
    // No message carried the token: it is the one sent now.
    let after = p.rows("later", limited);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].token, before[0].token);
    assert_eq!(after[0].state, "sent");
    let sent = p.messages_to(limited);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].flow_token.as_deref(),
        Some(before[0].token.as_str())
    );
}

#[test]
fn a_pair_limit_that_outlasts_its_retries_defers_that_row_15_minutes() {
    // Meta's 4^X s backoff: 1 + 4 + 16 + 64 s over 5 attempts, for that row alone.
    let list = phones(400, 4);
    let pair = &list[2];
    let p = Platform::new(&[&format!("{}=131056", digits(pair))]);
    let csv = p.csv("pair", &list);
    let out = p.run(&[&csv, "--json"]);
    let err = support::stderr(&out);
    let s = summary(&out);
    assert_eq!((n(&s, "sent"), n(&s, "deferred")), (3, 1), "{s} {err}");
    assert_eq!(p.messages_to(pair).len(), 5, "the policy's 5 attempts");
    // The others did not wait for it.
    let last_other = p
        .messages()
        .iter()
        .filter(|r| r.to.as_deref() != Some(digits(pair).as_str()))
        .map(at_ms)
        .max()
        .unwrap();
    let first_pair = at_ms(&p.messages_to(pair)[0]);
    assert!(last_other - first_pair < 5_000, "others unaffected");
    let row = p.rows("pair", pair).pop().unwrap();
    assert_eq!(
        (row.state.as_str(), row.error_code),
        ("deferred", Some(131056))
    );
    let wait = secs_until(row.not_before.as_deref().unwrap());
    assert!((15 * 60 - 60..=15 * 60).contains(&wait), "{wait} s");
}

/// Two of four rows fail after Meta accepted them: 131047 (outside the 24-hour window) and
/// 131026 (undeliverable); `serve` receives the `failed` statuses. Returns the platform, the
/// file and the two phones, once the statuses have settled.
fn later_failures(campaign: &str, first: usize) -> (Platform, String, String, String) {
    later_failures_and(campaign, first, &[])
}

/// [`later_failures`], with more rows refused as `rules` say (PHONE=CODE, the phones after
/// the first four).
fn later_failures_and(
    campaign: &str,
    first: usize,
    more: &[(String, &str)],
) -> (Platform, String, String, String) {
    let mut list = phones(first, 4);
    let (window, gone) = (list[0].clone(), list[1].clone());
    let mut rules = vec![
        format!("{}=131047@status", digits(&window)),
        format!("{}=131026@status", digits(&gone)),
    ];
    for (phone, code) in more {
        list.push(phone.clone());
        rules.push(format!("{}={code}", digits(phone)));
    }
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let p = Platform::with_serve(&rules);
    let csv = p.csv(campaign, &list);
    let out = p.run(&[&csv, "--json"]);
    assert_eq!(
        n(&summary(&out), "sent"),
        4,
        "accepted, all four: {}",
        support::stderr(&out)
    );
    p.wait_failed_after_acceptance(campaign, &[&window, &gone]);
    (p, csv, window, gone)
}

#[test]
fn failures_after_acceptance_are_reported_by_the_next_run_by_code_with_the_template_hint() {
    let (p, csv, window, _) = later_failures("later_failed", 500);
    let before = p.messages().len();
    let out = p.run(&[&csv, "--json"]);
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        p.messages().len(),
        before,
        "nothing resent by a plain rerun"
    );
    assert!(
        err.contains("failed after acceptance: 2 (131026: 1, 131047: 1)"),
        "{err}"
    );
    assert!(
        err.contains("outside the 24-hour window: rerun with --template NAME --lang CODE to reach them with a template")
            && err.contains("even without --retry-failed"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{window} failed after Meta accepted it")),
        "each row is told: {err}"
    );
    let s = summary(&out);
    assert_eq!(
        s["failed_after_acceptance"],
        serde_json::json!({"131026": 1, "131047": 1}),
        "{s}"
    );
    assert_eq!(
        (n(&s, "skipped"), n(&s, "previously_failed")),
        (2, 2),
        "{s}"
    );
    let row = p.rows("later_failed", &window).pop().unwrap();
    assert_eq!(
        (row.state.as_str(), row.error_code),
        ("failed", Some(131047))
    );
    assert!(row.message_id.is_some());
}

#[test]
fn retry_failed_resends_with_a_fresh_token_and_codes_picks_which() {
    let (mut p, csv, window, gone) = later_failures("retry", 600);
    p.start_sandbox(&[]);
    let out = p.run(&[&csv, "--retry-failed", "--codes", "131026", "--json"]);
    let err = support::stderr(&out);
    let s = summary(&out);
    assert_eq!(n(&s, "sent"), 1, "{s} {err}");
    assert_eq!(
        s["failed_after_acceptance"],
        serde_json::json!({"131047": 1})
    );
    assert!(p.messages_to(&window).is_empty(), "not its code");
    let rows = p.rows("retry", &gone);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (old, new) = (&rows[0], &rows[1]);
    assert_eq!(old.superseded_by.as_deref(), Some(new.token.as_str()));
    assert_eq!(old.state, "failed", "the old row stays as it was");
    assert_eq!(new.state, "sent");
    assert_ne!(new.token, old.token);
    assert_eq!(
        p.messages_to(&gone)[0].flow_token.as_deref(),
        Some(new.token.as_str()),
        "a fresh token"
    );

    // All failed rows, whatever their code.
    let out = p.run(&[&csv, "--retry-failed", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    assert_eq!(n(&summary(&out), "sent"), 1);
    assert_eq!(p.rows("retry", &window).len(), 2);
    assert_eq!(p.messages_to(&window).len(), 1);
}

#[test]
fn a_template_rerun_resends_the_131047_rows_as_a_template_with_a_fresh_token() {
    let (mut p, csv, window, gone) = later_failures("window", 700);
    p.start_sandbox(&[]);
    let out = p.run(&[
        &csv,
        "--template",
        "survey_invite",
        "--lang",
        "en",
        "--json",
    ]);
    let err = support::stderr(&out);
    let s = summary(&out);
    assert_eq!(n(&s, "sent"), 1, "{s} {err}");
    assert_eq!(
        s["failed_after_acceptance"],
        serde_json::json!({"131026": 1})
    );
    assert!(
        p.messages_to(&gone).is_empty(),
        "131026 is not a window problem"
    );
    let sent = p.messages_to(&window);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["type"], "template", "{}", sent[0].body);
    let rows = p.rows("window", &window);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0].superseded_by.as_deref(),
        Some(rows[1].token.as_str())
    );
    assert_eq!(sent[0].flow_token.as_deref(), Some(rows[1].token.as_str()));
}

#[test]
fn the_dry_run_reports_deferred_rows_and_failures_after_acceptance_as_the_rerun_would() {
    let limited = phones(850, 1).remove(0);
    let (p, csv, _, _) = later_failures_and("dry", 800, &[(limited, "131049")]);
    let out = p.run(&[&csv, "--dry-run", "--json"]);
    let err = support::stderr(&out);
    let s = summary(&out);
    assert_eq!(
        s["failed_after_acceptance"],
        serde_json::json!({"131026": 1, "131047": 1}),
        "{s}"
    );
    assert_eq!((n(&s, "would_send"), n(&s, "deferred")), (0, 1), "{s}");
    assert!(err.contains("would not be resent"), "{err}");
    // The human summary is on stderr, as a run's.
    let human = p.run(&[&csv, "--dry-run"]);
    let said = support::stderr(&human);
    assert!(
        said.contains("failed after acceptance: 2 (131026: 1, 131047: 1)")
            && said.contains("deferred: 1 (next at "),
        "{said}"
    );
    let with_template = p.run(&[
        &csv,
        "--dry-run",
        "--template",
        "survey_invite",
        "--lang",
        "en",
        "--json",
    ]);
    assert_eq!(n(&summary(&with_template), "would_send"), 1);
    let retry_all = p.run(&[&csv, "--dry-run", "--retry-failed", "--json"]);
    assert_eq!(n(&summary(&retry_all), "would_send"), 2);
}

#[test]
fn codes_need_retry_failed() {
    let p = Platform::new(&[]);
    let csv = p.csv("codes", &phones(900, 1));
    let out = p.run(&[&csv, "--codes", "131047"]);
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(support::stderr(&out).contains("--retry-failed"));
}

/// Where the campaign's rows stand (the rows no resend superseded).
#[derive(Debug, Default)]
struct Fates {
    /// Sent, and a `delivered` or `read` status came.
    delivered: u64,
    /// Failed, with the Graph error code, per code.
    failed: std::collections::BTreeMap<i64, u64>,
    /// Deferred, with a not-before time, per code.
    deferred: std::collections::BTreeMap<i64, u64>,
    /// Anything else: pending, sending, unknown, sent without a delivery, failed or deferred
    /// without a code or a time.
    stuck: Vec<String>,
}

impl Platform {
    fn fates(&self, campaign: &str) -> Fates {
        let rows = self.db().rows(
            "SELECT phone, state, delivery, error_code, not_before FROM tokens
                 WHERE campaign = ?1 AND superseded_by IS NULL",
            &[campaign.into()],
        );
        let mut f = Fates::default();
        for row in rows {
            let (phone, state, delivery, code, not_before) = (
                row[0].text(),
                row[1].text(),
                row[2].opt_text(),
                row[3].opt_int(),
                row[4].opt_text(),
            );
            match (state.as_str(), delivery.as_deref(), code, &not_before) {
                ("sent", Some("delivered" | "read"), _, _) => f.delivered += 1,
                ("failed", _, Some(code), _) => *f.failed.entry(code).or_default() += 1,
                ("deferred", _, Some(code), Some(_)) => *f.deferred.entry(code).or_default() += 1,
                _ => f
                    .stuck
                    .push(format!("{phone} {state} {delivery:?} {code:?}")),
            }
        }
        f
    }

    /// Waits until no row of the campaign is stuck (statuses still on their way); the fates.
    fn wait_settled(&self, campaign: &str) -> Fates {
        let start = std::time::Instant::now();
        loop {
            let f = self.fates(campaign);
            if f.stuck.is_empty() {
                return f;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "rows stuck: {} e.g. {:?}",
                f.stuck.len(),
                &f.stuck[..f.stuck.len().min(5)]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Rows of the campaign superseded by a resend.
    fn superseded(&self, campaign: &str) -> i64 {
        self.db().int(
            "SELECT COUNT(*) FROM tokens WHERE campaign = ?1 AND superseded_by IS NOT NULL",
            &[campaign.into()],
        )
    }
}

fn codes(m: &std::collections::BTreeMap<i64, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The done criterion of the issue: 1,000 rows, 10 % failing after acceptance with 131047,
/// 2 % deferred by the per-user limit 131049, 1 % meeting the pair limit 131056 twice before
/// getting through; then the rerun, `--retry-failed --codes 131047` and `--template` paths.
#[test]
fn issue11_a_1000_row_campaign_ends_delivered_failed_with_code_or_deferred_and_its_reruns() {
    let started = std::time::Instant::now();
    let rules = ["*=131047@status%10", "*=131049%2", "*=131056%1x2"];
    let mut p = Platform::with_serve(&rules);
    let list = phones(10_000, 1000);
    let csv = p.csv("issue11", &list);
    let args = [csv.as_str(), "--rate", "250", "--json"];

    // The campaign.
    let t = std::time::Instant::now();
    let first = p.run(&args);
    let s1 = summary(&first);
    let f1 = p.wait_settled("issue11");
    let run_s = t.elapsed().as_secs_f64();
    assert_eq!(n(&s1, "rows"), 1000, "{s1}");
    assert_eq!(
        n(&s1, "sent") + n(&s1, "deferred"),
        1000,
        "accepted or deferred, the run went on: {s1}"
    );
    assert!(s1.get("stopped").is_none(), "{s1}");
    let after1 = f1.failed.get(&131047).copied().unwrap_or(0);
    assert_eq!(
        f1.delivered + after1 + f1.deferred.values().sum::<u64>(),
        1000,
        "{f1:?}"
    );
    assert!((60..=140).contains(&after1), "about 10 %: {f1:?}");
    let deferred1 = f1.deferred.get(&131049).copied().unwrap_or(0);
    assert!((5..=40).contains(&deferred1), "about 2 %: {f1:?}");
    let pair_retried = p
        .messages()
        .iter()
        .filter(|r| r.error_code == Some(131056))
        .count();
    println!(
        "ISSUE11 run: rows=1000 sent={} deferred={} stopped=no in {:.1}s; settled: delivered={} failed_after_acceptance={} deferred={} (not before {}) pair-limit answers retried={} stuck=0",
        n(&s1, "sent"),
        n(&s1, "deferred"),
        s1["elapsed_s"].as_f64().unwrap_or(0.0),
        f1.delivered,
        codes(&f1.failed),
        codes(&f1.deferred),
        s1["next_deferred_at"].as_str().unwrap_or("-"),
        pair_retried,
    );

    // The rerun: nothing sent again, the later failures and the deferred rows reported.
    let before = p.messages().len();
    let rerun = p.run(&args);
    let err = support::stderr(&rerun);
    let s2 = summary(&rerun);
    assert_eq!(p.messages().len(), before, "the rerun sends nothing");
    assert_eq!(n(&s2, "sent"), 0);
    assert_eq!(
        s2["failed_after_acceptance"]["131047"].as_u64(),
        Some(after1)
    );
    assert_eq!(n(&s2, "deferred"), deferred1);
    assert_eq!(n(&s2, "skipped"), f1.delivered);
    assert!(
        err.contains(&format!(
            "failed after acceptance: {after1} (131047: {after1})"
        )) && err.contains("--template NAME --lang CODE"),
        "{err}"
    );
    println!(
        "ISSUE11 rerun: sent=0 skipped={} failed_after_acceptance=131047:{} deferred={} requests=0",
        n(&s2, "skipped"),
        after1,
        n(&s2, "deferred"),
    );

    // --retry-failed --codes 131047: fresh tokens; free-form messages still fall outside the
    // window, so Meta fails them again.
    let retry = p.run(&[
        &csv,
        "--rate",
        "250",
        "--retry-failed",
        "--codes",
        "131047",
        "--json",
    ]);
    let s3 = summary(&retry);
    let f3 = p.wait_settled("issue11");
    assert_eq!(n(&s3, "sent"), after1, "{s3}");
    assert_eq!(p.superseded("issue11"), after1 as i64);
    assert_eq!(f3.failed.get(&131047).copied(), Some(after1), "{f3:?}");
    println!(
        "ISSUE11 retry-failed --codes 131047: resent={} with fresh tokens (superseded={}); failed after acceptance again={} (free-form, outside the window)",
        n(&s3, "sent"),
        p.superseded("issue11"),
        f3.failed.get(&131047).copied().unwrap_or(0),
    );

    // --template: a template reaches people outside the window. The sandbox fails every
    // message to the people its 131047 rule picks, templates included, so this step runs
    // against a sandbox whose first rule no longer picks anyone of the file, as Meta would
    // answer a template (a rule's share depends on its place: the others keep theirs).
    p.start_sandbox(&["+33699999999=131047@status", rules[1], rules[2]]);
    let template = p.run(&[
        &csv,
        "--rate",
        "250",
        "--template",
        "survey_invite",
        "--lang",
        "en",
        "--json",
    ]);
    let s4 = summary(&template);
    let f4 = p.wait_settled("issue11");
    let templates = p
        .messages()
        .iter()
        .filter(|r| r.status == Some(200) && r.body["type"] == "template")
        .count() as u64;
    // A template is marketing: some of them meet the per-user limit and are deferred.
    let deferred4 = n(&s4, "deferred") - deferred1;
    assert_eq!(n(&s4, "sent") + deferred4, after1, "{s4}");
    assert_eq!(templates, n(&s4, "sent"));
    assert_eq!(f4.failed.get(&131047), None, "{f4:?}");
    assert_eq!(f4.delivered, f1.delivered + n(&s4, "sent"), "{f4:?}");
    assert_eq!(f4.deferred.values().sum::<u64>(), deferred1 + deferred4);
    assert_eq!(
        f4.delivered + f4.failed.values().sum::<u64>() + f4.deferred.values().sum::<u64>(),
        1000
    );
    assert!(f4.stuck.is_empty());
    println!(
        "ISSUE11 template: resent={} as templates with fresh tokens, deferred={} by the per-user limit (superseded={}); final: delivered={} failed={} deferred={} stuck=0; whole test {:.1}s",
        n(&s4, "sent"),
        deferred4,
        p.superseded("issue11"),
        f4.delivered,
        codes(&f4.failed),
        codes(&f4.deferred),
        started.elapsed().as_secs_f64(),
    );
    assert!(run_s < 40.0, "the campaign settled in {run_s:.1}s");
}
