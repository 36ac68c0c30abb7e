//! The Flow's health during a run: a pre-flight check before the first send, and a pause
//! while Meta holds the Flow.
//!
//! Meta moves a Flow whose endpoint misbehaves from PUBLISHED to THROTTLED (10 new Flow
//! messages an hour, sends past them refused with 132069) and then BLOCKED (none, 132068), and
//! back the same way once the endpoint recovers; it tells the `flows` webhook field each time
//! (`FLOW_STATUS_CHANGE`, with `flow_id`, `old_status`, `new_status`): Flow Health and
//! Monitoring, <https://developers.facebook.com/docs/whatsapp/flows/guides/healthmonitoring>,
//! and the Flows webhook reference,
//! <https://developers.facebook.com/docs/whatsapp/flows/reference/flowswebhooks>. `serve`
//! records those events in the database; a run reads them every few seconds
//! ([`watch`]), and a THROTTLED, BLOCKED or DEPRECATED Flow closes a gate that holds every
//! new send, until the Flow is PUBLISHED again or `--max-outage` has passed (the run then
//! stops; the rows not sent stay pending for the rerun). A send refused with 132068/132069
//! closes the same gate, and while it is closed the run also asks Graph for the Flow's status
//! (`GET /{flow-id}?fields=status`), so that it resumes even without `serve`.
//!
//! The pre-flight ([`preflight`]) runs when the first row is about to leave, so that a rerun
//! with nothing left to send asks nothing: the Flow must be PUBLISHED, and the number of
//! people in the file must fit the business number's messaging limit
//! (`whatsapp_business_manager_messaging_limit`, <https://developers.facebook.com/docs/whatsapp/messaging-limits>);
//! `--force` goes on anyway.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use tokio::sync::watch;

use super::outage::{self, OutageGate};
use super::progress::Progress;
use super::reader::CsvRows;
use super::{request_stop, Stats, Stop};
use crate::config::BulkSettings;
use crate::graph::{GraphClient, GraphError};
use crate::store::Store;

/// How long one pre-flight or status read may take: the check must not hold a run that
/// Graph would answer anyway.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Least time between two reads of the Flow's status while the gate is closed.
const STATUS_READ_EVERY: Duration = Duration::from_secs(5);

/// The parts of a run that the Flow's health reads (Graph), reports to (counters, progress
/// lines) and stops; borrowed from the run's shared context.
pub(super) struct FlowRun<'a> {
    /// The Graph API client, for the Flow's status and the number's messaging limit.
    pub(super) graph: &'a GraphClient,
    /// The run's counters.
    pub(super) stats: &'a Stats,
    /// Where the run's progress lines go.
    pub(super) progress: &'a Progress,
    /// The run's stop signal.
    pub(super) stop: &'a watch::Sender<Option<Stop>>,
    /// How long a held Flow is waited out before the run stops (`--max-outage`).
    pub(super) max_outage: Duration,
}

/// The Flow a run sends, and whether Meta holds it.
pub(super) struct FlowHealth {
    /// The Flow's id (`FLOW_ID`).
    pub(super) flow_id: String,
    /// Closed while the Flow is not sendable.
    pub(super) gate: OutageGate,
    /// The status that closed the gate, while it is closed.
    status: Mutex<Option<&'static str>>,
}

impl FlowHealth {
    /// Watching `flow_id`, sendable until told otherwise.
    pub(super) fn new(flow_id: String) -> FlowHealth {
        FlowHealth {
            flow_id,
            gate: OutageGate::default(),
            status: Mutex::new(None),
        }
    }

    /// The status holding the run, while one does.
    pub(super) fn paused_by(&self) -> Option<&'static str> {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A Flow status that holds sends: Meta throttles or blocks the Flow, or it was deprecated.
pub(super) fn holding(status: &str) -> Option<&'static str> {
    match status {
        "THROTTLED" => Some("THROTTLED"),
        "BLOCKED" => Some("BLOCKED"),
        "DEPRECATED" => Some("DEPRECATED"),
        _ => None,
    }
}

/// The status a send refusal says the Flow is in: 132068 BLOCKED, 132069 THROTTLED (Graph
/// error codes, <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>).
pub(super) fn refused_status(err: &GraphError) -> Option<&'static str> {
    match err.code() {
        Some(132068) => Some("BLOCKED"),
        Some(132069) => Some("THROTTLED"),
        _ => None,
    }
}

