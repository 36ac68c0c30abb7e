//! A campaign that watches the Flow's health, end to end over the real binaries: `serve`
//! records Meta's `flows` webhook (`FLOW_STATUS_CHANGE`, posted by the sandbox as Meta posts
//! it: <https://developers.facebook.com/docs/whatsapp/flows/reference/flowswebhooks>) in the
//! database that a running `bulk` reads; a THROTTLED or BLOCKED Flow pauses the run and
//! PUBLISHED resumes it, or `--max-outage` stops it with the rest pending; a send refused
//! with 132069 pauses it too (Flow Health and Monitoring:
//! <https://developers.facebook.com/docs/whatsapp/flows/guides/healthmonitoring>); the
//! pre-flight refuses a DRAFT Flow and a file larger than the messaging limit unless forced.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const FLOW_ID: &str = "1234567890123456";

/// `serve`, and a sandbox owning the Flow and posting to the webhook, signed.
fn serve_and_sandbox(env: &Env, extra: &[&str]) -> (Running, Running) {
    let server = env.serve(&[]);
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--flow",
            FLOW_ID,
            "--webhook",
        ])
        .arg(format!("{}/api/message-webhook", server.url))
        .args(extra);
    (server, Running::start(sb))
}

fn contacts(env: &Env, n: usize) -> PathBuf {
    let mut text = String::from("phone_number,customer_name\n");
    for i in 0..n {
        text.push_str(&format!("+2126100{:05},Client {i}\n", 10_000 + i));
    }
    env.write("people.csv", &text)
}

fn accepted(sandbox: &Running) -> usize {
    sandbox_messages(&sandbox.url)
        .iter()
        .filter(|r| r["status"] == 200)
        .count()
}

