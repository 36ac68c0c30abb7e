//! The inbox worker: turns stored webhook bodies into completions, statuses and events.
//!
//! One task, owned by the server, drains unprocessed `webhook_inbox` rows in id order. It
//! wakes when the webhook stores a row, every [`IDLE_POLL`] as a safety net, and once at
//! start-up, which picks up rows left unprocessed by a previous crash. Every event is applied
//! idempotently (deduplicated by message id, by (status id, status), or by the content of an
//! alert), so processing a row twice — a crash between an event and the row's
//! `processed_at` — changes nothing. Bodies that cannot be used (not JSON) are recorded as an
//! event and marked processed: never retried forever. A row whose events the database keeps
//! refusing is given up after [`MAX_ATTEMPTS`] tries, recorded as an event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::AppState;
use crate::store::{
    InboxRow, StatusInput, StatusOutcome, StoreError, WebhookCompletion, WebhookCompletionOutcome,
};

/// How often the worker looks at the inbox when nothing woke it.
pub const IDLE_POLL: Duration = Duration::from_secs(30);
/// Tries of one row before it is given up (database errors only).
pub const MAX_ATTEMPTS: u32 = 5;
/// Rows read per query.
const BATCH: usize = 64;

/// One thing a webhook body said, ready to be applied to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookEvent {
    /// An `interactive.nfm_reply`: a Flow completion.
    Completion {
        event_id: String,
        flow_token: Option<String>,
        context_id: Option<String>,
        answers: Map<String, Value>,
        sender: Option<String>,
        completed_at: String,
    },
    /// A delivery status of a message we sent.
    Status {
        message_id: String,
        status: String,
        at: String,
        recipient: Option<String>,
        error_code: Option<i64>,
        error_title: Option<String>,
        /// `biz_opaque_callback_data`: the flow token flowctl attached to the message.
        callback: Option<String>,
    },
    /// Something kept as an `events` row (alert, error, unhandled change, unusable body).
    Record {
        kind: &'static str,
        /// Deduplication key (a digest of the content).
        reference: String,
        detail: Value,
    },
    /// Understood and deliberately not stored (e.g. a text message from a user).
    Ignored { what: String },
}

impl WebhookEvent {
    /// The label of `flowctl_webhook_events_total`.
    pub fn metric_type(&self) -> String {
        match self {
            WebhookEvent::Completion { .. } => "nfm_reply".into(),
            WebhookEvent::Status { .. } => "status".into(),
            WebhookEvent::Record { kind, .. } => (*kind).into(),
            WebhookEvent::Ignored { what } => label(what),
        }
    }
}

/// A metric label value from outside data: short, `[a-z0-9_]` only.
fn label(s: &str) -> String {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        s.to_string()
    } else {
        "other".into()
    }
}

