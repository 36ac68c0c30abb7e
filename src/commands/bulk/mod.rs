//! `flowctl bulk <CSV>`: send the Flow to every row of a file, paced, resumable, idempotent.
//!
//! Three stages joined by bounded channels, so memory stays flat whatever the file's size:
//!
//! ```text
//! reader thread ── chunk of 256 rows: tokens issued `pending` in ONE transaction ──┐
//!   (CSV, validation, in-file duplicates)                                          │ jobs
//! dispatcher task <────────────────────────────────────────────────────────────────┘
//!   waits for the pacer, marks the granted rows `sending` in ONE transaction, then the
//!   requests leave (one task each, at most --concurrency in flight)
//! send tasks ── outcomes ──> writer thread (group commit every 20 ms or 256 outcomes)
//! ```
//!
//! A token is therefore stored before its request leaves, and `sending` is on a row only when
//! its request may really have left: after a crash the rerun skips what was sent, resumes what
//! is `pending` or failed transiently, and reports (without resending) what is `sending` or
//! `unknown`, unless `--resend-unknown`. Rows that failed permanently in an earlier run are
//! not resent and count as `failed` (they have not been messaged), so such a rerun exits 1.

mod lock;
mod outage;
mod pacer;
mod progress;
mod reader;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

pub use pacer::{burst_for, default_concurrency, AdaptiveRate, Pacer};
pub use progress::{Stats, Summary};
pub use reader::{parse_row, Columns, CrlfToLf, CsvRows};

use super::send::failure_of;
use super::{exit, UsageError};
use crate::config::{BulkSettings, SendSettings};
use crate::graph::{flow_message, ErrorClass, GraphClient, GraphError, RetryPolicy};
use crate::phone::Phone;
use crate::store::{BulkMember, BulkOutcome, Issued, NewToken, Origin, SendState, Store};
use crate::token::FlowToken;
use outage::OutageGate;
use progress::Progress;
use writer::Writer;

/// Rows issued per transaction by the reader.
const CHUNK: usize = 256;
/// Requests marked `sending` in one commit at most.
const MAX_BATCH: usize = 64;
/// Attempts for a request answered with a throughput limit (the pacer slows the whole run
/// down meanwhile, so a few more than for transient errors).
const RATE_LIMIT_ATTEMPTS: u32 = 8;
/// Attempts for a request answered with the pair limit (waits 1, 4, 16, 64 s).
const PAIR_LIMIT_ATTEMPTS: u32 = 5;

/// Why a run stopped taking rows.
#[derive(Clone, Debug, PartialEq)]
enum Stop {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The API refused for a reason no other row can escape (bad token, Flow blocked, …),
    /// or the file or the database failed.
    Fatal(String),
}

/// What to do with a row, given what its campaign already holds for its phone.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Send with this (new or reused) token.
    Send(String),
    /// Already sent in this campaign.
    AlreadySent,
    /// Failed for good in an earlier run: not resent.
    PreviouslyFailed(String),
    /// A request may have left and no outcome was recorded: reported, not resent.
    Unknown(String),
}

/// The campaign's rule for a phone it already has a token for.
pub fn decide(member: &BulkMember, resend_unknown: bool) -> Decision {
    let reason = || member.error.clone().unwrap_or_default();
    match member.state {
        SendState::Sent => Decision::AlreadySent,
        SendState::Pending => Decision::Send(member.token.clone()),
        SendState::Failed if member.retryable => Decision::Send(member.token.clone()),
        SendState::Failed => Decision::PreviouslyFailed(reason()),
        SendState::Sending | SendState::Unknown if resend_unknown => {
            Decision::Send(member.token.clone())
        }
        SendState::Sending => Decision::Unknown(
            "a request left in an earlier run that stopped before its answer was recorded".into(),
        ),
        SendState::Unknown => Decision::Unknown(reason()),
    }
}

/// One row on its way to the API.
struct Job {
    token: String,
    recipient: reader::Recipient,
    line: u64,
    record: csv::StringRecord,
}

/// The `--failures` file: the failed and invalid rows with `line` and `error` columns, in a
/// form `bulk` reads back (it ignores those two columns).
#[derive(Clone)]
struct FailureLog(Option<Arc<Mutex<FailureFile>>>);

struct FailureFile {
    out: csv::Writer<std::fs::File>,
    /// Indexes of the original columns kept (an earlier `line`/`error` pair is dropped).
    keep: Vec<usize>,
}

