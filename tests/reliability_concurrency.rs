//! Reliability under contention: one SQLite file written and read at the same time by
//! `flowctl serve` under load (data-endpoint completions, signed webhook statuses and
//! completions, CRM API sends through the Graph sandbox), a `flowctl bulk` run of thousands
//! of rows against `flowctl sandbox`, and repeated `flowctl export --csv` / `flowctl stats`.
//!
//! Held: no process reports a locked or busy database, no answer of `serve` is a 5xx, every
//! acknowledged write is in the store and the export, bulk's summary equals the messages
//! the sandbox accepted and the tokens the store marks sent, and `serve` stays responsive
//! (latency bound) during the contention.
//!
//! Quick version in the normal suite; the full campaign:
//! `cargo test --test reliability_concurrency -- --ignored --nocapture`

#[path = "support/load.rs"]
mod load;
mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use load::{Histogram, Latencies};
use serde_json::{json, Value};
use support::*;

/// The size of one campaign.
struct Plan {
    /// Rows of the bulk CSV, its `--rate` and `--concurrency`.
    bulk_rows: usize,
    bulk_rate: u32,
    bulk_concurrency: u32,
    /// Surveys completed through the data endpoint (4 requests each).
    endpoint_surveys: usize,
    /// Tokens completed through the webhook (delivered + read statuses + nfm_reply each).
    webhook_completions: usize,
    /// `POST /api/send-flow` calls.
    api_sends: usize,
    /// Concurrent clients of `serve`.
    serve_workers: usize,
}

/// One request to `serve` and what it must answer.
#[derive(Clone, Debug)]
enum Job {
    Survey {
        token: String,
    },
    Webhook {
        token: String,
        phone: String,
        n: usize,
    },
    ApiSend {
        phone: String,
    },
}

/// What the load against `serve` observed.
#[derive(Default)]
struct ServeLoad {
    latencies: Latencies,
    per_route: HashMap<&'static str, Latencies>,
    statuses: Histogram,
    problems: Vec<String>,
    surveys_completed: usize,
    webhooks_acknowledged: usize,
    api_sent: usize,
}

impl ServeLoad {
    fn record(&mut self, route: &'static str, status: u16, took: Duration) {
        self.latencies.push(took);
        self.per_route.entry(route).or_default().push(took);
        self.statuses.add(status.to_string());
    }
}

/// An HTTP client whose pooled connections are dropped before the server's idle cut.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn survey(client: &FlowClient, token: &str, out: &Mutex<ServeLoad>) {
    let steps = load::survey_steps(token);
    for (request, next) in steps {
        let started = Instant::now();
        let a = client.call(&request).await;
        let mut o = out.lock().unwrap();
        o.record("/api/flow", a.status, started.elapsed());
        let screen = a.json.as_ref().and_then(|j| j["screen"].as_str());
        if a.status != 200 || screen != Some(next) {
            o.problems.push(format!(
                "survey {token}: expected 200 {next}, got {} {:?}",
                a.status, a.json
            ));
            return;
        }
        if next == "SUCCESS" {
            o.surveys_completed += 1;
        }
    }
}

async fn webhook(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    phone: &str,
    n: usize,
    out: &Mutex<ServeLoad>,
) {
    let wamid = format!("wamid.W{n}");
    let from = phone.trim_start_matches('+');
    let bodies = [
        status_body(&wamid, "delivered", None),
        status_body(&wamid, "read", None),
        nfm_reply(
            &format!("wamid.IN{n}"),
            from,
            Some(&wamid),
            json!({"flow_token": token, "q": n.to_string()}),
        ),
    ];
    for body in bodies {
        let sig = flowctl::crypto::sign(APP_SECRET.as_bytes(), &body);
        let started = Instant::now();
        let r = http
            .post(format!("{url}/api/message-webhook"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await;
        let mut o = out.lock().unwrap();
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                o.record("/api/message-webhook", status, started.elapsed());
                if status == 200 {
                    o.webhooks_acknowledged += 1;
                } else {
                    o.problems.push(format!("webhook {n}: {status}"));
                    return;
                }
            }
            Err(e) => {
                o.problems.push(format!("webhook {n}: {e}"));
                return;
            }
        }
    }
}

