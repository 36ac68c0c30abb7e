//! The send stage of a run: pacing, batches marked `sending` in one commit, one task per
//! request, retries (the shared [`RetryPolicy`]), outages and Meta's throttles (waited out,
//! never counted against a row), and recording each outcome.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::failures::FailureLog;
use super::feed::Job;
use super::flow_health::{self, FlowHealth, FlowRun};
use super::misconfig::ConfigStreak;
use super::outage::{self, OutageGate};
use super::progress::{throttle_text, Progress};
use super::writer::Writer;
use super::{request_stop, Pacer, Stats, Stop};
use crate::config::BulkSettings;
use crate::graph::{
    flow_message, ErrorClass, GraphClient, GraphError, MessageSettings, USER_LIMIT_DEFERRAL,
};
use crate::outbound::{failure_of, RetryPolicy};
use crate::store::{BulkOutcome, SendState};
use crate::time::Timestamp;

/// Requests marked `sending` in one commit at most.
const MAX_BATCH: usize = 64;

/// How long a row still refused with the pair rate limit (131056) after its retries is left
/// alone: Meta's limit is about one message every 6 seconds to the same person, with bursts
/// borrowed from the following minutes, so a quarter of an hour lets the pair's quota refill
/// (`../shared/spec/whatsapp-cloud-api.md` section c).
pub const PAIR_LIMIT_DEFERRAL: Duration = Duration::from_secs(15 * 60);

/// Everything the dispatcher and the send tasks share.
pub(super) struct Ctx {
    pub(super) graph: GraphClient,
    pub(super) message: MessageSettings,
    pub(super) policy: RetryPolicy,
    pub(super) pacer: Pacer,
    pub(super) slots: Arc<Semaphore>,
    pub(super) writer: Writer,
    pub(super) stats: Arc<Stats>,
    pub(super) progress: Progress,
    pub(super) failures: FailureLog,
    pub(super) stop: watch::Sender<Option<Stop>>,
    /// Closed while the Graph API is unreachable; see [`outage`].
    pub(super) outage: OutageGate,
    /// How long an outage is waited out before the run stops.
    pub(super) max_outage: Duration,
    /// Sends in a row refused with the same configuration-level error.
    pub(super) misconfig: ConfigStreak,
    /// The Flow being sent and whether Meta holds it (`None` without a `FLOW_ID`); see
    /// [`flow_health`].
    pub(super) flow: Option<FlowHealth>,
    /// The run's settings, for the pre-flight check before the first send.
    pub(super) settings: Arc<BulkSettings>,
}

impl Ctx {
    /// Stops the run taking rows, for the first reason given.
    pub(super) fn request_stop(&self, why: Stop) {
        request_stop(&self.stop, why);
    }

    /// The parts of the run that the Flow's health check reads, reports to and stops.
    pub(super) fn flow_run(&self) -> FlowRun<'_> {
        FlowRun {
            graph: &self.graph,
            stats: &self.stats,
            progress: &self.progress,
            stop: &self.stop,
            max_outage: self.max_outage,
        }
    }
}

