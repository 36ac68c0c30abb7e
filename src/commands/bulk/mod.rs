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
//!
//! On PostgreSQL several runs (workers, on several machines) share one campaign: each claims
//! the rows it sends under a lease it renews (see `store::postgres::bulk`), looks again at the
//! end at the rows other workers held, and takes its permits from a rate shared by all
//! (`budget`). On SQLite one run per campaign holds its lock file (`lock`).
//!
//! The rooms: this file wires a run and reports it; `feed` is the reader stage, `dispatch`
//! the send stage (pacing, retries from [`crate::outbound::RetryPolicy`], outages, recording);
//! `decision` says what happens to a row whose phone the campaign already holds, for a run
//! and for `dry_run` alike; `failures` writes the `--failures` file.

mod budget;
mod decision;
mod dispatch;
mod dry_run;
mod failures;
mod feed;
mod flow_health;
mod lock;
mod misconfig;
mod outage;
mod pacer;
mod progress;
mod reader;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch, Semaphore};

pub use decision::{decide, Decision, Rerun};
pub use pacer::{burst_for, default_concurrency, AdaptiveRate, Pacer};
pub use progress::{Stats, Summary};
pub use reader::{parse_row, Columns, CrlfToLf, CsvRows};

use super::{exit, UsageError};
use crate::config::BulkSettings;
use crate::graph::GraphClient;
use crate::outbound::RetryPolicy;
use dispatch::{dispatch, Ctx};
use dry_run::dry_run;
use failures::FailureLog;
use feed::{shared_chunk, Feed, CHUNK};
use outage::OutageGate;
use progress::{Pace, Progress};
use writer::Writer;

/// Why a run stopped taking rows.
#[derive(Clone, Debug, PartialEq)]
enum Stop {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The API refused for a reason no other row can escape (bad token, Flow blocked, …),
    /// or the file or the database failed.
    Fatal(String),
    /// Sends in a row were refused with the same configuration-level error: the sentence
    /// names its likely cause (see [`misconfig`]).
    Misconfigured(String),
}

/// Stops the run taking rows, for the first reason given: a later reason changes nothing.
fn request_stop(stop: &watch::Sender<Option<Stop>>, why: Stop) {
    stop.send_if_modified(|cur| {
        let first = cur.is_none();
        if first {
            *cur = Some(why);
        }
        first
    });
}

