//! `POST /api/flow`: the encrypted Flow data endpoint.
//!
//! Order of checks, each with its status (and nothing else ever answered):
//! 413 body over the limit, 400 body cut short or not received within the body timeout,
//! 503 (with `Retry-After`) no memory left for a large body during a flood → 432 bad or missing signature (raw bytes, before anything else)
//! → 400 body not the encrypted envelope → 421 cannot be decrypted → 400 decrypted payload
//! not a request → 200 ping / error notification acknowledged → 427 unknown or expired token,
//! or a completed one opened again → 200 the same SUCCESS for a completed token's final submit
//! sent again → 200 next screen or SUCCESS; 500 when the database fails. With `--forward`
//! the handler decides the screen after the token checks (see `forward`): 427 when it
//! refuses the token, 500 when it cannot answer.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::forward::{Decision, Forwarded, Forwarder};
use super::http::{self, Resp};
use super::signed::{read_signed_body, SignedRoute};
use super::AppState;
use crate::crypto::{self, EncryptedRequest, ResponseKey};
use crate::flow_json::{Exchange, NEXT_SCREEN, TRIGGER};
use crate::store::{Completion, CompletionInput, TokenRecord};

/// The decrypted request (data_api_version 3.0, and 4.0 with its `flow_token_signature`).
#[derive(Debug, Deserialize)]
struct FlowRequest {
    version: Option<String>,
    action: String,
    screen: Option<String>,
    data: Option<Map<String, Value>>,
    flow_token: Option<String>,
    /// Data API 4.0: a JWT binding the request to its flow token (see [`crypto::jwt`]).
    flow_token_signature: Option<String>,
}

/// What the endpoint answers, before encryption.
#[derive(Debug, PartialEq)]
enum Reply {
    /// 200 or 427 with an encrypted JSON body.
    Encrypted(StatusCode, Value),
    /// Any other status, with a short plain body.
    Plain(StatusCode, &'static str),
}

/// The data endpoint's signature check: plain-text answers, 432 on refusal.
const SIGNED: SignedRoute = SignedRoute {
    metric_route: "/api/flow",
    log_name: "data endpoint",
    json_errors: false,
    refusal: || {
        http::text(
            StatusCode::from_u16(432).unwrap_or(StatusCode::FORBIDDEN),
            "invalid signature",
        )
    },
};

/// Handles one request to the data endpoint.
pub async fn handle(
    state: &Arc<AppState>,
    budget: &http::BodyBudget,
    req: Request<Incoming>,
) -> Resp {
    let limit = state.limits.max_body;
    let body = match read_signed_body(state, budget, req, limit, &SIGNED).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let envelope = match EncryptedRequest::from_json(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(reason = %e, "data endpoint: not an encrypted envelope");
            return http::text(
                StatusCode::BAD_REQUEST,
                "body is not an encrypted Flow request",
            );
        }
    };
    let opened = match open(state, envelope).await {
        Ok(d) => d,
        Err(stage) => {
            state.metrics.inc(
                "flowctl_decrypt_failures_total",
                format!("stage=\"{stage}\""),
            );
            tracing::warn!(stage, "data endpoint: cannot decrypt");
            return http::text(StatusCode::MISDIRECTED_REQUEST, "cannot decrypt request");
        }
    };
    let reply = match (opened.reply, opened.request) {
        (Some(reply), _) => reply,
        (None, Some(request)) => answer(state, request, opened.record).await,
        (None, None) => Reply::Plain(
            StatusCode::BAD_REQUEST,
            "decrypted payload is not a Flow request",
        ),
    };
    render(&opened.key, reply)
}

/// A request after its RSA thread is done with it.
struct Opened {
    /// What the reply is encrypted with.
    key: ResponseKey,
    /// The decrypted request (`None`: the payload is not one).
    request: Option<FlowRequest>,
    /// Its token's record, looked up on the RSA thread right after decryption when the
    /// database is local (see [`prefetch`]); `None`: not looked up yet.
    record: Option<Lookup>,
    /// The reply, when the RSA thread could give it (see [`answer_inline`]); `None`:
    /// [`answer`] decides.
    reply: Option<Reply>,
}

/// The outcome of a token lookup.
type Lookup = crate::store::Result<Option<TokenRecord>>;

