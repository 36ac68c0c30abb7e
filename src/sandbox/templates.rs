//! Message templates as the sandbox plays them: `GET|POST|DELETE
//! /{v}/{waba-id}/message_templates`, statuses set through `POST /_sandbox/templates`, and
//! template sends checked against the stored template.
//!
//! A send of a template the sandbox knows is checked: a missing language, or a status other
//! than APPROVED, is 132001 (132015 PAUSED, 132016 DISABLED), a body or header parameter
//! count unlike the template's is 132000, a header parameter of another kind is 132012. A
//! template the sandbox was never told about is accepted as before, unless `POST
//! /_sandbox/templates {"strict": true}` asked for every template to exist (then 132001).
//!
//! Meta's references:
//! - <https://developers.facebook.com/documentation/business-messaging/whatsapp/reference/whatsapp-business-account/message-template-api>
//!   (fields `name`, `language`, `status`, `category`, `quality_score`, `components`;
//!   `DELETE ?name=` removes every language)
//! - <https://developers.facebook.com/documentation/business-messaging/whatsapp/flows/guides/flows-templates>
//!   (a `BUTTONS` component with a `FLOW` button: `flow_id`, `flow_name` or `flow_json`,
//!   `navigate_screen`, `flow_action`)
//! - <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>
//!   (132000, 132001, 132012, 132015, 132016)

use std::sync::{Mutex, PoisonError};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::account::Account;
use super::answer::{graph_error, json_response, Answer, LogFields, Resp};

const STATUSES: [&str; 6] = [
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "IN_APPEAL",
];
const CATEGORIES: [&str; 3] = ["MARKETING", "UTILITY", "AUTHENTICATION"];

/// The templates of the simulated account.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    list: Vec<Value>,
    /// Whether a template the sandbox does not know is refused (132001).
    strict: bool,
}