impl FailureLog {
    fn create(path: Option<&Path>, headers: &csv::StringRecord) -> anyhow::Result<FailureLog> {
        let Some(path) = path else {
            return Ok(FailureLog(None));
        };
        let mut out = csv::Writer::from_path(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let keep: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                !reader::FAILURE_COLUMNS
                    .iter()
                    .any(|c| h.eq_ignore_ascii_case(c))
            })
            .map(|(i, _)| i)
            .collect();
        let mut head: Vec<&str> = keep.iter().filter_map(|i| headers.get(*i)).collect();
        head.extend(reader::FAILURE_COLUMNS);
        out.write_record(&head)?;
        out.flush()?;
        Ok(FailureLog(Some(Arc::new(Mutex::new(FailureFile {
            out,
            keep,
        })))))
    }

    fn write(&self, record: &csv::StringRecord, line: u64, error: &str) {
        let Some(file) = &self.0 else { return };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        let line = line.to_string();
        let mut row: Vec<&str> = f
            .keep
            .iter()
            .map(|i| record.get(*i).unwrap_or(""))
            .collect();
        row.push(&line);
        row.push(error);
        // Best effort: a failing report file must not stop the sends.
        let _ = f
            .out
            .write_record(&row)
            .and_then(|_| f.out.flush().map_err(Into::into));
    }
}

/// Everything the dispatcher and the send tasks share.
struct Ctx {
    graph: GraphClient,
    settings: SendSettings,
    policy: RetryPolicy,
    pacer: Pacer,
    slots: Arc<Semaphore>,
    writer: Writer,
    stats: Arc<Stats>,
    progress: Progress,
    failures: FailureLog,
    stop: watch::Sender<Option<Stop>>,
    /// Closed while the Graph API is unreachable; see [`outage`].
    outage: OutageGate,
    /// How long an outage is waited out before the run stops.
    max_outage: Duration,
}

impl Ctx {
    fn request_stop(&self, why: Stop) {
        self.stop.send_if_modified(|cur| {
            let first = cur.is_none();
            if first {
                *cur = Some(why);
            }
            first
        });
    }
}

/// `flowctl bulk`.
pub async fn run(db: &Path, args: BulkSettings) -> anyhow::Result<i32> {
    let settings = args.send.clone();
    let campaign = args.campaign.clone();
    let rows = CsvRows::open(&args.csv, settings.default_country).map_err(UsageError)?;
    let Some(graph) = args.graph.clone() else {
        return dry_run(db, &args, rows, campaign).await;
    };
    let graph = GraphClient::new(graph)?;
    let stats = Arc::new(Stats::default());
    let (writer, writer_thread) = Writer::start(db, stats.recorded.clone())?;
    // Held until the run ends: a second run of this campaign would send the same rows (and
    // truncate the first run's --failures file).
    let _lock = lock::CampaignLock::acquire(db, &campaign)?;
    let failures = FailureLog::create(args.failures.as_deref(), &rows.headers())?;
    let progress = Progress::new(args.progress_interval);
    spawn_count(&args.csv, stats.clone());
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| default_concurrency(args.rate));
    let (stop, _) = watch::channel(None);
    let ctx = Arc::new(Ctx {
        graph,
        settings: settings.clone(),
        policy: RetryPolicy::default(),
        pacer: Pacer::new(args.rate),
        slots: Arc::new(Semaphore::new(concurrency)),
        writer: writer.clone(),
        stats: stats.clone(),
        progress: progress.clone(),
        failures: failures.clone(),
        stop,
        outage: OutageGate::default(),
        max_outage: args.max_outage,
    });
    let start = Instant::now();
    let signals = tokio::spawn(watch_signals(ctx.clone()));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pacer_ctx = ctx.clone();
    let updates = progress.spawn_updates(stats.clone(), move || pacer_ctx.pacer.rate(), done_rx);

    let (job_tx, job_rx) = mpsc::channel(CHUNK * 2);
    let feed = Feed {
        rows,
        campaign: campaign.clone(),
        ttl: settings.token_ttl,
        resend_unknown: args.resend_unknown,
        writer,
        stats: stats.clone(),
        progress: progress.clone(),
        failures,
        stop: ctx.stop.subscribe(),
    };
    let reader_ctx = ctx.clone();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = feed.run(job_tx) {
            reader_ctx.request_stop(Stop::Fatal(format!("{e:#}")));
        }
    });
    dispatch(ctx.clone(), job_rx).await;
    let _ = reader.await;
    signals.abort();
    let stopped = ctx.stop.borrow().clone();
    drop(ctx);
    let _ = done_tx.send(());
    let _ = updates.await;
    // Every handle to the writer is gone: it commits what is left and ends.
    let written = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| anyhow::anyhow!("bookkeeping thread failed: {e}"))?
        .map_err(|_| anyhow::anyhow!("bookkeeping thread panicked"))?;

    if written.is_err() {
        // Accepted sends whose outcome the failed commit lost are not claimed as sent: the
        // store keeps them `sending`, which the rerun reports as unknown.
        let lost = stats
            .sent
            .load(Relaxed)
            .saturating_sub(stats.recorded.load(Relaxed));
        stats.unrecorded.store(lost, Relaxed);
    }
    let mut summary = Summary::collect(&campaign, &stats, start.elapsed());
    summary.interrupted = stopped == Some(Stop::Interrupted);
    if let Some(Stop::Fatal(why)) = &stopped {
        summary.stopped = Some(why.clone());
    }
    if let Err(e) = &written {
        summary.stopped = Some(format!("cannot record outcomes: {e}"));
    }
    finish(&args, &summary, written.is_err())
}