/// Runs the RSA work off the main runtime (see `rsa_pool`): in this task on a connection the
/// RSA lane serves, else on a dedicated RSA thread. That work is the decryption, the parse,
/// and on a local database the token lookup (see [`prefetch`]). "RSA thread" below means
/// either.
async fn open(state: &Arc<AppState>, envelope: EncryptedRequest) -> Result<Opened, &'static str> {
    let Some(key) = state.key.clone() else {
        return Err("no_private_key");
    };
    let shared = state.clone();
    state
        .rsa
        .run(move || {
            let decrypted = crypto::decrypt_request(&key, &envelope).map_err(|e| e.stage())?;
            let request = serde_json::from_slice::<FlowRequest>(&decrypted.plaintext).ok();
            let record = request.as_ref().and_then(|r| prefetch(&shared.store, r));
            let reply = match (&request, &record) {
                (Some(req), Some(Ok(Some(found)))) => answer_inline(&shared, req, found),
                _ => None,
            };
            Ok(Opened {
                key: decrypted.key,
                request,
                record,
                reply,
            })
        })
        .await
        .unwrap_or(Err("task_failed"))
}

/// The token lookup a request will need, done on the RSA thread that just decrypted it, when
/// the database is local (SQLite): the lookup then takes microseconds, less than a hand-off to
/// the blocking pool and back, which under 64 connections cost `INIT` a fifth of its rate.
/// On a network database (or with every read handle busy) it returns `None` and [`answer`]
/// looks the token up on the blocking pool: an RSA thread never waits on the network.
/// Reading ahead changes nothing a client sees: the checks [`answer`] makes before its
/// lookup (the token signature) still decide first.
fn prefetch(store: &crate::store::SharedStore, req: &FlowRequest) -> Option<Lookup> {
    if req.action == "ping" || is_error_notification(req) {
        return None;
    }
    let token = req.flow_token.as_deref().filter(|t| !t.is_empty())?;
    store.read_inline(|s| s.find_token(token))
}

/// The reply to a screen's submit, given on the RSA thread right after [`prefetch`] when it
/// needs nothing but a local write the writer is free for: a `data_exchange` under built-in
/// routing that either stays on its screen (a refresh, a refused submit: no write) or stores
/// its answers and moves to the next screen. The answers are committed before the reply
/// exists, as on the blocking pool. `None` for anything else (a token signature to check,
/// files to queue, the completion, forward mode, a busy writer): [`answer`] handles it, and
/// nothing here has been counted or stored for it. Nor does it wait: when another process
/// holds the SQLite file's write lock (a `bulk` run), the write gives up at once and the
/// request goes the general way, which waits for the lock on the blocking pool (see
/// `SharedStore::write_inline`).
fn answer_inline(state: &AppState, req: &FlowRequest, record: &TokenRecord) -> Option<Reply> {
    if req.action != "data_exchange"
        || req.flow_token_signature.is_some()
        || state.forward.is_some()
        || state.flow.is_none()
        || record.completed_at.is_some()
        || record.is_expired(crate::time::Timestamp::now())
    {
        return None;
    }
    let current = req.screen.as_deref()?;
    let mut data = req.data.clone().unwrap_or_default();
    let next = match route(state, record, current, &data) {
        Route::Again(reply) => return Some(reply),
        Route::Next(None) => return None,
        Route::Next(Some(next)) => next,
    };
    data.remove(TRIGGER);
    if !crate::media::find(&data).is_empty() {
        return None;
    }
    let token = record.token.as_str();
    let stored = state
        .store
        .write_inline(|s| s.merge_screen_answers(token, Some(current), &data))?;
    Some(match stored {
        Ok(merged) => Reply::Encrypted(
            StatusCode::OK,
            json!({ "screen": next, "data": screen_data(state, &next, record, &merged) }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "data endpoint: cannot store answers");
            unavailable()
        }
    })
}

/// The client reports an error it met on a screen (`data.error` or `data.error_key`).
fn is_error_notification(req: &FlowRequest) -> bool {
    req.data
        .as_ref()
        .is_some_and(|d| d.contains_key("error") || d.contains_key("error_key"))
}

fn render(key: &ResponseKey, reply: Reply) -> Resp {
    match reply {
        Reply::Encrypted(status, value) => http::with_body(
            status,
            "text/plain",
            crypto::encrypt_response(key, value.to_string().as_bytes()),
        ),
        Reply::Plain(status, text) => http::text(status, text),
    }
}

fn token_invalid(message: &str) -> Reply {
    Reply::Encrypted(
        StatusCode::from_u16(427).unwrap_or(StatusCode::BAD_REQUEST),
        json!({ "error_msg": message }),
    )
}

