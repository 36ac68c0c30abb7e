//! `flowctl templates …` and template sends checked before they leave, over the real binary
//! and the sandbox, which plays Meta's template API and checks template sends against the
//! stored template (132000, 132001):
//! <https://developers.facebook.com/documentation/business-messaging/whatsapp/reference/whatsapp-business-account/message-template-api>.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const WABA_ID: &str = "102290129340398";

/// A MARKETING template with two body variables and a FLOW button.
const TEMPLATE: &str = r#"{
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

fn with_waba(mut c: Command) -> Command {
    c.env("WABA_ID", WABA_ID);
    c
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

/// Deploys and publishes the survey Flow the template's FLOW button names (`flow_name`).
fn deploy_survey(env: &Env, sandbox: &str) {
    let mut c = with_waba(env.graph_cmd(sandbox));
    c.args(["flows", "deploy"]).arg(survey_flow()).args([
        "--name",
        "survey",
        "--categories",
        "SURVEY",
        "--publish",
    ]);
    let out = ok(c);
    assert!(out.contains("published Flow \"survey\""), "{out}");
}

fn create_template(env: &Env, sandbox: &str) {
    deploy_survey(env, sandbox);
    let file = env.write("template.json", TEMPLATE);
    let mut c = with_waba(env.graph_cmd(sandbox));
    c.args(["templates", "create", "--file"]).arg(&file);
    let out = ok(c);
    assert!(out.contains("created template \"enquete_visite\""), "{out}");
}

fn templates(env: &Env, sandbox: &str, args: &[&str]) -> Command {
    let mut c = with_waba(env.graph_cmd(sandbox));
    c.arg("templates").args(args);
    c
}

#[test]
fn a_flow_button_must_name_a_flow_of_the_account() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let file = env.write("template.json", TEMPLATE);
    let mut c = with_waba(env.graph_cmd(&sb.url));
    c.args(["templates", "create", "--file"]).arg(&file);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("flow_name \"survey\" is not a Flow"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn templates_list_create_get_and_delete() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    create_template(&env, &sb.url);
    let list = ok(templates(&env, &sb.url, &["list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with("enquete_visite"))
        .unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols[1..4], ["fr", "APPROVED", "MARKETING"], "{line}");
    let get = ok(templates(&env, &sb.url, &["get", "enquete_visite"]));
    let v: Value = serde_json::from_str(&get).unwrap();
    assert_eq!(v[0]["components"][1]["buttons"][0]["flow_name"], "survey");

    ok(templates(&env, &sb.url, &["delete", "enquete_visite"]));
    let list = ok(templates(&env, &sb.url, &["list"]));
    assert!(!list.contains("enquete_visite"), "{list}");
    let out = run(templates(&env, &sb.url, &["get", "enquete_visite"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bulk_fills_template_parameters_from_csv_columns() {
    let env = Env::new();
    let record = env.path("record.ndjson");
    let sb = env.sandbox(&["--record", record.to_str().unwrap()]);
    create_template(&env, &sb.url);
    let csv = env.write(
        "contacts.csv",
        "phone_number,customer_name,ville\n+33612345678,Camille,Lyon\n+34612345678,Lucía,Sevilla\n",
    );
    let mut c = with_waba(env.graph_cmd(&sb.url));
    c.arg("bulk")
        .arg(&csv)
        .args(["--template", "enquete_visite", "--lang", "fr"])
        .args([
            "--template-param",
            "body.1=customer_name",
            "--template-param",
            "body.2=ville",
        ]);
    let out = run(c, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    drop(sb);
    let text = std::fs::read_to_string(&record).unwrap();
    let mut seen: Vec<(String, Vec<String>)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/messages")))
        .map(|r| {
            let comps = r["body"]["template"]["components"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let body = comps
                .iter()
                .find(|c| c["type"] == "body")
                .cloned()
                .unwrap_or(Value::Null);
            let values = body["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["text"].as_str().unwrap_or("").to_string())
                .collect();
            (r["to"].as_str().unwrap_or("").to_string(), values)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "33612345678".to_string(),
                vec!["Camille".to_string(), "Lyon".to_string()]
            ),
            (
                "34612345678".to_string(),
                vec!["Lucía".to_string(), "Sevilla".to_string()]
            ),
        ]
    );
}

#[test]
fn a_parameter_count_mismatch_is_refused_before_any_send() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    create_template(&env, &sb.url);
    let csv = env.write(
        "contacts.csv",
        "phone_number,customer_name\n+33612345678,Camille\n",
    );
    let mut c = with_waba(env.graph_cmd(&sb.url));
    c.arg("bulk").arg(&csv).args([
        "--template",
        "enquete_visite",
        "--lang",
        "fr",
        "--template-name-param",
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("2 variable(s) but the send gives 1"), "{err}");
    assert!(sandbox_messages(&sb.url).is_empty(), "nothing was sent");

    // send: the same check, and a missing language.
    let mut c = with_waba(env.graph_cmd(&sb.url));
    c.args([
        "send",
        "+33612345678",
        "--template",
        "enquete_visite",
        "--lang",
        "es",
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no \"es\" translation"),
        "{}",
        stderr(&out)
    );
    assert!(sandbox_messages(&sb.url).is_empty(), "nothing was sent");
}

#[test]
fn a_template_that_is_not_approved_is_refused_before_any_send() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    create_template(&env, &sb.url);
    let (code, body) = http_post_json(
        &format!("{}/_sandbox/templates", sb.url),
        r#"{"name": "enquete_visite", "status": "PAUSED"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let mut c = with_waba(env.graph_cmd(&sb.url));
    c.args([
        "send",
        "+33612345678",
        "--name",
        "Camille",
        "--template",
        "enquete_visite",
        "--lang",
        "fr",
    ])
    .args([
        "--template-name-param",
        "--template-param",
        "body.2=ville",
        "--data",
        r#"{"ville":"Lyon"}"#,
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is PAUSED, not APPROVED"),
        "{}",
        stderr(&out)
    );
    assert!(sandbox_messages(&sb.url).is_empty());
}

#[test]
fn the_sandbox_refuses_a_send_that_does_not_match_the_stored_template() {
    // Without WABA_ID nothing is checked locally: the sandbox answers as Meta would.
    let env = Env::new();
    let sb = env.sandbox(&[]);
    create_template(&env, &sb.url);
    let mut c = env.graph_cmd(&sb.url);
    c.args([
        "send",
        "+33612345678",
        "--name",
        "Camille",
        "--template",
        "enquete_visite",
        "--lang",
        "fr",
        "--template-name-param",
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: template \"enquete_visite\" not checked"),
        "{}",
        stderr(&out)
    );
    let sent = sandbox_messages(&sb.url);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["error_code"], 132000);
}

#[test]
fn a_strict_sandbox_refuses_a_template_it_does_not_know_with_132001() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = env.graph_cmd(&sb.url);
    c.args([
        "send",
        "+33612345678",
        "--template",
        "inconnu",
        "--lang",
        "fr",
    ]);
    assert_eq!(
        run(c, LIMIT).status.code(),
        Some(0),
        "an undeclared template is accepted as before"
    );
    let (code, body) = http_post_json(
        &format!("{}/_sandbox/templates", sb.url),
        r#"{"strict": true}"#,
    );
    assert_eq!(code, 200, "{body}");
    let mut c = env.graph_cmd(&sb.url);
    c.args([
        "send",
        "+34612345678",
        "--template",
        "inconnu",
        "--lang",
        "fr",
    ]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sent = sandbox_messages(&sb.url);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["error_code"], 132001);
}

#[test]
fn a_parameter_may_name_the_name_column_given_by_name_column() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    create_template(&env, &sb.url);
    let csv = env.write("contacts.csv", "tel;NOM;ville\n+33612345678;Camille;Lyon\n");
    let mut c = with_waba(env.graph_cmd(&sb.url));
    c.arg("bulk")
        .arg(&csv)
        .args(["--phone-column", "tel", "--name-column", "NOM"])
        .args(["--template", "enquete_visite", "--lang", "fr"])
        .args([
            "--template-param",
            "body.1=nom",
            "--template-param",
            "body.2=ville",
        ]);
    let out = run(c, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let sent = sandbox_messages(&sb.url);
    assert_eq!(sent.len(), 1);
    let body = &sent[0]["body"]["template"]["components"][0];
    assert_eq!(body["parameters"][0]["text"], "Camille", "{body}");
    assert_eq!(body["parameters"][1]["text"], "Lyon", "{body}");
}