/// `flowctl bulk`.
pub async fn run(db: &crate::store::DbTarget, mut args: BulkSettings) -> anyhow::Result<i32> {
    // `bulk -`: stdin is copied to a temporary file first (streamed, so memory stays flat):
    // the file is read twice (the count for the ETA, then the rows) and sniffed up front.
    let _spool = if args.csv.as_os_str() == "-" {
        let spool = tokio::task::spawn_blocking(spool_stdin).await??;
        args.csv = spool.path().to_path_buf();
        Some(spool)
    } else {
        None
    };
    let settings = args.send.clone();
    let campaign = args.campaign.clone();
    let rows =
        CsvRows::open(&args.csv, settings.default_country, &args.input).map_err(UsageError)?;
    let Some(graph) = args.graph.clone() else {
        return dry_run(db, &args, rows, campaign).await;
    };
    let graph = GraphClient::new(graph)?;
    let mut settings = settings;
    if let Some(t) = &mut settings.message.template {
        let headers = rows.headers();
        let name_column = Columns::resolve_with(&headers, &args.input, rows.format().delimiter)
            .ok()
            .and_then(|c| c.name)
            .and_then(|i| headers.get(i));
        let mut columns: Vec<String> = headers.iter().map(str::to_string).collect();
        if name_column.is_some() {
            // `customer_name` names the name column whatever its header.
            columns.push("customer_name".into());
        }
        super::templates::preflight(&graph, t, Some(&columns)).await?;
        t.name_column_is(name_column);
    }
    if !args.yes && !confirmed(&args.csv, rows.format(), &campaign)? {
        eprintln!("flowctl: nothing sent (not confirmed; --yes skips the question)");
        return Ok(exit::FAILED);
    }
    let stats = Arc::new(Stats::default());
    // On PostgreSQL several workers (processes, machines) may share the campaign: each
    // claims the rows it sends, under a lease it renews while it lives.
    let claim = db.is_postgres().then(|| writer::Claim {
        worker: worker_name(),
        lease: args.lease,
    });
    let (writer, writer_thread) = Writer::start(db, stats.recorded.clone(), claim.clone())?;
    // Held until the run ends: a second run of this campaign would send the same rows (and
    // truncate the first run's --failures file).
    // One run per campaign on a SQLite file; on PostgreSQL several workers share it.
    let _lock = match db.sqlite_path() {
        Some(path) => Some(lock::CampaignLock::acquire(path, &campaign)?),
        None => None,
    };
    let failures = FailureLog::create(args.failures.as_deref(), &rows.headers(), rows.format())?;
    let progress = Progress::new(args.progress_interval);
    spawn_count(&args.csv, rows.format(), stats.clone());
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| default_concurrency(args.rate));
    let (stop, _) = watch::channel(None);
    let ctx = Arc::new(Ctx {
        graph,
        message: settings.message.clone(),
        policy: RetryPolicy::default(),
        pacer: match &claim {
            // The rate is the sending number's, shared by every worker of the campaign.
            Some(_) => Pacer::new(args.rate).shared(budget::SharedBudget::new(
                crate::store::Store::open(db)?,
                &graph_number(&args),
                args.rate,
                burst_for(args.rate),
            )),
            None => Pacer::new(args.rate),
        },
        slots: Arc::new(Semaphore::new(concurrency)),
        writer: writer.clone(),
        stats: stats.clone(),
        progress: progress.clone(),
        failures: failures.clone(),
        stop,
        outage: OutageGate::default(),
        max_outage: args.max_outage,
        misconfig: Default::default(),
        flow: Some(settings.message.flow_id.trim())
            .filter(|id| !id.is_empty())
            .map(|id| flow_health::FlowHealth::new(id.to_string())),
        settings: Arc::new(args.clone()),
    });
    // Flow alerts recorded by `serve` in this database, read while the run goes on.
    let watcher = match crate::store::Store::open_read_only(db)? {
        Some(store) if ctx.flow.is_some() => {
            let ctx = ctx.clone();
            let interval = args.flow_watch_interval;
            Some(tokio::spawn(async move {
                if let Some(health) = &ctx.flow {
                    flow_health::watch(ctx.flow_run(), health, store, interval).await;
                }
            }))
        }
        _ => None,
    };
    let start = Instant::now();
    let signals = tokio::spawn(watch_signals(ctx.clone()));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pacer_ctx = ctx.clone();
    let updates = progress.spawn_updates(
        stats.clone(),
        move || Pace {
            rate: pacer_ctx.pacer.rate(),
            throttled_until: pacer_ctx.pacer.throttled_until(),
            flow_held: pacer_ctx.flow.as_ref().and_then(|f| f.paused_by()),
        },
        done_rx,
    );

    let chunk = match &claim {
        Some(_) => shared_chunk(args.rate),
        None => CHUNK,
    };
    let (job_tx, job_rx) = mpsc::channel(chunk * 2);
    let feed = Feed {
        campaign: campaign.clone(),
        ttl: settings.token_ttl,
        rerun: Rerun::of(&args),
        writer,
        stats: stats.clone(),
        progress: progress.clone(),
        failures,
        stop: ctx.stop.subscribe(),
        suppressions: crate::store::Store::open_read_only(db)?
            .ok_or_else(|| anyhow::anyhow!("database {} vanished", db))?,
        chunk,
        reopen: claim.as_ref().map(|_| {
            let (csv, country, input) = (
                args.csv.clone(),
                settings.default_country,
                args.input.clone(),
            );
            Box::new(move || CsvRows::open(&csv, country, &input)) as feed::Reopen
        }),
    };
    let reader_ctx = ctx.clone();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = feed.run(rows, job_tx) {
            reader_ctx.request_stop(Stop::Fatal(format!("{e:#}")));
        }
    });
    dispatch(ctx.clone(), job_rx).await;
    let _ = reader.await;
    signals.abort();
    if let Some(w) = watcher {
        w.abort();
    }
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
    if let Some(Stop::Fatal(why) | Stop::Misconfigured(why)) = &stopped {
        summary.stopped = Some(why.clone());
    }
    if let Err(e) = &written {
        summary.stopped = Some(format!("cannot record outcomes: {e}"));
    }
    let misconfigured = matches!(stopped, Some(Stop::Misconfigured(_))) && written.is_ok();
    finish(&args, &summary, written.is_err(), misconfigured)
}

