//! The bookkeeping thread of a bulk run: the one connection that writes, with group commit.
//!
//! One writer instead of several connections: SQLite serialises writers anyway, and its busy
//! handler sleeps in steps of milliseconds, which would stall the sender at 1,000 msg/s.
//! Outcomes are committed every [`FLUSH_EVERY`] or [`FLUSH_AT`] outcomes, and with every
//! "mark sending" batch, whichever comes first. A crash between an accepted send and its
//! commit leaves the row `sending`: the rerun reports it as unknown, never sends it twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::store::{BulkOutcome, Issued, NewToken, Store, StoreError};

/// Longest an outcome waits before it is committed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Outcomes per commit at most.
pub const FLUSH_AT: usize = 256;
/// How often the log's size is looked at (between commits).
const WAL_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How long the bookkeeping waits for a database it cannot reach (PostgreSQL restarting, a
/// failover) before the run stops; sends pause meanwhile, since none leaves unrecorded.
pub const DB_OUTAGE: Duration = Duration::from_secs(120);

/// Runs a store call, calling it again while the database cannot be reached (see
/// [`crate::store::StoreError::is_unavailable`]; a lost connection is reopened by the next
/// call) or aborted it as a deadlock or a serialization failure (two workers' transactions
/// crossing), for at most [`DB_OUTAGE`]. Any other error is returned at once.
///
/// A call whose COMMIT was cut may have been applied: the calls retried here are safe to run
/// twice (an issue finds its rows then, an outcome is recorded again the same way), but for
/// the attempts count, which may then count one more.
pub fn patiently<T>(mut call: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match call() {
            // A deadlock between two workers' transactions (PostgreSQL aborts one of them,
            // whole) is retried like a busy database.
            Err(e) if (e.is_unavailable() || e.is_busy()) && start.elapsed() < DB_OUTAGE => {
                tracing::warn!(error = %e, "the database cannot take this now; trying again");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// The rows of a chunk with what issuing them found, handed back to the reader.
type IssuedChunk = (Vec<NewToken>, Vec<Issued>);

enum Cmd {
    Issue(
        Vec<NewToken>,
        oneshot::Sender<Result<IssuedChunk, StoreError>>,
    ),
    Supersede(
        Vec<(String, NewToken)>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    MarkSending(
        Vec<String>,
        oneshot::Sender<Result<Vec<String>, StoreError>>,
    ),
    Outcome(BulkOutcome),
    /// Claimed rows this worker will not send (see [`Writer::release`]).
    Release(Vec<String>),
}

/// The claim a worker holds on a shared campaign (PostgreSQL): its name and lease.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The worker's name, unique across machines (see `bulk_join`).
    pub worker: String,
    /// How long its claims last without renewal (`--lease`).
    pub lease: Duration,
}

/// A handle to the writer thread (cheap to clone).
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
}

/// The writer has stopped (its commit failed, see the join result).
#[derive(Debug, thiserror::Error)]
#[error("the bookkeeping thread has stopped")]
pub struct WriterGone;

impl Writer {
    /// Starts the thread on its own connection to `db`. `recorded_sent` counts the accepted
    /// sends it has committed: a run that ends on a failed commit claims no more than that.
    /// With a `claim`, the rows it issues are claimed for that worker (a shared campaign,
    /// see [`crate::store::BulkQueries::bulk_join`]); the thread renews the claims while it
    /// runs and lets go of them when it ends.
    pub fn start(
        db: &crate::store::DbTarget,
        recorded_sent: Arc<AtomicU64>,
        claim: Option<Claim>,
    ) -> Result<(Writer, JoinHandle<Result<(), StoreError>>), StoreError> {
        let mut store = Store::open(db)?;
        if let Some(c) = &claim {
            store.bulk_join(&c.worker, c.lease)?;
        }
        // Renewed three times per lease: a late renewal or two still keeps the rows.
        let renew_every = claim.map(|c| c.lease / 3);
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("bulk-writer".into())
            .spawn(move || {
                let out = run(&mut store, rx, recorded_sent, renew_every);
                // Rows claimed but not sent (an interrupted run) go back to the other
                // workers at once rather than after the lease; if that fails, they go back
                // when the lease runs out.
                if let Err(e) = store.bulk_leave() {
                    tracing::warn!(error = %e, "cannot release this worker's claims");
                }
                out
            })
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok((Writer { tx }, handle))
    }

    /// Issues a chunk's tokens (blocking; for the reader thread). The rows come back with
    /// what was found for each: a fresh token that was not stored (the phone was held) may
    /// still supersede the held one.
    pub fn issue(&self, rows: Vec<NewToken>) -> anyhow::Result<IssuedChunk> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Issue(rows, reply))
            .map_err(|_| WriterGone)?;
        Ok(rx.blocking_recv().map_err(|_| WriterGone)??)
    }

    /// Replaces each `(old token, fresh token)` pair's old row by the fresh `pending` one, as
    /// the campaign's member for the phone (blocking; for the reader thread).
    pub fn supersede(&self, pairs: Vec<(String, NewToken)>) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Supersede(pairs, reply))
            .map_err(|_| WriterGone)?;
        Ok(rx.blocking_recv().map_err(|_| WriterGone)??)
    }

    /// Marks tokens `sending` and waits for the commit: their requests may leave after this,
    /// except those returned: another worker took them over (their claim's lease ran out).
    pub async fn mark_sending(&self, tokens: Vec<String>) -> anyhow::Result<Vec<String>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::MarkSending(tokens, reply))
            .map_err(|_| WriterGone)?;
        Ok(rx.await.map_err(|_| WriterGone)??)
    }

    /// Lets go of claimed rows this worker will not send (a shared campaign); a no-op
    /// elsewhere.
    pub fn release(&self, tokens: Vec<String>) -> Result<(), WriterGone> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.tx.send(Cmd::Release(tokens)).map_err(|_| WriterGone)
    }

    /// Queues an outcome for the next group commit.
    pub fn record(&self, outcome: BulkOutcome) -> Result<(), WriterGone> {
        self.tx.send(Cmd::Outcome(outcome)).map_err(|_| WriterGone)
    }
}