/// The database failed: 500, so the client may retry; never 427, which would disable the
/// Flow in the user's chat for good.
fn unavailable() -> Reply {
    Reply::Plain(StatusCode::INTERNAL_SERVER_ERROR, "temporarily unavailable")
}

async fn answer(state: &Arc<AppState>, req: FlowRequest, prefetched: Option<Lookup>) -> Reply {
    if req.action == "ping" {
        return Reply::Encrypted(StatusCode::OK, json!({"data": {"status": "active"}}));
    }
    if let Err(reply) = check_token_signature(state, &req) {
        return reply;
    }
    if let Some(data) = req.data.as_ref().filter(|_| is_error_notification(&req)) {
        let detail = json!({ "action": req.action, "screen": req.screen, "data": data });
        let token = req.flow_token.clone();
        if let Err(e) = state
            .store
            .call(move |s| s.record_event("error_notification", token.as_deref(), None, &detail))
            .await
        {
            tracing::error!(error = %e, "cannot store an error notification");
        }
        state
            .metrics
            .inc("flowctl_error_notifications_total", String::new());
        return Reply::Encrypted(StatusCode::OK, json!({"data": {"acknowledged": true}}));
    }
    let Some(token) = req.flow_token.clone().filter(|t| !t.is_empty()) else {
        return Reply::Plain(StatusCode::BAD_REQUEST, "flow_token missing");
    };
    let lookup = match prefetched {
        Some(done) => done,
        None => state.store.read(move |s| s.find_token(&token)).await,
    };
    let record = match lookup {
        Ok(Some(r)) => r,
        Ok(None) => return token_invalid("This link is not valid."),
        Err(e) => {
            tracing::error!(error = %e, "data endpoint: store unavailable");
            return unavailable();
        }
    };
    if record.completed_at.is_some() {
        return already_completed(state, &record, &req).await;
    }
    if record.is_expired(crate::time::Timestamp::now()) {
        return token_invalid("This form has expired.");
    }
    if let Some(forwarder) = &state.forward {
        return forwarded(state, forwarder, record, req).await;
    }
    match req.action.as_str() {
        "INIT" => first_screen(state, &record),
        "BACK" => {
            let previous = req.screen.as_deref().and_then(|s| {
                state
                    .flow
                    .as_ref()
                    .and_then(|f| f.previous_screen(s))
                    .map(|p| p.id.clone())
            });
            match previous {
                Some(id) => screen_reply(state, &id, &record),
                None => first_screen(state, &record),
            }
        }
        "data_exchange" => submit(state, record, req.screen, req.data.unwrap_or_default()).await,
        _ => Reply::Plain(StatusCode::BAD_REQUEST, "unknown action"),
    }
}

/// Data API 4.0: a request carrying a `flow_token_signature` is answered only when the JWT
/// is signed with the app secret for this request's flow token; otherwise 432, the status
/// Meta documents for a request whose signature check fails (the docs found name none for
/// this JWT). Without an app secret (`--allow-unsigned`) nothing can be checked.
fn check_token_signature(state: &AppState, req: &FlowRequest) -> Result<(), Reply> {
    let (Some(jwt), Some(token)) = (&req.flow_token_signature, &req.flow_token) else {
        return Ok(());
    };
    let secrets = state.secret_bytes();
    if secrets.is_empty() {
        state.metrics.inc(
            "flowctl_token_signatures_total",
            "outcome=\"unchecked\"".into(),
        );
        return Ok(());
    }
    let now = crate::time::Timestamp::now().as_datetime().timestamp();
    match crypto::jwt::verify_flow_token(jwt, token, &secrets, now) {
        Ok(()) => {
            state
                .metrics
                .inc("flowctl_token_signatures_total", "outcome=\"valid\"".into());
            Ok(())
        }
        Err(e) => {
            state.metrics.inc(
                "flowctl_token_signatures_total",
                format!("outcome=\"refused\",reason=\"{}\"", e.reason()),
            );
            tracing::warn!(
                reason = e.reason(),
                "data endpoint: flow_token_signature refused"
            );
            Err(Reply::Plain(
                StatusCode::from_u16(432).unwrap_or(StatusCode::FORBIDDEN),
                "invalid flow_token_signature",
            ))
        }
    }
}

