//! The inbox worker: turns stored webhook bodies into completions, statuses and events.
//! Reading a body into events is [`crate::webhook_events`]' work (pure); applying them to
//! the store, with metrics and logs, is this module's.
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

use serde_json::{json, Value};
use tokio::sync::watch;

use super::AppState;
use crate::optout::Intent;
use crate::store::{
    source, InboxRow, StatusInput, StatusOutcome, StoreError, WebhookCompletion,
    WebhookCompletionOutcome,
};
use crate::webhook_events::{digest, label, parse_events, str_of, WebhookEvent};

/// How often the worker looks at the inbox when nothing woke it.
pub const IDLE_POLL: Duration = Duration::from_secs(30);
/// Tries of one row before it is given up (database errors only).
pub const MAX_ATTEMPTS: u32 = 5;
/// Rows claimed per query.
const BATCH: usize = 64;
/// How long a claim on inbox rows lasts: other replicas leave them alone meanwhile, and take
/// them over after it when this one died. A batch is processed well within it; a batch that
/// is not (a database refusing and retried) is at worst processed twice, which is harmless.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Runs the worker until `stop` turns true; the row in progress is finished first.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    // This worker's name in its claims (one per process: several replicas share an inbox).
    let worker: Arc<str> = format!(
        "{}-{}",
        std::process::id(),
        crate::token::FlowToken::generate().as_str()
    )
    .into();
    let mut attempts: HashMap<i64, u32> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    let mut wal_checked = tokio::time::Instant::now();
    loop {
        let wait = match drain(&state, &worker, &stop, &mut attempts).await {
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

/// Processes every pending row this worker can claim, in order; stops at the first row the
/// database refuses (so that order is kept) unless that row has used up its attempts.
async fn drain(
    state: &Arc<AppState>,
    worker: &Arc<str>,
    stop: &watch::Receiver<bool>,
    attempts: &mut HashMap<i64, u32>,
) -> Result<(), StoreError> {
    let mut after = 0;
    loop {
        let me = worker.clone();
        let rows = state
            .store
            .call(move |s| s.claim_inbox(&me, after, BATCH, CLAIM_LEASE))
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
                // A database that cannot be reached (PostgreSQL restarting) says nothing about
                // the row: it is not an attempt, and the row waits for the database.
                Err(e) if e.is_unavailable() => return Err(e),
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
            let reason = reason.to_string();
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
            // Found before the answers move into the store call.
            let files = crate::media::find_graph(&answers);
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
                WebhookCompletionOutcome::Stored { id, token, .. } => {
                    tracing::info!(source = "webhook", response_id = id, "completion stored");
                    metrics.inc("flowctl_completions_total", "source=\"webhook\"".into());
                    super::media::take_completion_files(state, &token, files).await;
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
            // Meta's 131050: "this recipient has chosen to stop receiving marketing messages
            // on WhatsApp from your business" (error codes page). Known after the send was
            // accepted, it suppresses the person the message was for.
            let stopped = (error_code == Some(STOPPED_MARKETING))
                .then(|| (message_id.clone(), recipient.clone()));
            let settle = (status == "failed").then(|| {
                let when = crate::time::Timestamp::parse(&at)
                    .unwrap_or_else(|_| crate::time::Timestamp::now());
                crate::outbound::settlement_of_failed_status(error_code, when)
            });
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
                        settle,
                    })
                })
                .await?;
            if let Some((wamid, recipient)) = stopped {
                suppress_stopped_recipient(state, wamid, recipient).await?;
            }
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
        WebhookEvent::Text { sender, body } => {
            if let Some(intent) = state.optout.classify(&body) {
                apply_optout(
                    state,
                    &sender,
                    intent,
                    format!("replied {:?}", body.trim()),
                    source::KEYWORD,
                )
                .await?;
            }
        }
        WebhookEvent::Preference {
            wa_id,
            category,
            value,
            detail,
        } => {
            // Meta reports the marketing category only; any other is left alone rather
            // than read as a stop of everything.
            let intent = match (category.as_str(), value.as_str()) {
                ("marketing_messages", "stop") => Some(Intent::Stop),
                ("marketing_messages", "resume") => Some(Intent::Start),
                _ => None,
            };
            if let Some(intent) = intent {
                let reason = detail.unwrap_or_else(|| format!("{value} {category}"));
                apply_optout(state, &wa_id, intent, reason, source::USER_PREFERENCES).await?;
            }
        }
        WebhookEvent::Ignored { what } => {
            tracing::debug!(what, "message webhook: event not handled by flowctl");
        }
    }
    Ok(())
}

/// Graph error 131050: the recipient stopped marketing messages from this business.
const STOPPED_MARKETING: i64 = 131050;

/// Puts a sender on the suppression list (`Stop`) or takes them off it (`Start`).
async fn apply_optout(
    state: &Arc<AppState>,
    wa_id: &str,
    intent: Intent,
    reason: String,
    source: &'static str,
) -> Result<(), StoreError> {
    if !wa_id.bytes().all(|b| b.is_ascii_digit()) || wa_id.is_empty() {
        // A business-scoped id names no number to suppress: keep it as an event instead.
        let detail = json!({ "sender": wa_id, "intent": format!("{intent:?}"), "reason": reason });
        let reference = digest(detail.to_string().as_bytes());
        return state
            .store
            .call(move |s| {
                s.record_webhook_event("optout_unmatched", &reference, None, &detail)
                    .map(drop)
            })
            .await;
    }
    let phone = format!("+{wa_id}");
    let changed = {
        let phone = phone.clone();
        state
            .store
            .call(move |s| match intent {
                Intent::Stop => s.suppress(&phone, &reason, source),
                Intent::Start => s.unsuppress(&phone),
            })
            .await?
    };
    let what = match intent {
        Intent::Stop => "suppressed",
        Intent::Start => "unsuppressed",
    };
    state.metrics.inc(
        "flowctl_optouts_total",
        format!("change=\"{what}\",source=\"{source}\""),
    );
    tracing::info!(phone = %phone, source, changed, "opt-out: {what}");
    Ok(())
}

/// Suppresses the person a message refused with 131050 was for: the token's phone when
/// flowctl sent the message, else the status's `recipient_id`.
async fn suppress_stopped_recipient(
    state: &Arc<AppState>,
    wamid: String,
    recipient: Option<String>,
) -> Result<(), StoreError> {
    let phone = state
        .store
        .call(move |s| {
            let phone = s
                .find_token_by_message_id(&wamid)?
                .map(|t| t.phone.e164().to_string())
                .or_else(|| recipient.map(|r| format!("+{r}")));
            if let Some(phone) = &phone {
                s.suppress(
                    phone,
                    "stopped marketing messages (131050)",
                    source::REFUSED_131050,
                )?;
            }
            Ok(phone)
        })
        .await?;
    if let Some(phone) = phone {
        tracing::info!(phone = %phone, "opt-out: suppressed after a 131050 status");
        state.metrics.inc(
            "flowctl_optouts_total",
            format!(
                "change=\"suppressed\",source=\"{}\"",
                source::REFUSED_131050
            ),
        );
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
