//! Meta's webhook payload, read into [`WebhookEvent`]s: Flow completions, delivery
//! statuses, alerts and the rest.
//!
//! Pure: bytes in, events out; no I/O, no store, no server state (its only crate import is
//! [`crate::time`]). So it sits beside [`crate::flow_json`] and [`crate::crypto`] rather
//! than in `server`, which applies the events (`server::inbox`), and it is what the
//! `webhook_envelope` fuzz target drives.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Why a webhook body yields no events at all. Its text is what the inbox records.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body is not JSON.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The body is JSON but not an object.
    #[error("not a JSON object")]
    NotObject,
}

/// One thing a webhook body said, ready to be applied to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookEvent {
    /// An `interactive.nfm_reply`: a Flow completion.
    Completion {
        event_id: String,
        flow_token: Option<String>,
        context_id: Option<String>,
        answers: Map<String, Value>,
        sender: Option<String>,
        completed_at: String,
    },
    /// A delivery status of a message we sent.
    Status {
        message_id: String,
        status: String,
        at: String,
        recipient: Option<String>,
        error_code: Option<i64>,
        error_title: Option<String>,
        /// `biz_opaque_callback_data`: the flow token flowctl attached to the message.
        callback: Option<String>,
    },
    /// Something kept as an `events` row (alert, error, unhandled change, unusable body).
    Record {
        kind: &'static str,
        /// Deduplication key (a digest of the content).
        reference: String,
        detail: Value,
    },
    /// A text message (or the text of a quick-reply button) a person sent: read against the
    /// opt-out keywords, not stored.
    Text {
        /// The sender's WhatsApp id (digits).
        sender: String,
        /// What they wrote.
        body: String,
    },
    /// Meta's `user_preferences` webhook: a person stopped or resumed a category of messages
    /// (<https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences>).
    Preference {
        /// The person's WhatsApp id (digits).
        wa_id: String,
        /// `marketing_messages` (the only category Meta reports today).
        category: String,
        /// `stop` or `resume`.
        value: String,
        /// Meta's description of the change, when given.
        detail: Option<String>,
    },
    /// Understood and deliberately not stored (e.g. a text message from a user).
    Ignored { what: String },
}

impl WebhookEvent {
    /// The label of `flowctl_webhook_events_total`.
    pub fn metric_type(&self) -> String {
        match self {
            WebhookEvent::Completion { .. } => "nfm_reply".into(),
            WebhookEvent::Status { .. } => "status".into(),
            WebhookEvent::Record { kind, .. } => (*kind).into(),
            WebhookEvent::Text { .. } => "message_text".into(),
            WebhookEvent::Preference { .. } => "user_preferences".into(),
            WebhookEvent::Ignored { what } => label(what),
        }
    }
}

/// A metric label value from outside data: short, `[a-z0-9_]` only.
pub(crate) fn label(s: &str) -> String {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        s.to_string()
    } else {
        "other".into()
    }
}

