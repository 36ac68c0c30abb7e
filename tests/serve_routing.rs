//! End-to-end tests of built-in routing (`serve --flow-json [--flow-data]`) for real Flows:
//! same-screen refreshes of a dependent dropdown, validation that re-shows a screen with an
//! `error_message`, branching by `next_screen`, the start-time refusals, data API 4.0's
//! `flow_token_signature` — and the sandbox's simulated people completing the demo survey and
//! the non-linear appointment Flow (its photo downloaded and joined to the right phone), with
//! built-in routing and through `--forward`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowctl::sandbox::media::sample_file;
use flowctl::store::{MediaRecord, MediaState};
use serde_json::{json, Map, Value};
use support::*;

const DAY: Duration = Duration::from_secs(86_400);
const FORWARD_SECRET: &str = "test-forward-secret-8a3d";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn appointment_flow() -> PathBuf {
    example("appointment_flow.json")
}

fn appointment_data() -> PathBuf {
    example("appointment_flow.data.json")
}

/// `serve` running the appointment Flow with built-in routing.
fn serve_appointments(env: &Env) -> Running {
    env.serve(&[
        "--flow-json",
        appointment_flow().to_str().unwrap(),
        "--flow-data",
        appointment_data().to_str().unwrap(),
    ])
}

fn metrics(server: &Running) -> String {
    http_get(&format!("{}/metrics", server.url))
}

fn exchange(token: &str, screen: &str, data: Value) -> Value {
    json!({"version": "3.0", "action": "data_exchange", "screen": screen, "data": data, "flow_token": token})
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_selection_refreshes_the_same_screen_with_the_dependent_list() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Amina"), None, DAY);
    let server = serve_appointments(&env);
    let c = FlowClient::new(&server.url);

    let init = c
        .call(&json!({"version": "3.0", "action": "INIT", "flow_token": token}))
        .await;
    assert_eq!(init.status, 200, "{}", server.stderr());
    let j = init.json.unwrap();
    assert_eq!(j["screen"], "BOOKING");
    assert_eq!(j["data"]["customer_name"], "Amina");
    assert_eq!(ids(&j["data"]["cities"]), ["rabat", "casablanca", "fes"]);
    // No city chosen yet: no branches (never the Flow JSON's example).
    assert_eq!(j["data"]["branches"], json!([]));

    // The city's on-select-action: the same screen, with that city's branches.
    let refresh = c
        .call(&exchange(
            &token,
            "BOOKING",
            json!({"trigger": "city_selected", "city": "casablanca"}),
        ))
        .await;
    assert_eq!(refresh.status, 200);
    let j = refresh.json.unwrap();
    assert_eq!(j["screen"], "BOOKING");
    assert_eq!(ids(&j["data"]["branches"]), ["casa_maarif", "casa_anfa"]);
    assert_eq!(ids(&j["data"]["cities"]).len(), 3);
    assert!(j["data"].get("error_message").is_none(), "{j}");
    // A refresh stores nothing and completes nothing.
    let record = env.store().find_token(&token).unwrap().unwrap();
    assert!(record.flow_answers.is_none(), "{:?}", record.flow_answers);
    assert!(record.completed_at.is_none());
    assert!(
        metrics(&server).contains("flowctl_same_screen_total{kind=\"refresh\"} 1"),
        "{}",
        metrics(&server)
    );
}

#[tokio::test]
async fn a_submit_missing_a_required_answer_re_shows_the_screen_with_an_error() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = serve_appointments(&env);
    let c = FlowClient::new(&server.url);
    let a = c
        .call(&exchange(
            &token,
            "BOOKING",
            json!({"city": "rabat", "branch": "", "next_screen": "CONFIRM"}),
        ))
        .await;
    assert_eq!(a.status, 200, "{}", server.stderr());
    let j = a.json.unwrap();
    assert_eq!(j["screen"], "BOOKING", "{j}");
    let error = j["data"]["error_message"].as_str().unwrap();
    assert!(
        error.contains("branch"),
        "names the missing answer: {error}"
    );
    // The screen keeps the chosen city's branches so the person can pick one.
    assert_eq!(ids(&j["data"]["branches"]), ["rabat_agdal", "rabat_hassan"]);
    let record = env.store().find_token(&token).unwrap().unwrap();
    assert!(
        record.flow_answers.is_none(),
        "a refused submit stores nothing"
    );
    assert!(metrics(&server).contains("flowctl_same_screen_total{kind=\"invalid\"} 1"));

    // A required consent left false is missing too.
    let a = c
        .call(&exchange(
            &token,
            "CONFIRM",
            json!({"slot": "morning", "consent": false}),
        ))
        .await;
    let j = a.json.unwrap();
    assert_eq!(j["screen"], "CONFIRM");
    assert!(j["data"]["error_message"]
        .as_str()
        .unwrap()
        .contains("consent"));
}