/// Prints the summaries and picks the exit code.
fn finish(args: &BulkSettings, summary: &Summary, store_failed: bool) -> anyhow::Result<i32> {
    eprintln!("{}", summary.human());
    if summary.interrupted {
        eprintln!(
            "flowctl: interrupted; in-flight sends were finished and recorded. Resume with: {}",
            resume_command()
        );
    } else if let Some(why) = &summary.stopped {
        eprintln!(
            "flowctl: stopped taking rows: {why}. Fix the cause, then resume with: {}",
            resume_command()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(summary)?);
    }
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if store_failed || summary.stopped.is_some() || !summary.all_good() {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// The command line that resumes this run: the same arguments, shell-quoted.
fn resume_command() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Counts the file's records in the background, for the progress total and the ETA.
fn spawn_count(path: &Path, stats: Arc<Stats>) {
    let path: PathBuf = path.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(n) = reader::count_records(&path) {
            stats.total.store(n, Relaxed);
        }
    });
}

/// SIGINT/SIGTERM: stop taking rows, let in-flight sends finish. A second one quits at once
/// (rows then left `sending` are reported as unknown by the rerun, never sent twice).
async fn watch_signals(ctx: Arc<Ctx>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut first = true;
    loop {
        tokio::select! {
            Some(_) = async { int.as_mut()?.recv().await } => {}
            Some(_) = async { term.as_mut()?.recv().await } => {}
            else => return,
        }
        if !first {
            std::process::exit(exit::INTERRUPTED);
        }
        first = false;
        ctx.progress
            .report("flowctl: interrupted: finishing the requests in flight (interrupt again to quit at once)");
        ctx.request_stop(Stop::Interrupted);
    }
}

/// The reader stage: validates rows, drops in-file duplicates, issues tokens chunk by chunk
/// and hands the rows to send to the dispatcher.
struct Feed {
    rows: CsvRows,
    campaign: String,
    ttl: Duration,
    resend_unknown: bool,
    writer: Writer,
    stats: Arc<Stats>,
    progress: Progress,
    failures: FailureLog,
    stop: watch::Receiver<Option<Stop>>,
}

impl Feed {
    fn run(mut self, jobs: mpsc::Sender<Job>) -> anyhow::Result<()> {
        // Phones as integers: 8 bytes each, so a million-row file dedups in a few MB.
        let mut seen: HashSet<u64> = HashSet::new();
        let mut chunk: Vec<(reader::Line, reader::Recipient)> = Vec::with_capacity(CHUNK);
        while let Some(next) = self.rows.next_line() {
            if self.stop.borrow().is_some() {
                return Ok(());
            }
            let mut line = next.map_err(anyhow::Error::msg)?;
            Stats::bump(&self.stats.read);
            match std::mem::replace(&mut line.parsed, Err(String::new())) {
                Err(reason) => {
                    Stats::bump(&self.stats.invalid);
                    self.progress
                        .report(&format!("line {}: {reason}", line.line));
                    self.failures.write(&line.record, line.line, &reason);
                }
                Ok(r) if !seen.insert(r.phone.as_u64()) => Stats::bump(&self.stats.duplicates),
                Ok(r) => {
                    chunk.push((line, r));
                    if chunk.len() >= CHUNK && !self.flush(&mut chunk, &jobs)? {
                        return Ok(());
                    }
                }
            }
        }
        self.flush(&mut chunk, &jobs)?;
        Ok(())
    }