/// The deduplication key of content kept as an `events` row: a truncated SHA-256.
pub(crate) fn digest(v: &[u8]) -> String {
    let d = Sha256::digest(v);
    let mut out = String::from("sha256:");
    for b in d.iter().take(16) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn record(kind: &'static str, detail: Value) -> WebhookEvent {
    WebhookEvent::Record {
        kind,
        reference: digest(detail.to_string().as_bytes()),
        detail,
    }
}

/// A non-empty string field.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An integer that Meta may send as a number or as a string.
fn int_of(v: &Value, key: &str) -> Option<i64> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A webhook `timestamp` (Unix seconds, usually a string) as stored text; now when absent.
fn time_of(v: &Value) -> String {
    int_of(v, "timestamp")
        .and_then(crate::time::from_unix)
        .unwrap_or_else(crate::time::now)
}

/// Reads a whole webhook body into events. Unknown fields and event types never fail:
/// they become `Record`/`Ignored` events. Only a body that is not a JSON object is an error.
pub fn parse_events(body: &[u8]) -> Result<Vec<WebhookEvent>, PayloadError> {
    let root: Value = serde_json::from_slice(body).map_err(PayloadError::NotJson)?;
    if !root.is_object() {
        return Err(PayloadError::NotObject);
    }
    let mut events = Vec::new();
    let object = str_of(&root, "object").unwrap_or("");
    if object != "whatsapp_business_account" {
        events.push(record(
            "webhook_unhandled",
            json!({ "reason": "unexpected object", "object": object }),
        ));
    }
    for entry in array(&root, "entry") {
        for change in array(entry, "changes") {
            let field = str_of(change, "field").unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            match field {
                "messages" => messages_change(value, &mut events),
                // `entry.time` is part of the record: the same transition twice (THROTTLED,
                // PUBLISHED, THROTTLED again) is two events, while Meta's retry of one
                // delivery (same time) is still one.
                "flows" => events.push(record(
                    "flow_alert",
                    json!({ "waba_id": entry.get("id"), "time": entry.get("time"), "value": value }),
                )),
                "user_preferences" => preferences_change(value, &mut events),
                _ => events.push(record(
                    "webhook_unhandled",
                    json!({ "field": field, "waba_id": entry.get("id"), "value": value }),
                )),
            }
        }
    }
    Ok(events)
}

fn messages_change(value: &Value, events: &mut Vec<WebhookEvent>) {
    let contacts = array(value, "contacts");
    for message in array(value, "messages") {
        events.push(message_event(message, contacts));
    }
    for status in array(value, "statuses") {
        events.push(status_event(status));
    }
    for error in array(value, "errors") {
        events.push(record(
            "webhook_error",
            json!({ "metadata": value.get("metadata"), "error": error }),
        ));
    }
}

/// `user_preferences[]`: one event per entry that names a person, a category and a value.
fn preferences_change(value: &Value, events: &mut Vec<WebhookEvent>) {
    for p in array(value, "user_preferences") {
        match (str_of(p, "wa_id"), str_of(p, "category"), str_of(p, "value")) {
            (Some(wa_id), Some(category), Some(v)) => events.push(WebhookEvent::Preference {
                wa_id: wa_id.to_string(),
                category: category.to_string(),
                value: v.to_ascii_lowercase(),
                detail: str_of(p, "detail").map(str::to_string),
            }),
            _ => events.push(record(
                "webhook_unhandled",
                json!({ "reason": "user preference without wa_id, category or value", "preference": p }),
            )),
        }
    }
}

/// The text of a message a person typed (`text.body`) or tapped (a quick-reply `button.text`,
/// such as a marketing template's "Stop promotions"), with its sender.
fn text_event(kind: &str, message: &Value, contacts: &[Value]) -> Option<WebhookEvent> {
    let body = match kind {
        "text" => message.get("text").and_then(|t| str_of(t, "body")),
        "button" => message.get("button").and_then(|b| str_of(b, "text")),
        _ => None,
    }?;
    let sender = sender_of(message, contacts)?;
    Some(WebhookEvent::Text {
        sender,
        body: body.to_string(),
    })
}

fn message_event(message: &Value, contacts: &[Value]) -> WebhookEvent {
    let kind = str_of(message, "type").unwrap_or("unknown");
    if let Some(text) = text_event(kind, message, contacts) {
        return text;
    }
    let interactive = message.get("interactive").unwrap_or(&Value::Null);
    let nfm = match (kind, str_of(interactive, "type")) {
        ("interactive", Some("nfm_reply")) => interactive.get("nfm_reply").unwrap_or(&Value::Null),
        ("interactive", sub) => {
            return WebhookEvent::Ignored {
                what: format!("interactive_{}", sub.unwrap_or("unknown")),
            }
        }
        _ => {
            return WebhookEvent::Ignored {
                what: format!("message_{kind}"),
            }
        }
    };
    let Some(event_id) = str_of(message, "id") else {
        // Without an id it cannot be deduplicated; keep it rather than guess.
        return record(
            "webhook_unhandled",
            json!({ "reason": "nfm_reply without id", "message": message }),
        );
    };
    let name = str_of(nfm, "name");
    let raw = nfm.get("response_json");
    let mut answers = match raw {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => Map::from_iter([("response_json".to_string(), Value::String(s.clone()))]),
        },
        // Tolerate a response_json that arrives already decoded.
        Some(Value::Object(m)) => m.clone(),
        Some(other) => Map::from_iter([("response_json".to_string(), other.clone())]),
        None => Map::new(),
    };
    let flow_token = match answers.remove("flow_token") {
        Some(Value::String(t)) if !t.is_empty() => Some(t),
        _ => None,
    };
    // `nfm_reply` also carries other native replies (`address_message`, …): only `name:
    // "flow"` is a Flow completion (Meta's Flows webhook reference). A reply without a name
    // (older clients) is taken for one, as before.
    let is_flow = name.is_none_or(|n| n == "flow");
    if !is_flow {
        return record(
            "nfm_reply_other",
            json!({
                "id": event_id,
                "name": name,
                "from": sender_of(message, contacts),
                "body": nfm.get("body"),
                "response_json": raw,
            }),
        );
    }
    WebhookEvent::Completion {
        event_id: event_id.to_string(),
        flow_token,
        context_id: message
            .get("context")
            .and_then(|c| str_of(c, "id"))
            .map(str::to_string),
        answers,
        sender: sender_of(message, contacts),
        completed_at: time_of(message),
    }
}

