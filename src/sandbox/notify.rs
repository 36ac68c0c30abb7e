//! What the sandbox posts to the server under test, signed as Meta signs it: statuses,
//! completions and text messages on the message webhook (the simulated people's, and the
//! `failed` statuses of failures that arrive after the send was accepted).
//!
//! Shapes follow the status webhook reference
//! (<https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status>):
//! a `failed` status carries `errors[]` with `code`, `title`, `message`, `error_data.details`
//! and `href`; `recipient_id` is the recipient's WhatsApp id, which may differ from the number
//! the message was sent to (see [`wa_id_of`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::crypto;

/// The business number's id the sandbox puts in webhook metadata.
pub const PHONE_NUMBER_ID: &str = "106540352242922";

/// Posts signed JSON to the server under test.
pub(crate) struct Notifier {
    http: reqwest::Client,
    app_secret: Option<String>,
    webhook: Option<String>,
    /// The Chatwoot forward the simulated people answer through instead (Option B).
    chatwoot: Option<super::chatwoot::ChatwootTarget>,
    /// Percent of the webhook notifications posted twice at once ([`Notifier::with_duplicates`]).
    duplicates: u8,
    /// Webhook notifications posted so far (which of them are doubled).
    posted: AtomicU64,
}

impl Notifier {
    /// A notifier posting to `webhook` (if any), signing with `app_secret` (if any).
    pub(crate) fn new(webhook: Option<String>, app_secret: Option<String>) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Notifier {
            http,
            app_secret,
            webhook,
            chatwoot: None,
            duplicates: 0,
            posted: AtomicU64::new(0),
        }
    }

    /// The app secret the people's requests are signed with, if any.
    pub(crate) fn app_secret(&self) -> Option<&str> {
        self.app_secret.as_deref()
    }

    /// The same notifier, forwarding completions as Chatwoot does to `chatwoot` (if any).
    pub(crate) fn with_chatwoot(
        mut self,
        chatwoot: Option<super::chatwoot::ChatwootTarget>,
    ) -> Self {
        self.chatwoot = chatwoot;
        self
    }

    /// The same notifier, posting `percent` of its webhook notifications twice at the same
    /// moment. Meta delivers at least once and retries a notification until it is answered
    /// 200 (<https://developers.facebook.com/docs/whatsapp/api/webhooks>): a retry may race
    /// the first delivery, and behind a load balancer reach another `serve` replica.
    pub(crate) fn with_duplicates(mut self, percent: u8) -> Self {
        self.duplicates = percent.min(100);
        self
    }

    /// Whether the next notification is one of the doubled: spread evenly, `duplicates` in
    /// every hundred.
    fn doubles_next(&self) -> bool {
        let n = self.posted.fetch_add(1, Ordering::Relaxed);
        let p = u64::from(self.duplicates);
        (n + 1) * p / 100 > n * p / 100
    }

    /// The Chatwoot forward, when the sandbox plays one.
    pub(crate) fn chatwoot(&self) -> Option<&super::chatwoot::ChatwootTarget> {
        self.chatwoot.as_ref()
    }

    /// The HTTP client (shared by everything the sandbox posts).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// True when a webhook URL is configured.
    pub(crate) fn has_webhook(&self) -> bool {
        self.webhook.is_some()
    }

    /// Posts one event to the webhook; `Err` unless it answers 2xx.
    pub(crate) async fn post_webhook(&self, event: &Value) -> Result<(), String> {
        let Some(url) = &self.webhook else {
            return Err("no --webhook to post to".into());
        };
        let body = event.to_string();
        let statuses = if self.doubles_next() {
            let (a, b) = tokio::join!(
                self.signed_post(url, body.clone(), "webhook"),
                self.signed_post(url, body, "webhook (again)")
            );
            vec![a?.0, b?.0]
        } else {
            vec![self.signed_post(url, body, "webhook").await?.0]
        };
        match statuses.into_iter().find(|s| !(200..300).contains(s)) {
            Some(status) => Err(format!("webhook answered {status}")),
            None => Ok(()),
        }
    }

    /// POSTs a JSON body signed with the app secret, as Meta does; returns status and body.
    pub(crate) async fn signed_post(
        &self,
        url: &str,
        body: String,
        what: &str,
    ) -> Result<(u16, String), String> {
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json");
        if let Some(secret) = &self.app_secret {
            req = req.header(
                crypto::SIGNATURE_HEADER,
                crypto::sign(secret.as_bytes(), body.as_bytes()),
            );
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("{what}: {e}"))?;
        Ok((status, text))
    }
}

/// The `messages` field envelope around one change value.
pub(crate) fn envelope(value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "102290129340398", "changes": [{ "field": "messages", "value": value }] }]
    })
}

