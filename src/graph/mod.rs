//! `GraphClient`: every outbound call to the WhatsApp Cloud (Graph) API.
//!
//! The base URL and version come from configuration, so pointing flowctl at Meta or at the
//! local sandbox is a change of URL and token only.

mod error;
mod flows;
mod inspect;
mod media;
mod message;
mod templates;
pub mod version;

use std::time::Duration;

use serde_json::Value;

pub use error::{classify, likely_cause, meaning, ErrorClass, GraphError, USER_LIMIT_DEFERRAL};
pub use flows::{AssetUpload, FlowAsset, ValidationError, FLOW_LIST_FIELDS, FLOW_METRICS};
pub use inspect::{FLOW_FIELDS, PHONE_NUMBER_FIELDS};
pub use media::{DownloadError, MediaUrl};
pub use message::{flow_message, FlowAction, MessageSettings, Recipient, Template};
pub use templates::{
    check as check_template_params, shape as template_shape, GivenParams, Header as TemplateHeader,
    MediaKind, Slot, TemplateParam, TemplateShape, TEMPLATE_FIELDS,
};

use crate::secret::Secret;

/// Where and how to reach the Graph API.
#[derive(Clone, Debug)]
pub struct GraphSettings {
    /// e.g. `https://graph.facebook.com` or `http://127.0.0.1:9090`.
    pub base_url: String,
    /// e.g. `v21.0`.
    pub version: String,
    pub phone_number_id: String,
    pub access_token: Secret,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// An accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The wamid: the key of later statuses and of the completion's `context.id`.
    pub message_id: String,
    /// The recipient's WhatsApp id, as the API reported it.
    pub wa_id: Option<String>,
    /// `accepted`, `held_for_quality_assessment`, … when given.
    pub message_status: Option<String>,
}

/// The business public key registered for the data endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredKey {
    /// The registered public key as Meta returns it (PEM).
    pub pem: String,
    /// `business_public_key_signature_status`: `VALID` or `MISMATCH` as documented, when given.
    pub signature_status: Option<String>,
}

/// The Graph API client (cheap to clone; connections are pooled).
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    settings: GraphSettings,
}

