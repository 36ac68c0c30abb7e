//! The hyper service: routing, message handling, key upload, faults and latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::errors;
use super::notify::{self, Notifier, Status};
use super::record::{RecordedRequest, Recorder};
use super::rules::{ActiveRules, Fault, Hit, When};
use super::validate::{flow_token_of, validate_message};
use super::Probe;

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

/// Everything the service shares across connections.
pub(crate) struct State {
    pub(crate) latency: Duration,
    pub(crate) rules: ActiveRules,
    pub(crate) probe: Option<Probe>,
    pub(crate) recorder: Recorder,
    /// Uploaded business public keys by phone number id.
    pub(crate) keys: Mutex<HashMap<String, StoredKey>>,
    /// Simulated recipients, when the sandbox plays the user.
    pub(crate) users: Option<Arc<super::user::Users>>,
    /// Posts to the server under test's webhook.
    pub(crate) notifier: Arc<Notifier>,
    /// Delay before a `@status` failure is posted.
    pub(crate) status_delay: Duration,
    /// Becomes `true` when the sandbox shuts down; releases hanging requests.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// A whole-API outage set through `POST /_sandbox/outage`: every Graph request gets this
    /// fault (503, dropped connection, hang, or an error code) until it is cleared.
    pub(crate) outage: Mutex<Option<Fault>>,
}

/// A business public key the sandbox holds for one phone number.
pub(crate) struct StoredKey {
    pem: String,
    /// `business_public_key_signature_status` as GET reports it: `VALID` after an upload,
    /// `MISMATCH` once `POST /_sandbox/key-status` says so.
    signature_status: &'static str,
}

type Resp = Response<Full<Bytes>>;

/// Outcome of a handler: an answer, or a fault that replaces it.
enum Answer {
    Reply(Resp),
    Hang,
    Reset,
}

/// What a handler tells the router to log.
#[derive(Default)]
struct LogFields {
    to: Option<String>,
    flow_token: Option<String>,
    wamid: Option<String>,
    error_code: Option<u32>,
    fault: Option<&'static str>,
    probe: Option<Value>,
}

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
        authorized,
        raw,
        body,
    } = req;
    match (method, route, phone_number_id) {
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
        (&Method::GET, None, Some(id)) => phone_number(id, authorized, log),
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

async fn messages(
    state: &State,
    authorized: bool,
    raw: Option<&Bytes>,
    body: &Value,
    log: &mut LogFields,
) -> Answer {
    log.to = body.get("to").and_then(Value::as_str).map(str::to_owned);
    log.flow_token = flow_token_of(body);
    let (answer, later) = message_answer(state, authorized, raw, body, log);
    if let Some(probe) = &state.probe {
        log.probe = Some(run_probe(probe, body).await);
    }
    if let Some(later) = later {
        later_failure(state, later).await;
    }
    answer
}

/// A failure Meta reports on the status webhook after accepting the message.
struct LaterFailure {
    wamid: String,
    wa_id: String,
    code: u32,
    when: When,
    callback: Option<String>,
}

/// Posts the `failed` status of an accepted message: before the send's answer leaves
/// (`@early`, awaited, so the status overtakes the answer) or after the status delay.
async fn later_failure(state: &State, f: LaterFailure) {
    let notifier = Arc::clone(&state.notifier);
    let post = async move {
        let (title, details) = errors::describe(f.code);
        let event = notify::status_event(&Status {
            wamid: &f.wamid,
            wa_id: &f.wa_id,
            status: "failed",
            callback: f.callback.as_deref(),
            error: Some((f.code, title, details)),
        });
        if let Err(e) = notifier.post_webhook(&event).await {
            tracing::warn!(wamid = %f.wamid, error = %e, "sandbox: cannot post the failed status");
        }
    };
    if f.when == When::Early {
        post.await;
    } else {
        let delay = state.status_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            post.await;
        });
    }
}