/// Forward mode: the business's handler decides what comes next; flowctl stores the answers
/// and the completion as it does with built-in routing. A handler that cannot answer gives
/// 500 (retried by the client), never 427.
async fn forwarded(
    state: &Arc<AppState>,
    forwarder: &Forwarder,
    record: TokenRecord,
    req: FlowRequest,
) -> Reply {
    let request = Forwarded {
        version: req.version.as_deref(),
        action: &req.action,
        screen: req.screen.as_deref(),
        data: req.data.as_ref(),
    };
    let decision = match forwarder.call(&record, &request).await {
        Ok(d) => d,
        Err(failure) => {
            state.metrics.inc(
                "flowctl_forward_failures_total",
                format!("reason=\"{}\"", failure.reason()),
            );
            tracing::error!(reason = failure.reason(), handler = %forwarder.origin(), "forward: no usable answer from the handler");
            return unavailable();
        }
    };
    state.metrics.inc(
        "flowctl_forward_requests_total",
        format!("outcome=\"{}\"", decision.outcome()),
    );
    let (screen, data) = (req.screen, req.data.unwrap_or_default());
    match decision {
        Decision::TokenInvalid { message } => token_invalid(&message),
        Decision::Screen {
            screen: next,
            data: shown,
        } => {
            if !data.is_empty() {
                if let Err(reply) = store_answers(state, &record, screen, data).await {
                    return reply;
                }
            }
            Reply::Encrypted(StatusCode::OK, json!({ "screen": next, "data": shown }))
        }
        Decision::Complete { answers } => {
            let mut merged = match store_answers(state, &record, screen, data).await {
                Ok(m) => m,
                Err(reply) => return reply,
            };
            // The handler's answers win over what was collected screen by screen; a file
            // descriptor it echoes back keeps no keys, as with built-in routing.
            merged.extend(crate::media::without_keys(answers));
            complete(state, record, merged).await
        }
    }
}

/// Merges one screen's answers into the token's; returns the answers so far. A `trigger`
/// field only marks a refresh (see [`crate::flow_json`]): it is never an answer.
async fn store_answers(
    state: &Arc<AppState>,
    record: &TokenRecord,
    screen: Option<String>,
    mut data: Map<String, Value>,
) -> Result<Map<String, Value>, Reply> {
    data.remove(TRIGGER);
    let token = record.token.to_string();
    // Attached files are queued for download; the stored answers keep no keys.
    let data = super::media::take_files(state, &token, data)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "data endpoint: cannot queue the media");
            unavailable()
        })?;
    state
        .store
        .call(move |s| s.merge_screen_answers(&token, screen.as_deref(), &data))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "data endpoint: cannot store answers");
            unavailable()
        })
}

fn first_screen(state: &AppState, record: &TokenRecord) -> Reply {
    let id = match (&state.flow, &state.first_screen) {
        (Some(f), _) => f.entry_screen().id.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            tracing::error!("INIT received but neither --flow-json nor FLOW_SCREEN says which screen comes first");
            return Reply::Plain(StatusCode::BAD_REQUEST, "no first screen configured");
        }
    };
    screen_reply(state, &id, record)
}

fn screen_reply(state: &AppState, id: &str, record: &TokenRecord) -> Reply {
    let selections = record.flow_answers.clone().unwrap_or_default();
    Reply::Encrypted(
        StatusCode::OK,
        json!({ "screen": id, "data": screen_data(state, id, record, &selections) }),
    )
}

/// The data to show screen `id` with: with a Flow JSON, the recipient's values for the keys
/// the screen declares and the lists of `--flow-data` (a dependent list chosen by
/// `selections`); without one, the recipient's data.
fn screen_data(
    state: &AppState,
    id: &str,
    record: &TokenRecord,
    selections: &Map<String, Value>,
) -> Map<String, Value> {
    let personal = personal_data(record);
    match state
        .flow
        .as_ref()
        .and_then(|f| f.screen(id).map(|s| (f, s)))
    {
        Some((flow, screen)) => flow.screen_data(screen, Some(&personal), selections),
        None => personal,
    }
}

/// The recipient's initial data, plus their name, for the screens' `${data.…}` references.
fn personal_data(record: &TokenRecord) -> Map<String, Value> {
    let mut data = record.initial_data.clone().unwrap_or_default();
    if let Some(name) = &record.customer_name {
        data.entry("customer_name")
            .or_insert_with(|| Value::String(name.clone()));
    }
    data
}