/// Outcomes waiting for the next commit.
struct Pending {
    outcomes: Vec<BulkOutcome>,
    oldest: Option<Instant>,
    recorded_sent: Arc<AtomicU64>,
}

impl Pending {
    /// Commits the waiting outcomes (and marks `sending` what is about to leave), then
    /// counts the accepted sends it recorded. On failure nothing is counted.
    /// Returns the tokens of `sending` whose claim was lost (not marked).
    fn commit(&mut self, store: &mut Store, sending: &[String]) -> Result<Vec<String>, StoreError> {
        let lost = patiently(|| store.bulk_commit(&self.outcomes, sending))?;
        let sent = self
            .outcomes
            .iter()
            .filter(|o| matches!(o, BulkOutcome::Sent { .. }))
            .count() as u64;
        self.recorded_sent.fetch_add(sent, Ordering::Relaxed);
        self.outcomes.clear();
        self.oldest = None;
        Ok(lost)
    }
}

fn run(
    store: &mut Store,
    rx: mpsc::Receiver<Cmd>,
    recorded_sent: Arc<AtomicU64>,
    renew_every: Option<Duration>,
) -> Result<(), StoreError> {
    let mut pending = Pending {
        outcomes: Vec::with_capacity(FLUSH_AT),
        oldest: None,
        recorded_sent,
    };
    let mut wal_checked = Instant::now();
    let mut deferred: Option<Cmd> = None;
    let mut renewed = Instant::now();
    loop {
        if let Some(every) = renew_every {
            if renewed.elapsed() >= every {
                // A failed renewal is tried again at the next turn: the lease has room for
                // two misses, and `sending` is only ever set while the claim is ours.
                if let Err(e) = store.bulk_renew() {
                    tracing::warn!(error = %e, "cannot renew this worker's claims");
                }
                renewed = Instant::now();
            }
        }
        let flush_due = pending
            .oldest
            .map(|t| (t + FLUSH_EVERY).saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let renew_due = renew_every
            .map(|every| (renewed + every).saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let wait = flush_due.min(renew_due);
        let next = match deferred.take() {
            Some(cmd) => Ok(cmd),
            None => rx.recv_timeout(wait),
        };
        match next {
            Ok(Cmd::Outcome(o)) => {
                pending.outcomes.push(o);
                pending.oldest.get_or_insert_with(Instant::now);
                if pending.outcomes.len() >= FLUSH_AT {
                    pending.commit(store, &[])?;
                }
            }
            Ok(Cmd::MarkSending(mut tokens, reply)) => {
                // Group commit: every batch and outcome already waiting joins this commit.
                let mut replies = vec![(reply, tokens.clone())];
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Cmd::MarkSending(more, r) => {
                            tokens.extend(more.iter().cloned());
                            replies.push((r, more));
                        }
                        Cmd::Outcome(o) => pending.outcomes.push(o),
                        cmd @ (Cmd::Issue(..) | Cmd::Supersede(..) | Cmd::Release(..)) => {
                            deferred = Some(cmd);
                            break;
                        }
                    }
                }
                let r = pending.commit(store, &tokens);
                // Each batch hears which of ITS tokens were lost.
                for (reply, batch) in replies {
                    let _ = reply.send(match &r {
                        Ok(lost) => Ok(batch.into_iter().filter(|t| lost.contains(t)).collect()),
                        Err(e) => Err(StoreError::Task(e.to_string())),
                    });
                }
                r?;
            }
            Ok(Cmd::Release(tokens)) => {
                // A row left claimed only waits out its lease: worth a warning, not a stop.
                if let Err(e) = store.bulk_release(&tokens) {
                    tracing::warn!(error = %e, "cannot release claimed rows");
                }
            }
            Ok(Cmd::Issue(rows, reply)) => {
                let r = pending
                    .commit(store, &[])
                    .and_then(|_| patiently(|| store.bulk_issue(&rows)))
                    .map(|issued| (rows, issued));
                reply_or_stop(reply, r)?;
            }
            Ok(Cmd::Supersede(pairs, reply)) => {
                let r = pending
                    .commit(store, &[])
                    .and_then(|_| patiently(|| store.bulk_supersede(&pairs)));
                reply_or_stop(reply, r)?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                pending.commit(store, &[])?;
                if wal_checked.elapsed() >= WAL_CHECK_EVERY {
                    wal_checked = Instant::now();
                    // Readers beside the run (exports, stats) would let the log grow
                    // without end; a failed attempt is retried at the next check.
                    let _ = store.maintain_wal(Duration::from_millis(200));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return pending.commit(store, &[]).map(drop)
            }
        }
    }
}

/// Hands the result to the caller; a failed commit also stops the thread (with its error),
/// so that nothing more is sent on a database that cannot record it.
fn reply_or_stop<T>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    r: Result<T, StoreError>,
) -> Result<(), StoreError> {
    match r {
        Ok(v) => {
            let _ = reply.send(Ok(v));
            Ok(())
        }
        Err(e) => {
            let _ = reply.send(Err(StoreError::Task(e.to_string())));
            Err(e)
        }
    }
}
