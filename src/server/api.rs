//! The CRM API: `POST /api/send-flow` (the HTTP twin of `flowctl send`) and
//! `GET /api/responses`. Both need `Authorization: Bearer <FLOWCTL_API_KEY>`; without a
//! configured key the routes do not exist (404).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use serde_json::{json, Map, Value};

use super::http::{self, Resp};
use super::AppState;
use crate::graph::GraphClient;
use crate::outbound::{send_one, RetryPolicy, SendRequest, SendSettings};
use crate::phone::Phone;
use crate::store::{Origin, ResponsesQuery};

/// Largest `/api/send-flow` body.
const MAX_SEND_BODY: usize = 64 << 10;
/// Default and largest page of `/api/responses`.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Campaign of API sends that do not name one.
pub const DEFAULT_CAMPAIGN: &str = "api";

/// What `/api/send-flow` needs to send: the Graph client, the message settings and the
/// retry policy (the one `send` and `bulk` follow).
#[derive(Debug)]
pub struct Sender {
    /// The Graph API client.
    pub graph: GraphClient,
    /// The message, the default country of national numbers, the token lifetime.
    pub settings: SendSettings,
    /// How refused sends are retried.
    pub policy: RetryPolicy,
}

/// Checks the bearer key; `Some` is the refusal to answer: 404 when no key is configured
/// (the CRM routes are off), 401 when the key is missing or wrong.
fn refusal(state: &AppState, req: &Request<Incoming>) -> Option<Resp> {
    let Some(key) = &state.api_key else {
        return Some(http::json_error(StatusCode::NOT_FOUND, "no such route"));
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(given) if key.matches(given.as_bytes()) => None,
        _ => {
            let mut resp = http::json_error(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key (Authorization: Bearer <FLOWCTL_API_KEY>)",
            );
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            Some(resp)
        }
    }
}

/// `POST /api/send-flow`: `{"phoneNumber","customerName"[,"data"][,"campaign"]}` → the
/// same JSON as `flowctl send` (200 sent, 502 refused by the Graph API).
pub async fn send_flow(
    state: &Arc<AppState>,
    budget: &http::BodyBudget,
    req: Request<Incoming>,
) -> Resp {
    if let Some(resp) = refusal(state, &req) {
        return resp;
    }
    // A token issued into a deleted database file would be lost with it: refuse, as /healthz
    // does (the reason is in the log).
    if state.db_file.as_ref().is_some_and(|f| f.check().is_err()) {
        return http::json_error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    }
    let sender = match &state.sender {
        Ok(s) => s.clone(),
        Err(reason) => {
            return http::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("sending is not configured on this server: {reason}"),
            )
        }
    };
    let body = match http::read_body(req, MAX_SEND_BODY, state.limits.body_timeout, budget).await {
        Ok(b) => b,
        Err(e) => return e.response(true),
    };
    let send = match parse_send(&body, &sender.settings) {
        Ok(s) => s,
        Err(message) => return http::json_error(StatusCode::BAD_REQUEST, &message),
    };
    if !forced(&body) {
        let phone = send.phone.e164().to_string();
        match state.store.read(move |s| s.suppression(&phone)).await {
            Ok(None) => {}
            Ok(Some(held)) => {
                state
                    .metrics
                    .inc("flowctl_api_sends_total", "outcome=\"suppressed\"".into());
                // 409: the request is fine, the person's choice conflicts with it.
                let message = format!(
                    "{} is on the suppression list since {} ({}, from {}): nothing sent; \"force\": true sends anyway",
                    send.phone, held.at, held.reason, held.source
                );
                return http::json_error(StatusCode::CONFLICT, &message);
            }
            Err(e) => {
                tracing::error!(error = %e, "send-flow: cannot read the suppression list");
                return http::json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot read the suppression list",
                );
            }
        }
    }
    let outcome = send_one(
        &state.store,
        &sender.graph,
        &sender.settings.message,
        sender.settings.token_ttl,
        &sender.policy,
        send,
    )
    .await;
    match outcome {
        Ok(o) => {
            let label = match &o.error {
                None => "sent",
                Some(e) if e.outcome_unknown => "unknown",
                Some(_) => "failed",
            };
            state
                .metrics
                .inc("flowctl_api_sends_total", format!("outcome=\"{label}\""));
            let status = if o.success {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            match serde_json::to_value(&o) {
                Ok(v) => http::json(status, &v),
                Err(_) => http::json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
        Err(e) => {
            state
                .metrics
                .inc("flowctl_api_sends_total", "outcome=\"store_error\"".into());
            tracing::error!(error = %e, "send-flow: cannot record the send");
            http::json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot record the send in the database",
            )
        }
    }
}

/// Validates the `/api/send-flow` body; the error names the problem.
fn parse_send(body: &[u8], settings: &SendSettings) -> Result<SendRequest, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("body must be a JSON object".into());
    };
    let phone = match obj.get("phoneNumber") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("phoneNumber must be a string".into()),
        None => return Err("missing phoneNumber".into()),
    };
    let phone = Phone::parse(phone, settings.default_country).map_err(|e| e.to_string())?;
    let customer_name = optional_string(&obj, "customerName")?.filter(|n| !n.trim().is_empty());
    let campaign = optional_string(&obj, "campaign")?
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| DEFAULT_CAMPAIGN.to_string());
    let data = match obj.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err("data must be a JSON object".into()),
    };
    Ok(SendRequest {
        phone,
        customer_name,
        data,
        campaign,
        origin: Origin::Api,
    })
}