fn message_answer(
    state: &State,
    authorized: bool,
    raw: Option<&Bytes>,
    body: &Value,
    log: &mut LogFields,
) -> (Answer, Option<LaterFailure>) {
    if !authorized {
        let answer = graph_error(
            log,
            190,
            "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header",
        );
        return (answer, None);
    }
    if raw.is_none() || body.is_string() || body.is_null() {
        let answer = graph_error(
            log,
            100,
            "(#100) Invalid parameter: body must be a JSON object (the request body is not valid JSON)",
        );
        return (answer, None);
    }
    let accepted = match validate_message(body) {
        Ok(a) => a,
        Err(invalid) => return (graph_error(log, invalid.code, &invalid.message), None),
    };
    let callback = body
        .get("biz_opaque_callback_data")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let wa_id = notify::wa_id_of(&accepted.to);
    let template = body.get("type").and_then(Value::as_str) == Some("template");
    match state.rules.check(&accepted.to, template) {
        Some(Hit {
            fault: Fault::GraphError(code),
            when: when @ (When::Status | When::Early),
            ..
        }) => {
            // Accepted now, failed later: the recipient never gets it.
            let wamid = next_wamid();
            log.wamid = Some(wamid.clone());
            log.fault = Some("failed_status");
            log.error_code = Some(code);
            let later = LaterFailure {
                wamid: wamid.clone(),
                wa_id: wa_id.clone(),
                code,
                when,
                callback,
            };
            (accepted_answer(&accepted.to, &wa_id, &wamid), Some(later))
        }
        Some(hit) => (hit_answer(hit, log), None),
        None => {
            let wamid = next_wamid();
            log.wamid = Some(wamid.clone());
            if let (Some(users), Some(token)) = (&state.users, &log.flow_token) {
                users.on_delivered(super::user::Delivered {
                    to: accepted.to.clone(),
                    wa_id: wa_id.clone(),
                    flow_token: token.clone(),
                    wamid: wamid.clone(),
                    callback,
                });
            }
            (accepted_answer(&accepted.to, &wa_id, &wamid), None)
        }
    }
}

/// The `200` answer of an accepted message: `contacts[].input` echoes the number sent to,
/// `wa_id` is the recipient's WhatsApp id, which may differ from it.
fn accepted_answer(to: &str, wa_id: &str, wamid: &str) -> Answer {
    Answer::Reply(json_response(
        StatusCode::OK,
        &json!({
            "messaging_product": "whatsapp",
            "contacts": [{ "input": to, "wa_id": wa_id }],
            "messages": [{ "id": wamid, "message_status": "accepted" }],
        }),
    ))
}

/// A rule's answer; a throughput error with `@regain=MIN` carries the business-use-case
/// header Meta puts on throttled answers (`X-Business-Use-Case-Usage`, whose
/// `estimated_time_to_regain_access` is in minutes:
/// <https://developers.facebook.com/docs/graph-api/overview/rate-limiting/>).
fn hit_answer(hit: Hit, log: &mut LogFields) -> Answer {
    let mut answer = fault_answer(hit.fault, log);
    if let (Answer::Reply(resp), Some(minutes)) = (&mut answer, hit.regain_minutes) {
        let usage = json!({ "102290129340398": [{
            "type": "whatsapp",
            "call_count": 100,
            "total_cputime": 100,
            "total_time": 100,
            "estimated_time_to_regain_access": minutes,
        }]});
        if let Ok(v) = HeaderValue::from_str(&usage.to_string()) {
            resp.headers_mut().insert("x-business-use-case-usage", v);
        }
    }
    answer
}

/// What a fault (a `--fail` rule's, or the outage's) answers instead of the Graph API.
fn fault_answer(fault: Fault, log: &mut LogFields) -> Answer {
    match fault {
        Fault::GraphError(code) => {
            log.error_code = Some(code);
            Answer::Reply(json_response(
                errors::status_for(code),
                &errors::envelope(code),
            ))
        }
        Fault::Http503 => {
            log.fault = Some("http503");
            Answer::Reply(bytes_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                b"Service Unavailable".to_vec(),
            ))
        }
        Fault::Hang => {
            log.fault = Some("hang");
            Answer::Hang
        }
        Fault::Reset => {
            log.fault = Some("reset");
            Answer::Reset
        }
    }
}

