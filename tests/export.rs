//! End-to-end tests of `flowctl export` and `flowctl stats` over the real binary, on a
//! database built with the library as `send`, `serve` and the webhook would fill it.

mod support;

use std::path::Path;
use std::time::Duration;

use flowctl::store::{
    CompletionInput, DbTarget, Failure, NewToken, Origin, SendState, Store, WebhookCompletion,
};
use serde_json::{json, Value};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
const FIXED: [&str; 6] = [
    "flow_token",
    "phone_number",
    "customer_name",
    "campaign",
    "source",
    "completed_at",
];

/// Issues a token in `campaign` and records its send as accepted.
fn sent_token(store: &mut Store, phone: &str, name: Option<&str>, campaign: &str) -> String {
    let token = flowctl::token::FlowToken::generate();
    let new = NewToken {
        token: token.clone(),
        phone: flowctl::phone::Phone::parse(phone, None).unwrap(),
        customer_name: name.map(str::to_string),
        campaign: campaign.into(),
        origin: Origin::Bulk,
        initial_data: None,
        ttl: Duration::from_secs(86_400),
    };
    store.insert_token(&new, SendState::Pending).unwrap();
    store
        .record_sent(token.as_str(), &format!("wamid.{}", token.as_str()), None)
        .unwrap();
    token.as_str().to_string()
}

fn complete(store: &mut Store, token: &str, source: &str, answers: Value, at: &str) {
    let answers = answers.as_object().unwrap().clone();
    let webhook = source == "webhook";
    let event = format!("wamid.reply.{token}");
    store
        .complete(&CompletionInput {
            token,
            answers: &answers,
            source,
            sender: webhook.then_some("212610059159"),
            event_id: webhook.then_some(event.as_str()),
            completed_at: at,
        })
        .unwrap();
}

fn unmatched(store: &mut Store, sender: &str, answers: Value, at: &str) {
    let answers = answers.as_object().unwrap().clone();
    store
        .webhook_completion(&WebhookCompletion {
            flow_token: Some("flow_notfromhere"),
            context_id: None,
            sender: Some(sender),
            answers: &answers,
            event_id: "wamid.unmatched.1",
            completed_at: at,
        })
        .unwrap();
}

/// The survey database of most tests:
/// - Ahmed (spring, endpoint, 2026-01-10) answered the survey, formula-like answers included,
///   and the webhook brought the same completion again (a duplicate);
/// - Fatima (spring, webhook, 2026-02-10) answered partly, with an extra key;
/// - Omar (autumn, endpoint, 2026-03-01);
/// - one unmatched completion from +212600000009 (2026-02-20).
struct Survey {
    env: Env,
    ahmed: String,
    fatima: String,
    omar: String,
}

fn survey() -> Survey {
    let env = Env::new();
    let mut s = Store::open(env.db()).unwrap();
    let ahmed = sent_token(
        &mut s,
        "+212610059159",
        Some("=cmd|' /C calc'!A0"),
        "spring",
    );
    let fatima = sent_token(&mut s, "+212610059160", Some("Fatima Zahra"), "spring");
    let omar = sent_token(&mut s, "+212610059161", Some("Omar"), "autumn");
    // Stored in an order unlike the Flow's, to tell Flow order from first-seen order.
    complete(
        &mut s,
        &ahmed,
        "endpoint",
        json!({
            "commentaire": "Très bien ⭐",
            "q1_accueil": "=SUM(A1)",
            "q2_delai": "+33612345678",
            "q3_qualite": "@x",
            "q4_prix": -1,
            "q5_recommandation": "5_etoiles"
        }),
        "2026-01-10T09:00:00.000Z",
    );
    complete(
        &mut s,
        &ahmed,
        "webhook",
        json!({"q1_accueil": "other path"}),
        "2026-01-10T09:00:01.000Z",
    );
    complete(
        &mut s,
        &fatima,
        "webhook",
        json!({"q2_delai": "4_etoiles", "channels": ["sms", "email"], "consent": true, "q1_accueil": "3_etoiles"}),
        "2026-02-10T09:00:00.000Z",
    );
    complete(
        &mut s,
        &omar,
        "endpoint",
        json!({"q1_accueil": "5_etoiles", "meta": {"a": 1}}),
        "2026-03-01T09:00:00.000Z",
    );
    unmatched(
        &mut s,
        "212600000009",
        json!({"q1_accueil": "1_etoile"}),
        "2026-02-20T09:00:00.000Z",
    );
    Survey {
        env,
        ahmed,
        fatima,
        omar,
    }
}

