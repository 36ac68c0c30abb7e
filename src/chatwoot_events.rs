//! Chatwoot's outgoing webhook events, read into a [`ChatwootEvent`]: the Flow submissions
//! an inbox such as Chatwoot (or Voom, built on it) forwards when it, not flowctl, receives
//! Meta's message webhook.
//!
//! Pure: bytes in, one event out; no I/O, no store (like [`crate::webhook_events`]).
//!
//! The shape is Chatwoot's, not Meta's:
//! - A webhook body is `Message#webhook_data` merged with `event` (`message_created`,
//!   `message_updated`, …): `id`, `content`, `created_at`, `message_type` (`incoming`),
//!   `content_type`, `content_attributes`, `source_id` (the wamid), `sender` (the contact's
//!   `webhook_data`: `id`, `name`, `phone_number`, …), `conversation`, `inbox`, `account`
//!   (chatwoot/chatwoot `app/models/message.rb`, `webhook_data`; `lib/webhooks/trigger.rb`
//!   posts it as JSON, 5 s timeout).
//! - Since chatwoot/chatwoot PR 15279 (<https://github.com/chatwoot/chatwoot/pull/15279>,
//!   fixing <https://github.com/chatwoot/chatwoot/issues/13970>, where a Flow submission
//!   arrived with `content: null`), an `interactive.nfm_reply` is kept as
//!   `content_attributes.whatsapp_flow_response = {name, body, response}`, `response` being
//!   Meta's `response_json` parsed (it holds the `flow_token`), and `content` is the reply's
//!   `body` (chatwoot/chatwoot `spec/services/whatsapp/incoming_message_service_helpers_spec.rb`,
//!   "normalizes a Flow response webhook"). A `response_json` Chatwoot could not parse is kept
//!   as `{"_raw": …, "_invalid_json": true}`.
//!
//! Not confirmed from Chatwoot's source, hence read leniently: whether every version names the
//! parsed answers `response` (a front-end test reads `responseJson`, i.e. `response_json`),
//! and whether `flow_token` may sit beside them rather than inside; both spellings are read.

use serde_json::{Map, Value};

/// Why a Chatwoot webhook body is refused (400, nothing stored). Its text names what is wrong,
/// never the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChatwootEventError {
    /// The body is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// No `event` name.
    #[error("no \"event\" name")]
    NoEvent,
    /// A message event without its Chatwoot message `id` (cannot be deduplicated).
    #[error("{event} without a message \"id\"")]
    NoMessageId { event: String },
    /// `content_attributes.whatsapp_flow_response` (or its answers) is not an object.
    #[error("content_attributes.whatsapp_flow_response{part} is not an object")]
    BadFlowResponse { part: &'static str },
}

/// What one Chatwoot webhook said.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatwootEvent {
    /// An incoming WhatsApp Flow submission (`message_created` carrying
    /// `whatsapp_flow_response`).
    Completion {
        /// Deduplication key: `chatwoot:` and the Chatwoot message id, so a retry of the same
        /// event stores nothing new and never collides with a wamid.
        event_id: String,
        /// The `flow_token` of the answers, if any.
        flow_token: Option<String>,
        /// The answers without the `flow_token`.
        answers: Map<String, Value>,
        /// The contact's number as WhatsApp digits (no `+`), when Chatwoot gives one.
        sender: Option<String>,
        /// When the message was created (stored form); now when absent or unreadable.
        completed_at: String,
    },
    /// A delivery status of an outgoing message Chatwoot knows (`message_updated`).
    Status {
        /// The message's wamid (`source_id`).
        message_id: String,
        /// `sent`, `delivered`, `read` or `failed`.
        status: String,
        /// When Chatwoot reported it (stored form).
        at: String,
    },
    /// Understood and deliberately not stored (another event, a plain text message…).
    Ignored {
        /// A short label for logs and metrics.
        what: String,
    },
}

/// Reads one Chatwoot webhook body.
pub fn parse_event(body: &[u8]) -> Result<ChatwootEvent, ChatwootEventError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| ChatwootEventError::NotJson(e.to_string()))?;
    if !root.is_object() {
        return Err(ChatwootEventError::NotObject);
    }
    let event = str_of(&root, "event").ok_or(ChatwootEventError::NoEvent)?;
    match event {
        "message_created" => message_created(&root),
        "message_updated" => message_updated(&root),
        other => Ok(ChatwootEvent::Ignored {
            what: other.to_string(),
        }),
    }
}

