//! `GET|POST /api/message-webhook`: Meta's verification handshake and the signed message
//! events (Flow completions, delivery statuses, Flow alerts).
//!
//! A POST is checked (signature over the raw bytes), stored in `webhook_inbox` with one
//! INSERT and answered 200; the inbox worker ([`super::inbox`]) does the work afterwards.
//! So Meta gets its 200 in the time of one small write, and nothing that was acknowledged
//! can be lost: a crash before processing leaves the row for the next start.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::http::{self, Resp};
use super::signed::{read_signed_body, SignedRoute};
use super::AppState;

/// Meta's payloads are at most 3 MB; a little headroom for the envelope.
pub const MAX_WEBHOOK_BODY: usize = 4 << 20;

/// The webhook's signature check: JSON answers, 403 on refusal.
const SIGNED: SignedRoute = SignedRoute {
    metric_route: "/api/message-webhook",
    log_name: "message webhook",
    json_errors: true,
    refusal: || http::json_error(StatusCode::FORBIDDEN, "invalid signature"),
};

/// Answers the verification GET: the `hub.challenge` as plain text when `hub.mode` is
/// `subscribe` and `hub.verify_token` is ours; 403 otherwise, and always 403 when no
/// `WEBHOOK_VERIFY_TOKEN` is configured.
pub fn verify(state: &AppState, query: Option<&str>) -> Resp {
    let forbidden = || http::text(StatusCode::FORBIDDEN, "verification failed");
    let Some(expected) = &state.verify_token else {
        tracing::warn!("webhook verification refused: WEBHOOK_VERIFY_TOKEN is not set");
        return forbidden();
    };
    let mode = http::query_param(query, "hub.mode");
    let given = http::query_param(query, "hub.verify_token").unwrap_or_default();
    let challenge = http::query_param(query, "hub.challenge");
    // Constant time, and a token of another length takes as long as a near miss.
    let token_ok = expected.matches(given.as_bytes());
    match (mode.as_deref(), token_ok, challenge) {
        (Some("subscribe"), true, Some(challenge)) => http::text(StatusCode::OK, challenge),
        _ => {
            tracing::warn!("webhook verification refused: wrong mode, token or no challenge");
            forbidden()
        }
    }
}

/// Receives one signed notification: 403 (nothing stored) for a missing or wrong
/// signature, otherwise stored in the inbox and 200.
pub async fn receive(
    state: &Arc<AppState>,
    budget: &http::BodyBudget,
    req: Request<Incoming>,
) -> Resp {
    let limit = state.limits.max_body.max(MAX_WEBHOOK_BODY);
    let body = match read_signed_body(state, budget, req, limit, &SIGNED).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let bytes = Bytes::clone(&body);
    match state.store.call(move |s| s.insert_inbox(&bytes)).await {
        Ok(id) => {
            state.inbox.notify_one();
            tracing::debug!(inbox_id = id, "message webhook: stored");
            http::json(StatusCode::OK, &serde_json::json!({ "status": "received" }))
        }
        Err(e) => {
            // Not acknowledged, so Meta retries later: nothing is lost.
            tracing::error!(error = %e, "message webhook: cannot store the notification");
            http::json_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable")
        }
    }
}
