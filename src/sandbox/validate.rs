//! Strict validation of `POST /{v}/{id}/messages` bodies (reference sections a and b).
//!
//! Codes: 131008 for a missing required parameter, 131009 for a value of the right type whose
//! content is not acceptable (format, length, emptiness), 100 for everything else (wrong type,
//! unknown parameter, value outside an enumeration). Every message names the field path.

use serde_json::{Map, Value};

type Obj = Map<String, Value>;

/// Why a message was refused; `message` is the full Graph message, `(#CODE) ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl Invalid {
    fn missing(path: &str) -> Self {
        Self {
            code: 131008,
            message: format!("(#131008) Required parameter is missing: {path}"),
        }
    }
    fn param(path: &str, why: &str) -> Self {
        Self {
            code: 100,
            message: format!("(#100) Invalid parameter: {path} {why}"),
        }
    }
    fn value(path: &str, why: &str) -> Self {
        Self {
            code: 131009,
            message: format!("(#131009) Parameter value is not valid: {path} {why}"),
        }
    }
}

type Check<T = ()> = Result<T, Invalid>;

/// A message the sandbox accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The recipient's digits, as sent in `to`.
    pub(crate) to: String,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Check<&'a Obj> {
    v.as_object()
        .ok_or_else(|| Invalid::param(path, "must be a JSON object"))
}

fn req<'a>(o: &'a Obj, key: &str, path: &str) -> Check<&'a Value> {
    match o.get(key) {
        Some(Value::Null) | None => Err(Invalid::missing(&join(path, key))),
        Some(v) => Ok(v),
    }
}

/// A required, non-empty string.
fn req_str<'a>(o: &'a Obj, key: &str, path: &str) -> Check<&'a str> {
    let p = join(path, key);
    let s = req(o, key, path)?
        .as_str()
        .ok_or_else(|| Invalid::param(&p, "must be a string"))?;
    if s.trim().is_empty() {
        return Err(Invalid::value(&p, "must not be empty"));
    }
    Ok(s)
}

/// An optional string; `Some` only when present and not null.
fn opt_str<'a>(o: &'a Obj, key: &str, path: &str) -> Check<Option<&'a str>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Invalid::param(&join(path, key), "must be a string")),
    }
}

fn one_of(o: &Obj, key: &str, path: &str, allowed: &[&str]) -> Check<Option<String>> {
    let Some(s) = opt_str(o, key, path)? else {
        return Ok(None);
    };
    if allowed.contains(&s) {
        return Ok(Some(s.to_owned()));
    }
    let list = allowed
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    Err(Invalid::param(&join(path, key), &format!("must be {list}")))
}

fn only_keys(o: &Obj, allowed: &[&str], path: &str) -> Check {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Invalid::param(
            &join(path, k),
            "is not a supported parameter",
        )),
        None => Ok(()),
    }
}