const UNAUTHORIZED: &str =
    "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header";

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET|POST|DELETE /{v}/{waba-id}/message_templates`.
pub(super) fn edge(
    account: &Mutex<Account>,
    templates: &Mutex<Templates>,
    method: &Method,
    query: Option<&str>,
    authorized: bool,
    body: &Value,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(log, 190, UNAUTHORIZED);
    }
    // The Flows a FLOW button may name, read before the templates are locked.
    let flows: Vec<(String, String)> = account
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .flows_mut()
        .iter()
        .map(|(id, f)| {
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            (id.clone(), name.to_string())
        })
        .collect();
    let mut t = templates.lock().unwrap_or_else(PoisonError::into_inner);
    let name = query_param(query, "name");
    match *method {
        Method::GET => {
            let data: Vec<Value> = t
                .list
                .iter()
                .filter(|x| {
                    name.as_deref()
                        .is_none_or(|n| x["name"].as_str().is_some_and(|m| m.contains(n)))
                })
                .cloned()
                .collect();
            ok(json!({ "data": data, "paging": { "cursors": { "before": "", "after": "" } } }))
        }
        Method::DELETE => {
            let Some(name) = name else {
                return graph_error(log, 100, "(#100) The parameter name is required");
            };
            let before = t.list.len();
            t.list.retain(|x| x["name"] != name.as_str());
            if t.list.len() == before {
                return graph_error(
                    log,
                    100,
                    &format!("(#100) Message template {name:?} not found"),
                );
            }
            ok(json!({ "success": true }))
        }
        Method::POST => match create(&mut t, body, &flows) {
            Ok(v) => ok(v),
            Err(why) => graph_error(log, 100, &format!("(#100) Invalid parameter: {why}")),
        },
        _ => graph_error(
            log,
            100,
            &format!("(#100) Unsupported request: {method} message_templates"),
        ),
    }
}

fn ok(v: Value) -> Answer {
    Answer::Reply(json_response(StatusCode::OK, &v))
}

/// Checks a template definition and stores it, APPROVED at once (Meta reviews for minutes to
/// hours; `POST /_sandbox/templates` sets another status).
/// `flows` are the account's Flows as `(id, name)`: a FLOW button's `flow_id` or `flow_name`
/// must name one of them.
fn create(t: &mut Templates, body: &Value, flows: &[(String, String)]) -> Result<Value, String> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or("name is required")?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "name {name:?} must be lowercase letters, digits and underscores"
        ));
    }
    let language = body
        .get("language")
        .and_then(Value::as_str)
        .ok_or("language is required")?;
    let category = body
        .get("category")
        .and_then(Value::as_str)
        .ok_or("category is required")?;
    if !CATEGORIES.contains(&category.to_ascii_uppercase().as_str()) {
        return Err(format!(
            "category {category:?} must be one of {}",
            CATEGORIES.join(", ")
        ));
    }
    let components = body
        .get("components")
        .and_then(Value::as_array)
        .ok_or("components is required")?;
    if !components.iter().any(|c| kind(c) == "BODY") {
        return Err("components must include a BODY".into());
    }
    for c in components.iter().filter(|c| kind(c) == "BUTTONS") {
        for b in c
            .get("buttons")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if kind(b) == "FLOW" {
                let sources = ["flow_id", "flow_name", "flow_json"]
                    .iter()
                    .filter(|k| b.get(**k).is_some())
                    .count();
                if sources != 1 {
                    return Err(
                        "a FLOW button needs exactly one of flow_id, flow_name or flow_json".into(),
                    );
                }
                if let Some(id) = b.get("flow_id").and_then(Value::as_str) {
                    if !flows.iter().any(|(i, _)| i == id) {
                        return Err(format!("flow_id {id:?} is not a Flow of this account"));
                    }
                }
                if let Some(name) = b.get("flow_name").and_then(Value::as_str) {
                    if !flows.iter().any(|(_, n)| n == name) {
                        return Err(format!("flow_name {name:?} is not a Flow of this account"));
                    }
                }
                if let Some(a) = b.get("flow_action").and_then(Value::as_str) {
                    if !matches!(a, "navigate" | "data_exchange") {
                        return Err(format!(
                            "flow_action {a:?} must be navigate or data_exchange"
                        ));
                    }
                }
            }
        }
    }
    if t.list
        .iter()
        .any(|x| x["name"] == name && x["language"] == language)
    {
        return Err(format!(
            "a template {name:?} in {language:?} already exists"
        ));
    }
    let id = format!(
        "{}",
        100_000_000_000_000u64 + rand::random::<u64>() % 899_999_999_999_999
    );
    let category = category.to_ascii_uppercase();
    t.list.push(json!({
        "id": id,
        "name": name,
        "language": language,
        "status": "APPROVED",
        "category": category,
        "quality_score": { "score": "UNKNOWN" },
        "components": components,
    }));
    Ok(json!({ "id": id, "status": "APPROVED", "category": category }))
}

fn kind(c: &Value) -> String {
    c.get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// `POST /_sandbox/templates {"name": N, "status": S}` sets a template's status (every
/// language); `{"strict": true}` refuses templates the sandbox does not know.
pub(super) fn control(templates: &Mutex<Templates>, body: Option<&[u8]>) -> Resp {
    let v: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let mut t = templates.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(strict) = v.get("strict").and_then(Value::as_bool) {
        t.strict = strict;
    }
    if let (Some(name), Some(status)) = (
        v.get("name").and_then(Value::as_str),
        v.get("status").and_then(Value::as_str),
    ) {
        let status = status.to_ascii_uppercase();
        if !STATUSES.contains(&status.as_str()) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": format!("status must be one of {}", STATUSES.join(", ")) }),
            );
        }
        let mut found = false;
        for x in t.list.iter_mut().filter(|x| x["name"] == name) {
            x["status"] = json!(status);
            found = true;
        }
        if !found {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("no template {name:?}") }),
            );
        }
    }
    json_response(
        StatusCode::OK,
        &json!({ "strict": t.strict, "templates": t.list }),
    )
}

/// Distinct `{{…}}` variables of a text.
fn variables(text: &str) -> usize {
    let mut names: Vec<&str> = Vec::new();
    for piece in text.split("{{").skip(1) {
        if let Some((name, _)) = piece.split_once("}}") {
            if !names.contains(&name.trim()) {
                names.push(name.trim());
            }
        }
    }
    names.len()
}

/// The parameters of the send's component of `kind` (`header`, `body`).
fn given<'a>(send: &'a Value, kind: &str) -> Vec<&'a Value> {
    send.pointer("/template/components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case(kind))
        })
        .flat_map(|c| {
            c.get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect()
}

/// Checks a template send (`type: template`) against the stored template: `Err((code,
/// message))` as Meta would answer.
pub(super) fn check_send(templates: &Mutex<Templates>, send: &Value) -> Result<(), (u32, String)> {
    let t = templates.lock().unwrap_or_else(PoisonError::into_inner);
    let name = send
        .pointer("/template/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let language = send
        .pointer("/template/language/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let known: Vec<&Value> = t.list.iter().filter(|x| x["name"] == name).collect();
    if known.is_empty() && !t.strict {
        return Ok(());
    }
    let Some(template) = known.iter().find(|x| x["language"] == language) else {
        return Err((132001, format!("(#132001) Template name does not exist in the translation: template name ({name}) does not exist in {language}")));
    };
    match template["status"].as_str().unwrap_or("") {
        "APPROVED" => {}
        "PAUSED" => return Err((132015, format!("(#132015) Template is Paused: {name}"))),
        "DISABLED" => return Err((132016, format!("(#132016) Template is Disabled: {name}"))),
        other => return Err((132001, format!("(#132001) Template name does not exist in the translation: {name} ({language}) is {other}, not APPROVED"))),
    }
    let components = template["components"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let body_vars = components
        .iter()
        .find(|c| kind(c) == "BODY")
        .and_then(|c| c["text"].as_str())
        .map_or(0, variables);
    let body = given(send, "body");
    if body.len() != body_vars {
        return Err((132000, format!("(#132000) Number of parameters does not match the expected number of params: body expects {body_vars}, got {}", body.len())));
    }
    let header = given(send, "header");
    match components.iter().find(|c| kind(c) == "HEADER") {
        Some(h) => {
            let format = h["format"].as_str().unwrap_or("TEXT").to_ascii_lowercase();
            if format == "text" {
                let vars = h["text"].as_str().map_or(0, variables);
                if header.len() != vars {
                    return Err((132000, format!("(#132000) Number of parameters does not match the expected number of params: header expects {vars}, got {}", header.len())));
                }
            } else if header.len() != 1 {
                return Err((132000, format!("(#132000) Number of parameters does not match the expected number of params: the {format} header expects 1, got {}", header.len())));
            } else if header[0]["type"].as_str() != Some(format.as_str())
                || header[0].pointer(&format!("/{format}/link")).is_none()
            {
                return Err((132012, format!("(#132012) Parameter format does not match format in the created template: header expects an {format} with a link")));
            }
        }
        None if !header.is_empty() => {
            return Err((132000, format!("(#132000) Number of parameters does not match the expected number of params: header expects 0, got {}", header.len())));
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_distinct() {
        assert_eq!(variables("Hi {{1}}, {{2}} and {{1}}"), 2);
        assert_eq!(variables("none"), 0);
    }

    #[test]
    fn a_flow_button_needs_one_source_that_names_a_flow_of_the_account() {
        let mut t = Templates::default();
        let flows = [("1".to_string(), "survey".to_string())];
        let def = |name: &str, button: Value| {
            json!({"name": name, "language": "fr", "category": "MARKETING",
            "components": [{"type": "BODY", "text": "x"}, {"type": "BUTTONS", "buttons": [button]}]})
        };
        let flow = |extra: Value| {
            let mut b = json!({"type": "FLOW", "text": "Go"});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        assert!(create(&mut t, &def("a", flow(json!({}))), &flows).is_err());
        let both = flow(json!({"flow_id": "1", "flow_name": "survey"}));
        assert!(create(&mut t, &def("a", both), &flows).is_err());
        let unknown = flow(json!({"flow_name": "nope"}));
        assert!(create(&mut t, &def("a", unknown), &flows).is_err());
        let by_name =
            flow(json!({"flow_name": "survey", "navigate_screen": "A", "flow_action": "navigate"}));
        assert!(create(&mut t, &def("a", by_name), &flows).is_ok());
        let by_id = flow(json!({"flow_id": "1"}));
        assert!(
            create(&mut t, &def("a", by_id.clone()), &flows).is_err(),
            "same name and language"
        );
        assert!(create(&mut t, &def("b", by_id), &flows).is_ok());
    }
}