async fn api_send(http: &reqwest::Client, url: &str, phone: &str, out: &Mutex<ServeLoad>) {
    let started = Instant::now();
    let r = http
        .post(format!("{url}/api/send-flow"))
        .bearer_auth(API_KEY)
        .json(&json!({"phoneNumber": phone, "customerName": "Api", "campaign": "api"}))
        .send()
        .await;
    let took = started.elapsed();
    let (status, body) = match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(e) => {
            out.lock()
                .unwrap()
                .problems
                .push(format!("send-flow {phone}: {e}"));
            return;
        }
    };
    let mut o = out.lock().unwrap();
    o.record("/api/send-flow", status, took);
    if status == 200 && body["success"] == true {
        o.api_sent += 1;
    } else {
        o.problems
            .push(format!("send-flow {phone}: {status} {body}"));
    }
}

/// Runs `jobs` with `workers` concurrent clients.
async fn serve_load(url: &str, jobs: Vec<Job>, workers: usize) -> ServeLoad {
    let jobs = Arc::new(Mutex::new(jobs));
    let out = Arc::new(Mutex::new(ServeLoad::default()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (jobs, out, url) = (jobs.clone(), out.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let client = FlowClient {
                url: format!("{url}/api/flow"),
                secret: APP_SECRET.to_string(),
                key: test_public_key(),
                http: http_client(),
            };
            let http = http_client();
            loop {
                let Some(job) = jobs.lock().unwrap().pop() else {
                    return;
                };
                match job {
                    Job::Survey { token } => survey(&client, &token, &out).await,
                    Job::Webhook { token, phone, n } => {
                        webhook(&http, &url, &token, &phone, n, &out).await
                    }
                    Job::ApiSend { phone } => api_send(&http, &url, &phone, &out).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("serve client");
    }
    Arc::try_unwrap(out)
        .ok()
        .expect("clients done")
        .into_inner()
        .unwrap()
}

/// Repeated runs of one read-only command while `stop` is not set.
#[derive(Default)]
struct Repeated {
    runs: usize,
    failures: Vec<String>,
    durations: Latencies,
    /// What its stdout or stderr said about a locked or busy database.
    contention: Vec<String>,
}

fn repeat(what: &str, env_cmd: impl Fn() -> std::process::Command, stop: &AtomicBool) -> Repeated {
    let mut r = Repeated::default();
    loop {
        let last = stop.load(Ordering::Relaxed);
        let started = Instant::now();
        let out = run(env_cmd(), Duration::from_secs(120));
        r.durations.push(started.elapsed());
        r.runs += 1;
        if out.status.code() != Some(0) && r.failures.len() < 10 {
            r.failures
                .push(format!("exit {:?}: {}", out.status.code(), stderr(&out)));
        }
        r.contention.extend(contention_words(what, &stdout(&out)));
        r.contention.extend(contention_words(what, &stderr(&out)));
        if last {
            return r;
        }
    }
}

fn contention_words(what: &str, text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    ["database is locked", "sqlite_busy", "busy"]
        .iter()
        .find_map(|w| {
            word_at(&lower, w).map(|i| format!("{what} printed {w:?}: {}", excerpt(&lower, i)))
        })
}

/// Where `word` first stands as a word of its own in `text`: "busy" inside a random flow
/// token such as `flow_xo5suntevcbusyfjuprveq` is data, not SQLite's complaint.
fn word_at(text: &str, word: &str) -> Option<usize> {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        !is_word(text[..i].chars().next_back()) && !is_word(text[i + word.len()..].chars().next())
    })
}

fn excerpt(text: &str, i: usize) -> String {
    let start = text[..i].rfind('\n').map_or(0, |n| n + 1);
    let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
    text[start..end].to_string()
}

#[test]
fn contention_words_are_whole_words_only() {
    let token_row = "flow_xo5suntevcbusyfjuprveq,+33611000054,client 54";
    assert_eq!(contention_words("export", token_row), None);
    assert!(contention_words("export", "Error: database busy, retry").is_some());
    assert!(contention_words("stats", "SQLITE_BUSY").is_some());
    assert!(contention_words("stats", "error: database is locked").is_some());
}

struct Report {
    load: ServeLoad,
    bulk: Output,
    bulk_elapsed: Duration,
    exports: Repeated,
    stats: Repeated,
    elapsed: Duration,
    peak_rss_kib: u64,
    /// Sizes of the database and of its WAL at the end, in bytes.
    db_bytes: u64,
    wal_bytes: u64,
}

async fn campaign(env: &Env, plan: &Plan) -> (Report, Running, Running) {
    let sandbox = env.sandbox(&[]);
    // Tokens completed through the endpoint and through the webhook, issued as `send` would.
    let endpoint: Vec<(String, String)> =
        load::issue_tokens(&env.db(), plan.endpoint_surveys, "endpoint", 10_000_000);
    let hooked: Vec<(String, String)> =
        load::issue_tokens(&env.db(), plan.webhook_completions, "webhook", 11_000_000);
    {
        let mut store = env.store();
        for (i, (token, phone)) in hooked.iter().enumerate() {
            store
                .record_sent(
                    token,
                    &format!("wamid.W{i}"),
                    Some(phone.trim_start_matches('+')),
                )
                .expect("record sent");
        }
    }
    let flow = survey_flow();
    let server = env.serve_with_env(
        &[
            ("FLOWCTL_API_KEY", API_KEY),
            ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
            ("PHONE_NUMBER_ID", "106540352242922"),
            ("FLOW_ID", "1234567890123456"),
            ("GRAPH_API_URL", &sandbox.url),
            ("GRAPH_API_TIMEOUT", "5s"),
        ],
        &["--flow-json", flow.to_str().unwrap()],
    );

    let mut csv = String::from("phone_number,customer_name,city\n");
    for i in 0..plan.bulk_rows {
        csv.push_str(&format!("+336{:08},Client {i},Rabat\n", 20_000_000 + i));
    }
    let csv = env.write("load.csv", &csv);

    let mut jobs: Vec<Job> = Vec::new();
    let mut rng = load::Rng(0x2545_f491_4f6c_dd1d);
    for (token, _) in &endpoint {
        jobs.push(Job::Survey {
            token: token.clone(),
        });
    }
    for (n, (token, phone)) in hooked.iter().enumerate() {
        jobs.push(Job::Webhook {
            token: token.clone(),
            phone: phone.clone(),
            n,
        });
    }
    for i in 0..plan.api_sends {
        jobs.push(Job::ApiSend {
            phone: format!("+336{:08}", 30_000_000 + i),
        });
    }
    // Shuffle so that every kind of write runs during the whole campaign.
    for i in (1..jobs.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        jobs.swap(i, j);
    }

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [false, true]
        .into_iter()
        .map(|is_stats| {
            let (stop, db, dir) = (stop.clone(), env.db_arg(), env.dir.path().to_path_buf());
            std::thread::spawn(move || {
                let cmd = || {
                    let mut c = std::process::Command::new(bin());
                    c.current_dir(&dir).env_clear().env("FLOWCTL_DB", &db);
                    if is_stats {
                        c.args(["stats", "--json"]);
                    } else {
                        c.args(["export", "--csv"]);
                    }
                    c.stdin(Stdio::null());
                    c
                };
                repeat(if is_stats { "stats" } else { "export" }, cmd, &stop)
            })
        })
        .collect();
    let bulk = {
        let mut c = env.graph_cmd(&sandbox.url);
        c.env("FLOWCTL_PROGRESS_INTERVAL_MS", "500")
            .args([
                "bulk",
                "--json",
                "--campaign",
                "load",
                "--rate",
                &plan.bulk_rate.to_string(),
                "--concurrency",
                &plan.bulk_concurrency.to_string(),
            ])
            .arg(&csv)
            .stdin(Stdio::null());
        std::thread::spawn(move || {
            let t = Instant::now();
            let out = run(c, Duration::from_secs(1800));
            (out, t.elapsed())
        })
    };
    let load = serve_load(&server.url, jobs, plan.serve_workers).await;
    let (bulk, bulk_elapsed) = tokio::task::spawn_blocking(move || bulk.join().expect("bulk"))
        .await
        .expect("join");
    stop.store(true, Ordering::Relaxed);
    let mut readers = readers.into_iter();
    let exports = readers.next().unwrap().join().expect("export loop");
    let stats = readers.next().unwrap().join().expect("stats loop");
    let elapsed = started.elapsed();
    let (peak_rss_kib, _) = load::memory_kib(server.child.id());
    let size = |name: &str| std::fs::metadata(env.path(name)).map_or(0, |m| m.len());
    let (db_bytes, wal_bytes) = (size("flowctl.db"), size("flowctl.db-wal"));
    (
        Report {
            db_bytes,
            wal_bytes,
            load,
            bulk,
            bulk_elapsed,
            exports,
            stats,
            elapsed,
            peak_rss_kib,
        },
        server,
        sandbox,
    )
}

fn check(
    env: &Env,
    plan: &Plan,
    r: &Report,
    server: &mut Running,
    sandbox: &Running,
    p99_bound: Duration,
) {
    // No process saw a locked database.
    let serve_err = server.stderr();
    let mut contention = Vec::new();
    contention.extend(contention_words("serve", &serve_err));
    contention.extend(contention_words("bulk stdout", &stdout(&r.bulk)));
    contention.extend(contention_words("bulk stderr", &stderr(&r.bulk)));
    contention.extend(r.exports.contention.iter().cloned());
    contention.extend(r.stats.contention.iter().cloned());
    assert!(contention.is_empty(), "{contention:#?}");
    assert!(
        r.exports.failures.is_empty(),
        "export: {:?}",
        r.exports.failures
    );
    assert!(r.stats.failures.is_empty(), "stats: {:?}", r.stats.failures);
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "serve died: {serve_err}"
    );

    // serve: no 5xx, every request answered as expected, latency bounded.
    let five_xx: u64 = r
        .load
        .statuses
        .0
        .iter()
        .filter(|(k, _)| k.starts_with('5'))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(five_xx, 0, "5xx answers: {}", r.load.statuses.render());
    assert!(
        r.load.problems.is_empty(),
        "{:#?}",
        &r.load.problems[..r.load.problems.len().min(10)]
    );
    assert_eq!(r.load.surveys_completed, plan.endpoint_surveys);
    assert_eq!(r.load.webhooks_acknowledged, plan.webhook_completions * 3);
    assert_eq!(r.load.api_sent, plan.api_sends);
    assert!(
        r.load.latencies.p99() < p99_bound,
        "serve p99 under contention: {}",
        r.load.latencies.summary()
    );
    // No request may have waited for the database's busy timeout.
    assert!(
        r.load.latencies.max() < Duration::from_secs(5),
        "serve max under contention: {}",
        r.load.latencies.summary()
    );

    // bulk: its summary = the sandbox's accepted messages = the store's sent tokens.
    assert_eq!(r.bulk.status.code(), Some(0), "bulk: {}", stderr(&r.bulk));
    let summary: Value = serde_json::from_str(stdout(&r.bulk).lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bulk summary: {e}: {}", stdout(&r.bulk)));
    let n = |k: &str| summary[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        (
            n("sent"),
            n("failed"),
            n("invalid"),
            n("skipped"),
            n("unknown")
        ),
        (plan.bulk_rows as u64, 0, 0, 0, 0),
        "{summary}"
    );
    let messages = sandbox_messages(&sandbox.url);
    let accepted = |prefix: &str| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m["status"] == 200)
            .filter_map(|m| m["to"].as_str())
            .filter(|to| to.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let bulk_to = accepted("3362");
    let distinct: HashSet<&String> = bulk_to.iter().collect();
    assert_eq!(
        bulk_to.len() as u64,
        n("sent"),
        "bulk messages the sandbox accepted"
    );
    assert_eq!(
        distinct.len(),
        bulk_to.len(),
        "a phone got two bulk messages"
    );
    let db = env.db();
    assert_eq!(
        load::count(&db, "SELECT COUNT(*) FROM tokens WHERE campaign = 'load' AND state = 'sent' AND message_id IS NOT NULL")
            as u64,
        n("sent")
    );
    assert_eq!(
        load::count(&db, "SELECT COUNT(*) FROM tokens WHERE campaign = 'load'") as u64,
        n("sent")
    );
    // API sends: each accepted once, each recorded sent.
    assert_eq!(accepted("3363").len(), plan.api_sends);
    assert_eq!(
        load::count(
            &db,
            "SELECT COUNT(*) FROM tokens WHERE campaign = 'api' AND state = 'sent'"
        ) as usize,
        plan.api_sends
    );

    // Every acknowledged completion is in the store and in the export.
    wait_inbox_drained(&db, Duration::from_secs(120));
    let completions = plan.endpoint_surveys + plan.webhook_completions;
    assert_eq!(
        load::count(
            &db,
            "SELECT COUNT(*) FROM responses WHERE duplicate_of IS NULL AND token IS NOT NULL"
        ) as usize,
        completions
    );
    assert_eq!(
        load::count(&db, "SELECT COUNT(*) FROM responses") as usize,
        completions
    );
    assert_eq!(
        load::count(
            &db,
            "SELECT COUNT(*) FROM tokens WHERE campaign = 'webhook' AND delivery = 'read'"
        ) as usize,
        plan.webhook_completions
    );
    let mut export = env.cmd();
    export.args(["export", "--csv"]);
    let out = run(export, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = reader.headers().expect("headers").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (c_token, c_phone, c_source) = (col("flow_token"), col("phone_number"), col("source"));
    let mut exported: HashMap<String, (String, String)> = HashMap::new();
    for rec in reader.records() {
        let rec = rec.expect("csv record");
        exported.insert(
            rec[c_token].to_string(),
            (rec[c_phone].to_string(), rec[c_source].to_string()),
        );
    }
    assert_eq!(exported.len(), completions, "rows of the final export");
    let endpoint_tokens = env.store().tokens_of_campaign("endpoint").unwrap();
    let webhook_tokens = env.store().tokens_of_campaign("webhook").unwrap();
    for (tokens, source) in [(&endpoint_tokens, "endpoint"), (&webhook_tokens, "webhook")] {
        for t in tokens.iter() {
            assert_eq!(
                exported.get(t.token.as_str()),
                Some(&(t.phone.to_string(), source.to_string())),
                "{source} completion of {} in the export",
                t.token
            );
        }
    }

    // The funnel agrees.
    let mut stats = env.cmd();
    stats.args(["stats", "--json"]);
    let out = run(stats, Duration::from_secs(60));
    let funnel: Value = serde_json::from_slice(&out.stdout).expect("stats json");
    let campaign = |name: &str| {
        funnel["campaigns"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["campaign"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        campaign("load")["sent"].as_u64(),
        Some(n("sent")),
        "{funnel}"
    );
    assert_eq!(
        campaign("api")["sent"].as_u64(),
        Some(plan.api_sends as u64),
        "{funnel}"
    );
    assert_eq!(
        campaign("endpoint")["completed"].as_u64(),
        Some(plan.endpoint_surveys as u64),
        "{funnel}"
    );
    assert_eq!(
        campaign("webhook")["completed"].as_u64(),
        Some(plan.webhook_completions as u64),
        "{funnel}"
    );
}

/// Waits until the inbox worker has processed every stored webhook body.
fn wait_inbox_drained(db: &flowctl::store::DbTarget, limit: Duration) {
    let started = Instant::now();
    loop {
        let pending = load::count(
            db,
            "SELECT COUNT(*) FROM webhook_inbox WHERE processed_at IS NULL",
        );
        if pending == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{pending} webhook bodies still unprocessed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn print_report(label: &str, plan: &Plan, r: &Report) {
    println!(
        "RELIABILITY concurrency[{label}] plan: bulk_rows={} bulk_rate={} bulk_concurrency={} endpoint_surveys={} webhook_completions={} api_sends={} serve_workers={}",
        plan.bulk_rows, plan.bulk_rate, plan.bulk_concurrency, plan.endpoint_surveys,
        plan.webhook_completions, plan.api_sends, plan.serve_workers
    );
    println!(
        "RELIABILITY concurrency[{label}] serve during contention: requests={} statuses={} latency {} VmHWM_kib={}",
        r.load.latencies.len(),
        r.load.statuses.render(),
        r.load.latencies.summary(),
        r.peak_rss_kib
    );
    let mut routes: Vec<_> = r.load.per_route.iter().collect();
    routes.sort_by_key(|(k, _)| *k);
    for (route, l) in routes {
        println!(
            "RELIABILITY concurrency[{label}] serve route={route} latency {}",
            l.summary()
        );
    }
    println!(
        "RELIABILITY concurrency[{label}] bulk: exit={:?} elapsed_s={:.1} summary={}",
        r.bulk.status.code(),
        r.bulk_elapsed.as_secs_f64(),
        stdout(&r.bulk).lines().last().unwrap_or("")
    );
    println!(
        "RELIABILITY concurrency[{label}] export --csv runs={} failures={} duration {}",
        r.exports.runs,
        r.exports.failures.len(),
        r.exports.durations.summary()
    );
    println!(
        "RELIABILITY concurrency[{label}] stats --json runs={} failures={} duration {}",
        r.stats.runs,
        r.stats.failures.len(),
        r.stats.durations.summary()
    );
    println!(
        "RELIABILITY concurrency[{label}] completions acknowledged: endpoint={} webhook_posts={} api_sent={} problems={} elapsed_s={:.1} db_bytes={} wal_bytes={}",
        r.load.surveys_completed,
        r.load.webhooks_acknowledged,
        r.load.api_sent,
        r.load.problems.len(),
        r.elapsed.as_secs_f64(),
        r.db_bytes,
        r.wal_bytes
    );
    // The write-ahead log stays bounded (checkpointed past 64 MiB every 10 s at most).
    assert!(
        r.wal_bytes <= flowctl::store::WAL_LIMIT * 2,
        "write-ahead log of {} bytes",
        r.wal_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_bulk_export_and_stats_share_one_database() {
    let plan = Plan {
        bulk_rows: 2000,
        bulk_rate: 1000,
        bulk_concurrency: 16,
        endpoint_surveys: 60,
        webhook_completions: 60,
        api_sends: 30,
        serve_workers: 6,
    };
    let env = Env::new();
    let (report, mut server, sandbox) = campaign(&env, &plan).await;
    print_report("quick", &plan, &report);
    check(
        &env,
        &plan,
        &report,
        &mut server,
        &sandbox,
        Duration::from_secs(2),
    );
}

/// Two `bulk` runs of the same campaign started at once on the same file (a double click,
/// a retry of a run that looked stuck): every phone gets exactly one message, and the two
/// summaries add up to the file.
///
/// Regression (bulk, found by this harness): both runs used to send most rows (the second
/// run found the first run's rows `pending` and sent them too), so ~80% of the phones got
/// two messages, and each run reported the other's in-flight rows as the unknown outcome of
/// a run that died. Holds now that a run takes a per-campaign lock: the second run is
/// refused at once, naming the other.
#[test]
fn two_bulk_runs_of_one_campaign_at_once_send_each_phone_once() {
    let env = Env::new();
    let sandbox = env.sandbox(&["--latency-ms", "5"]);
    let rows = 600;
    let mut csv = String::from("phone_number,customer_name\n");
    for i in 0..rows {
        csv.push_str(&format!("+336{:08},Client {i}\n", 40_000_000 + i));
    }
    let csv = env.write("twice.csv", &csv);
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut c = env.graph_cmd(&sandbox.url);
            c.args(["bulk", "--json", "--rate", "500", "--concurrency", "8"])
                .arg(&csv)
                .stdin(Stdio::null());
            std::thread::spawn(move || run(c, Duration::from_secs(300)))
        })
        .collect();
    let outs: Vec<Output> = runs.into_iter().map(|r| r.join().expect("bulk")).collect();
    let mut per_phone: HashMap<String, usize> = HashMap::new();
    for m in sandbox_messages(&sandbox.url) {
        if m["status"] == 200 {
            *per_phone
                .entry(m["to"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    // A run either completes (its JSON summary last on stdout) or is refused at once because
    // the other run holds the campaign (one line on stderr naming the other run).
    let refused = |out: &Output| {
        let err = stderr(out).to_ascii_lowercase();
        out.status.code() != Some(0) && err.contains("another") && err.contains("bulk")
    };
    let summaries: Vec<Option<Value>> = outs
        .iter()
        .map(|out| {
            if refused(out) {
                return None;
            }
            Some(
                serde_json::from_str(stdout(out).lines().last().unwrap_or(""))
                    .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out))),
            )
        })
        .collect();
    let total = |k: &str| -> u64 {
        summaries
            .iter()
            .flatten()
            .map(|s| s[k].as_u64().unwrap_or(0))
            .sum()
    };
    let twice = per_phone.values().filter(|n| **n > 1).count();
    println!(
        "RELIABILITY concurrency[twice] two bulk runs of {rows} rows at once: exits={:?} refused={} sent={} skipped={} unknown={} failed={} phones_messaged={} phones_messaged_twice={twice}",
        outs.iter().map(|o| o.status.code()).collect::<Vec<_>>(),
        summaries.iter().filter(|s| s.is_none()).count(),
        total("sent"),
        total("skipped"),
        total("unknown"),
        total("failed"),
        per_phone.len(),
    );
    // Never a second message to one phone, never a phone left out.
    assert_eq!(twice, 0, "phones messaged twice");
    assert_eq!(per_phone.len(), rows, "phones messaged");
    assert_eq!(
        load::count(
            &env.db(),
            "SELECT COUNT(*) FROM tokens WHERE state = 'sent'"
        ),
        rows as i64
    );
    // Neither run may report the other's live requests as the unknown outcome of a run
    // that died (and exit 1 for it).
    for (out, s) in outs.iter().zip(&summaries) {
        for text in [stdout(out), stderr(out)] {
            assert_eq!(contention_words("bulk", &text), None);
        }
        let Some(s) = s else { continue };
        assert_eq!(
            (
                out.status.code(),
                s["unknown"].as_u64(),
                s["failed"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{s}\n{}",
            stderr(out).lines().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    assert!(summaries.iter().any(Option::is_some), "both runs refused");
    assert_eq!(total("sent"), rows as u64);
    let completed = summaries.iter().flatten().count() as u64;
    assert_eq!(total("sent") + total("skipped"), completed * rows as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several minutes: cargo test --test reliability_concurrency -- --ignored --nocapture"]
async fn long_contention_campaign() {
    let plan = Plan {
        bulk_rows: 40_000,
        bulk_rate: 400,
        bulk_concurrency: 16,
        endpoint_surveys: 1500,
        webhook_completions: 1500,
        api_sends: 500,
        serve_workers: 6,
    };
    let env = Env::new();
    let (report, mut server, sandbox) = campaign(&env, &plan).await;
    print_report("long", &plan, &report);
    check(
        &env,
        &plan,
        &report,
        &mut server,
        &sandbox,
        Duration::from_secs(2),
    );
}
