//! End-to-end tests of what an operator sees: campaign hints, `stats` figures that add up,
//! `serve` telling the truth about its database and its signals, the same conventions across
//! commands, and the README's offline tour run as it is written.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flowctl::store::{CompletionInput, NewToken, Origin, SendState, Store};
use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Four good rows, then Ahmed again (line 6).
const CONTACTS: &str = "phone_number,customer_name\n\
+212610059159,Ahmed\n\
+212610059160,Fatima\n\
+212610059161,Mohammed\n\
+212610059162,Salma\n\
+212610059159,Ahmed again\n";

fn bulk(env: &Env, sandbox: &Running, args: &[&str]) -> std::process::Output {
    let mut c = env.graph_cmd(&sandbox.url);
    c.arg("bulk").args(args);
    run(c, LIMIT)
}

fn flowctl(env: &Env, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd();
    c.args(args);
    run(c, LIMIT)
}

fn stats_json(env: &Env, args: &[&str]) -> Value {
    let out = flowctl(env, &[&["stats", "--json"][..], args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("stats --json")
}

fn n(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

// ---------------------------------------------------------------- point 4: campaign hints

#[test]
fn a_rerun_of_a_sent_campaign_says_nothing_was_sent_and_how_to_send_again() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let csv = env.write("spring.csv", CONTACTS);
    let csv = csv.to_str().unwrap();
    let first = bulk(&env, &sb, &[csv]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        !stderr(&first).contains("nothing was sent"),
        "{}",
        stderr(&first)
    );

    let again = bulk(&env, &sb, &[csv]);
    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "nothing was sent: every valid phone of this file was already sent in campaign \"spring\""
        ) && err.contains("use --campaign NEW"),
        "{err}"
    );
    // The dry run of the same says it in its own words.
    let dry = bulk(&env, &sb, &[csv, "--dry-run"]);
    assert!(
        stderr(&dry).contains("nothing would be sent: every valid phone"),
        "{}",
        stderr(&dry)
    );
}

#[test]
fn a_rerun_of_a_campaign_that_failed_names_the_codes_and_retry_failed() {
    let env = Env::new();
    let sb = env.sandbox(&["--fail", "*=131026"]);
    let csv = env.write("autumn.csv", CONTACTS);
    let csv = csv.to_str().unwrap();
    let first = bulk(&env, &sb, &[csv]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));

    let again = bulk(&env, &sb, &[csv, "--json"]);
    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "nothing was sent: every valid row failed in an earlier run of campaign \"autumn\""
        ) && err.contains("131026: 4")
            && err.contains("--retry-failed")
            && err.contains("--codes 131026"),
        "{err}"
    );
    let summary: Value = serde_json::from_str(stdout(&again).lines().last().unwrap()).unwrap();
    assert_eq!(
        summary["previously_failed_by_code"]["131026"], 4,
        "{summary}"
    );
}

#[test]
fn duplicates_are_listed_in_the_failures_file_with_the_line_they_repeat() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let csv = env.write("dups.csv", CONTACTS);
    let failures = env.path("failed.csv");
    let out = bulk(
        &env,
        &sb,
        &[
            csv.to_str().unwrap(),
            "--failures",
            failures.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&failures).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "header and the duplicate: {text}");
    assert!(
        lines[1].starts_with("+212610059159,Ahmed again,6,")
            && lines[1].contains("duplicate of line 2"),
        "{text}"
    );
}