/// The dispatcher: paces the rows, marks each granted batch `sending` in one commit, then
/// lets its requests leave.
pub(super) async fn dispatch(ctx: Arc<Ctx>, mut jobs: mpsc::Receiver<Job>) {
    let mut stop = ctx.stop.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    let mut held: Option<Job> = None;
    let mut checked = false;
    loop {
        let job = match held.take() {
            Some(j) => j,
            None => tokio::select! {
                biased;
                _ = stop.wait_for(Option::is_some) => break,
                j = jobs.recv() => match j { Some(j) => j, None => break },
            },
        };
        // Checked once, when the first row is about to leave (a run with nothing to send
        // asks Graph nothing).
        if !checked {
            checked = true;
            if let Err(why) =
                flow_health::preflight(&ctx.flow_run(), ctx.flow.as_ref(), &ctx.settings).await
            {
                ctx.request_stop(Stop::Fatal(why));
                break;
            }
        }
        // Nothing new leaves while the API is down, nor while Meta holds the Flow.
        if !ctx.outage.wait_open(&mut stop).await {
            break;
        }
        if let Some(flow) = &ctx.flow {
            if !flow.gate.wait_open(&mut stop).await {
                break;
            }
        }
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(Option::is_some) => break,
            p = ctx.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(Option::is_some) => break,
            _ = ctx.pacer.acquire() => {}
        }
        let mut batch = vec![(job, permit)];
        // Grow the batch with whatever the pacer grants right now, so that one commit covers
        // several requests at high rates.
        while batch.len() < MAX_BATCH {
            let Ok(p) = ctx.slots.clone().try_acquire_owned() else {
                break;
            };
            let Ok(j) = jobs.try_recv() else { break };
            if !ctx.pacer.try_acquire() {
                held = Some(j);
                break;
            }
            batch.push((j, p));
        }
        // The commit runs while the dispatcher already waits for the next permits: a serial
        // commit per batch (about 1 ms) would cap the run near 1,000 msg/s. Concurrent
        // batches are merged into one commit by the writer.
        ctx.stats.queued.fetch_sub(batch.len() as u64, Relaxed);
        tasks.spawn(send_batch(ctx.clone(), batch));
        while tasks.try_join_next().is_some() {}
    }
    // Rows still queued stay `pending`: the rerun sends them.
    drop(jobs);
    while tasks.join_next().await.is_some() {}
}

/// Marks a batch `sending` (its requests leave only after the commit), then sends each row.
async fn send_batch(ctx: Arc<Ctx>, batch: Vec<(Job, OwnedSemaphorePermit)>) {
    let tokens = batch.iter().map(|(j, _)| j.token.clone()).collect();
    let lost = match ctx.writer.mark_sending(tokens).await {
        Ok(lost) => lost,
        Err(e) => {
            ctx.request_stop(Stop::Fatal(format!("cannot record the sends: {e:#}")));
            // Not sent: the rows stay `pending` (or the commit did not happen) for the rerun.
            ctx.stats.queued.fetch_add(batch.len() as u64, Relaxed);
            return;
        }
    };
    let mut sends = tokio::task::JoinSet::new();
    for (job, permit) in batch {
        if lost.contains(&job.token) {
            // Another worker of the campaign took the row over while this one could not
            // renew its claim: the row is that worker's to send, not this one's.
            ctx.progress.report(&format!(
                "line {}: {} was taken over by another worker; not sent by this one",
                job.line,
                job.recipient.phone.e164()
            ));
            continue;
        }
        sends.spawn(send_job(ctx.clone(), job, permit));
    }
    while sends.join_next().await.is_some() {}
}

/// How a send ended.
enum Ended {
    Sent(crate::graph::Sent),
    /// The last answer, after the retries the policy allows.
    Refused(GraphError),
    /// The run stopped while this row waited for its retry (an outage, a throttle, a
    /// backoff): recorded failed with its retryable error, so the rerun sends it.
    Stopped(GraphError),
}

/// One row's request, with its retries (through the pacer, like every request).
async fn send_job(ctx: Arc<Ctx>, job: Job, permit: OwnedSemaphorePermit) {
    let body = flow_message(
        &ctx.message,
        &crate::graph::Recipient {
            phone: &job.recipient.phone,
            flow_token: &job.token,
            customer_name: job.recipient.name.as_deref(),
            data: Some(&job.recipient.data),
        },
    );
    let mut permit = Some(permit);
    let mut attempt: u32 = 1;
    // Attempts that met an outage or Meta's throttle of the whole app or account do not count
    // against the row's retry limit: the row is not at fault, and the wait is the run's.
    let mut uncounted: u32 = 0;
    let ended = loop {
        let err = match ctx.graph.send_message(&body).await {
            Ok(sent) => break Ended::Sent(sent),
            Err(e) => e,
        };
        if err.is_outage() || err.outcome_unknown() {
            close_gate(&ctx, &err);
        }
        permit = None;
        let flow_held = ctx.flow.as_ref().zip(flow_health::refused_status(&err));
        if let Some((flow, status)) = flow_held {
            // Meta holds the Flow (132068/132069): the row waits with the whole run until
            // the Flow is PUBLISHED again; it is not the row's fault.
            flow_health::apply_status(&ctx.flow_run(), flow, status, "a send was refused");
            if !flow.gate.wait_open(&mut ctx.stop.subscribe()).await {
                break Ended::Stopped(err);
            }
            uncounted += 1;
        } else if err.is_outage() {
            // Refused before the API took it: safe to send again once the API answers.
            if !ctx.outage.wait_open(&mut ctx.stop.subscribe()).await {
                break Ended::Stopped(err);
            }
            uncounted += 1;
        } else if let Some(regain) = throttled_for(&err) {
            if !wait_out_throttle(&ctx, &err, regain).await {
                break Ended::Stopped(err);
            }
            uncounted += 1;
        } else {
            // The shared policy says whether this row tries again, and after how long.
            let Some(wait) = ctx.policy.retry_after(&err, attempt - uncounted) else {
                break Ended::Refused(err);
            };
            if err.class() == ErrorClass::RateLimit {
                // The throughput limit is the whole run's: the pacer also pauses and slows
                // every other request.
                ctx.pacer.on_rate_limit();
            }
            if !outage::wait_unless_stopped(&ctx.stop, wait).await {
                break Ended::Stopped(err);
            }
        }
        match ctx.slots.clone().acquire_owned().await {
            Ok(p) => permit = Some(p),
            Err(_) => break Ended::Stopped(err),
        }
        ctx.pacer.acquire().await;
        attempt += 1;
    };
    record(&ctx, &job, ended, i64::from(attempt) - 1);
    drop(permit);
}