fn digest(v: &[u8]) -> String {
    let d = Sha256::digest(v);
    let mut out = String::from("sha256:");
    for b in d.iter().take(16) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn record(kind: &'static str, detail: Value) -> WebhookEvent {
    WebhookEvent::Record {
        kind,
        reference: digest(detail.to_string().as_bytes()),
        detail,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An integer that Meta may send as a number or as a string.
fn int_of(v: &Value, key: &str) -> Option<i64> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A webhook `timestamp` (Unix seconds, usually a string) as stored text; now when absent.
fn time_of(v: &Value) -> String {
    int_of(v, "timestamp")
        .and_then(crate::time::from_unix)
        .unwrap_or_else(crate::time::now)
}

/// Reads a whole webhook body into events. Unknown fields and event types never fail:
/// they become `Record`/`Ignored` events. Only a body that is not a JSON object is an error.
pub fn parse_events(body: &[u8]) -> Result<Vec<WebhookEvent>, String> {
    let root: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if !root.is_object() {
        return Err("not a JSON object".into());
    }
    let mut events = Vec::new();
    let object = str_of(&root, "object").unwrap_or("");
    if object != "whatsapp_business_account" {
        events.push(record(
            "webhook_unhandled",
            json!({ "reason": "unexpected object", "object": object }),
        ));
    }
    for entry in array(&root, "entry") {
        for change in array(entry, "changes") {
            let field = str_of(change, "field").unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            match field {
                "messages" => messages_change(value, &mut events),
                "flows" => events.push(record(
                    "flow_alert",
                    json!({ "waba_id": entry.get("id"), "value": value }),
                )),
                _ => events.push(record(
                    "webhook_unhandled",
                    json!({ "field": field, "waba_id": entry.get("id"), "value": value }),
                )),
            }
        }
    }
    Ok(events)
}

fn messages_change(value: &Value, events: &mut Vec<WebhookEvent>) {
    let contacts = array(value, "contacts");
    for message in array(value, "messages") {
        events.push(message_event(message, contacts));
    }
    for status in array(value, "statuses") {
        events.push(status_event(status));
    }
    for error in array(value, "errors") {
        events.push(record(
            "webhook_error",
            json!({ "metadata": value.get("metadata"), "error": error }),
        ));
    }
}

fn message_event(message: &Value, contacts: &[Value]) -> WebhookEvent {
    let kind = str_of(message, "type").unwrap_or("unknown");
    let interactive = message.get("interactive").unwrap_or(&Value::Null);
    let nfm = match (kind, str_of(interactive, "type")) {
        ("interactive", Some("nfm_reply")) => interactive.get("nfm_reply").unwrap_or(&Value::Null),
        ("interactive", sub) => {
            return WebhookEvent::Ignored {
                what: format!("interactive_{}", sub.unwrap_or("unknown")),
            }
        }
        _ => {
            return WebhookEvent::Ignored {
                what: format!("message_{kind}"),
            }
        }
    };
    let Some(event_id) = str_of(message, "id") else {
        // Without an id it cannot be deduplicated; keep it rather than guess.
        return record(
            "webhook_unhandled",
            json!({ "reason": "nfm_reply without id", "message": message }),
        );
    };
    let raw = nfm.get("response_json");
    let mut answers = match raw {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => Map::from_iter([("response_json".to_string(), Value::String(s.clone()))]),
        },
        // Tolerate a response_json that arrives already decoded.
        Some(Value::Object(m)) => m.clone(),
        Some(other) => Map::from_iter([("response_json".to_string(), other.clone())]),
        None => Map::new(),
    };
    let flow_token = match answers.remove("flow_token") {
        Some(Value::String(t)) if !t.is_empty() => Some(t),
        _ => None,
    };
    WebhookEvent::Completion {
        event_id: event_id.to_string(),
        flow_token,
        context_id: message
            .get("context")
            .and_then(|c| str_of(c, "id"))
            .map(str::to_string),
        answers,
        sender: sender_of(message, contacts),
        completed_at: time_of(message),
    }
}

/// The sender: `from` (= `contacts[].wa_id`), else the business-scoped user id.
fn sender_of(message: &Value, contacts: &[Value]) -> Option<String> {
    str_of(message, "from")
        .or_else(|| contacts.iter().find_map(|c| str_of(c, "wa_id")))
        .or_else(|| str_of(message, "from_user_id"))
        .or_else(|| contacts.iter().find_map(|c| str_of(c, "user_id")))
        .map(str::to_string)
}

fn status_event(status: &Value) -> WebhookEvent {
    let (Some(id), Some(st)) = (str_of(status, "id"), str_of(status, "status")) else {
        return record(
            "webhook_unhandled",
            json!({ "reason": "status without id or status", "status": status }),
        );
    };
    let error = array(status, "errors").first();
    WebhookEvent::Status {
        message_id: id.to_string(),
        status: st.to_ascii_lowercase(),
        at: time_of(status),
        recipient: str_of(status, "recipient_id").map(str::to_string),
        error_code: error.and_then(|e| int_of(e, "code")),
        error_title: error
            .and_then(|e| str_of(e, "title").or_else(|| str_of(e, "message")))
            .map(str::to_string),
        callback: str_of(status, "biz_opaque_callback_data").map(str::to_string),
    }
}

/// Runs the worker until `stop` turns true; the row in progress is finished first.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut attempts: HashMap<i64, u32> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    let mut wal_checked = tokio::time::Instant::now();
    loop {
        let wait = match drain(&state, &stop, &mut attempts).await {
            Ok(()) => {
                backoff = Duration::from_millis(200);
                if wal_checked.elapsed() >= WAL_CHECK_EVERY {
                    wal_checked = tokio::time::Instant::now();
                    keep_wal_bounded(&state).await;
                }
                IDLE_POLL
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook inbox: processing paused, will retry");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            }
        };
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = state.inbox.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often the worker looks at the write-ahead log's size.
const WAL_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Truncates the database's write-ahead log when it has outgrown [`crate::store::WAL_LIMIT`] (readers
/// running back to back beside `serve` would otherwise let it grow without end).
async fn keep_wal_bounded(state: &Arc<AppState>) {
    let result = state
        .store
        .call(|s| s.maintain_wal(Duration::from_millis(500)))
        .await;
    match result {
        Ok(None) => {}
        Ok(Some(true)) => tracing::info!("database log checkpointed and truncated"),
        Ok(Some(false)) => tracing::debug!("database log over its limit; readers busy, later"),
        Err(e) => tracing::warn!(error = %e, "database log checkpoint failed"),
    }
}

/// Processes every pending row in order; stops at the first row the database refuses (so
/// that order is kept) unless that row has used up its attempts.
async fn drain(
    state: &Arc<AppState>,
    stop: &watch::Receiver<bool>,
    attempts: &mut HashMap<i64, u32>,
) -> Result<(), StoreError> {
    let mut after = 0;
    loop {
        let rows = state
            .store
            .call(move |s| s.pending_inbox(after, BATCH))
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            if *stop.borrow() {
                return Ok(());
            }
            after = row.id;
            let id = row.id;
            match process_row(state, row).await {
                Ok(()) => {
                    attempts.remove(&id);
                }
                Err(e) => {
                    let n = attempts.entry(id).or_insert(0);
                    *n += 1;
                    if *n < MAX_ATTEMPTS {
                        return Err(e);
                    }
                    attempts.remove(&id);
                    give_up(state, id, &e).await?;
                }
            }
        }
    }
}

async fn give_up(state: &Arc<AppState>, id: i64, e: &StoreError) -> Result<(), StoreError> {
    tracing::error!(inbox_id = id, error = %e, "webhook inbox: row given up");
    let reason = format!("gave up after {MAX_ATTEMPTS} attempts: {e}");
    state
        .store
        .call(move |s| {
            s.record_webhook_event(
                "webhook_failed",
                &format!("inbox:{id}"),
                None,
                &json!({ "inbox_id": id, "error": reason }),
            )?;
            s.finish_inbox(id, Some(&reason))
        })
        .await
}

/// Applies one stored body and marks it processed.
async fn process_row(state: &Arc<AppState>, row: InboxRow) -> Result<(), StoreError> {
    let id = row.id;
    let error = match parse_events(&row.body) {
        Ok(events) => {
            for event in events {
                apply(state, event).await?;
            }
            None
        }
        Err(reason) => {
            state.metrics.inc(
                "flowctl_webhook_events_total",
                "type=\"invalid_body\"".into(),
            );
            tracing::warn!(inbox_id = id, %reason, "message webhook: unusable body");
            let detail = json!({
                "inbox_id": id,
                "reason": reason,
                "bytes": row.body.len(),
                "prefix": String::from_utf8_lossy(&row.body[..row.body.len().min(512)]),
            });
            let reference = digest(&row.body);
            state
                .store
                .call(move |s| s.record_webhook_event("webhook_invalid", &reference, None, &detail))
                .await?;
            Some(reason)
        }
    };
    state
        .store
        .call(move |s| s.finish_inbox(id, error.as_deref()))
        .await
}

async fn apply(state: &Arc<AppState>, event: WebhookEvent) -> Result<(), StoreError> {
    let metrics = &state.metrics;
    metrics.inc(
        "flowctl_webhook_events_total",
        format!("type=\"{}\"", event.metric_type()),
    );
    match event {
        WebhookEvent::Completion {
            event_id,
            flow_token,
            context_id,
            answers,
            sender,
            completed_at,
        } => {
            let outcome = state
                .store
                .call(move |s| {
                    s.webhook_completion(&WebhookCompletion {
                        flow_token: flow_token.as_deref(),
                        context_id: context_id.as_deref(),
                        answers: &answers,
                        sender: sender.as_deref(),
                        event_id: &event_id,
                        completed_at: &completed_at,
                    })
                })
                .await?;
            match outcome {
                WebhookCompletionOutcome::Stored { .. } => {
                    metrics.inc("flowctl_completions_total", "source=\"webhook\"".into());
                }
                WebhookCompletionOutcome::Unmatched { id } => {
                    metrics.inc("flowctl_unmatched_completions_total", String::new());
                    tracing::warn!(
                        response_id = id,
                        "message webhook: completion with an unknown token stored unmatched"
                    );
                }
                WebhookCompletionOutcome::Duplicate => {
                    metrics.inc(
                        "flowctl_webhook_duplicates_total",
                        "type=\"nfm_reply\"".into(),
                    );
                }
            }
        }
        WebhookEvent::Status {
            message_id,
            status,
            at,
            recipient,
            error_code,
            error_title,
            callback,
        } => {
            let label_status = label(&status);
            let outcome = state
                .store
                .call(move |s| {
                    s.record_status(&StatusInput {
                        message_id: &message_id,
                        status: &status,
                        at: &at,
                        recipient: recipient.as_deref(),
                        error_code,
                        error_title: error_title.as_deref(),
                        callback: callback.as_deref(),
                    })
                })
                .await?;
            match outcome {
                StatusOutcome::Recorded { .. } => metrics.inc(
                    "flowctl_message_statuses_total",
                    format!("status=\"{label_status}\""),
                ),
                StatusOutcome::Duplicate => {
                    metrics.inc("flowctl_webhook_duplicates_total", "type=\"status\"".into())
                }
            }
        }
        WebhookEvent::Record {
            kind,
            reference,
            detail,
        } => {
            if kind == "flow_alert" {
                log_flow_alert(&detail);
            }
            state
                .store
                .call(move |s| s.record_webhook_event(kind, &reference, None, &detail))
                .await?;
        }
        WebhookEvent::Ignored { what } => {
            tracing::debug!(what, "message webhook: event not handled by flowctl");
        }
    }
    Ok(())
}

/// Flow alerts deserve a log line: a THROTTLED or BLOCKED Flow stops working for users.
fn log_flow_alert(detail: &Value) {
    let value = detail.get("value").unwrap_or(&Value::Null);
    let event = str_of(value, "event").unwrap_or("unknown");
    let new_status = str_of(value, "new_status").unwrap_or("");
    let flow_id = value
        .get("flow_id")
        .map(Value::to_string)
        .unwrap_or_default();
    if matches!(new_status, "THROTTLED" | "BLOCKED") || event.starts_with("ENDPOINT_") {
        tracing::warn!(event, new_status, flow_id, "Flow alert from Meta");
    } else {
        tracing::info!(event, new_status, flow_id, "Flow event from Meta");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(field: &str, value: Value) -> Vec<u8> {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn nfm_reply_is_parsed_twice_and_the_token_taken_out() {
        let body = envelope(
            "messages",
            json!({"contacts": [{"wa_id": "33612345678"}], "messages": [{
                "context": {"id": "wamid.CTX"}, "from": "33612345678", "id": "wamid.IN",
                "timestamp": "1767225600", "type": "interactive",
                "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "{\"flow_token\":\"flow_x\",\"q1\":\"5\"}"}}}]}),
        );
        let events = parse_events(&body).unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::Completion {
                event_id: "wamid.IN".into(),
                flow_token: Some("flow_x".into()),
                context_id: Some("wamid.CTX".into()),
                answers: json!({"q1": "5"}).as_object().unwrap().clone(),
                sender: Some("33612345678".into()),
                completed_at: "2026-01-01T00:00:00.000Z".into(),
            }]
        );
    }

    #[test]
    fn business_scoped_sender_is_used_when_there_is_no_number() {
        let body = envelope(
            "messages",
            json!({"contacts": [{"user_id": "US.1349"}], "messages": [{
                "from_user_id": "US.1349", "id": "wamid.IN", "type": "interactive",
                "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "{}"}}}]}),
        );
        match &parse_events(&body).unwrap()[0] {
            WebhookEvent::Completion { sender, .. } => {
                assert_eq!(sender.as_deref(), Some("US.1349"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_status_carries_its_error() {
        let body = envelope(
            "messages",
            json!({"statuses": [{"id": "wamid.A", "status": "failed", "timestamp": 1767225700,
                "errors": [{"code": "131026", "title": "Message undeliverable"}]}]}),
        );
        match &parse_events(&body).unwrap()[0] {
            WebhookEvent::Status {
                error_code,
                error_title,
                ..
            } => {
                assert_eq!(*error_code, Some(131026));
                assert_eq!(error_title.as_deref(), Some("Message undeliverable"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_things_are_tolerated() {
        let body = envelope("account_update", json!({"x": 1}));
        assert_eq!(
            parse_events(&body).unwrap()[0].metric_type(),
            "webhook_unhandled"
        );
        let body = envelope(
            "messages",
            json!({"messages": [{"id": "m", "type": "text"}]}),
        );
        assert_eq!(
            parse_events(&body).unwrap()[0].metric_type(),
            "message_text"
        );
        assert_eq!(parse_events(b"{}").unwrap().len(), 1);
        assert!(parse_events(b"not json").is_err());
        assert!(parse_events(b"[1]").is_err());
        assert_eq!(label("Weird\"label"), "other");
    }

    #[test]
    fn flows_field_and_value_errors_are_records() {
        let body = envelope(
            "flows",
            json!({"event": "FLOW_STATUS_CHANGE", "new_status": "BLOCKED"}),
        );
        assert_eq!(parse_events(&body).unwrap()[0].metric_type(), "flow_alert");
        let body = envelope("messages", json!({"errors": [{"code": 131000}]}));
        assert_eq!(
            parse_events(&body).unwrap()[0].metric_type(),
            "webhook_error"
        );
    }
}