fn set_flow_status(sandbox: &Running, status: &str) {
    let (code, body) = http_post_json(
        &format!("{}/_sandbox/flow-status", sandbox.url),
        &format!(r#"{{"flow_id": "{FLOW_ID}", "status": "{status}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
}

/// A `bulk` run in the background, its stderr in a file.
struct Bulk {
    child: Child,
    stderr: PathBuf,
}

impl Bulk {
    fn start(env: &Env, sandbox: &Running, csv: &Path, args: &[&str]) -> Bulk {
        let stderr = env.path("bulk.stderr");
        let mut c = env.graph_cmd(&sandbox.url);
        c.env("FLOWCTL_FLOW_WATCH_INTERVAL_MS", "100")
            .arg("bulk")
            .arg(csv)
            .args(["--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        Bulk {
            child: c.spawn().expect("spawn bulk"),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_for_line(&self, needle: &str) {
        let started = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {needle:?} in:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the end: the exit code and the JSON summary.
    fn finish(self) -> (i32, Value, String) {
        let stderr = self.stderr.clone();
        let out = self.child.wait_with_output().expect("bulk output");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let err = std::fs::read_to_string(stderr).unwrap_or_default();
        let summary = serde_json::from_str(text.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("{e}: {text} {err}"));
        (out.status.code().unwrap_or(-1), summary, err)
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bulk_pauses_while_the_flow_is_throttled_and_resumes_when_published() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &[]);
    let csv = contacts(&env, 30);
    let bulk = Bulk::start(
        &env,
        &sandbox,
        &csv,
        &["--rate", "10", "--concurrency", "2"],
    );
    wait_until("the run sends", || accepted(&sandbox) >= 5);
    set_flow_status(&sandbox, "THROTTLED");
    bulk.wait_for_line(&format!(
        "the Flow {FLOW_ID} is THROTTLED (Meta's flows webhook)"
    ));
    let before = accepted(&sandbox);
    std::thread::sleep(Duration::from_millis(1500));
    let during = accepted(&sandbox) - before;
    // At 10/s, 15 messages would have left in that time; only the (at most 2) requests in
    // flight when the pause began may land.
    assert!(during <= 2, "{during} sends while paused");
    assert!(before < 30, "paused before the end ({before} sent)");
    set_flow_status(&sandbox, "PUBLISHED");
    let (code, summary, err) = bulk.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["sent"], 30, "{summary}");
    assert_eq!(summary["flow_pauses"], 1, "{summary}");
    assert!(
        summary["flow_pause_s"].as_f64().unwrap() >= 1.0,
        "{summary}"
    );
    assert!(
        err.contains("is PUBLISHED again (Meta's flows webhook)"),
        "{err}"
    );
    assert_eq!(accepted(&sandbox), 30);
    eprintln!(
        "sent before the pause {before}, during {during}, after {}",
        30 - before - during
    );
}

#[test]
fn a_flow_held_past_max_outage_stops_the_run_and_the_rest_stays_pending() {
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &[]);
    let csv = contacts(&env, 20);
    let bulk = Bulk::start(&env, &sandbox, &csv, &["--rate", "5", "--max-outage", "1s"]);
    wait_until("the run sends", || accepted(&sandbox) >= 3);
    set_flow_status(&sandbox, "BLOCKED");
    let (code, summary, err) = bulk.finish();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("the Flow {FLOW_ID} has been BLOCKED for")),
        "{err}"
    );
    let sent = summary["sent"].as_u64().unwrap();
    assert!(sent < 20, "{summary}");
    assert!(summary["not_attempted"].as_u64().unwrap() > 0, "{summary}");
    // A request in flight when Meta blocked the Flow was refused (132068): recorded as a
    // retryable failure, which the rerun sends again.

    // Once the Flow is back, the rerun sends exactly the rest.
    set_flow_status(&sandbox, "PUBLISHED");
    let mut c = env.graph_cmd(&sandbox.url);
    c.arg("bulk").arg(&csv).args(["--json", "--rate", "50"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(again["sent"].as_u64().unwrap() + sent, 20, "{again}");
    assert_eq!(accepted(&sandbox), 20);
}

#[test]
fn a_throttled_refusal_pauses_the_run_until_graph_says_published() {
    // No `serve`: the refusal (132069 past 10 messages an hour) closes the gate, and the
    // Flow's status read from Graph opens it again.
    let env = Env::new();
    let sandbox = env.sandbox(&["--flow", &format!("{FLOW_ID}=THROTTLED")]);
    let csv = contacts(&env, 14);
    let bulk = Bulk::start(&env, &sandbox, &csv, &["--rate", "20", "--force"]);
    bulk.wait_for_line(&format!(
        "the Flow {FLOW_ID} is THROTTLED (a send was refused)"
    ));
    assert_eq!(accepted(&sandbox), 10, "Meta lets 10 an hour through");
    set_flow_status(&sandbox, "PUBLISHED");
    let (code, summary, err) = bulk.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (summary["sent"].as_u64(), summary["failed"].as_u64()),
        (Some(14), Some(0)),
        "{summary}"
    );
    assert!(err.contains("is PUBLISHED again (GET /{flow-id})"), "{err}");
}

#[test]
fn preflight_refuses_a_draft_flow_and_a_file_over_the_messaging_limit_unless_forced() {
    let env = Env::new();
    let sandbox = env.sandbox(&["--flow", &format!("{FLOW_ID}=DRAFT")]);
    let csv = contacts(&env, 3);
    let bulk = |args: &[&str]| {
        let mut c = env.graph_cmd(&sandbox.url);
        c.arg("bulk").arg(&csv).arg("--json").args(args);
        run(c, LIMIT)
    };
    let out = bulk(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the Flow {FLOW_ID} is DRAFT, not PUBLISHED")),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(sandbox_messages(&sandbox.url).len(), 0, "nothing sent");
    let out = bulk(&["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(accepted(&sandbox), 3);

    // A number allowed 250 people a day, and a file of 251.
    set_flow_status(&sandbox, "PUBLISHED");
    let (code, _) = http_post_json(
        &format!("{}/_sandbox/account", sandbox.url),
        r#"{"phone_number": {"whatsapp_business_manager_messaging_limit": "TIER_250"}}"#,
    );
    assert_eq!(code, 200);
    let big = contacts(&env, 251);
    let mut c = env.graph_cmd(&sandbox.url);
    c.arg("bulk")
        .arg(&big)
        .args(["--campaign", "big", "--json"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("251 different people, more than the number's messaging limit (TIER_250"),
        "{err}"
    );
    assert_eq!(accepted(&sandbox), 3, "nothing more sent");
}

/// A MARKETING template whose FLOW button opens the Flow deployed as `survey`.
const FLOW_TEMPLATE: &str = r#"{
  "name": "enquete_visite",
  "language": "fr",
  "category": "MARKETING",
  "components": [
    { "type": "BODY", "text": "Bonjour {{1}}, comment s'est passée votre visite à {{2}} ?" },
    { "type": "BUTTONS", "buttons": [
      { "type": "FLOW", "text": "Répondre", "flow_name": "survey",
        "navigate_screen": "ACCUEIL_SERVICE", "flow_action": "navigate" }
    ] }
  ]
}"#;

/// The whole campaign of issue 16, as a business runs it: the Flow deployed from the
/// repository and published, a template with a FLOW button created, two people who replied
/// STOP, then `bulk --template` with parameters from CSV columns, paused while Meta says the
/// Flow is THROTTLED and resumed when it is PUBLISHED again; nobody messaged twice, nobody who
/// said STOP messaged at all.
#[test]
fn a_deployed_flow_and_its_template_campaign_pause_while_throttled_and_skip_stop() {
    const WABA_ID: &str = "102290129340398";
    let env = Env::new();
    let (_server, sandbox) = serve_and_sandbox(&env, &[]);

    let mut c = env.graph_cmd(&sandbox.url);
    c.env("WABA_ID", WABA_ID)
        .args(["flows", "deploy"])
        .arg(survey_flow())
        .args(["--name", "survey", "--categories", "SURVEY", "--publish"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deployed = stdout(&out);
    let flow_id: String = deployed
        .lines()
        .find_map(|l| l.strip_prefix("published Flow \"survey\" ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no published Flow id in: {deployed}"))
        .to_string();

    let template = env.write("template.json", FLOW_TEMPLATE);
    let mut c = env.graph_cmd(&sandbox.url);
    c.env("WABA_ID", WABA_ID)
        .args(["templates", "create", "--file"])
        .arg(&template);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let phones: Vec<String> = (0..30)
        .map(|i| format!("+2126100{:05}", 20_000 + i))
        .collect();
    let stop = [&phones[3], &phones[17]];
    for phone in stop {
        let (code, body) = http_post_json(
            &format!("{}/_sandbox/inbound", sandbox.url),
            &format!(r#"{{"from": "{phone}", "text": "Stop"}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }
    wait_until("serve recorded both STOP replies", || {
        stop.iter()
            .all(|p| env.store().suppression(p).ok().flatten().is_some())
    });

    let mut text = String::from("phone_number,customer_name,ville\n");
    for (i, phone) in phones.iter().enumerate() {
        text.push_str(&format!("{phone},Client {i},Rabat\n"));
    }
    let csv = env.write("campaign.csv", &text);
    let stderr_path = env.path("bulk.stderr");
    let mut c = env.graph_cmd(&sandbox.url);
    c.env("FLOW_ID", &flow_id)
        .env("WABA_ID", WABA_ID)
        .env("FLOWCTL_FLOW_WATCH_INTERVAL_MS", "100")
        .arg("bulk")
        .arg(&csv)
        .args(["--json", "--rate", "10", "--concurrency", "2"])
        .args(["--template", "enquete_visite", "--lang", "fr"])
        .args(["--template-param", "body.1=customer_name"])
        .args(["--template-param", "body.2=ville"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let bulk = Bulk {
        child: c.spawn().expect("spawn bulk"),
        stderr: stderr_path,
    };
    wait_until("the run sends", || accepted(&sandbox) >= 5);
    let (code, body) = http_post_json(
        &format!("{}/_sandbox/flow-status", sandbox.url),
        &format!(r#"{{"flow_id": "{flow_id}", "status": "THROTTLED"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    bulk.wait_for_line(&format!("the Flow {flow_id} is THROTTLED"));
    let before = accepted(&sandbox);
    std::thread::sleep(Duration::from_millis(1500));
    let during = accepted(&sandbox) - before;
    let (code, body) = http_post_json(
        &format!("{}/_sandbox/flow-status", sandbox.url),
        &format!(r#"{{"flow_id": "{flow_id}", "status": "PUBLISHED"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let (code, summary, err) = bulk.finish();
    assert_eq!(code, 0, "{summary} {err}");
    // At 10/s, 15 would have left in that time; only the (at most 2) requests in flight when
    // the pause began may land.
    assert!(during <= 2, "{during} sent while THROTTLED: {err}");
    assert_eq!(summary["sent"], 28, "{summary}");
    assert_eq!(summary["suppressed"], 2, "{summary}");
    assert_eq!(summary["flow_pauses"], 1, "{summary}");

    // Every template message went to a different person who did not say STOP, with the
    // row's own parameters; nobody got two.
    let mut to: Vec<String> = sandbox_messages(&sandbox.url)
        .iter()
        .filter(|r| r["status"] == 200 && r["body"]["type"] == "template")
        .map(|r| format!("+{}", r["to"].as_str().unwrap_or("")))
        .collect();
    to.sort();
    let mut expected: Vec<String> = phones
        .iter()
        .filter(|p| !stop.contains(p))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(to, expected);
    eprintln!(
        "Flow {flow_id}: sent before the pause {before}, while THROTTLED {during}, after {}; suppressed {}",
        28 - before - during,
        summary["suppressed"]
    );
}