fn export(env: &Env, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd();
    c.arg("export").args(args);
    run(c, LIMIT)
}

fn ok_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr(out)
    );
    stdout(out)
}

/// Parses CSV text into its header and rows.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn cell<'a>(header: &[String], row: &'a [String], column: &str) -> &'a str {
    let i = header
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column} in {header:?}"));
    &row[i]
}

fn row_of<'a>(header: &[String], rows: &'a [Vec<String>], token: &str) -> &'a [String] {
    rows.iter()
        .find(|r| cell(header, r, "flow_token") == token)
        .unwrap_or_else(|| panic!("no row for {token}"))
}

#[test]
fn csv_has_fixed_columns_then_answer_keys_in_first_seen_order() {
    let s = survey();
    let (header, rows) = parse_csv(&ok_stdout(&export(&s.env, &["--csv"])));
    assert_eq!(&header[..6], FIXED);
    assert_eq!(
        &header[6..],
        [
            "commentaire",
            "q1_accueil",
            "q2_delai",
            "q3_qualite",
            "q4_prix",
            "q5_recommandation",
            "channels",
            "consent",
            "meta"
        ]
    );
    // Ordered by completion time; one row per token.
    let tokens: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(tokens, [&s.ahmed, &s.fatima, &s.omar]);
    let fatima = row_of(&header, &rows, &s.fatima);
    assert_eq!(cell(&header, fatima, "phone_number"), "+212610059160");
    assert_eq!(cell(&header, fatima, "customer_name"), "Fatima Zahra");
    assert_eq!(cell(&header, fatima, "campaign"), "spring");
    assert_eq!(cell(&header, fatima, "source"), "webhook");
    assert_eq!(
        cell(&header, fatima, "completed_at"),
        "2026-02-10T09:00:00.000Z"
    );
    assert_eq!(cell(&header, fatima, "channels"), "sms;email");
    assert_eq!(cell(&header, fatima, "consent"), "true");
    assert_eq!(cell(&header, fatima, "commentaire"), "");
    let omar = row_of(&header, &rows, &s.omar);
    assert_eq!(cell(&header, omar, "meta"), r#"{"a":1}"#);
}

#[test]
fn flow_json_orders_the_answer_columns() {
    let s = survey();
    let flow = survey_flow();
    let (header, _) = parse_csv(&ok_stdout(&export(
        &s.env,
        &["--flow-json", flow.to_str().unwrap()],
    )));
    assert_eq!(
        &header[6..],
        [
            "q1_accueil",
            "q2_delai",
            "q3_qualite",
            "q4_prix",
            "q5_recommandation",
            "commentaire",
            "channels",
            "consent",
            "meta"
        ]
    );
    // FLOW_JSON in the environment does the same.
    let mut c = s.env.cmd();
    c.env("FLOW_JSON", &flow).arg("export");
    let (env_header, _) = parse_csv(&ok_stdout(&run(c, LIMIT)));
    assert_eq!(env_header, header);
}

#[test]
fn formula_cells_are_escaped_but_the_phone_is_not() {
    let s = survey();
    let (header, rows) = parse_csv(&ok_stdout(&export(&s.env, &[])));
    let ahmed = row_of(&header, &rows, &s.ahmed);
    assert_eq!(cell(&header, ahmed, "q1_accueil"), "'=SUM(A1)");
    assert_eq!(cell(&header, ahmed, "q2_delai"), "'+33612345678");
    assert_eq!(cell(&header, ahmed, "q3_qualite"), "'@x");
    assert_eq!(cell(&header, ahmed, "q4_prix"), "'-1");
    assert_eq!(cell(&header, ahmed, "customer_name"), "'=cmd|' /C calc'!A0");
    assert_eq!(cell(&header, ahmed, "phone_number"), "+212610059159");
    for row in &rows {
        assert!(cell(&header, row, "phone_number").starts_with('+'));
    }
}

#[test]
fn unicode_answers_are_intact_and_bom_is_optional() {
    let s = survey();
    let plain = export(&s.env, &[]);
    assert!(plain.stdout.starts_with(b"flow_token,"));
    let text = ok_stdout(&plain);
    assert!(text.contains("Très bien ⭐"));
    let bom = export(&s.env, &["--bom"]);
    assert!(bom.stdout.starts_with("\u{feff}flow_token,".as_bytes()));
    assert_eq!(&bom.stdout[3..], &plain.stdout[..]);
    // A BOM makes no sense in JSON: refused as bad usage.
    assert_eq!(export(&s.env, &["--json", "--bom"]).status.code(), Some(2));
}

#[test]
fn since_and_campaign_select_rows() {
    let s = survey();
    let (_, rows) = parse_csv(&ok_stdout(&export(&s.env, &["--since", "2026-02-01"])));
    let tokens: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(tokens, [&s.fatima, &s.omar]);
    let (_, rows) = parse_csv(&ok_stdout(&export(
        &s.env,
        &["--since", "2026-02-10T10:00:00+01:00"],
    )));
    assert_eq!(rows.len(), 2, "09:00Z is 10:00+01:00, inclusive");
    let (_, rows) = parse_csv(&ok_stdout(&export(&s.env, &["--since", "1h"])));
    assert!(rows.is_empty());
    let (header, rows) = parse_csv(&ok_stdout(&export(&s.env, &["--campaign", "autumn"])));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], s.omar);
    // Columns are the union over the exported rows only.
    assert_eq!(&header[6..], ["q1_accueil", "meta"]);
}