#[tokio::test]
async fn next_screen_chooses_the_branch_and_the_answers_are_joined_to_the_phone() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", Some("Amina"), None, DAY);
    let server = serve_appointments(&env);
    let c = FlowClient::new(&server.url);

    // A successor the routing model does not list is refused on the same screen.
    let wrong = c
        .call(&exchange(
            &token,
            "BOOKING",
            json!({"city": "fes", "branch": "fes_medina", "next_screen": "NOWHERE"}),
        ))
        .await;
    let j = wrong.json.unwrap();
    assert_eq!(j["screen"], "BOOKING");
    assert!(j["data"]["error_message"].is_string(), "{j}");

    let to_symptoms = c
        .call(&exchange(
            &token,
            "BOOKING",
            json!({"city": "fes", "branch": "fes_medina", "next_screen": "SYMPTOMS"}),
        ))
        .await;
    assert_eq!(to_symptoms.json.unwrap()["screen"], "SYMPTOMS");
    let to_confirm = c
        .call(&exchange(
            &token,
            "SYMPTOMS",
            json!({"symptoms": "A sore knee"}),
        ))
        .await;
    assert_eq!(to_confirm.json.unwrap()["screen"], "CONFIRM");
    let last = exchange(
        &token,
        "CONFIRM",
        json!({"slot": "evening", "consent": true}),
    );
    let done = c.call(&last).await;
    assert_eq!(done.status, 200, "{}", server.stderr());
    let j = done.json.unwrap();
    assert_eq!(j["screen"], "SUCCESS");
    // The client lost the SUCCESS and submits again: the same SUCCESS.
    let again = c.call(&last).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json.unwrap(), j);

    let responses = env.store().responses_for_token(&token).unwrap();
    assert_eq!(responses.len(), 1);
    let r = &responses[0];
    assert_eq!(r.phone.as_deref(), Some("+212610059159"));
    for (k, v) in [
        ("city", json!("fes")),
        ("branch", json!("fes_medina")),
        ("next_screen", json!("SYMPTOMS")),
        ("symptoms", json!("A sore knee")),
        ("slot", json!("evening")),
        ("consent", json!(true)),
    ] {
        assert_eq!(r.answers.get(k), Some(&v), "{k}: {:?}", r.answers);
    }

    // The other branch goes straight to CONFIRM.
    let other = issue_token(&env.db(), "+212610059160", None, None, DAY);
    let a = c
        .call(&exchange(
            &other,
            "BOOKING",
            json!({"city": "rabat", "branch": "rabat_agdal", "next_screen": "CONFIRM"}),
        ))
        .await;
    assert_eq!(a.json.unwrap()["screen"], "CONFIRM");
}

