//! The sandbox playing a Chatwoot-based inbox (Chatwoot, Voom…) that owns the business's
//! WhatsApp webhook: the simulated person's Flow submission reaches the inbox, which forwards
//! it to flowctl as Chatwoot's own `message_created` webhook (Option B of the README), not as
//! Meta's envelope.
//!
//! The body is Chatwoot's `Message#webhook_data` merged with `event` (chatwoot/chatwoot
//! `app/models/message.rb`, `app/listeners/webhook_listener.rb`), with the Flow submission
//! under `content_attributes.whatsapp_flow_response = {name, body, response}` as chatwoot/chatwoot
//! PR 15279 stores it (<https://github.com/chatwoot/chatwoot/pull/15279>). The contact's
//! `phone_number` is `+` and the WhatsApp id of the sender, as Chatwoot's WhatsApp Cloud
//! inbox creates contacts (`Whatsapp::IncomingMessageBaseService#set_contact`). With a
//! signing secret the delivery carries `X-Chatwoot-Timestamp` and `X-Chatwoot-Signature`
//! (`sha256=` + HMAC-SHA256 of `{timestamp}.{body}`), as signed Chatwoot webhooks do.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

/// Where the sandbox's Chatwoot forwards to (`--chatwoot-webhook`), and how it signs.
#[derive(Clone)]
pub struct ChatwootTarget {
    /// `…/api/chatwoot-webhook/<secret>` of the server under test.
    pub url: String,
    /// `CHATWOOT_SIGNING_SECRET`: when set, deliveries are signed as Chatwoot signs them.
    pub signing_secret: Option<String>,
}

/// Shows neither the URL (its path is a secret) nor the signing secret.
impl std::fmt::Debug for ChatwootTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatwootTarget")
            .field("url", &"<secret path>")
            .field("signed", &self.signing_secret.is_some())
            .finish()
    }
}

/// Chatwoot message ids: increasing, as Chatwoot's primary keys are.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(4500);

/// The account and inbox the sandbox's Chatwoot reports.
const ACCOUNT_ID: u64 = 1;
const INBOX_ID: u64 = 3;

/// Forwards a simulated person's Flow submission (`answers`, with the `flow_token`) to
/// `target` the way Chatwoot does, over `http`; `wa_id` is the person and `wamid` the Flow
/// message answered. `Err` unless the server answers 2xx.
pub(crate) async fn forward_submission(
    http: &reqwest::Client,
    target: &ChatwootTarget,
    wa_id: &str,
    wamid: &str,
    answers: Map<String, Value>,
) -> Result<(), String> {
    let id = NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed);
    let reply_wamid = format!("wamid.chatwoot.{}", hash(wamid));
    let body = message_created(id, wa_id, wamid, &reply_wamid, answers).to_string();
    let mut req = http
        .post(&target.url)
        .header("content-type", "application/json")
        .header("X-Chatwoot-Delivery", format!("sandbox-{id}"));
    if let Some(secret) = &target.signing_secret {
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = crate::chatwoot_events::sign(secret.as_bytes(), &ts, body.as_bytes());
        req = req
            .header(crate::chatwoot_events::TIMESTAMP_HEADER, ts)
            .header(crate::chatwoot_events::SIGNATURE_HEADER, sig);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("chatwoot webhook: {e}"))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(format!("chatwoot webhook answered {status}"));
    }
    Ok(())
}

/// Chatwoot's `message_created` webhook for an incoming Flow submission from `wa_id`
/// answering the Flow message `flow_wamid`.
pub fn message_created(
    id: u64,
    wa_id: &str,
    flow_wamid: &str,
    reply_wamid: &str,
    response: Map<String, Value>,
) -> Value {
    let contact_id = 100 + hash(wa_id) % 100_000;
    let conversation_id = 10 + hash(&(wa_id, "conversation")) % 100_000;
    let now = chrono::Utc::now();
    let account = json!({ "id": ACCOUNT_ID, "name": "Sandbox" });
    let contact = json!({
        "account": account,
        "additional_attributes": {},
        "avatar": "",
        "custom_attributes": {},
        "email": null,
        "id": contact_id,
        "identifier": null,
        "name": "Sandbox user",
        "phone_number": format!("+{wa_id}"),
        "thumbnail": "",
        "type": "contact"
    });
    json!({
        "event": "message_created",
        "account": account,
        "additional_attributes": {},
        "content_attributes": {
            "in_reply_to_external_id": flow_wamid,
            "whatsapp_message_type": "interactive",
            "interactive_reply_type": "nfm_reply",
            "whatsapp_flow_response": { "name": "flow", "body": "Sent", "response": response }
        },
        "content_type": "text",
        "content": "Sent",
        "conversation": {
            "additional_attributes": {},
            "can_reply": true,
            "channel": "Channel::Whatsapp",
            "contact_inbox": { "id": contact_id, "contact_id": contact_id, "inbox_id": INBOX_ID,
                               "source_id": wa_id },
            "id": conversation_id,
            "inbox_id": INBOX_ID,
            "meta": { "sender": contact, "assignee": null },
            "status": "open",
            "unread_count": 1,
            "timestamp": now.timestamp()
        },
        "created_at": crate::time::format(now),
        "id": id,
        "inbox": { "id": INBOX_ID, "name": "WhatsApp" },
        "message_type": "incoming",
        "private": false,
        "sender": contact,
        "source_id": reply_wamid
    })
}

fn hash<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chatwoot_events::{parse_event, ChatwootEvent};

    /// The fixture taken from Chatwoot's format, which the end-to-end tests post as is.
    const FIXTURE: &str = include_str!("../../tests/fixtures/chatwoot/message_created_flow.json");

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn the_forward_has_the_shape_of_chatwoots_fixture() {
        let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
        let answers = json!({"flow_token": "tok", "q1": "Excellent"});
        let ours = message_created(
            1,
            "212610059159",
            "wamid.F",
            "wamid.R",
            answers.as_object().unwrap().clone(),
        );
        assert_eq!(keys(&ours), keys(&fixture));
        for part in ["sender", "conversation", "inbox", "account"] {
            assert_eq!(keys(&ours[part]), keys(&fixture[part]), "{part}");
        }
        assert_eq!(
            keys(&ours["content_attributes"]["whatsapp_flow_response"]),
            keys(&fixture["content_attributes"]["whatsapp_flow_response"])
        );
    }

    #[test]
    fn flowctl_reads_the_forward_as_a_completion_from_the_sender() {
        let answers = json!({"flow_token": "tok-9", "q1": "Bon"});
        let v = message_created(
            42,
            "5511987654321",
            "wamid.F",
            "wamid.R",
            answers.as_object().unwrap().clone(),
        );
        let got = parse_event(v.to_string().as_bytes()).unwrap();
        let ChatwootEvent::Completion {
            event_id,
            flow_token,
            sender,
            ..
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!(event_id, "chatwoot:42");
        assert_eq!(flow_token.as_deref(), Some("tok-9"));
        assert_eq!(sender.as_deref(), Some("5511987654321"));
    }
}
