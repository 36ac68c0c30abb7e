//! `flowctl flows …` over the real binary and the sandbox, which plays Meta's Flows API
//! (create, assets upload with `validation_errors`, publish, deprecate, delete, preview,
//! metrics): <https://developers.facebook.com/docs/whatsapp/flows/reference/flowsapi>.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const WABA_ID: &str = "102290129340398";

/// `flowctl` with the sandbox's URL, the token and WABA_ID.
fn flows(env: &Env, sandbox: &str, args: &[&str]) -> Command {
    let mut c = env.graph_cmd(sandbox);
    c.env("WABA_ID", WABA_ID).arg("flows").args(args);
    c
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

fn ok(c: Command) -> String {
    let out = run(c, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The requests to a path ending in `suffix`, with this method.
fn requests_to(sandbox: &str, method: &str, suffix: &str) -> usize {
    sandbox_requests(sandbox)
        .iter()
        .filter(|r| {
            r["method"] == method && r["path"].as_str().is_some_and(|p| p.ends_with(suffix))
        })
        .count()
}

fn survey_text() -> String {
    std::fs::read_to_string(survey_flow()).unwrap()
}

#[test]
fn deploy_creates_then_says_unchanged_then_updates_a_changed_file() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let file = env.write("survey.json", &survey_text());

    let first = ok(flows(
        &env,
        &sb.url,
        &[
            "deploy",
            path(&file),
            "--name",
            "survey",
            "--categories",
            "SURVEY",
        ],
    ));
    assert!(first.contains("created Flow \"survey\""), "{first}");
    assert!(first.contains("uploaded"), "{first}");
    assert_eq!(requests_to(&sb.url, "POST", "/assets"), 1);

    let second = ok(flows(
        &env,
        &sb.url,
        &["deploy", path(&file), "--name", "survey"],
    ));
    assert!(second.contains("unchanged"), "{second}");
    assert_eq!(
        requests_to(&sb.url, "POST", "/assets"),
        1,
        "nothing uploaded again"
    );
    assert_eq!(requests_to(&sb.url, "POST", "/flows"), 1, "no second Flow");

    let changed = survey_text().replace("Votre visite", "Votre passage");
    env.write("survey.json", &changed);
    let third = ok(flows(
        &env,
        &sb.url,
        &["deploy", path(&file), "--name", "survey"],
    ));
    assert!(third.contains("uploaded"), "{third}");
    assert_eq!(requests_to(&sb.url, "POST", "/assets"), 2);

    let list = ok(flows(&env, &sb.url, &["list"]));
    let line = list
        .lines()
        .find(|l| l.contains("survey"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("DRAFT") && line.contains("SURVEY"), "{line}");
}

#[test]
fn deploy_publish_publishes_and_a_published_flow_is_not_overwritten() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let file = env.write("survey.json", &survey_text());
    let out = ok(flows(
        &env,
        &sb.url,
        &["deploy", path(&file), "--name", "survey", "--publish"],
    ));
    assert!(out.contains("published Flow \"survey\""), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("created Flow \"survey\": "))
        .unwrap()
        .trim()
        .to_string();
    let get = ok(flows(&env, &sb.url, &["get", &id]));
    assert!(get.contains("\"PUBLISHED\""), "{get}");

    env.write(
        "survey.json",
        &survey_text().replace("Votre visite", "Autre"),
    );
    let out = run(
        flows(&env, &sb.url, &["deploy", path(&file), "--name", "survey"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("is PUBLISHED"), "{}", stderr(&out));
    assert_eq!(
        requests_to(&sb.url, "POST", "/assets"),
        1,
        "no upload into a published Flow"
    );

    ok(flows(&env, &sb.url, &["deprecate", &id]));
    let get = ok(flows(&env, &sb.url, &["get", &id]));
    assert!(get.contains("\"DEPRECATED\""), "{get}");
}

#[test]
fn update_shows_meta_validation_errors_at_the_local_line() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let created = ok(flows(
        &env,
        &sb.url,
        &["create", "broken", "--categories", "OTHER"],
    ));
    let id = created
        .split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // Line 5 routes to a screen that does not exist: Meta's INVALID_ROUTING_MODEL.
    let text = survey_text().replacen("\"QUALITE_PRIX\"\n", "\"GHOST\"\n", 1);
    let ghost_line = text.lines().position(|l| l.contains("\"GHOST\"")).unwrap() + 1;
    let file = env.write("broken.json", &text);
    let out = run(
        flows(&env, &sb.url, &["update", &id, "--json", path(&file)]),
        LIMIT,
    );
    let text_out = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text_out}{}", stderr(&out));
    let expected = format!("broken.json:{ghost_line}:");
    assert!(
        text_out
            .lines()
            .any(|l| l.contains(&expected) && l.contains("INVALID_ROUTING_MODEL")),
        "{text_out}"
    );
    assert!(
        text_out.contains("\"GHOST\""),
        "the local line is quoted: {text_out}"
    );
    let publish = run(flows(&env, &sb.url, &["publish", &id]), LIMIT);
    assert_eq!(publish.status.code(), Some(1));
    assert!(stderr(&publish).contains("139002"), "{}", stderr(&publish));
}

#[test]
fn validate_catches_an_unreachable_screen_before_any_upload() {
    let env = Env::new();
    let text = survey_text().replace(
        "\"RECOMMANDATION\": []",
        "\"RECOMMANDATION\": [],\n    \"ORPHAN\": []",
    );
    let text = text.replacen(
        "\"screens\": [",
        "\"screens\": [\n    {\"id\": \"ORPHAN\", \"terminal\": true, \"layout\": {\"type\": \"SingleColumnLayout\", \"children\": []}},",
        1,
    );
    let file = env.write("orphan.json", &text);
    let mut c = env.cmd();
    c.args(["flows", "validate"]).arg(&file);
    let out = run(c, LIMIT);
    let text_out = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text_out}{}", stderr(&out));
    assert!(
        text_out.contains("\"ORPHAN\" cannot be reached"),
        "{text_out}"
    );

    let mut c = env.cmd();
    c.args(["flows", "validate"]).arg(survey_flow());
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // deploy refuses the same file and sends nothing.
    let sb = env.sandbox(&[]);
    let out = run(
        flows(&env, &sb.url, &["deploy", path(&file), "--name", "orphan"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        sandbox_requests(&sb.url).is_empty(),
        "nothing reached the API"
    );
}

#[test]
fn preview_metrics_endpoint_and_delete() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let created = ok(flows(&env, &sb.url, &["create", "mini"]));
    let id = created
        .split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let first = ok(flows(&env, &sb.url, &["preview", &id]));
    assert!(
        first
            .lines()
            .next()
            .unwrap()
            .starts_with("https://business.facebook.com/wa/manage/flows/"),
        "{first}"
    );
    let again = ok(flows(&env, &sb.url, &["preview", &id]));
    assert_eq!(
        first.lines().next(),
        again.lines().next(),
        "same URL until invalidated"
    );
    let fresh = ok(flows(&env, &sb.url, &["preview", &id, "--invalidate"]));
    assert_ne!(first.lines().next(), fresh.lines().next());

    let metrics = ok(flows(
        &env,
        &sb.url,
        &[
            "metrics",
            &id,
            "--since",
            "2024-01-28",
            "--until",
            "2024-01-29",
        ],
    ));
    for name in [
        "ENDPOINT_REQUEST_COUNT",
        "ENDPOINT_REQUEST_ERROR_RATE",
        "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL",
        "ENDPOINT_AVAILABILITY",
    ] {
        assert_eq!(
            metrics
                .lines()
                .filter(|l| l.starts_with(name) && l.contains("2024-01-2"))
                .count(),
            2,
            "{name}: one line per day\n{metrics}"
        );
    }
    assert!(
        metrics.contains("ENDPOINT_REQUEST_COUNT\t2024-01-28T08:00:00+0000\tvalue=315"),
        "{metrics}"
    );
    let fields: Vec<String> = sandbox_requests(&sb.url)
        .iter()
        .filter_map(|r| {
            r["path"]
                .as_str()
                .filter(|p| p.ends_with(&id))
                .map(|_| r.clone())
        })
        .filter(|r| r["method"] == "GET")
        .map(|r| r.to_string())
        .collect();
    assert!(!fields.is_empty());

    ok(flows(
        &env,
        &sb.url,
        &["set-endpoint", &id, "https://example.com/api/flow"],
    ));
    let get = ok(flows(&env, &sb.url, &["get", &id]));
    assert!(get.contains("https://example.com/api/flow"), "{get}");

    ok(flows(&env, &sb.url, &["delete", &id]));
    let list = ok(flows(&env, &sb.url, &["list"]));
    assert!(!list.contains(&id), "{list}");
}

#[test]
fn list_without_waba_id_names_the_setting() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args(["flows", "list"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("WABA_ID"), "{}", stderr(&out));
}