#[test]
fn stats_columns_add_up_to_the_tokens_issued_and_the_codes_are_named() {
    let env = Env::new();
    let sb = env.sandbox(&["--fail", "+212610059160=131026"]);
    let csv = env.write("mixed.csv", CONTACTS);
    let out = bulk(&env, &sb, &[csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // A token stored whose send never left (a run stopped before it): pending.
    {
        let mut store = Store::open(env.db()).unwrap();
        let new = NewToken {
            token: flowctl::token::FlowToken::generate(),
            phone: flowctl::phone::Phone::parse("+212610059170", None).unwrap(),
            customer_name: None,
            campaign: "mixed".into(),
            origin: Origin::Bulk,
            initial_data: None,
            ttl: Duration::from_secs(86_400),
        };
        store.insert_token(&new, SendState::Pending).unwrap();
    }

    let report = stats_json(&env, &[]);
    for f in report["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&report["total"]])
    {
        let parts: i64 = [
            "sent", "failed", "deferred", "pending", "unknown", "replaced",
        ]
        .iter()
        .map(|k| n(f, k))
        .sum();
        assert_eq!(parts, n(f, "issued"), "the columns add up: {f}");
    }
    let total = &report["total"];
    assert_eq!(
        (
            n(total, "issued"),
            n(total, "sent"),
            n(total, "failed"),
            n(total, "pending")
        ),
        (5, 3, 1, 1),
        "{total}"
    );
    assert_eq!(report["statuses_received"], 0);

    let table = flowctl(&env, &["stats"]);
    let text = stdout(&table);
    let header = text.lines().next().unwrap();
    for column in ["deferred", "pending", "unknown", "replaced"] {
        assert!(header.contains(column), "{text}");
    }
    assert!(
        text.contains("131026  message undeliverable"),
        "each code's meaning: {text}"
    );
    assert!(
        text.contains("no delivery status has been received yet") && text.contains("flowctl serve"),
        "{text}"
    );
    assert!(text.contains("pending: 1 token was not sent yet"), "{text}");
}

#[test]
fn stats_of_a_campaign_that_does_not_exist_is_a_usage_error_naming_the_known_ones() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let csv = env.write("spring.csv", CONTACTS);
    bulk(&env, &sb, &[csv.to_str().unwrap()]);
    let out = flowctl(&env, &["stats", "--campaign", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no campaign \"nope\" in the database (campaigns: spring)"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

// ----------------------------------------------------------- point 6: serve tells the truth

#[tokio::test]
async fn healthz_answers_503_and_logs_once_the_database_file_is_deleted() {
    const API_KEY: &str = "operator-api-key-3f9a";
    if skip_on_postgres("about deleting the SQLite file") {
        return;
    }
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let server = env.serve_with_env(
        &[
            ("FLOWCTL_API_KEY", API_KEY),
            ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
            ("PHONE_NUMBER_ID", "106540352242922"),
            ("FLOW_ID", "1234567890123456"),
            ("GRAPH_API_URL", &sb.url),
        ],
        &[],
    );
    let send = || {
        reqwest::Client::new()
            .post(format!("{}/api/send-flow", server.url))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(r#"{"phoneNumber":"+212610059159","customerName":"Ahmed"}"#)
            .send()
    };
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    let url = format!("{}/healthz", server.url);
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 200);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = env.db_file().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    // The file check is cached for a couple of seconds.
    tokio::time::sleep(flowctl::server::health::CACHE_FOR + Duration::from_millis(300)).await;
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.text().await.unwrap();
    assert!(
        !body.contains(env.dir.path().to_str().unwrap()),
        "no path to clients: {body}"
    );
    // No token is issued into the deleted file either.
    assert_eq!(send().await.unwrap().status().as_u16(), 503);
    assert_eq!(sandbox_messages(&sb.url).len(), 1, "only the send before");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = server.stderr();
    assert!(log.contains("was deleted"), "{log}");
}

#[tokio::test]
async fn serve_logs_the_real_path_of_a_404_with_tenths_of_a_millisecond_and_no_colours() {
    let env = Env::new();
    let server = env.serve_with_env(&[("NO_COLOR", "1")], &[]);
    let resp = reqwest::get(format!("{}/no/such/route", server.url))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("status=404"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("path=/no/such/route"), "{line}");
    let ms = line
        .split("ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"));
    let decimals = ms.split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 1, "rounded to 0.1 ms: {line}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escapes when not a terminal: {log:?}"
    );
}

#[test]
fn serve_and_sandbox_exit_130_on_sigint() {
    let env = Env::new();
    let mut server = env.serve(&[]);
    server.signal("INT");
    let status = server.wait(Duration::from_secs(10)).expect("serve stops");
    assert_eq!(status.code(), Some(130));

    let mut sandbox = env.sandbox(&[]);
    sandbox.signal("INT");
    let status = sandbox
        .wait(Duration::from_secs(10))
        .expect("sandbox stops");
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_port_in_use_is_the_same_exit_code_for_serve_and_sandbox() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let key = env.key_file();
    let mut c = env.cmd();
    c.env("APP_SECRET", APP_SECRET)
        .env("FLOW_SCREEN", "Q1")
        .args(["serve", "--listen", &addr, "--private-key-file"])
        .arg(&key);
    let serve = run(c, LIMIT);
    let sandbox = flowctl(&env, &["sandbox", "--listen", &addr]);
    assert_eq!(serve.status.code(), Some(2), "{}", stderr(&serve));
    assert_eq!(
        sandbox.status.code(),
        serve.status.code(),
        "{}",
        stderr(&sandbox)
    );
    for out in [&serve, &sandbox] {
        assert!(
            stderr(out).contains(&format!("cannot listen on {addr}")),
            "{}",
            stderr(out)
        );
    }
}

/// Issues `n` tokens with a completion each, answers long enough that the export of them all
/// is far more than a pipe holds.
fn many_completions(db: &flowctl::store::DbTarget, n: usize) {
    let mut store = Store::open(db).unwrap();
    let answers: serde_json::Map<String, Value> =
        serde_json::from_value(serde_json::json!({"comment": "x".repeat(400)})).unwrap();
    for i in 0..n {
        let token = flowctl::token::FlowToken::generate();
        let new = NewToken {
            token: token.clone(),
            phone: flowctl::phone::Phone::parse(&format!("+2126100{i:05}"), None).unwrap(),
            customer_name: None,
            campaign: "big".into(),
            origin: Origin::Bulk,
            initial_data: None,
            ttl: Duration::from_secs(86_400),
        };
        store.insert_token(&new, SendState::Sent).unwrap();
        store
            .complete(&CompletionInput {
                token: token.as_str(),
                answers: &answers,
                source: "endpoint",
                sender: None,
                event_id: None,
                completed_at: "2026-01-01T00:00:00.000Z",
            })
            .unwrap();
    }
}

#[test]
fn a_closed_stdout_is_a_normal_end_for_export_stats_and_completions() {
    let env = Env::new();
    many_completions(&env.db(), 2_000);
    for cmd in [
        "export --ndjson",
        "export --csv",
        "stats",
        "completions bash",
        "completions powershell",
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; \"$FLOWCTL\" {cmd} | head -1 >/dev/null"
            ))
            .env("FLOWCTL", bin())
            .env("FLOWCTL_DB", env.db_arg())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{cmd}: {}", stderr(&out));
    }
}

#[test]
fn serve_with_a_closed_stdout_keeps_serving() {
    let env = Env::new();
    let key = env.key_file();
    let mut c = env.cmd();
    c.env("APP_SECRET", APP_SECRET)
        .env("FLOW_SCREEN", "Q1")
        .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line is written
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve still runs with its stdout closed"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

// ---------------------------------------------------------------- point 7: consistency

#[test]
fn bulk_reads_the_csv_from_stdin_and_needs_a_campaign_for_it() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["bulk", "-", "--campaign", "piped", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(CONTACTS.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            &summary["campaign"],
            &summary["sent"],
            &summary["duplicates"]
        ),
        (&Value::from("piped"), &Value::from(4), &Value::from(1)),
        "{summary}"
    );

    let mut c = env.graph_cmd(&sb.url);
    c.args(["bulk", "-"]).stdin(Stdio::null());
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--campaign"), "{}", stderr(&out));
}

#[test]
fn dry_run_and_run_print_their_summaries_on_the_same_stream_in_good_grammar() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let csv = env.write(
        "one.csv",
        "phone_number,customer_name\n+212610059159,Ahmed\n",
    );
    let csv = csv.to_str().unwrap();
    let dry = bulk(&env, &sb, &[csv, "--dry-run"]);
    let real = bulk(&env, &sb, &[csv]);
    for (what, out) in [("dry run", &dry), ("run", &real)] {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
        assert!(stdout(out).is_empty(), "{what}: stdout is for --json only");
        assert!(
            stderr(out).contains("campaign \"one\": 1 row,"),
            "{what}: {}",
            stderr(out)
        );
    }
    // One duplicate is "1 duplicate", in the dry run and the run.
    let dup = env.write(
        "dup.csv",
        "phone_number,customer_name\n+212610059160,Amal\n+212610059160,Amal again\n",
    );
    let dup = dup.to_str().unwrap();
    for args in [vec![dup, "--dry-run"], vec![dup]] {
        let out = bulk(&env, &sb, &args);
        assert!(
            stderr(&out).contains(", 1 duplicate,"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // With --json the summary is the last line of stdout, in both.
    let dry = bulk(&env, &sb, &[csv, "--dry-run", "--json"]);
    let summary: Value = serde_json::from_str(stdout(&dry).lines().last().unwrap()).unwrap();
    assert_eq!(summary["dry_run"], true);
}

#[test]
fn quiet_leaves_out_progress_and_summary_but_not_the_json() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let csv = env.write("quiet.csv", CONTACTS);
    let out = bulk(&env, &sb, &[csv.to_str().unwrap(), "-q", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["sent"], 4);
}

#[test]
fn the_campaign_lock_file_is_removed_after_the_run() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let csv = env.write("locked.csv", CONTACTS);
    let out = bulk(&env, &sb, &[csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn send_prints_snake_case_keys_and_keeps_the_old_camel_case_ones() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["send", "+212610059159"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for (snake, camel) in [
        ("message_id", "messageId"),
        ("flow_token", "flowToken"),
        ("phone_number", "phoneNumber"),
    ] {
        assert!(v[snake].is_string(), "{v}");
        assert_eq!(v[snake], v[camel], "{v}");
    }
}

#[test]
fn a_short_secret_never_masks_an_ordinary_word() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let enc = env.write(
        "enc.pem",
        vectors()["keys"]["private_key_pkcs8_encrypted_pem"]
            .as_str()
            .unwrap(),
    );
    let mut c = env.graph_cmd(&sb.url);
    c.env("PRIVATE_KEY_PASSPHRASE", "wrong")
        .args(["keys", "check", "--private-key-file"])
        .arg(&enc);
    let out = run(c, LIMIT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!err.contains("***"), "{err}");
}

// ------------------------------------------------------ point 8: the README's offline tour

/// The shell block of the README between the offline-tour markers.
fn readme_tour() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- offline-tour:start -->")
        .expect("start marker");
    let end = readme
        .find("<!-- offline-tour:end -->")
        .expect("end marker");
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(body, _)| body)
        .expect("a sh block between the markers");
    body.to_string()
}

#[test]
fn the_readme_offline_tour_runs_and_messages_nobody_twice() {
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("contacts.sample.csv"),
        env.path("contacts.sample.csv"),
    )
    .unwrap();
    std::fs::create_dir(env.path("examples")).unwrap();
    std::fs::copy(
        root.join("examples/survey_flow.json"),
        env.path("examples/survey_flow.json"),
    )
    .unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (graph, serve) = (free(), free());
    let tour = readme_tour();
    for command in [
        "keygen",
        "sandbox",
        "serve",
        "keys upload",
        "keys check",
        "send",
        "bulk",
        "--dry-run",
        "stats",
        "export",
    ] {
        assert!(
            tour.contains(&format!("flowctl {command}")) || tour.contains(command),
            "the tour covers {command}"
        );
    }
    // The build line is the reader's; the test has the binary already.
    let script: String = tour
        .lines()
        .filter(|l| !l.starts_with("cargo "))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{graph}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{serve}"));
    let bin_dir = Path::new(bin()).parent().unwrap();
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("{script}\nwait"))
        .current_dir(env.dir.path())
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let out = run(c, Duration::from_secs(120));
    let (said, err) = (stdout(&out), stderr(&out));
    assert!(!err.contains("panicked"), "{err}");
    assert!(said.contains("BEGIN PUBLIC KEY"), "keygen: {said}");
    assert!(said.contains("\"matches\":true"), "keys check: {said}");
    assert!(said.contains("\"success\":true"), "send: {said}");
    assert!(
        err.contains("line 6") && err.contains("not-a-phone"),
        "the sample's bad row is named: {err}"
    );
    let total = said
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap_or_else(|| panic!("stats: {said}\n{err}"));
    let cells: Vec<&str> = total.split_whitespace().collect();
    // campaign issued sent failed deferred pending unknown replaced delivered read completed
    assert_eq!(cells[1], "5", "issued: {total}");
    assert_eq!(cells[2], "5", "sent: {total}");
    assert_ne!(cells[10], "0", "completed: {total}\n{err}");
    assert!(said.contains("flow_token,phone_number"), "export: {said}");

    // serve logged a line per completion.
    let serve_log = std::fs::read_to_string(env.path("serve.log")).unwrap_or_default();
    let completed: usize = cells[10].parse().unwrap();
    assert!(
        serve_log.matches("completion stored").count() >= completed,
        "{serve_log}"
    );

    // Running the tour's bulk again sends nothing, and says why.
    let mut again = Command::new(bin());
    again
        .args(["bulk", "contacts.sample.csv"])
        .current_dir(env.dir.path())
        .env_clear()
        .env("FLOWCTL_DB", "tour.db")
        .env("DEFAULT_COUNTRY", "MA")
        .env("GRAPH_API_URL", format!("http://127.0.0.1:{graph}"))
        .env("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN)
        .env("PHONE_NUMBER_ID", "106540352242922")
        .env("FLOW_ID", "1234567890123456");
    let again = run(again, LIMIT);
    assert!(
        stderr(&again).contains("nothing was sent: every valid phone of this file was already sent in campaign \"contacts.sample\": use --campaign NEW to send to them again; 1 row invalid"),
        "{}",
        stderr(&again)
    );

    // Nobody messaged twice across the steps.
    let conn = rusqlite::Connection::open(env.path("tour.db")).unwrap();
    let (tokens, phones): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT phone) FROM tokens",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((tokens, phones), (5, 5));
}