/// Applies a status learned from `how` (the webhook, a refusal, Graph): PUBLISHED opens the
/// gate, a holding status closes it; each change is told once.
pub(super) fn apply_status(ctx: &FlowRun<'_>, health: &FlowHealth, status: &str, how: &str) {
    if status == "PUBLISHED" {
        if let Some(paused) = health.gate.open() {
            *health.status.lock().unwrap_or_else(PoisonError::into_inner) = None;
            ctx.stats
                .flow_pause_ms
                .fetch_add(paused.as_millis() as u64, Relaxed);
            ctx.progress.report(&format!(
                "flowctl: the Flow {} is PUBLISHED again ({how}) after {:.1}s; sends resume",
                health.flow_id,
                paused.as_secs_f64()
            ));
        }
        return;
    }
    let Some(held) = holding(status) else {
        return;
    };
    *health.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
    if health.gate.close() {
        Stats::bump(&ctx.stats.flow_pauses);
        ctx.progress.report(&format!(
            "flowctl: the Flow {} is {held} ({how}): sends paused until it is PUBLISHED again (at most {}, --max-outage); nothing is lost",
            health.flow_id,
            humantime::format_duration(ctx.max_outage)
        ));
    }
}

/// Reads the alerts `serve` records, and the Flow's status while the gate is closed, until
/// the run stops; stops the run when the Flow stays held longer than `--max-outage`.
pub(super) async fn watch(ctx: FlowRun<'_>, health: &FlowHealth, store: Store, interval: Duration) {
    let store = Arc::new(Mutex::new(store));
    let mut last = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_flow_alert_id()
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
    };
    let mut status_read: Option<Instant> = None;
    loop {
        if !outage::wait_unless_stopped(ctx.stop, interval).await {
            return;
        }
        let after = last;
        let read = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .flow_alerts_after(after, 256)
            })
            .await
        };
        match read {
            Ok(Ok(alerts)) => {
                for alert in alerts {
                    last = alert.id;
                    if let Some(status) = status_change_of(&alert.value, &health.flow_id) {
                        apply_status(&ctx, health, &status, "Meta's flows webhook");
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the Flow alerts yet"),
            Err(e) => tracing::debug!(error = %e, "Flow alert read failed"),
        }
        let Some(since) = health.gate.closed_since() else {
            continue;
        };
        if since.elapsed() >= ctx.max_outage {
            let held = health.paused_by().unwrap_or("not PUBLISHED");
            ctx.stats
                .flow_pause_ms
                .fetch_add(since.elapsed().as_millis() as u64, Relaxed);
            request_stop(
                ctx.stop,
                Stop::Fatal(format!(
                "the Flow {} has been {held} for {} (--max-outage); the rows not sent stay pending",
                health.flow_id,
                humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
            )),
            );
            return;
        }
        if status_read.is_none_or(|t| t.elapsed() >= STATUS_READ_EVERY) {
            status_read = Some(Instant::now());
            if let Some(status) = read_status(ctx.graph, &health.flow_id).await {
                apply_status(&ctx, health, &status, "GET /{flow-id}");
            }
        }
    }
}

/// `new_status` of a `FLOW_STATUS_CHANGE` about `flow_id` (Meta sends the id as a string;
/// a number is accepted too).
fn status_change_of(value: &Value, flow_id: &str) -> Option<String> {
    if value.get("event").and_then(Value::as_str) != Some("FLOW_STATUS_CHANGE") {
        return None;
    }
    let id = match value.get("flow_id")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (id == flow_id)
        .then(|| value.get("new_status").and_then(Value::as_str))
        .flatten()
        .map(str::to_ascii_uppercase)
}

/// The Flow's status as Graph says it now, when it answers in time.
async fn read_status(graph: &GraphClient, flow_id: &str) -> Option<String> {
    match tokio::time::timeout(READ_TIMEOUT, graph.flow(flow_id)).await {
        Ok(Ok(v)) => v.get("status").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The pre-flight check before the first send. `Err` is why the run must not start (the
/// caller stops it); a check that cannot be made is told and does not hold the run.
pub(super) async fn preflight(
    ctx: &FlowRun<'_>,
    flow: Option<&FlowHealth>,
    args: &BulkSettings,
) -> Result<(), String> {
    let force = args.force;
    if let Some(health) = flow {
        match tokio::time::timeout(READ_TIMEOUT, ctx.graph.flow(&health.flow_id)).await {
            Ok(Ok(v)) => {
                let status = v.get("status").and_then(Value::as_str).unwrap_or("unknown");
                if status != "PUBLISHED" {
                    let why = format!(
                        "the Flow {} is {status}, not PUBLISHED{}",
                        health.flow_id,
                        match status {
                            "DRAFT" => ": publish it first",
                            "THROTTLED" | "BLOCKED" => {
                                ": Meta holds it for its endpoint's health (see `flowctl doctor`)"
                            }
                            _ => "",
                        }
                    );
                    if !force {
                        return Err(format!("{why}; --force sends anyway"));
                    }
                    // Forced: sends go out; a refusal (132068/132069) still pauses the run.
                    ctx.progress
                        .report(&format!("flowctl: {why}; going on (--force)"));
                }
            }
            Ok(Err(e)) => ctx.progress.report(&format!(
                "flowctl: cannot check the Flow's status before sending ({e}); going on"
            )),
            Err(_) => ctx
                .progress
                .report("flowctl: the Flow's status did not come in time before sending; going on"),
        }
    }
    limit_check(ctx, args).await
}

/// The file's people vs the number's messaging limit.
async fn limit_check(ctx: &FlowRun<'_>, args: &BulkSettings) -> Result<(), String> {
    let profile = match tokio::time::timeout(READ_TIMEOUT, ctx.graph.phone_number_profile()).await {
        Ok(Ok(v)) => v,
        _ => return Ok(()),
    };
    let Some(tier) = profile
        .get("whatsapp_business_manager_messaging_limit")
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    let Some(limit) = tier_limit(tier) else {
        return Ok(());
    };
    let csv = args.csv.clone();
    let country = args.send.default_country;
    let input = args.input.clone();
    let people = tokio::task::spawn_blocking(move || unique_people(&csv, country, &input))
        .await
        .ok()
        .flatten();
    let Some(people) = people.filter(|n| *n > limit) else {
        return Ok(());
    };
    let why = format!(
        "the file has {people} different people, more than the number's messaging limit ({tier}: {limit} people in 24 hours); those past it will be refused"
    );
    if !args.force {
        return Err(format!(
            "{why}: split the file over several days, or --force sends anyway"
        ));
    }
    ctx.progress
        .report(&format!("flowctl: warning: {why}; going on (--force)"));
    Ok(())
}

/// People a limit tier allows in 24 hours (`TIER_250`, `TIER_2K`, `TIER_100K`); `None` for
/// `TIER_UNLIMITED` or a tier this build does not know.
pub(super) fn tier_limit(tier: &str) -> Option<u64> {
    let n = tier.strip_prefix("TIER_")?;
    let (digits, unit) = match n.strip_suffix('K') {
        Some(d) => (d, 1_000),
        None => (n, 1),
    };
    digits.parse::<u64>().ok().map(|d| d * unit)
}

/// Different valid phones of the file.
fn unique_people(
    csv: &std::path::Path,
    country: Option<crate::phone::DefaultCountry>,
    input: &crate::config::CsvInput,
) -> Option<u64> {
    let mut rows = CsvRows::open(csv, country, input).ok()?;
    let mut seen = HashSet::new();
    while let Some(line) = rows.next_line() {
        if let Ok(r) = line.ok()?.parsed {
            seen.insert(r.phone.as_u64());
        }
    }
    Some(seen.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tiers_are_read_as_people_per_day() {
        assert_eq!(tier_limit("TIER_250"), Some(250));
        assert_eq!(tier_limit("TIER_2K"), Some(2_000));
        assert_eq!(tier_limit("TIER_100K"), Some(100_000));
        assert_eq!(tier_limit("TIER_UNLIMITED"), None);
        assert_eq!(tier_limit("GREEN"), None);
    }

    #[test]
    fn only_status_changes_of_this_flow_count() {
        let change = |id: Value, status: &str| json!({"event": "FLOW_STATUS_CHANGE", "flow_id": id, "old_status": "PUBLISHED", "new_status": status});
        assert_eq!(
            status_change_of(&change(json!("42"), "THROTTLED"), "42").as_deref(),
            Some("THROTTLED")
        );
        assert_eq!(
            status_change_of(&change(json!(42), "published"), "42").as_deref(),
            Some("PUBLISHED")
        );
        assert_eq!(
            status_change_of(&change(json!("43"), "BLOCKED"), "42"),
            None
        );
        let alert = json!({"event": "ENDPOINT_ERROR_RATE", "flow_id": "42"});
        assert_eq!(status_change_of(&alert, "42"), None);
        assert_eq!(holding("DEPRECATED"), Some("DEPRECATED"));
        assert_eq!(holding("DRAFT"), None);
    }
}