fn max_chars(s: &str, max: usize, path: &str) -> Check {
    if s.chars().count() > max {
        return Err(Invalid::value(
            path,
            &format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// An optional JSON object that must not be empty when present.
fn non_empty_object(o: &Obj, key: &str, path: &str) -> Check {
    match o.get(key) {
        None => Ok(()),
        Some(v) => {
            let p = join(path, key);
            if obj(v, &p)?.is_empty() {
                return Err(Invalid::value(
                    &p,
                    "must be a non-empty object when present",
                ));
            }
            Ok(())
        }
    }
}

/// Validates a decoded `/messages` body.
pub(crate) fn validate_message(body: &Value) -> Check<Accepted> {
    let root = body
        .as_object()
        .ok_or_else(|| Invalid::param("body", "must be a JSON object"))?;
    only_keys(
        root,
        &[
            "messaging_product",
            "recipient_type",
            "to",
            "type",
            "interactive",
            "template",
            "context",
            "biz_opaque_callback_data",
        ],
        "",
    )?;
    if req_str(root, "messaging_product", "")? != "whatsapp" {
        return Err(Invalid::param("messaging_product", "must be \"whatsapp\""));
    }
    one_of(root, "recipient_type", "", &["individual"])?;
    let to = req_str(root, "to", "")?;
    if to.starts_with('+') {
        return Err(Invalid::value(
            "to",
            "must contain digits only, without \"+\" (e.g. \"212610059159\")",
        ));
    }
    if !to.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::value("to", "must contain digits only"));
    }
    if !(7..=15).contains(&to.len()) {
        return Err(Invalid::value("to", "must have 7 to 15 digits"));
    }
    match req_str(root, "type", "")? {
        "interactive" => {
            if root.contains_key("template") {
                return Err(Invalid::param(
                    "template",
                    "is not allowed when type is \"interactive\"",
                ));
            }
            interactive(req(root, "interactive", "")?)?;
        }
        "template" => {
            if root.contains_key("interactive") {
                return Err(Invalid::param(
                    "interactive",
                    "is not allowed when type is \"template\"",
                ));
            }
            template(req(root, "template", "")?)?;
        }
        _ => {
            return Err(Invalid::param(
                "type",
                "must be \"interactive\" or \"template\"",
            ))
        }
    }
    Ok(Accepted { to: to.to_owned() })
}

fn interactive(v: &Value) -> Check {
    let p = "interactive";
    let i = obj(v, p)?;
    only_keys(i, &["type", "header", "body", "footer", "action"], p)?;
    if req_str(i, "type", p)? != "flow" {
        return Err(Invalid::param("interactive.type", "must be \"flow\""));
    }
    if let Some(h) = i.get("header") {
        header(h, "interactive.header")?;
    }
    text_object(req(i, "body", p)?, "interactive.body", 1024)?;
    if let Some(f) = i.get("footer") {
        text_object(f, "interactive.footer", 60)?;
    }
    let p = "interactive.action";
    let a = obj(req(i, "action", "interactive")?, p)?;
    only_keys(a, &["name", "parameters"], p)?;
    if req_str(a, "name", p)? != "flow" {
        return Err(Invalid::param(
            "interactive.action.name",
            "must be \"flow\"",
        ));
    }
    let p = "interactive.action.parameters";
    flow_parameters(obj(req(a, "parameters", "interactive.action")?, p)?, p)
}

/// `{ "text": "..." }` with a length cap (body, footer).
fn text_object(v: &Value, path: &str, max: usize) -> Check {
    let o = obj(v, path)?;
    only_keys(o, &["text"], path)?;
    let text = req_str(o, "text", path)?;
    max_chars(text, max, &join(path, "text"))
}

fn header(v: &Value, path: &str) -> Check {
    let o = obj(v, path)?;
    let kind = req_str(o, "type", path)?;
    match kind {
        "text" => {
            only_keys(o, &["type", "text"], path)?;
            let text = req_str(o, "text", path)?;
            max_chars(text, 60, &join(path, "text"))
        }
        "image" | "video" | "document" => {
            only_keys(o, &["type", kind], path)?;
            let mp = join(path, kind);
            let media = obj(req(o, kind, path)?, &mp)?;
            if opt_str(media, "link", &mp)?.is_none() && opt_str(media, "id", &mp)?.is_none() {
                return Err(Invalid::missing(&join(&mp, "link")));
            }
            Ok(())
        }
        _ => Err(Invalid::param(
            &join(path, "type"),
            "must be \"text\", \"image\", \"video\" or \"document\"",
        )),
    }
}

fn flow_parameters(p: &Obj, path: &str) -> Check {
    only_keys(
        p,
        &[
            "flow_message_version",
            "flow_token",
            "flow_id",
            "flow_name",
            "flow_cta",
            "flow_action",
            "flow_action_payload",
            "mode",
        ],
        path,
    )?;
    if req(p, "flow_message_version", path)?.as_str() != Some("3") {
        return Err(Invalid::param(
            &join(path, "flow_message_version"),
            "must be \"3\"",
        ));
    }
    match (p.contains_key("flow_id"), p.contains_key("flow_name")) {
        (true, true) => {
            return Err(Invalid::param(
                path,
                "must contain exactly one of flow_id and flow_name, not both",
            ))
        }
        (false, false) => {
            return Err(Invalid {
                code: 131008,
                message: format!(
                    "(#131008) Required parameter is missing: {path}.flow_id (or {path}.flow_name)"
                ),
            })
        }
        (true, false) => req_str(p, "flow_id", path)?,
        (false, true) => req_str(p, "flow_name", path)?,
    };
    let cta = req_str(p, "flow_cta", path)?;
    max_chars(cta, 30, &join(path, "flow_cta"))?;
    req_str(p, "flow_token", path)?;
    let action = one_of(p, "flow_action", path, &["navigate", "data_exchange"])?;
    one_of(p, "mode", path, &["published", "draft"])?;
    let payload_path = join(path, "flow_action_payload");
    match (action.as_deref(), p.get("flow_action_payload")) {
        (Some("data_exchange"), Some(_)) => Err(Invalid::param(
            &payload_path,
            "must be omitted when flow_action is \"data_exchange\"",
        )),
        (_, Some(payload)) => {
            let o = obj(payload, &payload_path)?;
            only_keys(o, &["screen", "data"], &payload_path)?;
            req_str(o, "screen", &payload_path)?;
            non_empty_object(o, "data", &payload_path)
        }
        (_, None) => Ok(()),
    }
}

fn template(v: &Value) -> Check {
    let p = "template";
    let t = obj(v, p)?;
    only_keys(t, &["name", "language", "components", "namespace"], p)?;
    req_str(t, "name", p)?;
    let lp = "template.language";
    let lang = obj(req(t, "language", p)?, lp)?;
    only_keys(lang, &["code", "policy"], lp)?;
    req_str(lang, "code", lp)?;
    one_of(lang, "policy", lp, &["deterministic"])?;
    let components = req(t, "components", p)?
        .as_array()
        .ok_or_else(|| Invalid::param("template.components", "must be an array"))?;
    let mut flow_buttons = 0;
    for (i, c) in components.iter().enumerate() {
        let cp = format!("template.components[{i}]");
        let co = obj(c, &cp)?;
        match req_str(co, "type", &cp)?.to_ascii_lowercase().as_str() {
            "header" | "body" => text_component(co, &cp)?,
            "button" => {
                if button(co, &cp)? {
                    flow_buttons += 1;
                }
            }
            _ => {
                return Err(Invalid::param(
                    &join(&cp, "type"),
                    "must be \"header\", \"body\" or \"button\"",
                ))
            }
        }
    }
    if flow_buttons == 0 {
        return Err(Invalid {
            code: 131008,
            message: "(#131008) Required parameter is missing: template.components must include a button component with sub_type \"flow\"".into(),
        });
    }
    Ok(())
}

fn text_component(c: &Obj, path: &str) -> Check {
    only_keys(c, &["type", "parameters"], path)?;
    let Some(params) = c.get("parameters") else {
        return Ok(());
    };
    let pp = join(path, "parameters");
    let params = params
        .as_array()
        .ok_or_else(|| Invalid::param(&pp, "must be an array"))?;
    for (i, param) in params.iter().enumerate() {
        let ip = format!("{pp}[{i}]");
        req_str(obj(param, &ip)?, "type", &ip)?;
    }
    Ok(())
}

/// Validates a button component; `Ok(true)` for a Flow button.
fn button(c: &Obj, path: &str) -> Check<bool> {
    only_keys(c, &["type", "sub_type", "index", "parameters"], path)?;
    let sub_type = req_str(c, "sub_type", path)?;
    let ip = join(path, "index");
    let index = req(c, "index", path)?
        .as_str()
        .ok_or_else(|| Invalid::param(&ip, "must be a string of digits, e.g. \"0\""))?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::value(
            &ip,
            "must be a string of digits, e.g. \"0\"",
        ));
    }
    match sub_type {
        "flow" => {}
        "quick_reply" | "url" | "copy_code" | "catalog" | "mpm" | "voice_call" => return Ok(false),
        _ => {
            return Err(Invalid::param(
                &join(path, "sub_type"),
                "must be \"flow\" (or another WhatsApp button sub_type)",
            ))
        }
    }
    let pp = join(path, "parameters");
    let params = req(c, "parameters", path)?
        .as_array()
        .ok_or_else(|| Invalid::param(&pp, "must be an array"))?;
    if params.len() != 1 {
        return Err(Invalid::param(
            &pp,
            "must hold exactly one {\"type\":\"action\"} parameter",
        ));
    }
    let ap = format!("{pp}[0]");
    let param = obj(&params[0], &ap)?;
    only_keys(param, &["type", "action"], &ap)?;
    if req_str(param, "type", &ap)? != "action" {
        return Err(Invalid::param(&join(&ap, "type"), "must be \"action\""));
    }
    let actp = join(&ap, "action");
    let action = obj(req(param, "action", &ap)?, &actp)?;
    only_keys(action, &["flow_token", "flow_action_data"], &actp)?;
    req_str(action, "flow_token", &actp)?;
    non_empty_object(action, "flow_action_data", &actp)?;
    Ok(true)
}

