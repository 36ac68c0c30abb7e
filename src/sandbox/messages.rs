//! `POST /{v}/{id}/messages`: validation, the `--fail` rules, the accepted answer (with the
//! recipient's WhatsApp id), failures reported later on the status webhook, and the simulated
//! recipient's start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::answer::{fault_answer, graph_error, json_response, Answer, LogFields};
use super::errors;
use super::notify::{self, Status};
use super::rules::{Fault, Hit, When};
use super::state::State;
use super::validate::{flow_token_of, validate_message};
use super::Probe;

pub(super) async fn messages(
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
    if body.get("type").and_then(Value::as_str) == Some("template") {
        if let Err((code, message)) = super::templates::check_send(&state.templates, body) {
            return (graph_error(log, code, &message), None);
        }
    }
    let callback = body
        .get("biz_opaque_callback_data")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let wa_id = notify::wa_id_of(&accepted.to);
    let template = body.get("type").and_then(Value::as_str) == Some("template");
    let flow_id = body
        .pointer("/interactive/action/parameters/flow_id")
        .and_then(Value::as_str);
    if let Some(code) = flow_id.and_then(|id| {
        state
            .account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flow_send_refusal(id)
    }) {
        let (title, _) = super::errors::describe(code);
        return (graph_error(log, code, &format!("(#{code}) {title}")), None);
    }
    if let Some(t) = &state.throughput {
        if !t.admit() {
            let answer = graph_error(
                log,
                130429,
                "(#130429) Rate limit hit: Cloud API message throughput has been reached",
            );
            return (answer, None);
        }
    }
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

/// Runs the user's probe off the reactor: it may block (it typically queries SQLite).
async fn run_probe(probe: &Probe, body: &Value) -> Value {
    let probe = Arc::clone(probe);
    let body = body.clone();
    match tokio::task::spawn_blocking(move || probe(&body)).await {
        Ok(v) => v,
        Err(e) => json!({ "probe_panicked": e.to_string() }),
    }
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
    fn wamids_are_distinct() {
        let a = next_wamid();
        let b = next_wamid();
        assert_ne!(a, b);
        assert!(a.starts_with("wamid."));
    }
}
