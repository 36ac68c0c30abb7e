//! The bookkeeping thread of a bulk run: the one connection that writes, with group commit.
//!
//! One writer instead of several connections: SQLite serialises writers anyway, and its busy
//! handler sleeps in steps of milliseconds, which would stall the sender at 1,000 msg/s.
//! Outcomes are committed every [`FLUSH_EVERY`] or [`FLUSH_AT`] outcomes, and with every
//! "mark sending" batch, whichever comes first. A crash between an accepted send and its
//! commit leaves the row `sending`: the rerun reports it as unknown, never sends it twice.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::store::{BulkOutcome, Issued, NewToken, Store, StoreError, WAL_LIMIT};

/// Longest an outcome waits before it is committed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Outcomes per commit at most.
pub const FLUSH_AT: usize = 256;
/// How often the log's size is looked at (between commits).
const WAL_CHECK_EVERY: Duration = Duration::from_secs(10);

enum Cmd {
    Issue(
        Vec<NewToken>,
        oneshot::Sender<Result<Vec<Issued>, StoreError>>,
    ),
    MarkSending(Vec<String>, oneshot::Sender<Result<(), StoreError>>),
    Outcome(BulkOutcome),
}

/// A handle to the writer thread (cheap to clone).
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
}

/// Why the writer thread stopped: a failed commit, and how many accepted sends it could not
/// record (their rows stay `sending`, so a rerun reports them as unknown, never resends them).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WriterFailure {
    pub error: StoreError,
    pub unrecorded_sent: u64,
}

impl WriterFailure {
    fn new(error: StoreError, lost: &[BulkOutcome]) -> WriterFailure {
        WriterFailure {
            error,
            unrecorded_sent: lost
                .iter()
                .filter(|o| matches!(o, BulkOutcome::Sent { .. }))
                .count() as u64,
        }
    }
}

/// The writer has stopped (its commit failed, see the join result).
#[derive(Debug, thiserror::Error)]
#[error("the bookkeeping thread has stopped")]
pub struct WriterGone;

impl Writer {
    /// Starts the thread on its own connection to `db`.
    #[allow(clippy::type_complexity)]
    pub fn start(db: &Path) -> Result<(Writer, JoinHandle<Result<(), WriterFailure>>), StoreError> {
        let store = Store::open(db)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("bulk-writer".into())
            .spawn(move || run(store, rx))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok((Writer { tx }, handle))
    }

    /// Issues a chunk's tokens (blocking; for the reader thread).
    pub fn issue(&self, rows: Vec<NewToken>) -> anyhow::Result<Vec<Issued>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Issue(rows, reply))
            .map_err(|_| WriterGone)?;
        Ok(rx.blocking_recv().map_err(|_| WriterGone)??)
    }

    /// Marks tokens `sending` and waits for the commit: their requests may leave after this.
    pub async fn mark_sending(&self, tokens: Vec<String>) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::MarkSending(tokens, reply))
            .map_err(|_| WriterGone)?;
        Ok(rx.await.map_err(|_| WriterGone)??)
    }

    /// Queues an outcome for the next group commit.
    pub fn record(&self, outcome: BulkOutcome) -> Result<(), WriterGone> {
        self.tx.send(Cmd::Outcome(outcome)).map_err(|_| WriterGone)
    }
}

fn run(mut store: Store, rx: mpsc::Receiver<Cmd>) -> Result<(), WriterFailure> {
    let mut outcomes: Vec<BulkOutcome> = Vec::with_capacity(FLUSH_AT);
    let r = run_loop(&mut store, &rx, &mut outcomes);
    r.map_err(|e| {
        // What was queued and not committed is lost with the failed commit, and so is what
        // arrives after it.
        while let Ok(cmd) = rx.try_recv() {
            if let Cmd::Outcome(o) = cmd {
                outcomes.push(o);
            }
        }
        WriterFailure::new(e, &outcomes)
    })
}

fn run_loop(
    store: &mut Store,
    rx: &mpsc::Receiver<Cmd>,
    outcomes: &mut Vec<BulkOutcome>,
) -> Result<(), StoreError> {
    let mut oldest: Option<Instant> = None;
    let mut wal_checked = Instant::now();
    let mut deferred: Option<Cmd> = None;
    loop {
        let wait = oldest
            .map(|t| (t + FLUSH_EVERY).saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let next = match deferred.take() {
            Some(cmd) => Ok(cmd),
            None => rx.recv_timeout(wait),
        };
        match next {
            Ok(Cmd::Outcome(o)) => {
                outcomes.push(o);
                oldest.get_or_insert_with(Instant::now);
                if outcomes.len() >= FLUSH_AT {
                    store.bulk_commit(outcomes, &[])?;
                    outcomes.clear();
                    oldest = None;
                }
            }
            Ok(Cmd::MarkSending(mut tokens, reply)) => {
                // Group commit: every batch and outcome already waiting joins this commit.
                let mut replies = vec![reply];
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Cmd::MarkSending(more, r) => {
                            tokens.extend(more);
                            replies.push(r);
                        }
                        Cmd::Outcome(o) => outcomes.push(o),
                        issue @ Cmd::Issue(..) => {
                            deferred = Some(issue);
                            break;
                        }
                    }
                }
                let r = store.bulk_commit(outcomes, &tokens);
                match r {
                    Ok(()) => {
                        outcomes.clear();
                        oldest = None;
                        replies.into_iter().for_each(|r| {
                            let _ = r.send(Ok(()));
                        })
                    }
                    Err(e) => {
                        for r in replies {
                            let _ = r.send(Err(StoreError::Task(e.to_string())));
                        }
                        return Err(e);
                    }
                }
            }
            Ok(Cmd::Issue(rows, reply)) => {
                if let Err(e) = store.bulk_commit(outcomes, &[]) {
                    let _ = reply.send(Err(StoreError::Task(e.to_string())));
                    return Err(e);
                }
                outcomes.clear();
                oldest = None;
                reply_or_stop(reply, store.bulk_issue(&rows))?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                store.bulk_commit(outcomes, &[])?;
                outcomes.clear();
                oldest = None;
                if wal_checked.elapsed() >= WAL_CHECK_EVERY {
                    wal_checked = Instant::now();
                    // Readers beside the run (exports, stats) would let the log grow
                    // without end; a failed attempt is retried at the next check.
                    let _ = store.truncate_wal_if_over(WAL_LIMIT, Duration::from_millis(200));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                store.bulk_commit(outcomes, &[])?;
                outcomes.clear();
                return Ok(());
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