/// Best-effort `flow_token` of a message body (valid or not), for the request log.
pub(crate) fn flow_token_of(body: &Value) -> Option<String> {
    if let Some(t) = body
        .pointer("/interactive/action/parameters/flow_token")
        .and_then(Value::as_str)
    {
        return Some(t.to_owned());
    }
    body.pointer("/template/components")?
        .as_array()?
        .iter()
        .find_map(|c| c.pointer("/parameters/0/action/flow_token")?.as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn interactive_msg() -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "33612345678",
            "type": "interactive",
            "interactive": {
                "type": "flow",
                "header": { "type": "text", "text": "Enquête" },
                "body": { "text": "Deux minutes ?" },
                "footer": { "text": "Anonyme" },
                "action": { "name": "flow", "parameters": {
                    "flow_message_version": "3",
                    "flow_token": "flow_abc",
                    "flow_id": "1234567890123456",
                    "flow_cta": "Répondre",
                    "flow_action": "navigate",
                    "flow_action_payload": { "screen": "Q1", "data": { "title": "x" } },
                    "mode": "published"
                } }
            }
        })
    }

    fn err(v: &Value) -> Invalid {
        validate_message(v).unwrap_err()
    }

    #[test]
    fn accepts_reference_interactive_message() {
        assert_eq!(
            validate_message(&interactive_msg()).unwrap().to,
            "33612345678"
        );
        assert_eq!(
            flow_token_of(&interactive_msg()).as_deref(),
            Some("flow_abc")
        );
    }

    #[test]
    fn names_the_offending_field() {
        let mut m = interactive_msg();
        m["interactive"]["action"]["parameters"]["flow_message_version"] = json!("2");
        let e = err(&m);
        assert_eq!(e.code, 100);
        assert_eq!(
            e.message,
            "(#100) Invalid parameter: interactive.action.parameters.flow_message_version must be \"3\""
        );

        let mut m = interactive_msg();
        m["interactive"]["action"]["parameters"]["flow_cta"] = json!("x".repeat(31));
        assert!(err(&m).message.contains("flow_cta must be at most 30"));

        let mut m = interactive_msg();
        m["interactive"]["action"]["parameters"]["flow_name"] = json!("survey");
        assert!(err(&m)
            .message
            .contains("exactly one of flow_id and flow_name"));

        let mut m = interactive_msg();
        m["interactive"]["action"]["parameters"]["flow_action_payload"]["data"] = json!({});
        assert!(err(&m).message.contains("flow_action_payload.data"));

        let mut m = interactive_msg();
        m["interactive"]["action"]["parameters"]["mode"] = json!("live");
        assert!(err(&m).message.contains("parameters.mode must be"));

        let mut m = interactive_msg();
        m["to"] = json!("123");
        assert_eq!(err(&m).code, 131009);

        assert_eq!(err(&json!([1])).code, 100);
    }
}