#[test]
fn a_bad_since_is_a_usage_error() {
    let s = survey();
    let out = export(&s.env, &["--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("last tuesday"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn unmatched_completions_only_with_the_flag() {
    let s = survey();
    let (header, rows) = parse_csv(&ok_stdout(&export(&s.env, &[])));
    assert!(!header.contains(&"matched".to_string()));
    assert_eq!(rows.len(), 3);
    let (header, rows) = parse_csv(&ok_stdout(&export(&s.env, &["--include-unmatched"])));
    assert_eq!(header[6], "matched");
    assert_eq!(rows.len(), 4);
    let u = &rows[2];
    assert_eq!(cell(&header, u, "flow_token"), "flow_notfromhere");
    assert_eq!(cell(&header, u, "phone_number"), "+212600000009");
    assert_eq!(cell(&header, u, "matched"), "false");
    assert_eq!(cell(&header, u, "campaign"), "");
    assert_eq!(cell(&header, &rows[0], "matched"), "true");
    // A campaign filter leaves out unmatched rows (their campaign is unknown).
    let (_, rows) = parse_csv(&ok_stdout(&export(
        &s.env,
        &["--include-unmatched", "--campaign", "spring"],
    )));
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_completion_that_came_by_both_paths_is_exported_once() {
    let s = survey();
    let (header, rows) = parse_csv(&ok_stdout(&export(&s.env, &[])));
    let ahmeds: Vec<_> = rows.iter().filter(|r| r[0] == s.ahmed).collect();
    assert_eq!(ahmeds.len(), 1);
    // The primary (first arrived, by the endpoint) is the one exported.
    assert_eq!(cell(&header, ahmeds[0], "source"), "endpoint");
}

#[test]
fn json_is_an_array_of_objects_with_raw_answers() {
    let s = survey();
    let v: Value = serde_json::from_str(&ok_stdout(&export(&s.env, &["--json"]))).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    let a = &arr[0];
    let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, [&FIXED[..], &["answers"]].concat());
    assert_eq!(a["flow_token"], s.ahmed.as_str());
    assert_eq!(a["phone_number"], "+212610059159");
    assert_eq!(a["source"], "endpoint");
    // Raw values: not escaped, not stringified.
    assert_eq!(a["answers"]["q1_accueil"], "=SUM(A1)");
    assert_eq!(a["answers"]["q4_prix"], -1);
    assert_eq!(a["answers"]["commentaire"], "Très bien ⭐");
    assert_eq!(arr[1]["answers"]["channels"], json!(["sms", "email"]));
    assert_eq!(arr[1]["answers"]["consent"], true);
    // With unmatched rows, each object says whether it was matched.
    let v: Value = serde_json::from_str(&ok_stdout(&export(
        &s.env,
        &["--json", "--include-unmatched"],
    )))
    .unwrap();
    assert_eq!(v[2]["matched"], false);
    assert_eq!(v[2]["customer_name"], Value::Null);
    assert_eq!(v[0]["matched"], true);
    // No responses: an empty array.
    let empty = export(&s.env, &["--json", "--campaign", "nobody"]);
    assert_eq!(ok_stdout(&empty).trim(), "[]");
}

#[test]
fn ndjson_is_one_object_per_line() {
    let s = survey();
    let text = ok_stdout(&export(&s.env, &["--ndjson"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let objs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs[0]["flow_token"], s.ahmed.as_str());
    assert_eq!(objs[2]["answers"]["meta"], json!({"a": 1}));
    let json: Value = serde_json::from_str(&ok_stdout(&export(&s.env, &["--json"]))).unwrap();
    assert_eq!(Value::Array(objs), json);
}

fn no_temp_files(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".flowctl-export-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn out_writes_the_whole_file_and_replaces_an_existing_one() {
    let s = survey();
    let dest = s.env.write("responses.csv", "old content\n");
    let out = export(&s.env, &["--out", dest.to_str().unwrap()]);
    assert!(ok_stdout(&out).is_empty(), "nothing on stdout with --out");
    let written = std::fs::read_to_string(&dest).unwrap();
    assert_eq!(written, ok_stdout(&export(&s.env, &[])));
    no_temp_files(s.env.dir.path());
    // A relative path is relative to the working directory.
    ok_stdout(&export(&s.env, &["--ndjson", "--out", "r.ndjson"]));
    assert_eq!(
        std::fs::read_to_string(s.env.path("r.ndjson"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn out_into_an_unwritable_place_fails_naming_the_file_and_leaves_nothing() {
    let s = survey();
    let file = s.env.write("plain-file", "x");
    // Not a directory (fails even for root, unlike a read-only directory).
    for dest in [file.join("out.csv"), s.env.path("missing-dir/out.csv")] {
        let out = export(&s.env, &["--out", dest.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(dest.to_str().unwrap()),
            "{}",
            stderr(&out)
        );
        assert!(!dest.exists());
    }
    // A failing export (here: bad input) leaves the previous file untouched.
    let dest = s.env.write("keep.csv", "previous\n");
    let out = export(
        &s.env,
        &["--since", "nope", "--out", dest.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "previous\n");
    no_temp_files(s.env.dir.path());
}

#[test]
fn a_missing_database_is_a_usage_error_not_an_empty_export() {
    let env = Env::new();
    let out = export(&env, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!env.db_exists());
}

// ---------------------------------------------------------------------------------------
// stats

/// Sets a token's delivery status as the message webhook would (no library method yet).
fn set_delivery(db: &DbTarget, token: &str, status: &str, rank: i64, code: Option<i64>) {
    Sql::open(db).execute(
        "UPDATE tokens SET delivery = ?2, delivery_rank = ?3, delivery_error_code = ?4 WHERE token = ?1",
        &[token.into(), status.into(), rank.into(), code.into()],
    );
}

fn sent_at(store: &Store, token: &str) -> chrono::DateTime<chrono::Utc> {
    let t = store.find_token(token).unwrap().unwrap();
    t.sent_at.unwrap().as_datetime()
}

fn complete_after(store: &mut Store, token: &str, secs: i64) {
    let at = sent_at(store, token) + chrono::Duration::seconds(secs);
    complete(
        store,
        token,
        "endpoint",
        json!({"q": 1}),
        &flowctl::time::format(at),
    );
}

/// spring: 6 issued (1 pending), 4 sent: 1 sent only, 1 delivered, 2 read; 1 refused by the
/// API (131026), 1 failed delivery (131047); 3 completed (after 60, 120, 300 s), one of them
/// twice. autumn: 2 sent, 1 read and completed after 30 s. 2 unmatched completions: one
/// with no campaign, one from spring.
fn funnel_env() -> Env {
    let env = Env::new();
    let db = env.db();
    let mut s = Store::open(&db).unwrap();
    let p = |i: u32| format!("+2126100592{i:02}");
    // pending: issued, never sent
    let pending = NewToken {
        token: flowctl::token::FlowToken::generate(),
        phone: flowctl::phone::Phone::parse(&p(0), None).unwrap(),
        customer_name: None,
        campaign: "spring".into(),
        origin: Origin::Bulk,
        initial_data: None,
        ttl: Duration::from_secs(86_400),
    };
    s.insert_token(&pending, SendState::Pending).unwrap();
    let only_sent = sent_token(&mut s, &p(1), None, "spring");
    let delivered = sent_token(&mut s, &p(2), None, "spring");
    let read1 = sent_token(&mut s, &p(3), None, "spring");
    let read2 = sent_token(&mut s, &p(4), None, "spring");
    let undelivered = sent_token(&mut s, &p(5), None, "spring");
    let refused = NewToken {
        token: flowctl::token::FlowToken::generate(),
        phone: flowctl::phone::Phone::parse(&p(6), None).unwrap(),
        ..pending.clone()
    };
    s.insert_token(&refused, SendState::Pending).unwrap();
    s.record_failed(
        refused.token.as_str(),
        &Failure {
            code: Some(131026),
            message: "Message undeliverable".into(),
            retryable: false,
        },
    )
    .unwrap();
    set_delivery(&db, &delivered, "delivered", 2, None);
    set_delivery(&db, &read1, "read", 3, None);
    set_delivery(&db, &read2, "read", 3, None);
    set_delivery(&db, &undelivered, "failed", 1, Some(131047));
    complete_after(&mut s, &delivered, 60);
    complete_after(&mut s, &read1, 120);
    complete_after(&mut s, &read2, 300);
    let again = sent_at(&s, &read2) + chrono::Duration::seconds(301);
    complete(
        &mut s,
        &read2,
        "webhook",
        json!({"q": 1}),
        &flowctl::time::format(again),
    );
    let _ = only_sent;

    let a1 = sent_token(&mut s, &p(7), None, "autumn");
    sent_token(&mut s, &p(8), None, "autumn");
    set_delivery(&db, &a1, "read", 3, None);
    complete_after(&mut s, &a1, 30);

    unmatched(
        &mut s,
        "212600000009",
        json!({"q": 1}),
        "2026-02-20T09:00:00.000Z",
    );
    // An unmatched completion whose campaign the webhook knew.
    Sql::open(&db).execute(
        "INSERT INTO responses (token, phone, sender, campaign, source, answers, matched, completed_at, received_at)
         VALUES (NULL, '+212600000010', '212600000010', 'spring', 'webhook', '{}', 0, '2026-02-21T00:00:00.000Z', '2026-02-21T00:00:00.000Z')",
        &[],
    );
    env
}

fn stats(env: &Env, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd();
    c.arg("stats").args(args);
    run(c, LIMIT)
}

#[test]
fn stats_json_counts_the_funnel_per_campaign_and_in_total() {
    let env = funnel_env();
    let v: Value = serde_json::from_str(&ok_stdout(&stats(&env, &["--json"]))).unwrap();
    let campaigns = v["campaigns"].as_array().unwrap();
    let names: Vec<&str> = campaigns
        .iter()
        .map(|c| c["campaign"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["autumn", "spring"]);
    let spring = &campaigns[1];
    let counts = |c: &Value| {
        [
            "issued",
            "sent",
            "failed",
            "delivered",
            "read",
            "completed",
            "unmatched",
        ]
        .map(|k| c[k].as_i64().unwrap())
    };
    assert_eq!(counts(spring), [7, 4, 2, 3, 2, 3, 1]);
    assert_eq!(spring["failed_by_code"], json!({"131026": 1, "131047": 1}));
    assert_eq!(spring["completion_rate"], 0.75);
    assert_eq!(spring["median_completion_seconds"], 120.0);
    let autumn = &campaigns[0];
    assert_eq!(counts(autumn), [2, 2, 0, 1, 1, 1, 0]);
    assert_eq!(autumn["completion_rate"], 0.5);
    assert_eq!(autumn["failed_by_code"], json!({}));
    assert_eq!(autumn["median_completion_seconds"], 30.0);
    let total = &v["total"];
    // The unmatched completion with no campaign counts in the total only.
    assert_eq!(counts(total), [9, 6, 2, 4, 3, 4, 2]);
    assert_eq!(total["completion_rate"].as_f64().unwrap(), 4.0 / 6.0);
    assert_eq!(total["median_completion_seconds"], 90.0);
    assert!(total.get("campaign").is_none());

    let only: Value = serde_json::from_str(&ok_stdout(&stats(
        &env,
        &["--json", "--campaign", "autumn"],
    )))
    .unwrap();
    assert_eq!(only["campaigns"].as_array().unwrap().len(), 1);
    assert_eq!(counts(&only["total"]), [2, 2, 0, 1, 1, 1, 0]);
}

#[test]
fn stats_table_is_aligned_with_a_total_row() {
    let env = funnel_env();
    let text = ok_stdout(&stats(&env, &[]));
    let lines: Vec<&str> = text.lines().collect();
    let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        cols(lines[0]),
        [
            "campaign",
            "issued",
            "sent",
            "failed",
            "deferred",
            "pending",
            "unknown",
            "replaced",
            "delivered",
            "read",
            "completed",
            "unmatched",
            "completion",
            "median"
        ]
    );
    // sent + failed + deferred + pending + unknown + replaced = issued.
    assert_eq!(
        cols(lines[1]),
        ["autumn", "2", "2", "0", "0", "0", "0", "0", "1", "1", "1", "0", "50.0%", "30s"]
    );
    assert_eq!(
        cols(lines[2]),
        ["spring", "7", "4", "2", "0", "1", "0", "0", "3", "2", "3", "1", "75.0%", "2m", "00s"]
    );
    assert_eq!(
        cols(lines[3])[..12],
        ["TOTAL", "9", "6", "2", "0", "1", "0", "0", "4", "3", "4", "2"]
    );
    // Right-aligned numbers: every row of the table has the same width.
    assert!(
        lines[..4].windows(2).all(|w| w[0].len() == w[1].len()),
        "{text}"
    );
    assert!(
        text.contains("131026: 1") && text.contains("131047: 1"),
        "{text}"
    );
}

#[test]
fn stats_on_a_missing_database_is_a_usage_error_and_creates_nothing() {
    let env = Env::new();
    let out = stats(&env, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!env.db_exists());
}

#[test]
fn read_only_commands_leave_an_unmigrated_database_to_the_writers() {
    // A database file no writer has brought up to this build's schema (here: empty).
    if skip_on_postgres("an empty SQLite file") {
        return;
    }
    let env = Env::new();
    std::fs::write(env.db_file(), b"").unwrap();
    for out in [export(&env, &[]), stats(&env, &["--json"])] {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("older than this build"), "{err}");
        assert!(err.contains("send, bulk or serve"), "{err}");
    }
    assert_eq!(
        std::fs::metadata(env.db_file()).unwrap().len(),
        0,
        "not migrated"
    );
    // Once a writer has migrated it, both read it.
    drop(Store::open(env.db()).unwrap());
    assert!(export(&env, &[]).status.success());
    assert!(stats(&env, &[]).status.success());
}

#[test]
fn stats_on_an_empty_database() {
    let env = Env::new();
    Store::open(env.db()).unwrap();
    let v: Value = serde_json::from_str(&ok_stdout(&stats(&env, &["--json"]))).unwrap();
    assert_eq!(v["campaigns"], json!([]));
    assert_eq!(v["total"]["issued"], 0);
    assert_eq!(v["total"]["completion_rate"], Value::Null);
}

#[test]
fn out_to_a_device_writes_through_it_without_replacing_it() {
    let s = survey();
    let out = export(&s.env, &["--out", "/dev/null"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(!meta.is_file(), "/dev/null must still be a device");
}