/// Runs `command` (a shell line) on a pseudo-terminal through util-linux `script`, with
/// `input` typed in; `None` when `script` is not installed.
fn on_a_terminal(
    env: &Env,
    vars: &[(&str, &str)],
    command: &str,
    input: &str,
) -> Option<std::process::Output> {
    Command::new("script").arg("--version").output().ok()?;
    let mut c = Command::new("script");
    c.args(["-qec", command, "/dev/null"])
        .current_dir(env.dir.path())
        .env("FLOWCTL_DB", env.db_arg())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    Some(child.wait_with_output().unwrap())
}

#[test]
fn a_run_to_more_than_a_thousand_people_asks_first_on_a_terminal() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut rows = String::from("phone_number,customer_name\n");
    for i in 0..1_001 {
        rows.push_str(&format!("+2126100{i:05},P{i}\n"));
    }
    env.write("big.csv", &rows);
    let vars = [
        ("GRAPH_API_URL", sb.url.as_str()),
        ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
        ("PHONE_NUMBER_ID", "106540352242922"),
        ("FLOW_ID", "1234567890123456"),
    ];
    let line = format!("'{}' bulk big.csv --rate 1000", bin());
    let Some(no) = on_a_terminal(&env, &vars, &line, "n\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    let said = stdout(&no);
    assert_eq!(no.status.code(), Some(1), "{said}");
    assert!(
        said.contains("Send the Flow to the 1001 rows of big.csv (campaign \"big\")? [y/N]")
            && said.contains("nothing sent (not confirmed"),
        "{said}"
    );
    assert!(
        sandbox_messages(&sb.url).is_empty(),
        "nothing left for Meta"
    );

    // --yes: no question, the run goes.
    let yes = on_a_terminal(&env, &vars, &format!("{line} --yes -q"), "").unwrap();
    assert_eq!(yes.status.code(), Some(0), "{}", stdout(&yes));
    assert!(!stdout(&yes).contains("[y/N]"), "{}", stdout(&yes));
    assert_eq!(sandbox_messages(&sb.url).len(), 1_001);
}