/// `"force": true` in a `/api/send-flow` body: send even to a suppressed number.
fn forced(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("force").and_then(Value::as_bool))
        .unwrap_or(false)
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// `GET /api/responses?since=&limit=&campaign=&cursor=`: matched completions (one per
/// token), newest first, with `next_cursor` for the following page (`null` at the end).
pub async fn responses(state: &Arc<AppState>, req: Request<Incoming>) -> Resp {
    if let Some(resp) = refusal(state, &req) {
        return resp;
    }
    let query = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(message) => return http::json_error(StatusCode::BAD_REQUEST, &message),
    };
    match state.store.read(move |s| s.api_responses(&query)).await {
        Ok(page) => {
            let items: Vec<Value> = page
                .responses
                .into_iter()
                .map(|r| {
                    json!({
                        "flow_token": r.flow_token,
                        "phone_number": r.phone_number,
                        "customer_name": r.customer_name,
                        "campaign": r.campaign,
                        "source": r.source,
                        "completed_at": r.completed_at,
                        "answers": r.answers,
                    })
                })
                .collect();
            let next = page.next.map(|(at, id)| encode_cursor(&at, id));
            http::json(
                StatusCode::OK,
                &json!({ "responses": items, "next_cursor": next }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "responses: store unavailable");
            http::json_error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

fn parse_query(query: Option<&str>) -> Result<ResponsesQuery, String> {
    let limit = match http::query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "invalid limit {s:?}: expected a whole number from 1 to {MAX_LIMIT}"
                ))
            }
        },
    };
    let since = match http::query_param(query, "since").filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => Some(crate::time::parse_since(&s).map_err(|e| format!("since: {e}"))?),
    };
    let after = match http::query_param(query, "cursor").filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => Some(decode_cursor(&c).ok_or_else(|| format!("invalid cursor {c:?}"))?),
    };
    let campaign = http::query_param(query, "campaign").filter(|s| !s.is_empty());
    Ok(ResponsesQuery {
        since,
        campaign,
        after,
        limit,
    })
}

/// The opaque cursor: base64url of `completed_at|id`.
fn encode_cursor(at: &str, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at}|{id}"))
}

fn decode_cursor(c: &str) -> Option<(String, i64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c.trim()).ok()?).ok()?;
    let (at, id) = raw.rsplit_once('|')?;
    Some((at.to_string(), id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let c = encode_cursor("2026-01-01T00:00:00.000Z", 42);
        assert_eq!(
            decode_cursor(&c),
            Some(("2026-01-01T00:00:00.000Z".into(), 42))
        );
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x|y")), None);
    }

    #[test]
    fn limit_is_bounded() {
        assert_eq!(parse_query(None).unwrap().limit, DEFAULT_LIMIT);
        assert!(parse_query(Some("limit=0")).is_err());
        assert!(parse_query(Some("limit=1001")).is_err());
        assert!(parse_query(Some("limit=abc")).is_err());
        assert_eq!(parse_query(Some("limit=1000")).unwrap().limit, 1000);
        assert!(parse_query(Some("since=yesterday-ish")).is_err());
    }

    #[test]
    fn keys_compare_exactly() {
        let k = crate::secret::Secret::new("abc");
        assert!(k.matches(b"abc"));
        assert!(!k.matches(b"abd"));
        assert!(!k.matches(b""));
    }
}
