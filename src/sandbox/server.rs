//! The hyper service: routing (messages and keys have their own files), the control plane
//! (`/_sandbox/…`), faults and latency.

use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::answer::{
    bytes_response, fault_answer, fault_name, graph_error, json_response, Answer, LogFields, Resp,
};
use super::errors;
use super::keys::{encryption, set_key_status};
use super::messages::messages;
use super::record::RecordedRequest;
use super::rules::Fault;
pub(crate) use super::state::State;
use super::validate::flow_token_of;

/// Request bodies larger than this are refused (the Graph API's own limits are far lower).
const MAX_BODY: usize = 1 << 20;

/// Error returned to hyper to drop a connection without an answer (`reset`, or a `hang`
/// released by shutdown).
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sandbox fault: connection dropped without an answer")
    }
}

impl std::error::Error for DropConnection {}

/// The service function: one request in, one answer (or a dropped connection) out.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    let started = Instant::now();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    // Control-plane routes: not Graph answers, so neither delayed nor logged.
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
        }
        (&Method::GET, ["_sandbox", "users"]) => {
            let stats = state
                .users
                .as_ref()
                .map(|u| u.stats.to_json())
                .unwrap_or(Value::Null);
            return Ok(json_response(StatusCode::OK, &stats));
        }
        (&Method::POST, ["_sandbox", "outage"]) => {
            let body = read_body(req).await;
            return Ok(set_outage(&state, body.as_deref()));
        }
        (&Method::GET, ["_sandbox", "outage"]) => {
            let current = *state.outage.lock().unwrap_or_else(PoisonError::into_inner);
            return Ok(json_response(
                StatusCode::OK,
                &json!({ "fault": current.map(fault_name) }),
            ));
        }
        (&Method::POST, ["_sandbox", "account"]) => {
            let body = read_body(req).await;
            return Ok(super::account::update(&state.account, body.as_deref()));
        }
        (&Method::GET, ["_sandbox", "cdn", name]) => {
            let (status, body) = state.cdn.get(name);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(bytes_response(status, "application/octet-stream", body));
        }
        (&Method::GET, ["_sandbox", "media", id]) => {
            // Like Meta's media URLs: only with the access token.
            let resp = match state.cdn.media_file(id) {
                _ if !has_bearer(&req) => {
                    bytes_response(StatusCode::UNAUTHORIZED, "text/plain", b"no token".to_vec())
                }
                Some(file) => bytes_response(StatusCode::OK, "application/octet-stream", file),
                None => bytes_response(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"no such media".to_vec(),
                ),
            };
            return Ok(resp);
        }
        (&Method::POST, ["_sandbox", "cdn"]) => {
            let body = read_body(req).await;
            let value: Value = body
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            return Ok(match state.cdn.configure(&value) {
                Ok(now) => json_response(StatusCode::OK, &now),
                Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            });
        }
        (&Method::POST, ["_sandbox", "templates"]) => {
            let body = read_body(req).await;
            return Ok(super::templates::control(&state.templates, body.as_deref()));
        }
        (&Method::GET, ["_sandbox", "flow-assets", id]) => {
            return Ok(super::flows_api::download(&state.flow_assets, id));
        }
        (&Method::POST, ["_sandbox", "inbound"]) => {
            let body = read_body(req).await;
            return Ok(super::inbound::inbound(&state, body.as_deref()).await);
        }
        (&Method::POST, ["_sandbox", "user-preferences"]) => {
            let body = read_body(req).await;
            return Ok(super::inbound::user_preferences(&state, body.as_deref()).await);
        }
        (&Method::POST, ["_sandbox", "flow-status"]) => {
            let body = read_body(req).await;
            return Ok(super::inbound::flow_status(&state, body.as_deref()).await);
        }
        (&Method::POST, ["_sandbox", "key-status"]) => {
            let body = read_body(req).await;
            return Ok(set_key_status(&state, body.as_deref()));
        }
        (&Method::GET, ["_sandbox", "requests"]) => {
            let body =
                serde_json::to_vec(&state.recorder.snapshot()).unwrap_or_else(|_| b"[]".to_vec());
            return Ok(bytes_response(StatusCode::OK, "application/json", body));
        }
        _ => {}
    }

    let (phone_number_id, route) = match segments.as_slice() {
        [v, id, route] if is_version(v) => (Some((*id).to_owned()), Some(*route)),
        [v, id] if is_version(v) => (Some((*id).to_owned()), None),
        _ => (None, None),
    };
    let authorized = has_bearer(&req);
    let query = req.uri().query().map(str::to_owned);
    let body_bytes = read_body(req).await;
    let body = body_value(&body_bytes);
    let mut log = LogFields::default();

    let outage = *state.outage.lock().unwrap_or_else(PoisonError::into_inner);
    let answer = if let Some(fault) = outage {
        log.to = body.get("to").and_then(Value::as_str).map(str::to_owned);
        log.flow_token = flow_token_of(&body);
        fault_answer(fault, &mut log)
    } else {
        let request = GraphRequest {
            method: &method,
            path: &path,
            route,
            phone_number_id: phone_number_id.as_deref(),
            query: query.as_deref(),
            authorized,
            raw: body_bytes.as_ref(),
            body: &body,
        };
        graph_answer(&state, request, &mut log).await
    };

    let status = match &answer {
        Answer::Reply(r) => Some(r.status().as_u16()),
        Answer::Hang | Answer::Reset => None,
    };
    state.recorder.push(RecordedRequest {
        at,
        method: method.to_string(),
        path,
        phone_number_id,
        to: log.to,
        flow_token: log.flow_token,
        status,
        wamid: log.wamid,
        error_code: log.error_code,
        body,
        probe: log.probe,
        fault: log.fault.map(str::to_owned),
    });

    match answer {
        Answer::Hang => {
            let mut shutdown = state.shutdown.clone();
            // Released only by shutdown (or by the client going away, which drops this future).
            let _ = shutdown.wait_for(|down| *down).await;
            Err(DropConnection)
        }
        Answer::Reset => {
            tokio::time::sleep_until(started + state.latency).await;
            Err(DropConnection)
        }
        Answer::Reply(resp) => {
            if !state.latency.is_zero() {
                tokio::time::sleep_until(started + state.latency).await;
            }
            Ok(resp)
        }
    }
}