/// How long the whole app or account is throttled, when `err` is a throughput limit (4,
/// 80007, 130429) whose answer said so in its `X-Business-Use-Case-Usage` header. Meta's
/// rate-limiting guide (<https://developers.facebook.com/docs/graph-api/overview/rate-limiting/>)
/// gives that time as the one after which calls succeed again: sending earlier only meets the
/// same answer.
fn throttled_for(err: &GraphError) -> Option<Duration> {
    (err.class() == ErrorClass::RateLimit)
        .then(|| err.regain_after())
        .flatten()
}

/// Pauses the whole run for `regain` (nothing leaves the pacer meanwhile), tells the user when
/// the pause starts or grows, and waits it out. False when the run stops meanwhile.
async fn wait_out_throttle(ctx: &Ctx, err: &GraphError, regain: Duration) -> bool {
    let change = ctx.pacer.on_throttle(regain);
    if change.started {
        Stats::bump(&ctx.stats.throttles);
    }
    if change.added > Duration::ZERO {
        ctx.stats
            .throttle_ms
            .fetch_add(change.added.as_millis() as u64, Relaxed);
        if let Some(until) = ctx.pacer.throttled_until() {
            ctx.progress.report(&format!(
                "flowctl: {}: {err}; sends resume then, no row is failed for it",
                throttle_text(until)
            ));
        }
    }
    let left = ctx
        .pacer
        .throttled_until()
        .map(|until| until.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    outage::wait_unless_stopped(&ctx.stop, left).await
}

/// Closes the outage gate after `err`; the first to close it starts the prober.
fn close_gate(ctx: &Arc<Ctx>, err: &GraphError) {
    if ctx.outage.close() {
        Stats::bump(&ctx.stats.outages);
        ctx.progress.report(&format!(
            "flowctl: the Graph API is unreachable or broken ({err}); sends paused until it answers again (at most {})",
            humantime::format_duration(ctx.max_outage)
        ));
        tokio::spawn(probe_until_up(ctx.clone()));
    }
}

/// Polls a harmless read until the API answers, then opens the gate; stops the run when the
/// outage outlasts `--max-outage`.
async fn probe_until_up(ctx: Arc<Ctx>) {
    let since = ctx.outage.closed_since().unwrap_or_else(Instant::now);
    let mut probes = 0;
    loop {
        if !outage::wait_unless_stopped(&ctx.stop, outage::probe_wait(probes)).await {
            return;
        }
        probes += 1;
        match ctx.graph.probe().await {
            Ok(()) => {
                let paused = ctx.outage.open().unwrap_or_default();
                ctx.stats
                    .outage_ms
                    .fetch_add(paused.as_millis() as u64, Relaxed);
                ctx.progress.report(&format!(
                    "flowctl: the Graph API answers again after {:.1}s; sends resume",
                    paused.as_secs_f64()
                ));
                return;
            }
            Err(e) if since.elapsed() >= ctx.max_outage => {
                ctx.stats
                    .outage_ms
                    .fetch_add(since.elapsed().as_millis() as u64, Relaxed);
                ctx.request_stop(Stop::Fatal(format!(
                    "the Graph API has been unreachable for {} (--max-outage); last answer: {e}",
                    humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
                )));
                return;
            }
            Err(e) => tracing::debug!(probes, error = %e, "Graph API still unreachable"),
        }
    }
}

/// How long a row refused by a limit of its recipient is left alone, instead of failing it:
/// 24 hours for Meta's per-user marketing limit (131049: Meta advises no retry sooner), and
/// [`PAIR_LIMIT_DEFERRAL`] for a pair rate limit (131056) that outlasted its 4^X s retries.
/// Meta's error codes page:
/// <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>.
fn deferral_of(err: &GraphError) -> Option<Duration> {
    match err.class() {
        ErrorClass::UserLimit => Some(USER_LIMIT_DEFERRAL),
        ErrorClass::PairRateLimit => Some(PAIR_LIMIT_DEFERRAL),
        _ => None,
    }
}

/// Counts and records how a row's send ended: sent, deferred by a limit of its recipient,
/// refused, or unknown. A failure the whole run shares stops it, at once (credentials, a
/// blocked Flow) or after [`super::misconfig::STREAK`] in a row (a wrong setting).
fn record(ctx: &Ctx, job: &Job, ended: Ended, extra_attempts: i64) {
    let phone = job.recipient.phone.e164();
    let config_code = match &ended {
        Ended::Refused(e) if e.class() == ErrorClass::Config => e.code(),
        _ => None,
    };
    if let Some(why) = ctx.misconfig.observe(config_code) {
        ctx.request_stop(Stop::Misconfigured(why));
    }
    let say = |msg: &str, failed: bool| {
        ctx.progress
            .report(&format!("line {}: {phone} {msg}", job.line));
        if failed {
            ctx.failures.write(&job.record, job.line, msg);
        }
    };
    let deferral = match &ended {
        Ended::Refused(e) => deferral_of(e),
        _ => None,
    };
    let outcome = match (ended, deferral) {
        (Ended::Sent(sent), _) => {
            Stats::bump(&ctx.stats.sent);
            BulkOutcome::Sent {
                token: job.token.clone(),
                message_id: sent.message_id,
                wa_id: sent.wa_id,
                extra_attempts,
            }
        }
        (Ended::Refused(e) | Ended::Stopped(e), _) if e.outcome_unknown() => {
            Stats::bump(&ctx.stats.unknown);
            say(&format!("outcome unknown, not resent: {e}"), true);
            BulkOutcome::NotSent {
                token: job.token.clone(),
                state: SendState::Unknown,
                failure: failure_of(&e),
                extra_attempts,
            }
        }
        (Ended::Refused(e), Some(wait)) => {
            let until = Timestamp::now().saturating_add(wait);
            ctx.stats.note_deferred(until);
            say(
                &format!(
                    "deferred until {until} (a limit of this recipient; the run goes on): {e}"
                ),
                false,
            );
            BulkOutcome::Deferred {
                token: job.token.clone(),
                until,
                failure: failure_of(&e),
                extra_attempts,
            }
        }
        (Ended::Refused(e) | Ended::Stopped(e), _) => {
            let mut failure = failure_of(&e);
            match e.class() {
                ErrorClass::Fatal | ErrorClass::Throttled => {
                    // Not the recipient's fault: once the cause is fixed, the rerun sends it.
                    failure.retryable = true;
                    ctx.request_stop(Stop::Fatal(e.to_string()));
                }
                // A setting that is wrong for everyone: the rerun after the fix sends it.
                ErrorClass::Config => failure.retryable = true,
                _ => {}
            }
            Stats::bump(&ctx.stats.failed);
            say(&format!("failed: {e}"), true);
            BulkOutcome::NotSent {
                token: job.token.clone(),
                state: SendState::Failed,
                failure,
                extra_attempts,
            }
        }
    };
    if ctx.writer.record(outcome).is_err() {
        ctx.request_stop(Stop::Fatal(
            "cannot record outcomes: the bookkeeping thread has stopped".into(),
        ));
    }
}