#[test]
fn serve_without_a_way_to_answer_init_exits_2_naming_the_three() {
    let env = Env::new();
    let key = env.key_file();
    let mut c = env.cmd();
    c.env("APP_SECRET", APP_SECRET)
        .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(&key);
    let out = run(c, Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for way in ["--flow-json", "--forward", "FLOW_SCREEN"] {
        assert!(err.contains(way), "names {way}: {err}");
    }
    // A Flow opened with `navigate` never sends INIT: serve starts.
    let mut c = env.cmd();
    c.env("APP_SECRET", APP_SECRET)
        .env("FLOW_ACTION", "navigate")
        .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(&key);
    let server = Running::start(c);
    assert!(server.url.starts_with("http://"));
}

#[test]
fn an_unusable_flow_data_file_is_refused_by_name() {
    let env = Env::new();
    let key = env.key_file();
    let bad = env.write(
        "lists.json",
        r#"{"branches": {"by": "city", "options": {"rabat": 7}}}"#,
    );
    let serve = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("APP_SECRET", APP_SECRET)
            .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
            .arg(&key)
            .args(args);
        run(c, Duration::from_secs(20))
    };
    let flow = appointment_flow();
    let out = serve(&[
        "--flow-json",
        flow.to_str().unwrap(),
        "--flow-data",
        bad.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("lists.json") && err.contains("\"branches\""),
        "{err}"
    );
    // Lists without the screens they fill.
    let out = serve(&["--flow-data", appointment_data().to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--flow-data") && err.contains("--flow-json"),
        "{err}"
    );
}

#[test]
fn a_branch_built_in_routing_cannot_choose_is_refused_at_start_pointing_to_forward() {
    let env = Env::new();
    let flow = env.write(
        "branching.json",
        &json!({
            "version": "7.2", "data_api_version": "3.0",
            "routing_model": {"A": ["B", "C"], "B": [], "C": []},
            "screens": [
                {"id": "A", "layout": {"type": "SingleColumnLayout", "children": [
                    {"type": "TextInput", "name": "x", "label": "x"},
                    {"type": "Footer", "label": "Go", "on-click-action": {
                        "name": "data_exchange", "payload": {"x": "${form.x}"}}}]}},
                {"id": "B", "terminal": true, "layout": {"type": "SingleColumnLayout", "children": []}},
                {"id": "C", "terminal": true, "layout": {"type": "SingleColumnLayout", "children": []}}
            ]
        })
        .to_string(),
    );
    let key = env.key_file();
    let start = |extra: &[&str], vars: &[(&str, &str)]| {
        let mut c = env.cmd();
        c.env("APP_SECRET", APP_SECRET)
            .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
            .arg(&key)
            .arg("--flow-json")
            .arg(&flow)
            .args(extra);
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    };
    let out = run(start(&[], &[]), Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"A\"") && err.contains("next_screen") && err.contains("--forward"),
        "{err}"
    );
    // With --forward the business's handler decides: serve starts.
    let server = Running::start(start(
        &["--forward", "http://127.0.0.1:9/"],
        &[("FLOW_FORWARD_SECRET", FORWARD_SECRET)],
    ));
    assert!(server.url.starts_with("http://"));
}

#[tokio::test]
async fn a_data_api_4_request_is_answered_only_with_a_genuine_token_signature() {
    let env = Env::new();
    let token = issue_token(&env.db(), "+212610059159", None, None, DAY);
    let server = serve_appointments(&env);
    let c = FlowClient::new(&server.url);
    let init = |signature: String| json!({"version": "4.0", "action": "INIT", "flow_token": token, "flow_token_signature": signature});

    let genuine = flowctl::crypto::jwt::sign_flow_token(APP_SECRET.as_bytes(), &token);
    let a = c.call(&init(genuine)).await;
    assert_eq!(a.status, 200, "{}", server.stderr());
    assert_eq!(a.json.unwrap()["screen"], "BOOKING");

    // Signed with another secret, or for another token: refused with 432, nothing answered.
    let forged = flowctl::crypto::jwt::sign_flow_token(b"not-the-app-secret", &token);
    assert_eq!(c.call(&init(forged)).await.status, 432);
    let other = flowctl::crypto::jwt::sign_flow_token(APP_SECRET.as_bytes(), "flowctl-other");
    assert_eq!(c.call(&init(other)).await.status, 432);

    let m = metrics(&server);
    assert!(
        m.contains("flowctl_token_signatures_total{outcome=\"valid\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("flowctl_token_signatures_total{outcome=\"refused\",reason=\"signature\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("flowctl_token_signatures_total{outcome=\"refused\",reason=\"other_token\"} 1"),
        "{m}"
    );
}

// ---- The sandbox's simulated people ------------------------------------------------------

/// What one run of the people produced.
struct PeopleRun {
    env: Env,
    stats: Value,
    server: Running,
    /// phone → (name, the exported object).
    exported: HashMap<String, Value>,
    /// The sandbox stays up while the test looks at the run: its CDN serves the files the
    /// media worker may still be downloading.
    _sandbox: Running,
}

fn have_python() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: no python3");
    }
    found
}

/// Sends `flow` to `phones` with `bulk` through a sandbox whose people complete it through
/// `serve`'s data endpoint, then exports. `serve_args` say how serve routes;
/// `people_args` how the people behave.
fn people_complete(
    env: Env,
    flow: &Path,
    serve_vars: &[(&str, &str)],
    serve_args: &[&str],
    people_args: &[&str],
    phones: &[&str],
) -> PeopleRun {
    let pub_key = env.write(
        "public.pem",
        vectors()["keys"]["public_key_pem"].as_str().unwrap(),
    );
    let server = env.serve_with_env(serve_vars, serve_args);
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--complete-via",
            "endpoint",
            "--user-delay-ms",
            "20",
        ])
        .arg("--endpoint")
        .arg(format!("{}/api/flow", server.url))
        .arg("--public-key")
        .arg(&pub_key)
        .arg("--flow-json")
        .arg(flow)
        .args(people_args);
    let sandbox = Running::start(sb);

    let mut csv = String::from("phone_number,customer_name\n");
    for (i, phone) in phones.iter().enumerate() {
        csv.push_str(&format!("{phone},Client {i}\n"));
    }
    let file = env.write("people.csv", &csv);
    let mut bulk = env.graph_cmd(&sandbox.url);
    bulk.args(["bulk", "--rate", "50"]).arg(&file);
    let out = run(bulk, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let stats = wait_for_people(&sandbox.url, phones.len() as u64);
    assert_eq!(
        stats["completed"],
        phones.len(),
        "{stats}\nserve: {}",
        server.stderr()
    );

    let mut c = env.cmd();
    c.args(["export", "--json"]);
    let out = run(c, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut exported = HashMap::new();
    for row in rows.as_array().unwrap() {
        let phone = row["phone_number"].as_str().unwrap().to_string();
        assert!(
            exported.insert(phone.clone(), row.clone()).is_none(),
            "one row per phone: {phone}"
        );
    }
    assert_eq!(exported.len(), phones.len(), "{rows}");
    PeopleRun {
        env,
        stats,
        server,
        exported,
        _sandbox: sandbox,
    }
}

const PHONES: [&str; 8] = [
    "+212610000101",
    "+212610000102",
    "+212610000103",
    "+212610000104",
    "+212610000105",
    "+212610000106",
    "+212610000107",
    "+212610000108",
];

/// The photo of `token` once the media worker has stored it (it runs off the request path).
fn settled_photo(run: &PeopleRun, token: &str) -> Vec<MediaRecord> {
    let start = Instant::now();
    loop {
        let files = run.env.store().media_of(token).unwrap();
        if !files.is_empty() && files.iter().all(|f| f.state == MediaState::Done) {
            return files;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the photo of {token} was not stored: {files:?}\nserve: {}",
            run.server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every exported appointment is consistent: the branch belongs to the chosen city, the
/// answers match the branch taken, the row is joined to its phone and name; both branches
/// were taken by someone.
fn check_appointments(run: &PeopleRun) {
    let lists: Value =
        serde_json::from_str(&std::fs::read_to_string(appointment_data()).unwrap()).unwrap();
    let mut branches_taken = Vec::new();
    for (i, phone) in PHONES.iter().enumerate() {
        let row = &run.exported[*phone];
        assert_eq!(row["customer_name"], format!("Client {i}"), "{row}");
        let a: &Map<String, Value> = row["answers"].as_object().unwrap();
        let city = a["city"].as_str().unwrap();
        let branch = a["branch"].as_str().unwrap();
        assert!(
            ids(&lists["branches"]["options"][city]).contains(&branch.to_string()),
            "{phone}: branch {branch} is one of {city}'s (the refreshed list): {a:?}"
        );
        let next = a["next_screen"].as_str().unwrap();
        assert_eq!(
            a.contains_key("symptoms"),
            next == "SYMPTOMS",
            "{phone}: the answers follow the branch taken: {a:?}"
        );
        assert!(a.contains_key("slot") && a["consent"] == true, "{a:?}");
        assert!(!a.contains_key("trigger"), "{a:?}");
        // The optional photo of the SYMPTOMS branch: the answer keeps only the file's id and
        // name (no keys), and the file itself is downloaded from the CDN, decrypted and kept
        // under this phone's token, byte for byte what the person attached.
        assert_eq!(a.contains_key("photo"), next == "SYMPTOMS", "{a:?}");
        branches_taken.push(next.to_string());
        if next != "SYMPTOMS" {
            continue;
        }
        let photo = &a["photo"][0];
        assert!(
            photo["media_id"].is_string() && photo.get("encryption_metadata").is_none(),
            "{phone}: the photo's answer: {a:?}"
        );
        let token = row["flow_token"].as_str().unwrap();
        let files = settled_photo(run, token);
        assert_eq!(files.len(), 1, "{phone}: {files:?}");
        let path = files[0].path.as_deref().unwrap();
        assert!(path.contains(token), "{phone}: {path}");
        assert_eq!(
            std::fs::read(path).unwrap(),
            sample_file("PhotoPicker", token).0,
            "{phone}: the stored photo is the one the person attached"
        );
    }
    assert!(
        branches_taken.iter().any(|b| b == "SYMPTOMS")
            && branches_taken.iter().any(|b| b == "CONFIRM"),
        "both branches taken: {branches_taken:?}"
    );
    // Half the people forget a required answer: some corrections happened.
    let corrections = run.stats["corrections"].as_u64().unwrap();
    assert!(corrections > 0, "{}", run.stats);
    // One city refresh each, and one more after each correction (the refused BOOKING is
    // re-shown without the forgotten city's branches).
    assert_eq!(
        run.stats["refreshes"].as_u64().unwrap(),
        PHONES.len() as u64 + corrections,
        "{}",
        run.stats
    );
}

#[test]
fn the_people_complete_the_survey_with_built_in_routing_fixing_and_retrying() {
    let flow = survey_flow();
    let run = people_complete(
        Env::new(),
        &flow,
        &[],
        &["--flow-json", flow.to_str().unwrap()],
        &["--forget-required", "50", "--retry-final-submit", "50"],
        &PHONES,
    );
    for (i, phone) in PHONES.iter().enumerate() {
        let row = &run.exported[*phone];
        assert_eq!(row["customer_name"], format!("Client {i}"));
        let a = row["answers"].as_object().unwrap();
        for q in ["q1_accueil", "q3_qualite", "q5_recommandation"] {
            assert!(a.contains_key(q), "{phone}: {q} in {a:?}");
        }
    }
    let corrections = run.stats["corrections"].as_u64().unwrap();
    let retried = run.stats["retried_final_submits"].as_u64().unwrap();
    assert!(corrections > 0, "{}", run.stats);
    assert!(retried > 0, "{}", run.stats);
    let m = metrics(&run.server);
    assert!(
        m.contains(&format!(
            "flowctl_same_screen_total{{kind=\"invalid\"}} {corrections}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("flowctl_completion_replays_total {retried}")),
        "{m}"
    );
    // Every retried final submit stored nothing new.
    for t in run.env.store().tokens_of_campaign("people").unwrap() {
        assert_eq!(
            run.env
                .store()
                .responses_for_token(t.token.as_str())
                .unwrap()
                .len(),
            1
        );
    }
}

#[test]
fn the_people_complete_the_appointment_flow_with_built_in_routing() {
    let flow = appointment_flow();
    let run = people_complete(
        Env::new(),
        &flow,
        &[],
        &[
            "--flow-json",
            flow.to_str().unwrap(),
            "--flow-data",
            appointment_data().to_str().unwrap(),
        ],
        &[
            "--forget-required",
            "50",
            "--retry-final-submit",
            "50",
            "--data-api",
            "4.0",
        ],
        &PHONES,
    );
    check_appointments(&run);
    let m = metrics(&run.server);
    assert!(
        m.contains("flowctl_token_signatures_total{outcome=\"valid\"}"),
        "the people spoke data API 4.0: {m}"
    );
    assert!(!m.contains("outcome=\"refused\""), "{m}");
}

#[test]
fn the_people_complete_the_appointment_flow_through_the_forward_handler() {
    if !have_python() {
        return;
    }
    let mut c = Command::new("python3");
    c.arg(example("forward/appointment_handler.py"))
        .args(["--port", "0"])
        .env("FLOW_FORWARD_SECRET", FORWARD_SECRET);
    let handler = Running::start(c);
    let flow = appointment_flow();
    let run = people_complete(
        Env::new(),
        &flow,
        &[("FLOW_FORWARD_SECRET", FORWARD_SECRET)],
        &["--forward", &handler.url],
        &["--forget-required", "50", "--retry-final-submit", "50"],
        &PHONES,
    );
    check_appointments(&run);
    let m = metrics(&run.server);
    assert!(
        m.contains("flowctl_forward_requests_total{outcome=\"complete\"} 8"),
        "{m}"
    );
}