/// One Graph API request, as the router sees it.
struct GraphRequest<'a> {
    method: &'a Method,
    path: &'a str,
    route: Option<&'a str>,
    phone_number_id: Option<&'a str>,
    query: Option<&'a str>,
    authorized: bool,
    raw: Option<&'a Bytes>,
    body: &'a Value,
}

/// The Graph routes: `/messages`, the encryption key, and the phone number's profile.
async fn graph_answer(state: &State, req: GraphRequest<'_>, log: &mut LogFields) -> Answer {
    let GraphRequest {
        method,
        path,
        route,
        phone_number_id,
        query,
        authorized,
        raw,
        body,
    } = req;
    match (method, route, phone_number_id) {
        (&Method::GET, None, Some("debug_token")) => {
            super::account::debug_token(&state.account, query, authorized, log)
        }
        (_, _, Some(id)) if !id.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() => {
            let message = format!(
                "(#100) Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation",
                method.as_str().to_ascii_lowercase()
            );
            graph_error(log, 100, &message)
        }
        (&Method::POST, Some("messages"), _) => messages(state, authorized, raw, body, log).await,
        (&Method::POST | &Method::GET, Some("whatsapp_business_encryption"), Some(id)) => {
            encryption(state, method, id, authorized, raw, log)
        }
        (_, Some("flows"), Some(_)) => {
            super::flows_api::waba_flows(&state.account, method, authorized, body, log)
        }
        (_, Some("message_templates"), Some(_)) => super::templates::edge(
            &state.account,
            &state.templates,
            method,
            query,
            authorized,
            body,
            log,
        ),
        (_, Some(edge @ ("assets" | "publish" | "deprecate")), Some(id)) => {
            let req = super::flows_api::EdgeRequest {
                method,
                id,
                edge,
                authorized,
                raw: raw.map(|b| b.as_ref()),
                base_url: &state.base_url,
            };
            super::flows_api::flow_edge(&state.account, &state.flow_assets, req, log)
        }
        (&Method::GET, None, Some(id)) if super::flows_api::is_preview_or_metric(query) => {
            super::flows_api::preview_or_metric(
                &state.account,
                &state.flow_assets,
                id,
                query,
                authorized,
                log,
            )
        }
        (&Method::POST | &Method::DELETE, None, Some(id)) => {
            match super::flows_api::flow_node(
                &state.account,
                &state.flow_assets,
                method,
                id,
                authorized,
                body,
                log,
            ) {
                Some(answer) => answer,
                None => graph_error(
                    log,
                    100,
                    &format!("(#100) Flow with specified ID does not exist: '{id}'"),
                ),
            }
        }
        (&Method::GET, None, Some(id)) => match state.cdn.media_url(id) {
            Some(_) if !authorized => graph_error(log, 190, "(#190) Invalid OAuth access token"),
            Some(found) => Answer::Reply(json_response(StatusCode::OK, &found)),
            None => super::account::node(&state.account, id, query, authorized, log),
        },
        _ => {
            let message = format!("(#100) Unsupported request: {method} {path}");
            log.error_code = Some(100);
            Answer::Reply(json_response(
                StatusCode::NOT_FOUND,
                &errors::envelope_with(100, &message),
            ))
        }
    }
}

/// `POST /_sandbox/outage {"fault": "http503" | "reset" | "hang" | CODE | null}`: starts or
/// ends an outage of the whole API (every Graph route, the harmless GETs included).
fn set_outage(state: &State, body: Option<&[u8]>) -> Resp {
    let value: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let fault = match value.get("fault") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "none" => Ok(None),
        Some(Value::String(s)) => super::rules::parse_fault(s).map(Some),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .map(|c| Some(Fault::GraphError(c)))
            .ok_or_else(|| format!("code {n} is not a Graph error code")),
        Some(other) => Err(format!("fault {other} must be a string, a code or null")),
    };
    match fault {
        Ok(fault) => {
            *state.outage.lock().unwrap_or_else(PoisonError::into_inner) = fault;
            tracing::info!(fault = fault.map(fault_name), "sandbox outage set");
            json_response(StatusCode::OK, &json!({ "fault": fault.map(fault_name) }))
        }
        Err(why) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("{why} (expected {{\"fault\": \"http503\" | \"reset\" | \"hang\" | CODE | null}})") }),
        ),
    }
}

fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = rest.split_once('.') else {
        return false;
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

fn has_bearer<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .is_some_and(|token| !token.trim().is_empty())
}

/// The body, or `None` when it could not be read (too large, connection error).
async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// The body as JSON, else as a string, else `null` when empty or unreadable.
fn body_value(bytes: &Option<Bytes>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) if b.is_empty() => Value::Null,
        Some(b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn versions() {
        assert!(is_version("v21.0"));
        assert!(is_version("v9.10"));
        assert!(!is_version("21.0"));
        assert!(!is_version("v21"));
        assert!(!is_version("vx.0"));
    }
}