fn message_created(root: &Value) -> Result<ChatwootEvent, ChatwootEventError> {
    let attributes = root.get("content_attributes").unwrap_or(&Value::Null);
    let Some(flow) = attributes.get("whatsapp_flow_response") else {
        return Ok(ignored("message_created"));
    };
    let id = message_id(root, "message_created")?;
    let flow = flow
        .as_object()
        .ok_or(ChatwootEventError::BadFlowResponse { part: "" })?;
    // A Flow submission is always the contact's; an echo of anything else is not an answer.
    if str_of(root, "message_type").is_some_and(|t| t != "incoming") {
        return Ok(ignored("message_created_not_incoming"));
    }
    let response = flow
        .get("response")
        .or_else(|| flow.get("response_json"))
        .or_else(|| flow.get("responseJson"));
    let mut answers = match response {
        Some(Value::Object(m)) => m.clone(),
        // Meta's own spelling: the answers as a JSON string.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => Map::from_iter([("_raw".to_string(), Value::String(s.clone()))]),
        },
        None => Map::new(),
        Some(_) => return Err(ChatwootEventError::BadFlowResponse { part: ".response" }),
    };
    let flow_token = match answers.remove("flow_token") {
        Some(Value::String(t)) if !t.is_empty() => Some(t),
        _ => flow
            .get("flow_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    };
    Ok(ChatwootEvent::Completion {
        event_id: format!("chatwoot:{id}"),
        flow_token,
        answers,
        sender: sender_digits(root),
        completed_at: time_of(root.get("created_at")),
    })
}

/// Chatwoot updates a message's `status` from Meta's status webhook only for messages it
/// knows (`Whatsapp::IncomingMessageBaseService#process_statuses` finds the message by its
/// wamid first), so a Flow flowctl sent itself normally has none here. Nor does
/// `Message#webhook_data` carry `status` in the Chatwoot versions read; a version (or fork)
/// that adds it, top-level or as Chatwoot's `changed_attributes` entries
/// (`[{"status": {"previous_value": …, "current_value": …}}]`, the form of its conversation
/// events), is read, and the caller keeps it only when a token carries that wamid.
fn message_updated(root: &Value) -> Result<ChatwootEvent, ChatwootEventError> {
    // A submission seen first (or only) in an update is the same message: the same id, so
    // stored once whichever event brings it.
    if root
        .pointer("/content_attributes/whatsapp_flow_response")
        .is_some()
    {
        return message_created(root);
    }
    let changed = root
        .get("changed_attributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| c.pointer("/status/current_value").and_then(Value::as_str));
    let status = str_of(root, "status").or(changed);
    let wamid = str_of(root, "source_id");
    match (status, wamid) {
        (Some(status @ ("sent" | "delivered" | "read" | "failed")), Some(wamid))
            if str_of(root, "message_type") != Some("incoming") =>
        {
            message_id(root, "message_updated")?;
            Ok(ChatwootEvent::Status {
                message_id: wamid.to_string(),
                status: status.to_string(),
                at: time_of(root.get("updated_at")),
            })
        }
        _ => Ok(ignored("message_updated")),
    }
}

fn ignored(what: &str) -> ChatwootEvent {
    ChatwootEvent::Ignored {
        what: what.to_string(),
    }
}

/// The Chatwoot message id: a number (as Chatwoot sends it) or a string of one.
fn message_id(root: &Value, event: &str) -> Result<String, ChatwootEventError> {
    match root.get("id") {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => Ok(s.trim().into()),
        _ => Err(ChatwootEventError::NoMessageId {
            event: event.to_string(),
        }),
    }
}

/// The contact's number as WhatsApp digits: `sender.phone_number` (E.164 with `+`), else the
/// conversation's sender, else the contact inbox's `source_id` (the WhatsApp id).
fn sender_digits(root: &Value) -> Option<String> {
    let candidates = [
        root.pointer("/sender/phone_number"),
        root.pointer("/conversation/meta/sender/phone_number"),
        root.pointer("/conversation/contact_inbox/source_id"),
    ];
    candidates.into_iter().flatten().find_map(|v| {
        let s = v.as_str()?.trim();
        let digits = s.strip_prefix('+').unwrap_or(s);
        (!digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.to_string())
    })
}

/// Chatwoot's `created_at`: an ISO 8601 string in `webhook_data`, Unix seconds in some
/// payloads; now when absent or unreadable.
fn time_of(v: Option<&Value>) -> String {
    let parsed = match v {
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| crate::time::format(t.with_timezone(&chrono::Utc))),
        Some(Value::Number(n)) => n.as_i64().and_then(crate::time::from_unix),
        _ => None,
    };
    parsed.unwrap_or_else(crate::time::now)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The header of Chatwoot's signature.
pub const SIGNATURE_HEADER: &str = "X-Chatwoot-Signature";
/// The header of the Unix time Chatwoot signed with, part of the signed text.
pub const TIMESTAMP_HEADER: &str = "X-Chatwoot-Timestamp";

/// Checks Chatwoot's signature: `sha256=` + hex HMAC-SHA256 of `timestamp.body`, compared
/// in constant time. `Err` says what is wrong, never the values.
pub fn check_signature(
    secret: &[u8],
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
) -> Result<(), &'static str> {
    let timestamp = timestamp
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("missing X-Chatwoot-Timestamp")?;
    let signature = signature.ok_or("missing X-Chatwoot-Signature")?;
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    crate::crypto::verify_signature(&[secret], &signed, Some(signature))
        .map_err(|_| "X-Chatwoot-Signature does not match")
}

/// The value of the `X-Chatwoot-Signature` header Chatwoot sends for `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    crate::crypto::sign(secret, &signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use serde_json::json;

    fn flow_message(attrs: Value) -> Vec<u8> {
        json!({
            "event": "message_created",
            "id": 4512,
            "content": "Sent",
            "created_at": "2026-08-04T00:40:14.000Z",
            "message_type": "incoming",
            "content_type": "text",
            "content_attributes": attrs,
            "source_id": "wamid.REPLY",
            "sender": { "id": 77, "name": "Ahmed", "phone_number": "+212610059159", "type": "contact" },
            "conversation": { "id": 9, "contact_inbox": { "source_id": "212610059159" } },
            "inbox": { "id": 3, "name": "WhatsApp" },
            "account": { "id": 1, "name": "Shop" }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_flow_submission_is_a_completion_with_its_token_apart() {
        let body = flow_message(json!({
            "whatsapp_message_type": "interactive",
            "interactive_reply_type": "nfm_reply",
            "whatsapp_flow_response": {
                "name": "flow", "body": "Sent",
                "response": { "flow_token": "tok-1", "q1": "Excellent" }
            }
        }));
        let ChatwootEvent::Completion {
            event_id,
            flow_token,
            answers,
            sender,
            completed_at,
        } = parse_event(&body).unwrap()
        else {
            panic!("not a completion")
        };
        assert_eq!(event_id, "chatwoot:4512");
        assert_eq!(flow_token.as_deref(), Some("tok-1"));
        assert_eq!(
            answers,
            json!({"q1": "Excellent"}).as_object().unwrap().clone()
        );
        assert_eq!(sender.as_deref(), Some("212610059159"));
        assert_eq!(completed_at, "2026-08-04T00:40:14.000Z");
    }

    #[test]
    fn answers_as_a_json_string_and_a_token_beside_them_are_read_too() {
        let body = flow_message(json!({ "whatsapp_flow_response": {
            "response_json": "{\"q1\":\"Bon\"}", "flow_token": "tok-2" } }));
        let ChatwootEvent::Completion {
            flow_token,
            answers,
            ..
        } = parse_event(&body).unwrap()
        else {
            panic!("not a completion")
        };
        assert_eq!(flow_token.as_deref(), Some("tok-2"));
        assert_eq!(answers["q1"], "Bon");
    }

    #[test]
    fn other_events_and_plain_messages_are_ignored() {
        for body in [
            json!({"event": "conversation_created", "id": 1}),
            json!({"event": "message_created", "id": 2, "content": "hello", "content_attributes": {}}),
            json!({"event": "message_updated", "id": 3, "status": "read", "message_type": "incoming",
                   "source_id": "wamid.X"}),
        ] {
            let got = parse_event(body.to_string().as_bytes()).unwrap();
            assert!(
                matches!(got, ChatwootEvent::Ignored { .. }),
                "{body}: {got:?}"
            );
        }
    }

    #[test]
    fn an_outgoing_messages_status_is_read() {
        let body = json!({"event": "message_updated", "id": 5, "status": "delivered",
            "message_type": "outgoing", "source_id": "wamid.OUT", "updated_at": 1785000000});
        assert_eq!(
            parse_event(body.to_string().as_bytes()).unwrap(),
            ChatwootEvent::Status {
                message_id: "wamid.OUT".into(),
                status: "delivered".into(),
                at: crate::time::from_unix(1785000000).unwrap(),
            }
        );
    }

    #[test]
    fn a_submission_in_an_update_is_the_same_completion() {
        let created =
            flow_message(json!({"whatsapp_flow_response": {"response": {"flow_token": "t"}}}));
        let mut updated: Value = serde_json::from_slice(&created).unwrap();
        updated["event"] = json!("message_updated");
        assert_eq!(
            parse_event(updated.to_string().as_bytes()).unwrap(),
            parse_event(&created).unwrap()
        );
    }

    #[test]
    fn a_status_in_changed_attributes_is_read_too() {
        let body = json!({"event": "message_updated", "id": 6, "message_type": "outgoing",
            "source_id": "wamid.OUT", "updated_at": 1785000000,
            "changed_attributes": [{"status": {"previous_value": "sent", "current_value": "read"}}]});
        let got = parse_event(body.to_string().as_bytes()).unwrap();
        assert!(
            matches!(&got, ChatwootEvent::Status { status, .. } if status == "read"),
            "{got:?}"
        );
    }

    #[test]
    fn malformed_bodies_are_refused_by_what_is_wrong() {
        assert!(matches!(
            parse_event(b"{nope"),
            Err(ChatwootEventError::NotJson(_))
        ));
        assert_eq!(parse_event(b"[1]"), Err(ChatwootEventError::NotObject));
        assert_eq!(
            parse_event(b"{\"id\": 1}"),
            Err(ChatwootEventError::NoEvent)
        );
        let no_id = json!({"event": "message_created",
            "content_attributes": {"whatsapp_flow_response": {"response": {}}}});
        assert_eq!(
            parse_event(no_id.to_string().as_bytes()),
            Err(ChatwootEventError::NoMessageId {
                event: "message_created".into()
            })
        );
        let bad = flow_message(json!({"whatsapp_flow_response": "text"}));
        assert_eq!(
            parse_event(&bad),
            Err(ChatwootEventError::BadFlowResponse { part: "" })
        );
        let bad = flow_message(json!({"whatsapp_flow_response": {"response": [1]}}));
        assert_eq!(
            parse_event(&bad),
            Err(ChatwootEventError::BadFlowResponse { part: ".response" })
        );
    }

    #[test]
    fn a_signature_over_timestamp_and_body_is_accepted_and_nothing_else() {
        let body = br#"{"event":"message_created"}"#;
        let sig = sign(b"cw-secret", "1785000000", body);
        assert!(sig.starts_with("sha256="));
        assert_eq!(
            check_signature(b"cw-secret", body, Some("1785000000"), Some(&sig)),
            Ok(())
        );
        for (secret, ts, sig) in [
            (&b"other"[..], Some("1785000000"), Some(sig.as_str())),
            (&b"cw-secret"[..], Some("1785000001"), Some(sig.as_str())),
            (&b"cw-secret"[..], None, Some(sig.as_str())),
            (&b"cw-secret"[..], Some("1785000000"), None),
            (&b"cw-secret"[..], Some("1785000000"), Some("sha256=00")),
        ] {
            assert!(check_signature(secret, body, ts, sig).is_err());
        }
    }

    proptest::proptest! {
        /// Whatever a network peer sends, reading it answers (an event or a refusal): no panic.
        #[test]
        fn any_body_is_read_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_event(&body);
        }

        /// Any value in the places flowctl reads is an event or a refusal, never a panic.
        #[test]
        fn any_value_in_the_read_fields_is_handled(
            id in proptest::prop_oneof![proptest::strategy::Just(json!(null)), "[a-z0-9 ]{0,70}".prop_map(Value::from), proptest::num::i64::ANY.prop_map(Value::from)],
            token in "[a-zA-Z0-9_-]{0,20}",
            phone in "\\+?[0-9a-z]{0,24}",
            created in "[0-9T:.Z-]{0,30}",
        ) {
            let body = json!({
                "event": "message_created", "id": id, "created_at": created,
                "content_attributes": {"whatsapp_flow_response": {"response": {"flow_token": token}}},
                "sender": {"phone_number": phone}
            });
            let id_ok = match &id {
                Value::Number(_) => true,
                Value::String(s) => !s.trim().is_empty() && s.len() <= 64,
                _ => false,
            };
            match parse_event(body.to_string().as_bytes()) {
                Ok(ChatwootEvent::Completion { flow_token, answers, sender, .. }) => {
                    proptest::prop_assert!(id_ok);
                    proptest::prop_assert_eq!(flow_token, Some(token.clone()).filter(|t| !t.is_empty()));
                    proptest::prop_assert!(!answers.contains_key("flow_token"));
                    if let Some(s) = sender {
                        proptest::prop_assert!(!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
                    }
                }
                Err(ChatwootEventError::NoMessageId { .. }) => proptest::prop_assert!(!id_ok),
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }
}