/// A text message from `wa_id` (the `messages` field with `messages[].type = "text"`:
/// <https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/text>).
pub(crate) fn text_event(wa_id: &str, text: &str, id: &str) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID },
        "contacts": [{ "profile": { "name": "Sandbox user" }, "wa_id": wa_id }],
        "messages": [{
            "from": wa_id,
            "id": id,
            "timestamp": unix_now(),
            "type": "text",
            "text": { "body": text }
        }]
    }))
}

fn metadata() -> Value {
    json!({ "display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID })
}

/// One message's status.
pub(crate) struct Status<'a> {
    pub(crate) wamid: &'a str,
    /// The recipient's WhatsApp id (`recipient_id`).
    pub(crate) wa_id: &'a str,
    pub(crate) status: &'a str,
    pub(crate) callback: Option<&'a str>,
    /// `(code, title, details)` of a `failed` status.
    pub(crate) error: Option<(u32, &'a str, &'a str)>,
}

/// A status webhook.
pub(crate) fn status_event(s: &Status<'_>) -> Value {
    let mut v = json!({ "id": s.wamid, "status": s.status, "timestamp": unix_now(), "recipient_id": s.wa_id });
    if let Some(cb) = s.callback {
        v["biz_opaque_callback_data"] = json!(cb);
    }
    if let Some((code, title, details)) = s.error {
        v["errors"] = json!([{
            "code": code,
            "title": title,
            "message": title,
            "error_data": { "details": details },
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
        }]);
    }
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "statuses": [v]
    }))
}

/// A Flow completion (`nfm_reply`) from `wa_id` answering message `wamid`.
pub(crate) fn completion_event(
    wamid: &str,
    wa_id: &str,
    reply_id: &str,
    response_json: &str,
) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "contacts": [{ "profile": { "name": "Sandbox user" }, "wa_id": wa_id }],
        "messages": [{
            "context": { "from": "15550783881", "id": wamid },
            "from": wa_id,
            "id": reply_id,
            "timestamp": unix_now(),
            "type": "interactive",
            "interactive": { "type": "nfm_reply", "nfm_reply": {
                "name": "flow", "body": "Sent", "response_json": response_json } }
        }]
    }))
}

/// The WhatsApp id Meta reports for a number sent to (`contacts[].wa_id` of the send answer,
/// `recipient_id` of statuses, `from` of replies): see [`crate::phone::whatsapp_form`]. The
/// send answer's `contacts[].input` echoes the number as sent, and `wa_id` "may differ from
/// the input" (send-messages reference).
pub fn wa_id_of(to: &str) -> String {
    crate::phone::whatsapp_form(to.trim_start_matches('+')).into_owned()
}

fn unix_now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doubled_notifications_are_the_percent_asked_spread_evenly() {
        for percent in [0u8, 1, 30, 50, 100] {
            let n = Notifier::new(None, None).with_duplicates(percent);
            let doubled: Vec<bool> = (0..200).map(|_| n.doubles_next()).collect();
            let count = doubled.iter().filter(|d| **d).count();
            assert_eq!(count, 2 * usize::from(percent), "{percent}%");
            // Evenly: the first hundred already hold their share.
            let first = doubled[..100].iter().filter(|d| **d).count();
            assert_eq!(first, usize::from(percent), "{percent}%");
        }
    }

    #[test]
    fn brazilian_and_mexican_numbers_get_their_whatsapp_id() {
        assert_eq!(wa_id_of("5511987654321"), "551187654321");
        assert_eq!(wa_id_of("+5511987654321"), "551187654321");
        // A landline or an already short number is left alone.
        assert_eq!(wa_id_of("551133334444"), "551133334444");
        assert_eq!(wa_id_of("525512345678"), "5215512345678");
        assert_eq!(wa_id_of("5215512345678"), "5215512345678");
        assert_eq!(wa_id_of("212610059159"), "212610059159");
    }

    #[test]
    fn a_failed_status_carries_its_error_as_meta_sends_it() {
        let v = status_event(&Status {
            wamid: "wamid.X",
            wa_id: "33612345678",
            status: "failed",
            callback: None,
            error: Some((131047, "Re-engagement message", "more than 24 hours")),
        });
        let s = &v["entry"][0]["changes"][0]["value"]["statuses"][0];
        assert_eq!(s["status"], "failed");
        assert_eq!(s["recipient_id"], "33612345678");
        assert_eq!(s["errors"][0]["code"], 131047);
        assert_eq!(s["errors"][0]["title"], "Re-engagement message");
        assert_eq!(
            s["errors"][0]["error_data"]["details"],
            "more than 24 hours"
        );
    }
}