impl GraphClient {
    /// A client for these settings.
    pub fn new(settings: GraphSettings) -> Result<GraphClient, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5).min(settings.timeout))
            .pool_max_idle_per_host(1024)
            .user_agent(concat!("flowctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Connect(e.to_string()))?;
        Ok(GraphClient { http, settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &GraphSettings {
        &self.settings
    }

    fn node_url(&self) -> String {
        format!(
            "{}/{}/{}",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.version.trim_matches('/'),
            self.settings.phone_number_id,
        )
    }

    /// A harmless read (`GET /{PHONE_NUMBER_ID}?fields=id`) telling whether the API answers
    /// at all. Any answer below 500 counts as up: a 4xx is a request's problem, not an outage.
    pub async fn probe(&self) -> Result<(), GraphError> {
        let req = self
            .http
            .get(format!("{}?fields=id", self.node_url()))
            .bearer_auth(self.settings.access_token.expose());
        let (status, text, regain) = self.execute(req).await?;
        if status >= 500 {
            return Err(parse_error(status, &text).with_regain(regain));
        }
        Ok(())
    }

    fn url(&self, edge: &str) -> String {
        format!(
            "{}/{}/{}/{}",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.version.trim_matches('/'),
            self.settings.phone_number_id,
            edge
        )
    }

    /// Sends one message body, once: whether and when to retry is the caller's policy.
    pub async fn send_message(&self, body: &Value) -> Result<Sent, GraphError> {
        let req = self
            .http
            .post(self.url("messages"))
            .bearer_auth(self.settings.access_token.expose())
            .json(body);
        let (status, text, regain) = self.execute(req).await?;
        if !(200..300).contains(&status) {
            return Err(parse_error(status, &text).with_regain(regain));
        }
        parse_sent(&text)
    }

    /// Registers the business public key for the data endpoint (form-urlencoded, as Meta wants).
    pub async fn upload_public_key(&self, public_pem: &str) -> Result<(), GraphError> {
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("business_public_key", public_pem)
            .finish();
        let req = self
            .http
            .post(self.url("whatsapp_business_encryption"))
            .bearer_auth(self.settings.access_token.expose())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        let (status, text, regain) = self.execute(req).await?;
        if !(200..300).contains(&status) {
            return Err(parse_error(status, &text).with_regain(regain));
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::InvalidResponse(snippet(&text)))?;
        if v.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(GraphError::InvalidResponse(snippet(&text)))
        }
    }

    /// Fetches the registered business public key, if any.
    pub async fn registered_public_key(&self) -> Result<Option<RegisteredKey>, GraphError> {
        let req = self
            .http
            .get(self.url("whatsapp_business_encryption"))
            .bearer_auth(self.settings.access_token.expose());
        let (status, text, regain) = self.execute(req).await?;
        if !(200..300).contains(&status) {
            return Err(parse_error(status, &text).with_regain(regain));
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|_| GraphError::InvalidResponse(snippet(&text)))?;
        // The guide shows a flat object, the API reference a `data[]` wrapper: accept both.
        let obj = match v.get("data") {
            Some(Value::Array(items)) => items.first().cloned().unwrap_or(Value::Null),
            _ => v,
        };
        Ok(obj
            .get("business_public_key")
            .and_then(Value::as_str)
            .map(|pem| RegisteredKey {
                pem: pem.to_string(),
                signature_status: obj
                    .get("business_public_key_signature_status")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }))
    }

    /// Sends `req`; the answer's status, its (redacted) text, and how long the app or account
    /// is throttled when the answer's business-use-case header says so.
    async fn execute(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, String, Option<Duration>), GraphError> {
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let regain = resp
            .headers()
            .get("x-business-use-case-usage")
            .and_then(|h| h.to_str().ok())
            .and_then(regain_of_usage);
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        // A proxy or an API that echoes the request (Authorization included) must not put the
        // token into errors, logs, the failures file or the database.
        let text = crate::secret::redact(&text).into_owned();
        Ok((status, text, regain))
    }

    fn transport_error(&self, e: reqwest::Error) -> GraphError {
        if e.is_timeout() {
            GraphError::Timeout(self.settings.timeout)
        } else if e.is_connect() {
            GraphError::Connect(root_cause(&e))
        } else {
            GraphError::Network(root_cause(&e))
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.is_empty() {
        "(empty body)".to_string()
    } else {
        t
    }
}

/// The longest `estimated_time_to_regain_access` (minutes, per Meta's rate-limiting guide:
/// <https://developers.facebook.com/docs/graph-api/overview/rate-limiting/>) of an
/// `X-Business-Use-Case-Usage` header — `{"<business id>": [{"type": …, "call_count": …,
/// "estimated_time_to_regain_access": N}, …]}` — when above zero.
pub fn regain_of_usage(header: &str) -> Option<Duration> {
    let v: Value = serde_json::from_str(header).ok()?;
    let minutes = v
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|e| e.get("estimated_time_to_regain_access"))
        .filter_map(|m| m.as_u64().or_else(|| m.as_str()?.trim().parse().ok()))
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes.saturating_mul(60)))
}

/// Parses a non-2xx answer: the error envelope (`code` as a number or a string), else a
/// bare HTTP failure.
pub fn parse_error(status: u16, text: &str) -> GraphError {
    let v: Option<Value> = serde_json::from_str(text).ok();
    let err = v.as_ref().and_then(|v| v.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(|c| match c {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    match (err, code) {
        (Some(e), Some(code)) => GraphError::Api {
            status,
            code,
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            details: e
                .get("error_data")
                .and_then(|d| d.get("details"))
                .and_then(Value::as_str)
                .map(str::to_string),
            fbtrace_id: e
                .get("fbtrace_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            regain: None,
        },
        _ => GraphError::Http {
            status,
            snippet: snippet(text),
        },
    }
}

/// Parses the success reply of `/messages`.
pub fn parse_sent(text: &str) -> Result<Sent, GraphError> {
    let v: Value =
        serde_json::from_str(text).map_err(|_| GraphError::InvalidResponse(snippet(text)))?;
    let msg = v.get("messages").and_then(|m| m.get(0));
    let id = msg
        .and_then(|m| m.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match id {
        Some(id) => Ok(Sent {
            message_id: id.to_string(),
            wa_id: v
                .get("contacts")
                .and_then(|c| c.get(0))
                .and_then(|c| c.get("wa_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            message_status: msg
                .and_then(|m| m.get("message_status"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        None => Err(GraphError::InvalidResponse(snippet(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_business_use_case_header_gives_the_pause_in_minutes() {
        let h = r#"{"102290129340398":[{"type":"whatsapp","call_count":100,"total_cputime":10,"total_time":10,"estimated_time_to_regain_access":3}]}"#;
        assert_eq!(regain_of_usage(h), Some(Duration::from_secs(180)));
        let zero = r#"{"1":[{"call_count":90,"estimated_time_to_regain_access":0}]}"#;
        assert_eq!(regain_of_usage(zero), None, "zero: not throttled");
        assert_eq!(regain_of_usage("not json"), None);
        let two = r#"{"1":[{"estimated_time_to_regain_access":"1"}],"2":[{"estimated_time_to_regain_access":5}]}"#;
        assert_eq!(
            regain_of_usage(two),
            Some(Duration::from_secs(300)),
            "the longest"
        );
        let e = parse_error(400, r#"{"error":{"code":80007,"message":"x"}}"#)
            .with_regain(regain_of_usage(h));
        assert_eq!(e.regain_after(), Some(Duration::from_secs(180)));
    }

    #[test]
    fn success_reply_is_parsed() {
        let s = parse_sent(r#"{"messaging_product":"whatsapp","contacts":[{"input":"33612345678","wa_id":"33612345678"}],"messages":[{"id":"wamid.X","message_status":"accepted"}]}"#).unwrap();
        assert_eq!(s.message_id, "wamid.X");
        assert_eq!(s.wa_id.as_deref(), Some("33612345678"));
        assert_eq!(s.message_status.as_deref(), Some("accepted"));
        assert!(parse_sent(r#"{"messages":[]}"#).is_err());
        assert!(parse_sent("<html>").is_err());
    }

    #[test]
    fn error_envelope_is_parsed_with_numeric_or_string_code() {
        let body = r#"{"error":{"message":"(#131056) pair rate limit hit","type":"OAuthException","code":131056,"error_data":{"messaging_product":"whatsapp","details":"too many"},"fbtrace_id":"Ab"}}"#;
        match parse_error(400, body) {
            GraphError::Api {
                code,
                details,
                fbtrace_id,
                ..
            } => {
                assert_eq!(code, 131056);
                assert_eq!(details.as_deref(), Some("too many"));
                assert_eq!(fbtrace_id.as_deref(), Some("Ab"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_error(400, r#"{"error":{"code":"130429","message":"x"}}"#).code(),
            Some(130429)
        );
        assert!(matches!(
            parse_error(502, "Bad gateway"),
            GraphError::Http { status: 502, .. }
        ));
    }
}