/// The sender: `from` (= `contacts[].wa_id`), else the business-scoped user id.
fn sender_of(message: &Value, contacts: &[Value]) -> Option<String> {
    str_of(message, "from")
        .or_else(|| contacts.iter().find_map(|c| str_of(c, "wa_id")))
        .or_else(|| str_of(message, "from_user_id"))
        .or_else(|| contacts.iter().find_map(|c| str_of(c, "user_id")))
        .map(str::to_string)
}

fn status_event(status: &Value) -> WebhookEvent {
    let (Some(id), Some(st)) = (str_of(status, "id"), str_of(status, "status")) else {
        return record(
            "webhook_unhandled",
            json!({ "reason": "status without id or status", "status": status }),
        );
    };
    let error = array(status, "errors").first();
    WebhookEvent::Status {
        message_id: id.to_string(),
        status: st.to_ascii_lowercase(),
        at: time_of(status),
        recipient: str_of(status, "recipient_id").map(str::to_string),
        error_code: error.and_then(|e| int_of(e, "code")),
        error_title: error
            .and_then(|e| str_of(e, "title").or_else(|| str_of(e, "message")))
            .map(str::to_string),
        callback: str_of(status, "biz_opaque_callback_data").map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(field: &str, value: Value) -> Vec<u8> {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn nfm_reply_is_parsed_twice_and_the_token_taken_out() {
        let body = envelope(
            "messages",
            json!({"contacts": [{"wa_id": "33612345678"}], "messages": [{
                "context": {"id": "wamid.CTX"}, "from": "33612345678", "id": "wamid.IN",
                "timestamp": "1767225600", "type": "interactive",
                "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "{\"flow_token\":\"flow_x\",\"q1\":\"5\"}"}}}]}),
        );
        let events = parse_events(&body).unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::Completion {
                event_id: "wamid.IN".into(),
                flow_token: Some("flow_x".into()),
                context_id: Some("wamid.CTX".into()),
                answers: json!({"q1": "5"}).as_object().unwrap().clone(),
                sender: Some("33612345678".into()),
                completed_at: "2026-01-01T00:00:00.000Z".into(),
            }]
        );
    }

    #[test]
    fn only_a_flow_nfm_reply_is_a_completion() {
        let reply = |name: Value, response: &str| {
            envelope(
                "messages",
                json!({"messages": [{"from": "33612345678", "id": "wamid.A1", "timestamp": "1767225600",
                    "type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": {
                        "name": name, "body": "Sent", "response_json": response}}}]}),
            )
        };
        let address =
            parse_events(&reply(json!("address_message"), r#"{"city":"Rabat"}"#)).unwrap();
        assert!(
            matches!(&address[0], WebhookEvent::Record { kind: "nfm_reply_other", detail, .. }
                if detail["name"] == "address_message" && detail["from"] == "33612345678"),
            "{address:?}"
        );
        let flow =
            parse_events(&reply(json!("flow"), r#"{"flow_token":"flow_x","q":"1"}"#)).unwrap();
        assert!(
            matches!(&flow[0], WebhookEvent::Completion { .. }),
            "{flow:?}"
        );
        // Without a name (older clients): still a completion.
        let unnamed = parse_events(&reply(Value::Null, r#"{"q":"1"}"#)).unwrap();
        assert!(
            matches!(&unnamed[0], WebhookEvent::Completion { .. }),
            "{unnamed:?}"
        );
    }

    #[test]
    fn business_scoped_sender_is_used_when_there_is_no_number() {
        let body = envelope(
            "messages",
            json!({"contacts": [{"user_id": "US.1349"}], "messages": [{
                "from_user_id": "US.1349", "id": "wamid.IN", "type": "interactive",
                "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "{}"}}}]}),
        );
        match &parse_events(&body).unwrap()[0] {
            WebhookEvent::Completion { sender, .. } => {
                assert_eq!(sender.as_deref(), Some("US.1349"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_status_carries_its_error() {
        let body = envelope(
            "messages",
            json!({"statuses": [{"id": "wamid.A", "status": "failed", "timestamp": 1767225700,
                "errors": [{"code": "131026", "title": "Message undeliverable"}]}]}),
        );
        match &parse_events(&body).unwrap()[0] {
            WebhookEvent::Status {
                error_code,
                error_title,
                ..
            } => {
                assert_eq!(*error_code, Some(131026));
                assert_eq!(error_title.as_deref(), Some("Message undeliverable"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_things_are_tolerated() {
        let body = envelope("account_update", json!({"x": 1}));
        assert_eq!(
            parse_events(&body).unwrap()[0].metric_type(),
            "webhook_unhandled"
        );
        let body = envelope(
            "messages",
            json!({"messages": [{"id": "m", "type": "text"}]}),
        );
        assert_eq!(
            parse_events(&body).unwrap()[0].metric_type(),
            "message_text"
        );
        assert_eq!(parse_events(b"{}").unwrap().len(), 1);
        assert!(parse_events(b"not json").is_err());
        assert!(parse_events(b"[1]").is_err());
        assert_eq!(label("Weird\"label"), "other");
    }

    #[test]
    fn texts_and_marketing_preferences_are_events() {
        let body = envelope(
            "messages",
            json!({"contacts": [{"wa_id": "33612345678"}], "messages": [
                {"from": "33612345678", "id": "wamid.T1", "type": "text", "text": {"body": "STOP"}},
                {"from": "33612345678", "id": "wamid.T2", "type": "button", "button": {"text": "Stop promotions", "payload": "x"}}
            ]}),
        );
        let events = parse_events(&body).unwrap();
        assert_eq!(
            events[0],
            WebhookEvent::Text {
                sender: "33612345678".into(),
                body: "STOP".into()
            }
        );
        assert!(matches!(&events[1], WebhookEvent::Text { body, .. } if body == "Stop promotions"));
        let body = envelope(
            "user_preferences",
            json!({"messaging_product": "whatsapp", "contacts": [{"wa_id": "16505551234"}],
                "user_preferences": [{"wa_id": "16505551234", "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages", "value": "stop", "timestamp": 1731705721},
                    {"category": "marketing_messages"}]}),
        );
        let events = parse_events(&body).unwrap();
        assert_eq!(
            events[0],
            WebhookEvent::Preference {
                wa_id: "16505551234".into(),
                category: "marketing_messages".into(),
                value: "stop".into(),
                detail: Some("User requested to stop marketing messages".into()),
            }
        );
        assert_eq!(events[0].metric_type(), "user_preferences");
        assert_eq!(events[1].metric_type(), "webhook_unhandled");
    }

    #[test]
    fn flows_field_and_value_errors_are_records() {
        let body = envelope(
            "flows",
            json!({"event": "FLOW_STATUS_CHANGE", "new_status": "BLOCKED"}),
        );
        assert_eq!(parse_events(&body).unwrap()[0].metric_type(), "flow_alert");
        let body = envelope("messages", json!({"errors": [{"code": 131000}]}));
        assert_eq!(
            parse_events(&body).unwrap()[0].metric_type(),
            "webhook_error"
        );
    }
}