fn fault_name(fault: Fault) -> String {
    match fault {
        Fault::GraphError(code) => code.to_string(),
        Fault::Http503 => "http503".into(),
        Fault::Hang => "hang".into(),
        Fault::Reset => "reset".into(),
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

const SIGNATURE_VALID: &str = "VALID";
const SIGNATURE_MISMATCH: &str = "MISMATCH";

/// `POST /_sandbox/key-status {"status": "MISMATCH" | "VALID"}`: sets the
/// `business_public_key_signature_status` of every key uploaded so far, as Meta reports a key
/// whose signature no longer holds for its number; the next upload of a key makes it `VALID`.
fn set_key_status(state: &State, body: Option<&[u8]>) -> Resp {
    let value: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let status = match value.get("status").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case(SIGNATURE_MISMATCH) => SIGNATURE_MISMATCH,
        Some(s) if s.eq_ignore_ascii_case(SIGNATURE_VALID) => SIGNATURE_VALID,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "expected {\"status\": \"MISMATCH\" | \"VALID\"}" }),
            )
        }
    };
    let mut keys = state.keys.lock().unwrap_or_else(PoisonError::into_inner);
    for key in keys.values_mut() {
        key.signature_status = status;
    }
    tracing::info!(
        status,
        keys = keys.len(),
        "sandbox key signature status set"
    );
    json_response(
        StatusCode::OK,
        &json!({ "status": status, "keys": keys.len() }),
    )
}

/// `GET /{version}/{PHONE_NUMBER_ID}`: the phone number's profile, a harmless read.
fn phone_number(id: &str, authorized: bool, log: &mut LogFields) -> Answer {
    if !authorized {
        return graph_error(
            log,
            190,
            "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header",
        );
    }
    Answer::Reply(json_response(
        StatusCode::OK,
        &json!({
            "verified_name": "flowctl sandbox",
            "display_phone_number": "+1 555-0100",
            "quality_rating": "GREEN",
            "throughput": { "level": "STANDARD" },
            "id": id,
        }),
    ))
}

/// Runs the user's probe off the reactor: it may block (it typically queries SQLite).
async fn run_probe(probe: &Probe, body: &Value) -> Value {
    let probe = Arc::clone(probe);
    let body = body.clone();
    match tokio::task::spawn_blocking(move || probe(&body)).await {
        Ok(v) => v,
        Err(e) => json!({ "probe_panicked": e.to_string() }),
    }
}

fn encryption(
    state: &State,
    method: &Method,
    phone_number_id: &str,
    authorized: bool,
    raw: Option<&Bytes>,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(
            log,
            190,
            "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header",
        );
    }
    if method == Method::GET {
        let keys = state.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let data = match keys.get(phone_number_id) {
            Some(key) => json!([{
                "business_public_key": key.pem,
                "business_public_key_signature_status": key.signature_status,
            }]),
            None => json!([]),
        };
        return Answer::Reply(json_response(StatusCode::OK, &json!({ "data": data })));
    }
    let pem = raw.and_then(|b| {
        url::form_urlencoded::parse(b)
            .find(|(k, _)| k == "business_public_key")
            .map(|(_, v)| v.into_owned())
    });
    match pem {
        Some(pem) if is_rsa_2048_pem(&pem) => {
            state
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    phone_number_id.to_owned(),
                    // An upload signs the key for the number afresh, as Meta's does.
                    StoredKey {
                        pem,
                        signature_status: SIGNATURE_VALID,
                    },
                );
            Answer::Reply(json_response(StatusCode::OK, &json!({ "success": true })))
        }
        _ => graph_error(
            log,
            100,
            "(#100) Invalid parameter: business_public_key must be a valid 2048-bit RSA public key in PEM format",
        ),
    }
}

fn is_rsa_2048_pem(pem: &str) -> bool {
    rsa::PublicKey::from_public_key_pem(pem.trim()).is_ok_and(|k| k.size() == 256)
}

fn graph_error(log: &mut LogFields, code: u32, message: &str) -> Answer {
    log.error_code = Some(code);
    Answer::Reply(json_response(
        errors::status_for(code),
        &errors::envelope_with(code, message),
    ))
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

fn json_response(status: StatusCode, v: &Value) -> Resp {
    bytes_response(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A process-unique wamid: `wamid.` + base64 of (random per-process prefix, counter).
pub(crate) fn next_wamid() -> String {
    static PREFIX: OnceLock<[u8; 10]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 18];
    raw[..10].copy_from_slice(prefix);
    raw[10..].copy_from_slice(&n.to_be_bytes());
    format!(
        "wamid.HBgL{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
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

    #[test]
    fn wamids_are_distinct() {
        let a = next_wamid();
        let b = next_wamid();
        assert_ne!(a, b);
        assert!(a.starts_with("wamid."));
    }
}
