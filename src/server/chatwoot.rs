//! `POST /api/chatwoot-webhook/<CHATWOOT_WEBHOOK_SECRET>`: Flow submissions forwarded by an
//! inbox built on Chatwoot (Voom and others) that owns the business's WhatsApp webhook.
//!
//! Chatwoot's outgoing webhooks are its own JSON, not Meta's envelope, and carry no
//! `X-Hub-Signature-256`, so they cannot use `/api/message-webhook`. Two locks, both checked
//! before anything is stored:
//! - the secret in the URL (`CHATWOOT_WEBHOOK_SECRET`), compared in constant time; without it
//!   configured the route does not exist, and a wrong one is answered the same 404;
//! - when `CHATWOOT_SIGNING_SECRET` is set (the secret Chatwoot shows for the webhook), the
//!   signature Chatwoot adds to signed deliveries: `X-Chatwoot-Signature: sha256=` + hex
//!   HMAC-SHA256 of `{X-Chatwoot-Timestamp}.{raw body}` (Chatwoot's webhook object, field
//!   `secret`: "Signed webhook deliveries include `X-Chatwoot-Timestamp` and
//!   `X-Chatwoot-Signature`…", as mirrored in
//!   <https://raw.githubusercontent.com/api-evangelist/chatwoot/refs/heads/main/json-schema/webhook.json>).
//!   Older Chatwoot versions sign nothing; the URL secret is then the only lock. No freshness
//!   window is imposed on the timestamp: a replayed delivery can only repeat an event, and
//!   events are deduplicated by Chatwoot's message id.
//!
//! Unlike Meta's webhook, the work is done before answering: one transaction, well inside
//! Chatwoot's 5 s timeout (`lib/webhooks/trigger.rb`), and a database error answers 503 so
//! that nothing acknowledged is lost. Not confirmed: whether a Chatwoot version retries a
//! failed delivery (the `Webhooks::Trigger` read rescues and logs it, marking only API-inbox
//! and agent-bot messages failed); a retry is deduplicated, and without one the submission
//! stays in the Chatwoot conversation.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::http::{self, Resp};
use super::AppState;
use crate::chatwoot_events::{
    check_signature, parse_event, ChatwootEvent, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::store::{StatusInput, StoreError, WebhookCompletion, WebhookCompletionOutcome};

/// The route's prefix; the rest of the path is the secret.
pub const PREFIX: &str = "/api/chatwoot-webhook";

/// A Chatwoot message event is a few kilobytes; a Flow's answers stay far below this.
const MAX_CHATWOOT_BODY: usize = 1 << 20;

/// The same answer for a route that is off and a wrong secret: nothing tells a prober that
/// the route exists.
fn not_found() -> Resp {
    http::json_error(StatusCode::NOT_FOUND, "no such route")
}

/// Receives one Chatwoot webhook whose path carried `given` after [`PREFIX`].
pub async fn receive(
    state: &Arc<AppState>,
    budget: &http::BodyBudget,
    req: Request<Incoming>,
    given: &str,
) -> Resp {
    let Some(expected) = &state.chatwoot_secret else {
        return not_found();
    };
    if !expected.matches(given.as_bytes()) {
        state.metrics.inc(
            "flowctl_signature_failures_total",
            "route=\"/api/chatwoot-webhook\"".into(),
        );
        tracing::warn!("chatwoot webhook: wrong secret in the URL");
        return not_found();
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (timestamp, signature) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
    let body =
        match http::read_body(req, MAX_CHATWOOT_BODY, state.limits.body_timeout, budget).await {
            Ok(b) => b,
            Err(e) => return e.response(true),
        };
    if let Some(signing) = &state.chatwoot_signing_secret {
        if let Err(reason) = check_signature(
            signing.expose().as_bytes(),
            &body,
            timestamp.as_deref(),
            signature.as_deref(),
        ) {
            state.metrics.inc(
                "flowctl_signature_failures_total",
                "route=\"/api/chatwoot-webhook\"".into(),
            );
            tracing::warn!(%reason, "chatwoot webhook: signature refused");
            return http::json_error(StatusCode::UNAUTHORIZED, "invalid Chatwoot signature");
        }
    }
    let event = match parse_event(&body) {
        Ok(e) => e,
        Err(e) => {
            state.metrics.inc(
                "flowctl_chatwoot_events_total",
                "type=\"invalid_body\"".into(),
            );
            tracing::warn!(reason = %e, "chatwoot webhook: unusable event refused");
            return http::json_error(
                StatusCode::BAD_REQUEST,
                &format!("not a usable Chatwoot event: {e}"),
            );
        }
    };
    match apply(state, event).await {
        Ok(outcome) => http::json(StatusCode::OK, &json!({ "status": outcome })),
        Err(e) => {
            // Not acknowledged: Chatwoot's delivery fails and nothing is half-stored.
            tracing::error!(error = %e, "chatwoot webhook: cannot store the event");
            http::json_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable")
        }
    }
}

/// Stores what the event says; returns the word the answer carries.
async fn apply(state: &Arc<AppState>, event: ChatwootEvent) -> Result<&'static str, StoreError> {
    let metrics = &state.metrics;
    match event {
        ChatwootEvent::Completion {
            event_id,
            flow_token,
            answers,
            sender,
            completed_at,
        } => {
            metrics.inc(
                "flowctl_chatwoot_events_total",
                "type=\"flow_response\"".into(),
            );
            let outcome = state
                .store
                .call(move |s| {
                    s.forwarded_completion(
                        &WebhookCompletion {
                            flow_token: flow_token.as_deref(),
                            context_id: None,
                            answers: &answers,
                            sender: sender.as_deref(),
                            event_id: &event_id,
                            completed_at: &completed_at,
                        },
                        "chatwoot",
                    )
                })
                .await?;
            Ok(match outcome {
                WebhookCompletionOutcome::Stored { .. } => {
                    metrics.inc("flowctl_completions_total", "source=\"chatwoot\"".into());
                    "stored"
                }
                WebhookCompletionOutcome::Unmatched { id } => {
                    metrics.inc("flowctl_unmatched_completions_total", String::new());
                    tracing::warn!(
                        response_id = id,
                        "chatwoot webhook: Flow submission with an unknown token stored unmatched"
                    );
                    "unmatched"
                }
                WebhookCompletionOutcome::Duplicate => {
                    metrics.inc(
                        "flowctl_webhook_duplicates_total",
                        "type=\"chatwoot\"".into(),
                    );
                    "duplicate"
                }
            })
        }
        ChatwootEvent::Status {
            message_id,
            status,
            at,
        } => {
            metrics.inc("flowctl_chatwoot_events_total", "type=\"status\"".into());
            // Only the statuses of flowctl's own messages: Chatwoot reports every message
            // of the inbox, and an agent's messages are none of flowctl's business.
            state
                .store
                .call(move |s| {
                    if s.find_token_by_message_id(&message_id)?.is_none() {
                        return Ok("ignored");
                    }
                    s.record_status(&StatusInput {
                        message_id: &message_id,
                        status: &status,
                        at: &at,
                        recipient: None,
                        error_code: None,
                        error_title: None,
                        callback: None,
                        settle: None,
                    })?;
                    Ok("recorded")
                })
                .await
        }
        ChatwootEvent::Ignored { what } => {
            metrics.inc(
                "flowctl_chatwoot_events_total",
                format!("type=\"{}\"", crate::webhook_events::label(&what)),
            );
            tracing::debug!(what, "chatwoot webhook: event not handled by flowctl");
            Ok("ignored")
        }
    }
}