#[tokio::test]
async fn a_421_is_logged_with_the_keys_check_hint() {
    let env = Env::new();
    let server = env.serve(&[]);
    let v = vectors();
    let wrong = v["negative_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "wrong_rsa_key")
        .unwrap();
    let body = wrong["request_body_raw"].as_str().unwrap().to_string();
    let sig = flowctl::crypto::sign(APP_SECRET.as_bytes(), body.as_bytes());
    let resp = FlowClient::new(&server.url).post_raw(body, Some(sig)).await;
    assert_eq!(resp.status().as_u16(), 421);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.stderr();
    assert!(
        log.contains("status=421") && log.contains("run `flowctl keys check`"),
        "{log}"
    );
}

#[test]
fn replacing_a_different_registered_key_asks_first_on_a_terminal() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    for name in ["a.pem", "b.pem"] {
        let out = flowctl(&env, &["keygen", "--out", name]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let vars = [
        ("GRAPH_API_URL", sb.url.as_str()),
        ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
        ("PHONE_NUMBER_ID", "106540352242922"),
    ];
    let keys = |sub: &str, key: &str| format!("'{}' keys {sub} --private-key-file {key}", bin());
    // The first upload replaces nothing: no question.
    let Some(first) = on_a_terminal(&env, &vars, &keys("upload", "a.pem"), "") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    assert!(!stdout(&first).contains("[y/N]"), "{}", stdout(&first));

    let declined = on_a_terminal(&env, &vars, &keys("upload", "b.pem"), "n\n").unwrap();
    let said = stdout(&declined);
    assert_eq!(declined.status.code(), Some(1), "{said}");
    assert!(
        said.contains("A different public key is registered") && said.contains("nothing uploaded"),
        "{said}"
    );
    let check = on_a_terminal(&env, &vars, &keys("check", "a.pem"), "").unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "a.pem is still the one: {}",
        stdout(&check)
    );

    let replaced = on_a_terminal(
        &env,
        &vars,
        &format!("{} --yes", keys("upload", "b.pem")),
        "",
    )
    .unwrap();
    assert_eq!(replaced.status.code(), Some(0), "{}", stdout(&replaced));
    let check = on_a_terminal(&env, &vars, &keys("check", "b.pem"), "").unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}

/// `DATABASE_URL` is used when neither --db nor FLOWCTL_DB is given; FLOWCTL_DB wins over it;
/// an unreachable server is an error naming it, password masked.
#[test]
fn database_url_is_the_fallback_and_its_password_is_never_shown() {
    let env = Env::new();
    let unreachable = "postgres://crm:dbpass-77x@127.0.0.1:1/crm?sslmode=disable";
    let out = env
        .cmd()
        .env_remove("FLOWCTL_DB")
        .env("DATABASE_URL", unreachable)
        .args(["stats"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("postgres://crm:***@127.0.0.1:1/crm"),
        "the error names the database: {err}"
    );
    assert!(!err.contains("dbpass-77x"), "{err}");
    // FLOWCTL_DB (here the temp dir's SQLite file) wins over DATABASE_URL.
    let out = env
        .cmd()
        .env("DATABASE_URL", unreachable)
        .args(["stats"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("127.0.0.1:1"), "{err}");
    // A malformed URL is a usage error naming the variable.
    let out = env
        .cmd()
        .env_remove("FLOWCTL_DB")
        .env(
            "DATABASE_URL",
            "postgres://crm:dbpass-77x@host:notaport/crm",
        )
        .args(["stats"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("dbpass-77x"), "{err}");
}

/// A PostgreSQL password given with --db would show in the process list: refused (exit 2),
/// and the message does not repeat it.
#[test]
fn a_database_password_on_the_command_line_is_refused() {
    let env = Env::new();
    let out = env
        .cmd()
        .args([
            "stats",
            "--db",
            "postgres://crm:cmdline-pw-9@127.0.0.1:1/crm",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("process list") && err.contains("FLOWCTL_DB"),
        "{err}"
    );
    assert!(!err.contains("cmdline-pw-9"), "{err}");
}
