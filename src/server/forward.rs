//! Forward mode (`serve --forward URL`): the business's own handler, in any language, decides
//! what each screen shows, given what only flowctl knows (the phone number, the recipient's
//! data, the answers so far).
//!
//! `serve` still owns what must be right every time: the signature and the decryption of
//! Meta's request, the token look-up (an unknown or expired token is refused before the
//! handler is called), storing answers and the completion joined to the phone, and the
//! encryption of the answer. The handler receives plain JSON, signed with HMAC-SHA256 under
//! `FLOW_FORWARD_SECRET` in `X-Flowctl-Signature-256`, and answers plain JSON.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::secret::Secret;
use crate::store::TokenRecord;

/// The header carrying `sha256=<hex HMAC-SHA256(FLOW_FORWARD_SECRET, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Flowctl-Signature-256";

/// Where and how requests are forwarded; resolved from `--forward`, `FLOW_FORWARD_SECRET`
/// and `--forward-timeout`.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// The handler's URL: `https://…`, or `http://` on a loopback address.
    pub url: url::Url,
    /// The key of the body's HMAC, so the handler can trust what it receives.
    pub secret: Secret,
    /// Longest wait for the handler's answer; well inside Meta's 10 s.
    pub timeout: Duration,
}

/// The HTTP client of forward mode, built once.
#[derive(Debug)]
pub struct Forwarder {
    settings: ForwardSettings,
    client: reqwest::Client,
}

/// What the decrypted request said, as it is passed on.
#[derive(Debug)]
pub struct Forwarded<'a> {
    pub version: Option<&'a str>,
    pub action: &'a str,
    pub screen: Option<&'a str>,
    pub data: Option<&'a Map<String, Value>>,
}

/// What the handler decided.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Show this screen (possibly the same one, with new data or an `error_message`).
    Screen {
        screen: String,
        data: Map<String, Value>,
    },
    /// The Flow is finished; `answers` are stored with the completion.
    Complete { answers: Map<String, Value> },
    /// Refuse the token (427) with this message for the person.
    TokenInvalid { message: String },
}

/// Why the handler gave no usable answer; the `reason` label of
/// `flowctl_forward_failures_total`. The person gets a 500, which the client may retry,
/// never a 427, which would disable the Flow in their chat for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within `--forward-timeout`.
    Timeout,
    /// The handler could not be reached.
    Connect,
    /// The handler answered with a status other than 2xx.
    Status,
    /// The answer is not one of the three documented shapes.
    Answer,
}

impl Decision {
    /// The `outcome` label of `flowctl_forward_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Screen { .. } => "screen",
            Decision::Complete { .. } => "complete",
            Decision::TokenInvalid { .. } => "token_invalid",
        }
    }
}

impl Failure {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Status => "status",
            Failure::Answer => "answer",
        }
    }
}

impl Forwarder {
    /// A client with the timeout, no redirects (the signed body goes to the configured URL
    /// only), and no proxy for a loopback handler.
    pub fn new(settings: ForwardSettings) -> Result<Forwarder, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if settings.url.scheme() == "http" {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the forward client: {e}"))?;
        Ok(Forwarder { settings, client })
    }

    /// Where the handler is, for logs: scheme, host and port only (the path or query may
    /// carry a credential).
    pub fn origin(&self) -> String {
        self.settings.url.origin().ascii_serialization()
    }

    /// Posts the request with the token's context and reads the handler's decision.
    pub async fn call(
        &self,
        record: &TokenRecord,
        request: &Forwarded<'_>,
    ) -> Result<Decision, Failure> {
        let body = body(record, request).to_string();
        let signature =
            crate::crypto::sign(self.settings.secret.expose().as_bytes(), body.as_bytes());
        let sent = self
            .client
            .post(self.settings.url.clone())
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        if !sent.status().is_success() {
            tracing::warn!(
                status = sent.status().as_u16(),
                "forward: the handler refused"
            );
            return Err(Failure::Status);
        }
        let bytes = read_capped(sent).await?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| Failure::Answer)?;
        decision(answer).ok_or(Failure::Answer)
    }
}

/// Largest answer read from the handler; a screen's data is a few kilobytes.
const MAX_ANSWER: usize = 1 << 20;

/// The answer's body, refused past [`MAX_ANSWER`] without reading the rest.
async fn read_capped(mut answer: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            tracing::warn!("forward: the handler's answer is over 1 MiB");
            return Err(Failure::Answer);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn classify(e: reqwest::Error) -> Failure {
    tracing::warn!(error = %e, "forward: no answer from the handler");
    if e.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Connect
    }
}

/// The JSON posted to the handler: the request, and what only flowctl knows.
fn body(record: &TokenRecord, request: &Forwarded<'_>) -> Value {
    json!({
        "version": request.version,
        "action": request.action,
        "screen": request.screen,
        "data": request.data.cloned().unwrap_or_default(),
        "flow_token": record.token.as_str(),
        "phone_number": record.phone.to_string(),
        "customer_name": record.customer_name,
        "campaign": record.campaign,
        "initial_data": record.initial_data.clone().unwrap_or_default(),
        "token_state": {
            "send": record.state.as_str(),
            "delivery": record.delivery,
            "screen": record.flow_screen,
            "expires_at": record.expires_at,
        },
        "answers_so_far": record.flow_answers.clone().unwrap_or_default(),
    })
}

/// Reads one of the three answers: `{"screen", "data"}`, `{"complete": true, "data"}`,
/// `{"error": "token_invalid", "message"}`.
fn decision(answer: Value) -> Option<Decision> {
    let Value::Object(mut a) = answer else {
        return None;
    };
    let data = match a.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d,
        Some(_) => return None,
    };
    if a.get("error").and_then(Value::as_str) == Some("token_invalid") {
        let message = a
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .unwrap_or("This link is not valid.");
        return Some(Decision::TokenInvalid {
            message: message.to_string(),
        });
    }
    if a.get("complete") == Some(&Value::Bool(true)) {
        return Some(Decision::Complete { answers: data });
    }
    match a.get("screen").and_then(Value::as_str) {
        // SUCCESS is flowctl's to send, after the completion is stored.
        Some(s) if !s.is_empty() && s != "SUCCESS" => Some(Decision::Screen {
            screen: s.to_string(),
            data,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_answer_is_the_next_screen_with_its_data() {
        assert_eq!(
            decision(json!({"screen": "CITY", "data": {"cities": []}})),
            Some(Decision::Screen {
                screen: "CITY".into(),
                data: json!({"cities": []}).as_object().unwrap().clone()
            })
        );
    }

    #[test]
    fn a_completion_carries_the_answers() {
        assert_eq!(
            decision(json!({"complete": true, "data": {"city": "Fes"}})),
            Some(Decision::Complete {
                answers: json!({"city": "Fes"}).as_object().unwrap().clone()
            })
        );
    }

    #[test]
    fn token_invalid_keeps_the_handlers_message() {
        assert_eq!(
            decision(json!({"error": "token_invalid", "message": "Offer closed."})),
            Some(Decision::TokenInvalid {
                message: "Offer closed.".into()
            })
        );
    }

    #[test]
    fn anything_else_is_an_unusable_answer() {
        for a in [
            json!([]),
            json!({}),
            json!({"screen": ""}),
            json!({"screen": "SUCCESS", "data": {}}),
            json!({"screen": "A", "data": []}),
            json!({"complete": "yes", "data": {}}),
        ] {
            assert_eq!(decision(a.clone()), None, "{a}");
        }
    }
}