    /// Issues the chunk's tokens in one transaction and queues what is to be sent. Returns
    /// false when the dispatcher has stopped.
    fn flush(
        &self,
        chunk: &mut Vec<(reader::Line, reader::Recipient)>,
        jobs: &mpsc::Sender<Job>,
    ) -> anyhow::Result<bool> {
        if chunk.is_empty() {
            return Ok(true);
        }
        let tokens: Vec<NewToken> = chunk
            .iter()
            .map(|(_, r)| NewToken {
                token: FlowToken::generate(),
                phone: r.phone.clone(),
                customer_name: r.name.clone(),
                campaign: self.campaign.clone(),
                origin: Origin::Bulk,
                initial_data: (!r.data.is_empty()).then(|| r.data.clone()),
                ttl: self.ttl,
            })
            .collect();
        let fresh: Vec<String> = tokens
            .iter()
            .map(|t| t.token.as_str().to_string())
            .collect();
        let issued = self.writer.issue(tokens)?;
        for (((line, recipient), issued), fresh) in chunk.drain(..).zip(issued).zip(fresh) {
            let decision = match issued {
                Issued::New => Decision::Send(fresh),
                Issued::Existing(m) => decide(&m, self.resend_unknown),
            };
            let phone = recipient.phone.e164().to_string();
            match decision {
                Decision::Send(token) => {
                    Stats::bump(&self.stats.queued);
                    let job = Job {
                        token,
                        recipient,
                        line: line.line,
                        record: line.record,
                    };
                    if jobs.blocking_send(job).is_err() {
                        return Ok(false);
                    }
                }
                Decision::AlreadySent => Stats::bump(&self.stats.skipped),
                Decision::PreviouslyFailed(why) => {
                    Stats::bump(&self.stats.failed);
                    Stats::bump(&self.stats.previously_failed);
                    let msg = format!("failed in an earlier run, not resent: {why}");
                    self.progress
                        .report(&format!("line {}: {phone} {msg}", line.line));
                    self.failures.write(&line.record, line.line, &msg);
                }
                Decision::Unknown(why) => {
                    Stats::bump(&self.stats.unknown);
                    let msg = format!(
                        "outcome unknown, not resent (pass --resend-unknown to send it again): {why}"
                    );
                    self.progress
                        .report(&format!("line {}: {phone} {msg}", line.line));
                    self.failures.write(&line.record, line.line, &msg);
                }
            }
        }
        Ok(true)
    }
}