/// The same screen again, with its data refreshed for what was selected so far and, for a
/// refused submit, the `error_message` Meta shows on it.
fn same_screen(
    state: &AppState,
    id: &str,
    record: &TokenRecord,
    data: &Map<String, Value>,
    error: Option<String>,
) -> Reply {
    let mut selections = record.flow_answers.clone().unwrap_or_default();
    selections.extend(data.clone());
    let mut shown = screen_data(state, id, record, &selections);
    let kind = match error {
        Some(message) => {
            shown.insert("error_message".into(), Value::String(message));
            "invalid"
        }
        None => "refresh",
    };
    state
        .metrics
        .inc("flowctl_same_screen_total", format!("kind=\"{kind}\""));
    Reply::Encrypted(StatusCode::OK, json!({ "screen": id, "data": shown }))
}

/// Where built-in routing leads a `data_exchange` from `current` (see [`crate::flow_json`]).
enum Route {
    /// Answer this screen (a refresh, or a refused submit) without storing anything.
    Again(Reply),
    /// Store the answers, then show this screen (`None`: complete the Flow).
    Next(Option<String>),
}

fn route(
    state: &AppState,
    record: &TokenRecord,
    current: &str,
    data: &Map<String, Value>,
) -> Route {
    let Some(flow) = &state.flow else {
        // Without a Flow JSON (`FLOW_SCREEN`): a one-screen Flow, every submit completes it.
        return Route::Next(None);
    };
    let Some(screen) = flow.screen(current) else {
        return Route::Again(Reply::Plain(
            StatusCode::BAD_REQUEST,
            "screen not in the Flow's routing model",
        ));
    };
    if flow.exchange_kind(screen, data) == Exchange::Refresh {
        return Route::Again(same_screen(state, current, record, data, None));
    }
    let missing = screen.missing_required(data);
    if !missing.is_empty() {
        let message = format!("Please fill in: {}.", missing.join(", "));
        return Route::Again(same_screen(state, current, record, data, Some(message)));
    }
    let successors = flow.successors(current);
    if successors.len() > 1 {
        let named = data
            .get(NEXT_SCREEN)
            .and_then(Value::as_str)
            .filter(|n| successors.iter().any(|s| s == n));
        return match named {
            Some(next) => Route::Next(Some(next.to_string())),
            None => Route::Again(same_screen(
                state,
                current,
                record,
                data,
                Some("Please choose one of the options.".into()),
            )),
        };
    }
    Route::Next(successors.first().cloned())
}

async fn submit(
    state: &Arc<AppState>,
    record: TokenRecord,
    screen: Option<String>,
    data: Map<String, Value>,
) -> Reply {
    let next = match screen.as_deref() {
        Some(current) => match route(state, &record, current, &data) {
            Route::Again(reply) => return reply,
            Route::Next(next) => next,
        },
        None if state.flow.is_some() => {
            return Reply::Plain(StatusCode::BAD_REQUEST, "data_exchange without screen")
        }
        None => None,
    };
    let merged = match store_answers(state, &record, screen, data).await {
        Ok(m) => m,
        Err(reply) => return reply,
    };
    if let Some(id) = next {
        return Reply::Encrypted(
            StatusCode::OK,
            json!({ "screen": id, "data": screen_data(state, &id, &record, &merged) }),
        );
    }
    complete(state, record, merged).await
}

/// The `SUCCESS` screen that closes the Flow. Its params come back in the completion message's
/// `response_json`, which Meta delivers to every app subscribed to the account's webhook: by
/// default they carry only the `flow_token` (what joins the completion), the answers only with
/// `--success-answers`.
fn success(state: &AppState, record: &TokenRecord, answers: &Map<String, Value>) -> Reply {
    let mut params = Map::new();
    params.insert("flow_token".into(), Value::String(record.token.to_string()));
    if state.success_answers {
        for (k, v) in answers {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Reply::Encrypted(
        StatusCode::OK,
        json!({ "screen": "SUCCESS", "data": { "extension_message_response": { "params": params } } }),
    )
}

/// A request for a token that is already completed. The final submit again — the client lost
/// the `SUCCESS` answer and retried — gets the same `SUCCESS` (200): a 427 would disable the
/// button and tell the person the form failed although their answers were saved. Anything
/// else (opening the finished form again, a screen in the middle) is 427.
async fn already_completed(
    state: &Arc<AppState>,
    record: &TokenRecord,
    req: &FlowRequest,
) -> Reply {
    let final_submit = req.action == "data_exchange"
        && match (&state.flow, req.screen.as_deref()) {
            (Some(flow), Some(screen)) => {
                let data = req.data.clone().unwrap_or_default();
                matches!(flow.next_screen(screen, &data), Ok(None))
            }
            (Some(_), None) => false,
            // Without a Flow JSON every data_exchange is the final submit.
            (None, _) => true,
        };
    if !final_submit {
        return token_invalid("This form was already completed. Thank you!");
    }
    let answers = if state.success_answers {
        let token = record.token.to_string();
        match state
            .store
            .read(move |s| s.responses_for_token(&token))
            .await
        {
            Ok(responses) => responses
                .into_iter()
                .next()
                .map(|r| r.answers)
                .unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "data endpoint: store unavailable");
                return unavailable();
            }
        }
    } else {
        Map::new()
    };
    state
        .metrics
        .inc("flowctl_completion_replays_total", String::new());
    success(state, record, &answers)
}

