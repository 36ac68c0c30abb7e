//! The common head of the two signed routes (`POST /api/flow`, `POST /api/message-webhook`):
//! read the whole body, then check `X-Hub-Signature-256` over its raw bytes before anything
//! else looks at it. Each route keeps its own answers, named in its [`SignedRoute`].

use hyper::body::Incoming;
use hyper::Request;

use super::http::{self, Body, BodyBudget, Resp};
use super::AppState;
use crate::crypto;

/// What differs between the signed routes: how a refusal is counted, logged and answered.
#[derive(Clone, Copy, Debug)]
pub struct SignedRoute {
    /// The `route` label of `flowctl_signature_failures_total`.
    pub metric_route: &'static str,
    /// How the refusal's log line names the route.
    pub log_name: &'static str,
    /// Body errors answered as `{"error": …}` rather than plain text.
    pub json_errors: bool,
    /// The answer to a missing or wrong signature.
    pub refusal: fn() -> Resp,
}

/// Reads `req`'s body (at most `limit` bytes) and checks its signature against every app
/// secret; with none configured (`--allow-unsigned`) the check is skipped. `Err` is the
/// answer to send: the body error's, or the route's refusal after counting and logging it.
pub async fn read_signed_body(
    state: &AppState,
    budget: &BodyBudget,
    req: Request<Incoming>,
    limit: usize,
    route: &SignedRoute,
) -> Result<Body, Resp> {
    let signature = req
        .headers()
        .get(crypto::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = http::read_body(req, limit, state.limits.body_timeout, budget)
        .await
        .map_err(|e| e.response(route.json_errors))?;
    if state.app_secrets.is_empty() {
        return Ok(body);
    }
    match crypto::verify_signature(&state.secret_bytes(), &body, signature.as_deref()) {
        Ok(()) => Ok(body),
        Err(e) => {
            state.metrics.inc(
                "flowctl_signature_failures_total",
                format!("route=\"{}\"", route.metric_route),
            );
            tracing::warn!(reason = %e, "{}: signature refused", route.log_name);
            Err((route.refusal)())
        }
    }
}