/// The dispatcher: paces the rows, marks each granted batch `sending` in one commit, then
/// lets its requests leave.
async fn dispatch(ctx: Arc<Ctx>, mut jobs: mpsc::Receiver<Job>) {
    let mut stop = ctx.stop.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    let mut held: Option<Job> = None;
    loop {
        let job = match held.take() {
            Some(j) => j,
            None => tokio::select! {
                biased;
                _ = stop.wait_for(Option::is_some) => break,
                j = jobs.recv() => match j { Some(j) => j, None => break },
            },
        };
        // Nothing new leaves while the API is down.
        if !ctx.outage.wait_open(&mut stop).await {
            break;
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
    if let Err(e) = ctx.writer.mark_sending(tokens).await {
        ctx.request_stop(Stop::Fatal(format!("cannot record the sends: {e:#}")));
        // Not sent: the rows stay `pending` (or the commit did not happen) for the rerun.
        ctx.stats.queued.fetch_add(batch.len() as u64, Relaxed);
        return;
    }
    let mut sends = tokio::task::JoinSet::new();
    for (job, permit) in batch {
        sends.spawn(send_job(ctx.clone(), job, permit));
    }
    while sends.join_next().await.is_some() {}
}

/// How a send ended. A row whose retry was due when the run stopped ends `Refused` with a
/// retryable error, so the rerun sends it.
enum Ended {
    Sent(crate::graph::Sent),
    Refused(GraphError),
}

/// One row's request, with its retries (through the pacer, like every request).
async fn send_job(ctx: Arc<Ctx>, job: Job, permit: OwnedSemaphorePermit) {
    let body = flow_message(
        &ctx.settings.message,
        &crate::graph::Recipient {
            phone: &job.recipient.phone,
            flow_token: &job.token,
            customer_name: job.recipient.name.as_deref(),
            data: Some(&job.recipient.data),
        },
    );
    let mut permit = Some(permit);
    let mut attempt: u32 = 1;
    // Attempts that met an outage do not count against the retry limits: the outage is
    // bounded by --max-outage instead.
    let mut outage_attempts: u32 = 0;
    let ended = loop {
        let err = match ctx.graph.send_message(&body).await {
            Ok(sent) => break Ended::Sent(sent),
            Err(e) => e,
        };
        if err.is_outage() || err.outcome_unknown() {
            close_gate(&ctx, &err);
        }
        if err.is_outage() {
            // Refused before the API took it: safe to send again once the API answers.
            permit = None;
            if !ctx.outage.wait_open(&mut ctx.stop.subscribe()).await {
                break Ended::Refused(err);
            }
            outage_attempts += 1;
        } else {
            let limit = match err.class() {
                ErrorClass::RateLimit => RATE_LIMIT_ATTEMPTS,
                ErrorClass::PairRateLimit => PAIR_LIMIT_ATTEMPTS,
                ErrorClass::Transient => ctx.policy.max_attempts,
                _ => 1,
            };
            if attempt - outage_attempts >= limit {
                break Ended::Refused(err);
            }
            // The throughput limit is the whole run's: the pacer pauses and slows every
            // request; the others wait with backoff (pair limit: 4^X s) for this row alone.
            let wait = if err.class() == ErrorClass::RateLimit {
                ctx.pacer.on_rate_limit();
                Duration::ZERO
            } else {
                ctx.policy.delay(attempt - outage_attempts, &err)
            };
            permit = None;
            if !wait_unless_stopped(&ctx, wait).await {
                break Ended::Refused(err);
            }
        }
        match ctx.slots.clone().acquire_owned().await {
            Ok(p) => permit = Some(p),
            Err(_) => break Ended::Refused(err),
        }
        ctx.pacer.acquire().await;
        attempt += 1;
    };
    record(&ctx, &job, ended, i64::from(attempt) - 1);
    drop(permit);
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
        if !wait_unless_stopped(&ctx, outage::probe_wait(probes)).await {
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

/// Sleeps `wait` (then waits for nothing more); false when the run is stopping.
async fn wait_unless_stopped(ctx: &Ctx, wait: Duration) -> bool {
    let mut stop = ctx.stop.subscribe();
    let stopped = tokio::select! {
        _ = stop.wait_for(Option::is_some) => true,
        _ = tokio::time::sleep(wait) => false,
    };
    !stopped && ctx.stop.borrow().is_none()
}

fn record(ctx: &Ctx, job: &Job, ended: Ended, extra_attempts: i64) {
    let phone = job.recipient.phone.e164();
    let outcome = match ended {
        Ended::Sent(sent) => {
            Stats::bump(&ctx.stats.sent);
            BulkOutcome::Sent {
                token: job.token.clone(),
                message_id: sent.message_id,
                wa_id: sent.wa_id,
                extra_attempts,
            }
        }
        Ended::Refused(e) if e.outcome_unknown() => {
            Stats::bump(&ctx.stats.unknown);
            let msg = format!("outcome unknown, not resent: {e}");
            ctx.progress
                .report(&format!("line {}: {phone} {msg}", job.line));
            ctx.failures.write(&job.record, job.line, &msg);
            BulkOutcome::NotSent {
                token: job.token.clone(),
                state: SendState::Unknown,
                failure: failure_of(&e),
                extra_attempts,
            }
        }
        Ended::Refused(e) => {
            let mut failure = failure_of(&e);
            if matches!(e.class(), ErrorClass::Fatal | ErrorClass::Throttled) {
                // Not the recipient's fault: once the cause is fixed, the rerun sends it.
                failure.retryable = true;
                ctx.request_stop(Stop::Fatal(e.to_string()));
            }
            Stats::bump(&ctx.stats.failed);
            let msg = format!("failed: {e}");
            ctx.progress
                .report(&format!("line {}: {phone} {msg}", job.line));
            ctx.failures.write(&job.record, job.line, &msg);
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

/// `--dry-run`: validates and counts every row, reads (never writes) the campaign's state.
async fn dry_run(
    db: &Path,
    args: &BulkSettings,
    rows: CsvRows,
    campaign: String,
) -> anyhow::Result<i32> {
    let failures = FailureLog::create(args.failures.as_deref(), &rows.headers())?;
    let db = db.to_path_buf();
    let resend_unknown = args.resend_unknown;
    let start = Instant::now();
    let camp = campaign.clone();
    let (stats, would_send) =
        tokio::task::spawn_blocking(move || dry_count(&db, rows, &camp, resend_unknown, &failures))
            .await??;
    let mut summary = Summary::collect(&campaign, &stats, start.elapsed());
    summary.dry_run = true;
    summary.would_send = Some(would_send);
    summary.rate = 0.0;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", summary.human());
    }
    Ok(if summary.all_good() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn dry_count(
    db: &Path,
    mut rows: CsvRows,
    campaign: &str,
    resend_unknown: bool,
    failures: &FailureLog,
) -> anyhow::Result<(Stats, u64)> {
    let store = Store::open_read_only(db)?;
    let stats = Stats::default();
    // Sized up front from a streamed count: growing a set of a million phones would hold the
    // old and the new table at once (about 28 MB instead of 19 MB).
    let expected = reader::count_records(rows.path()).unwrap_or(0);
    let mut seen: HashSet<u64> = HashSet::with_capacity(expected as usize);
    let mut chunk: Vec<(u64, Phone)> = Vec::with_capacity(CHUNK);
    let mut would_send = 0;
    let mut settle = |chunk: &mut Vec<(u64, Phone)>| -> anyhow::Result<()> {
        let phones: Vec<Phone> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let members = match &store {
            Some(s) => s.bulk_members(campaign, &phones)?,
            None => vec![None; phones.len()],
        };
        for ((line, phone), member) in chunk.drain(..).zip(members) {
            match member.map(|m| decide(&m, resend_unknown)) {
                None | Some(Decision::Send(_)) => would_send += 1,
                Some(Decision::AlreadySent) => Stats::bump(&stats.skipped),
                Some(Decision::PreviouslyFailed(why)) => {
                    Stats::bump(&stats.failed);
                    Stats::bump(&stats.previously_failed);
                    eprintln!(
                        "line {line}: {phone} failed in an earlier run, would not be resent: {why}"
                    );
                }
                Some(Decision::Unknown(why)) => {
                    Stats::bump(&stats.unknown);
                    eprintln!("line {line}: {phone} outcome unknown, would not be resent: {why}");
                }
            }
        }
        Ok(())
    };
    while let Some(next) = rows.next_line() {
        let line = next.map_err(anyhow::Error::msg)?;
        Stats::bump(&stats.read);
        match &line.parsed {
            Err(reason) => {
                Stats::bump(&stats.invalid);
                eprintln!("line {}: {reason}", line.line);
                failures.write(&line.record, line.line, reason);
            }
            Ok(r) if !seen.insert(r.phone.as_u64()) => Stats::bump(&stats.duplicates),
            Ok(r) => {
                chunk.push((line.line, r.phone.clone()));
                if chunk.len() >= CHUNK {
                    settle(&mut chunk)?;
                }
            }
        }
    }
    settle(&mut chunk)?;
    Ok((stats, would_send))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(state: SendState, retryable: bool) -> BulkMember {
        BulkMember {
            token: "flow_t".into(),
            state,
            retryable,
            error: Some("why".into()),
        }
    }

    #[test]
    fn a_rerun_skips_sent_resumes_pending_and_transient_and_reports_unknown() {
        use Decision::*;
        let send = Send("flow_t".into());
        assert_eq!(decide(&member(SendState::Sent, false), false), AlreadySent);
        assert_eq!(decide(&member(SendState::Pending, false), false), send);
        assert_eq!(decide(&member(SendState::Failed, true), false), send);
        assert_eq!(
            decide(&member(SendState::Failed, false), false),
            PreviouslyFailed("why".into())
        );
        assert!(matches!(
            decide(&member(SendState::Sending, false), false),
            Unknown(_)
        ));
        assert_eq!(
            decide(&member(SendState::Unknown, false), false),
            Unknown("why".into())
        );
        assert_eq!(decide(&member(SendState::Unknown, false), true), send);
        assert_eq!(decide(&member(SendState::Sending, false), true), send);
    }

    #[test]
    fn resume_command_quotes_what_the_shell_would_split() {
        assert_eq!(shell_quote("customers.csv"), "customers.csv");
        assert_eq!(shell_quote("--rate=80"), "--rate=80");
        assert_eq!(shell_quote("my file.csv"), "'my file.csv'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