async fn complete(
    state: &Arc<AppState>,
    record: TokenRecord,
    answers: Map<String, Value>,
) -> Reply {
    let token = record.token.to_string();
    let stored_answers = answers.clone();
    let outcome = state
        .store
        .call(move |s| {
            s.complete(&CompletionInput {
                token: &token,
                answers: &stored_answers,
                source: "endpoint",
                sender: None,
                event_id: None,
                completed_at: &crate::time::now(),
            })
        })
        .await;
    match outcome {
        Ok(Completion::Stored(_)) => {
            tracing::info!(source = "endpoint", campaign = %record.campaign, "completion stored");
            state
                .metrics
                .inc("flowctl_completions_total", "source=\"endpoint\"".into());
            success(state, &record, &answers)
        }
        Ok(Completion::AlreadyCompleted) | Ok(Completion::UnknownToken) => {
            token_invalid("This form was already completed. Thank you!")
        }
        Err(e) => {
            tracing::error!(error = %e, "data endpoint: cannot store the completion");
            unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SendState, SharedStore, Store};

    /// A store holding one sent token, and that token.
    fn store_with_token(dir: &std::path::Path) -> (Store, String) {
        let mut store = Store::open(dir.join("s.db")).unwrap();
        let token = crate::token::FlowToken::generate();
        let new = crate::store::NewToken {
            token: token.clone(),
            phone: crate::phone::Phone::parse("+212610059159", None).unwrap(),
            customer_name: None,
            campaign: "c".into(),
            origin: crate::store::Origin::Send,
            initial_data: None,
            ttl: std::time::Duration::from_secs(3600),
        };
        store.insert_token(&new, SendState::Sent).unwrap();
        (store, token.as_str().to_string())
    }

    fn request(action: &str, token: Option<&str>, data: Option<Value>) -> FlowRequest {
        FlowRequest {
            version: Some("3.0".into()),
            action: action.into(),
            screen: None,
            data: data.and_then(|d| d.as_object().cloned()),
            flow_token: token.map(str::to_string),
            flow_token_signature: None,
        }
    }

    #[test]
    fn a_local_database_is_read_ahead_for_the_requests_that_look_their_token_up() {
        let dir = tempfile::tempdir().unwrap();
        let (store, token) = store_with_token(dir.path());
        let local = SharedStore::with_inline_reads(store, Some(1));

        for action in ["INIT", "BACK", "data_exchange"] {
            let found = prefetch(&local, &request(action, Some(&token), None))
                .expect("looked up on this thread")
                .unwrap();
            assert_eq!(
                found.expect("known token").token.as_str(),
                token,
                "{action}"
            );
        }
        let unknown = prefetch(&local, &request("INIT", Some("flow_unknown"), None));
        assert!(matches!(unknown, Some(Ok(None))));

        // Nothing to look up: a ping, an error notification, no token.
        assert!(prefetch(&local, &request("ping", Some(&token), None)).is_none());
        let error = Some(json!({"error": "boom"}));
        assert!(prefetch(&local, &request("data_exchange", Some(&token), error)).is_none());
        assert!(prefetch(&local, &request("INIT", Some(""), None)).is_none());
        assert!(prefetch(&local, &request("INIT", None, None)).is_none());
    }

    #[test]
    fn a_network_database_is_never_read_on_the_rsa_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (store, token) = store_with_token(dir.path());
        // What `serve` builds for a postgres:// database.
        let remote = SharedStore::with_inline_reads(store, None);
        assert!(prefetch(&remote, &request("INIT", Some(&token), None)).is_none());
    }
}