/// Prints the summaries and picks the exit code.
fn finish(
    args: &BulkSettings,
    summary: &Summary,
    store_failed: bool,
    misconfigured: bool,
) -> anyhow::Result<i32> {
    if !super::quiet() {
        eprintln!("{}", summary.human());
    }
    if summary.interrupted {
        eprintln!(
            "flowctl: interrupted; in-flight sends were finished and recorded. Resume with: {}",
            resume_command()
        );
    } else if let (true, Some(why)) = (misconfigured, &summary.stopped) {
        eprintln!(
            "flowctl: stopped: {why}. The rows it refused stay retryable: fix the setting, then resume with: {}",
            resume_command()
        );
    } else if let Some(why) = &summary.stopped {
        eprintln!(
            "flowctl: stopped taking rows: {why}. Fix the cause, then resume with: {}",
            resume_command()
        );
    }
    if args.json {
        super::print_json(summary)?;
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

/// A name for this worker of a shared campaign, unique across machines: the process id (for
/// a person reading the claims) and a random part.
fn worker_name() -> String {
    let random = crate::token::FlowToken::generate();
    format!("pid {} {}", std::process::id(), &random.as_str()[..12])
}

/// The sending number whose rate the workers share (`PHONE_NUMBER_ID`).
fn graph_number(args: &BulkSettings) -> String {
    args.graph
        .as_ref()
        .map(|g| g.phone_number_id.clone())
        .unwrap_or_default()
}

/// Rows above which a run on a terminal asks before sending.
pub const CONFIRM_ABOVE: u64 = 1_000;

/// On a terminal (stdin and stderr both), a run of more than [`CONFIRM_ABOVE`] rows asks
/// first: a list sent to the wrong people cannot be unsent. Off a terminal (a script, a pipe,
/// a test) nothing is asked and the answer is yes, so that automation never hangs on a
/// question nobody sees.
fn confirmed(csv: &Path, format: reader::Format, campaign: &str) -> anyhow::Result<bool> {
    if !super::interactive() {
        return Ok(true);
    }
    let rows = reader::count_records(csv, format).unwrap_or(0);
    if rows <= CONFIRM_ABOVE {
        return Ok(true);
    }
    super::ask(&format!(
        "Send the Flow to the {rows} rows of {} (campaign {campaign:?})?",
        csv.display()
    ))
}

/// Copies stdin into a temporary file, deleted when dropped.
fn spool_stdin() -> anyhow::Result<tempfile::NamedTempFile> {
    use anyhow::Context as _;
    let mut spool = tempfile::Builder::new()
        .prefix("flowctl-stdin-")
        .suffix(".csv")
        .tempfile()
        .context("cannot create a temporary file for the CSV read from stdin")?;
    std::io::copy(&mut std::io::stdin().lock(), spool.as_file_mut())
        .context("cannot copy the CSV from stdin to a temporary file")?;
    Ok(spool)
}

/// Counts the file's records in the background, for the progress total and the ETA.
fn spawn_count(path: &Path, format: reader::Format, stats: Arc<Stats>) {
    let path: PathBuf = path.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(n) = reader::count_records(&path, format) {
            stats.total.store(n, Relaxed);
        }
    });
}

/// SIGINT/SIGTERM: stop taking rows, let in-flight sends finish. A second one quits at once
/// (rows then left `sending` are reported as unknown by the rerun, never sent twice).
async fn watch_signals(ctx: Arc<Ctx>) {
    let Ok(mut signals) = crate::signals::Signals::install() else {
        return;
    };
    if signals.recv().await.is_none() {
        return;
    }
    ctx.progress.report(
        "flowctl: interrupted: finishing the requests in flight (interrupt again to quit at once)",
    );
    ctx.request_stop(Stop::Interrupted);
    if signals.recv().await.is_some() {
        std::process::exit(exit::INTERRUPTED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_or_yes_confirms() {
        use crate::commands::is_yes;
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "oui"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn resume_command_quotes_what_the_shell_would_split() {
        assert_eq!(shell_quote("customers.csv"), "customers.csv");
        assert_eq!(shell_quote("--rate=80"), "--rate=80");
        assert_eq!(shell_quote("my file.csv"), "'my file.csv'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
