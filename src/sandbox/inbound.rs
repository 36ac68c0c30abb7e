//! What the simulated people and Meta say on their own, on request: a text message from a
//! person (`POST /_sandbox/inbound`, e.g. "STOP"), a change of a person's marketing
//! preference (`POST /_sandbox/user-preferences`), and a change of a Flow's status
//! (`POST /_sandbox/flow-status`), each posted signed to `--webhook` as Meta posts it.
//!
//! Meta's references for the shapes:
//! - a text message: the `messages` field with `messages[].type = "text"` and `text.body`
//!   (<https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/text>)
//! - the `user_preferences` field: `user_preferences[]` of `{wa_id, detail, category:
//!   "marketing_messages", value: "stop" | "resume", timestamp}`
//!   (<https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences>)
//! - the `flows` field: `{event: "FLOW_STATUS_CHANGE", message, flow_id, old_status,
//!   new_status}`, with the entry's `time`
//!   (<https://developers.facebook.com/docs/whatsapp/flows/reference/flowswebhooks>)

use std::sync::PoisonError;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::answer::{json_response, Resp};
use super::notify::{self, text_event, PHONE_NUMBER_ID};
use super::state::State;

/// The WhatsApp business account id the sandbox puts in webhook entries.
const WABA_ID: &str = "102290129340398";

/// The statuses a Flow can have (Flows API reference).
const FLOW_STATUSES: [&str; 5] = ["DRAFT", "PUBLISHED", "DEPRECATED", "BLOCKED", "THROTTLED"];

fn bad_request(message: &str) -> Resp {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": message }))
}

fn body_object(body: Option<&[u8]>) -> Option<serde_json::Map<String, Value>> {
    match body.and_then(|b| serde_json::from_slice(b).ok()) {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// A person's WhatsApp id from a `from`/`wa_id` field: digits, a `+` allowed.
fn wa_id_field(body: &serde_json::Map<String, Value>) -> Option<String> {
    let raw = body
        .get("from")
        .or_else(|| body.get("wa_id"))
        .and_then(Value::as_str)?;
    let digits = raw.trim().trim_start_matches('+');
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| notify::wa_id_of(digits))
}

async fn post(state: &State, event: Value) -> Resp {
    match state.notifier.post_webhook(&event).await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "posted": event })),
        Err(e) => json_response(
            StatusCode::BAD_GATEWAY,
            &json!({ "error": e, "event": event }),
        ),
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `POST /_sandbox/inbound {"from": "+212…", "text": "STOP"}`: the person sends a text.
pub(super) async fn inbound(state: &State, body: Option<&[u8]>) -> Resp {
    let Some(body) = body_object(body) else {
        return bad_request("expected {\"from\": \"+212…\", \"text\": \"STOP\"}");
    };
    let (Some(wa_id), Some(text)) = (wa_id_field(&body), body.get("text").and_then(Value::as_str))
    else {
        return bad_request(
            "expected {\"from\": \"+212…\", \"text\": \"STOP\"}: a number and a text",
        );
    };
    let event = text_event(&wa_id, text, &super::messages::next_wamid());
    post(state, event).await
}

/// `POST /_sandbox/user-preferences {"wa_id": "212…", "value": "stop" | "resume"}`: the person
/// stops or resumes marketing messages in WhatsApp.
pub(super) async fn user_preferences(state: &State, body: Option<&[u8]>) -> Resp {
    const USAGE: &str = "expected {\"wa_id\": \"212…\", \"value\": \"stop\" | \"resume\"}";
    let Some(body) = body_object(body) else {
        return bad_request(USAGE);
    };
    let value = body.get("value").and_then(Value::as_str).unwrap_or("");
    let (Some(wa_id), true) = (wa_id_field(&body), matches!(value, "stop" | "resume")) else {
        return bad_request(USAGE);
    };
    let detail = match value {
        "stop" => "User requested to stop marketing messages",
        _ => "User requested to resume marketing messages",
    };
    let event = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": WABA_ID, "changes": [{ "field": "user_preferences", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID },
            "contacts": [{ "profile": { "name": "Sandbox user" }, "wa_id": wa_id }],
            "user_preferences": [{
                "wa_id": wa_id,
                "detail": detail,
                "category": "marketing_messages",
                "value": value,
                "timestamp": unix_now()
            }]
        }}]}]
    });
    post(state, event).await
}

/// `POST /_sandbox/flow-status {"flow_id": "…", "status": "THROTTLED"}`: Meta changes the
/// Flow's status (what `GET /{flow-id}` answers from now on, and what sends of it meet) and
/// tells the webhook, when there is one.
pub(super) async fn flow_status(state: &State, body: Option<&[u8]>) -> Resp {
    const USAGE: &str = "expected {\"flow_id\": \"…\", \"status\": \"PUBLISHED\" | \"THROTTLED\" | \"BLOCKED\" | \"DEPRECATED\" | \"DRAFT\"}";
    let Some(body) = body_object(body) else {
        return bad_request(USAGE);
    };
    let flow_id = match body.get("flow_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return bad_request(USAGE),
    };
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase)
        .filter(|s| FLOW_STATUSES.contains(&s.as_str()));
    let Some(status) = status else {
        return bad_request(USAGE);
    };
    let old = state
        .account
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set_flow_status(&flow_id, &status);
    tracing::info!(flow_id, old, new = status, "sandbox Flow status changed");
    let event = flow_status_event(&flow_id, &old, &status);
    if !state.notifier.has_webhook() {
        return json_response(
            StatusCode::OK,
            &json!({ "old_status": old, "new_status": status }),
        );
    }
    post(state, event).await
}

/// The `flows` webhook of a status change.
pub(crate) fn flow_status_event(flow_id: &str, old: &str, new: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": WABA_ID, "time": unix_now(), "changes": [{ "field": "flows", "value": {
            "event": "FLOW_STATUS_CHANGE",
            "message": format!("Flow sandbox flow {flow_id} changed status from {old} to {new}"),
            "flow_id": flow_id,
            "old_status": old,
            "new_status": new
        }}]}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_fields_flowctl_reads() {
        let parsed = crate::webhook_events::parse_events(
            text_event("212610059159", "STOP", "wamid.X")
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            parsed[0],
            crate::webhook_events::WebhookEvent::Text {
                sender: "212610059159".into(),
                body: "STOP".into()
            }
        );
        let v = flow_status_event("123", "PUBLISHED", "THROTTLED");
        let value = &v["entry"][0]["changes"][0]["value"];
        assert_eq!(v["entry"][0]["changes"][0]["field"], "flows");
        assert_eq!(value["event"], "FLOW_STATUS_CHANGE");
        assert_eq!(value["old_status"], "PUBLISHED");
        assert_eq!(value["new_status"], "THROTTLED");
        assert_eq!(value["flow_id"], "123");
    }
}
