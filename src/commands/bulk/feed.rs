//! The reader stage of a run: rows -> tokens -> jobs. Its row loop ([`RowLoop`]) is the dry
//! run's too.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::decision::{account, decide, Decision, Mode, Rerun};
use super::failures::FailureLog;
use super::progress::Progress;
use super::reader::{self, CsvRows};
use super::writer::Writer;
use super::{Stats, Stop};
use crate::phone::Phone;
use crate::store::{Issued, NewToken, Origin, Store};
use crate::token::FlowToken;

/// Rows issued per transaction by the reader.
pub(super) const CHUNK: usize = 256;

/// Rows claimed per transaction on a shared campaign: about a second of sends (at least 16,
/// at most [`CHUNK`]). A worker claims only a little ahead of what it sends (this, plus the
/// two chunks its queue holds), so the workers of a campaign share its rows evenly instead
/// of the first one claiming the whole file.
pub(super) fn shared_chunk(rate: f64) -> usize {
    (rate.ceil() as usize).clamp(16, CHUNK)
}

/// One row on its way to the API.
pub(super) struct Job {
    pub(super) token: String,
    pub(super) recipient: reader::Recipient,
    pub(super) line: u64,
    pub(super) record: csv::StringRecord,
}

/// A valid row, not met earlier in the file.
pub(super) type Row = (reader::Line, reader::Recipient);

/// The row loop of a run and of a dry run: reads the rows, counts them, reports the invalid
/// ones (and logs them to `--failures`), drops in-file duplicates, and hands the others on in
/// chunks of `chunk` rows ([`CHUNK`], or [`shared_chunk`] on a shared campaign).
pub(super) struct RowLoop<'a> {
    pub(super) chunk: usize,
    pub(super) stats: &'a Stats,
    pub(super) failures: &'a FailureLog,
    /// Prints a line about a row (above a run's progress bar).
    pub(super) say: &'a dyn Fn(&str),
}

impl RowLoop<'_> {
    /// Runs the loop over `rows`; `seen` holds the phones met so far, each with the line it was
    /// first met on (a duplicate is logged to `--failures` naming it). Ends early, without
    /// settling the chunk in hand, when `stopped()` says so or when `settle` returns false.
    pub(super) fn run(
        &self,
        rows: &mut CsvRows,
        seen: &mut HashMap<u64, u64>,
        stopped: impl Fn() -> bool,
        mut settle: impl FnMut(&mut Vec<Row>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut chunk: Vec<Row> = Vec::with_capacity(self.chunk);
        while let Some(next) = rows.next_line() {
            if stopped() {
                return Ok(());
            }
            let mut line = next.map_err(anyhow::Error::msg)?;
            Stats::bump(&self.stats.read);
            match std::mem::replace(&mut line.parsed, Err(String::new())) {
                Err(reason) => {
                    Stats::bump(&self.stats.invalid);
                    (self.say)(&format!("line {}: {reason}", line.line));
                    self.failures.write(&line.record, line.line, &reason);
                }
                // Phones as integers with their first line: 16 bytes each, so a million-row
                // file dedups in a few tens of MB.
                Ok(r) => match seen.entry(r.phone.as_u64()) {
                    Entry::Occupied(first) => {
                        Stats::bump(&self.stats.duplicates);
                        let why = format!(
                            "duplicate of line {}: {} is sent once",
                            first.get(),
                            r.phone.e164()
                        );
                        self.failures.write(&line.record, line.line, &why);
                    }
                    Entry::Vacant(v) => {
                        v.insert(line.line);
                        chunk.push((line, r));
                        if chunk.len() >= self.chunk && !settle(&mut chunk)? {
                            return Ok(());
                        }
                    }
                },
            }
        }
        if !chunk.is_empty() {
            settle(&mut chunk)?;
        }
        Ok(())
    }
}

/// The line that tells about a row that is not sent.
pub(super) fn row_line(line: u64, phone: &Phone, what: &str) -> String {
    format!("line {line}: {} {what}", phone.e164())
}

/// The reader stage: validates rows, drops in-file duplicates, issues tokens chunk by chunk
/// and hands the rows to send to the dispatcher.
pub(super) struct Feed {
    pub(super) campaign: String,
    pub(super) ttl: Duration,
    /// What the run sends again of the campaign's earlier rows.
    pub(super) rerun: Rerun,
    pub(super) writer: Writer,
    pub(super) stats: Arc<Stats>,
    pub(super) progress: Progress,
    pub(super) failures: FailureLog,
    pub(super) stop: watch::Receiver<Option<Stop>>,
    /// A read handle on the database, for the suppression list (read chunk by chunk, so
    /// that a STOP received while the run goes on spares the rows not yet issued).
    pub(super) suppressions: Store,
    /// Rows issued per transaction.
    pub(super) chunk: usize,
    /// Opens the file again, to look again at the rows other workers held (a shared
    /// campaign); `None` when no other worker can hold a row (SQLite).
    pub(super) reopen: Option<Reopen>,
}

/// Opens the run's CSV file again from its first row.
pub(super) type Reopen = Box<dyn Fn() -> Result<CsvRows, String> + Send>;

/// How long a worker waits before it looks again at rows other workers held: they are
/// usually sent within moments; a dead worker's rows come back when its lease ends. The wait
/// doubles, up to [`LOOK_AGAIN_MAX`], while a look finds nothing changed (each look reads the
/// file again).
const LOOK_AGAIN: Duration = Duration::from_millis(500);
const LOOK_AGAIN_MAX: Duration = Duration::from_secs(4);

/// Takes out of `chunk` the rows whose person is on the suppression list: counted as
/// `suppressed` and told, before any token is issued for them.
pub(super) fn drop_suppressed(
    store: &Store,
    chunk: &mut Vec<Row>,
    stats: &Stats,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let phones: Vec<Phone> = chunk.iter().map(|(_, r)| r.phone.clone()).collect();
    let suppressed = super::writer::patiently(|| store.suppressed_among(&phones))?;
    if !suppressed.contains(&true) {
        return Ok(());
    }
    let mut flags = suppressed.into_iter();
    chunk.retain(|(line, r)| {
        let out = flags.next().unwrap_or(false);
        if out {
            Stats::bump(&stats.suppressed);
            say(&row_line(
                line.line,
                &r.phone,
                "is suppressed (opted out): not sent",
            ));
        }
        !out
    });
    Ok(())
}

impl Feed {
    /// Feeds `rows` to the dispatcher through `jobs` until the file ends or the run stops.
    pub(super) fn run(self, mut rows: CsvRows, jobs: mpsc::Sender<Job>) -> anyhow::Result<()> {
        let say = |text: &str| self.progress.report(text);
        let rows_loop = RowLoop {
            chunk: self.chunk,
            stats: &self.stats,
            failures: &self.failures,
            say: &say,
        };
        let mut held = Vec::new();
        rows_loop.run(
            &mut rows,
            &mut HashMap::new(),
            || self.stop.borrow().is_some(),
            |chunk| self.flush(chunk, &jobs, &mut held),
        )?;
        self.look_again(held, &jobs)
    }

    /// A shared campaign: the rows other workers held when this one met them are looked at
    /// again until none is held: sent by their worker meanwhile (skipped here), or back to
    /// the campaign once that worker let go of them or its lease ended (sent here). `held`
    /// holds their line numbers in file order; the file is read again for their contents.
    fn look_again(&self, mut held: Vec<u64>, jobs: &mpsc::Sender<Job>) -> anyhow::Result<()> {
        let Some(reopen) = &self.reopen else {
            return Ok(());
        };
        if !held.is_empty() {
            self.progress.report(&format!(
                "flowctl: {} rows are held by other workers of campaign {:?}; \
                 waiting for them to be sent or for their claims to run out",
                held.len(),
                self.campaign
            ));
        }
        let mut wait = LOOK_AGAIN;
        let mut before = usize::MAX;
        while !held.is_empty() {
            wait = if held.len() < before {
                LOOK_AGAIN
            } else {
                (wait * 2).min(LOOK_AGAIN_MAX)
            };
            before = held.len();
            let mut stop = self.stop.clone();
            let stopped = tokio::runtime::Handle::current().block_on(async {
                tokio::time::timeout(wait, stop.wait_for(Option::is_some))
                    .await
                    .is_ok()
            });
            if stopped {
                return Ok(());
            }
            let mut rows = reopen().map_err(anyhow::Error::msg)?;
            let lines = std::mem::take(&mut held);
            let mut wanted = lines.iter().peekable();
            let mut chunk: Vec<Row> = Vec::with_capacity(self.chunk);
            while let (Some(&&want), Some(next)) = (wanted.peek(), rows.next_line()) {
                let mut line = next.map_err(anyhow::Error::msg)?;
                if line.line < want {
                    continue;
                }
                wanted.next();
                if let Ok(r) = std::mem::replace(&mut line.parsed, Err(String::new())) {
                    chunk.push((line, r));
                }
                if chunk.len() >= self.chunk && !self.flush(&mut chunk, jobs, &mut held)? {
                    return Ok(());
                }
            }
            if !chunk.is_empty() && !self.flush(&mut chunk, jobs, &mut held)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Issues the chunk's tokens in one transaction, replaces in a second one the rows to
    /// resend with a fresh token, and queues what is to be sent. Returns false when the
    /// dispatcher has stopped.
    ///
    /// Rows another worker holds (a shared campaign) are not counted: their line numbers go
    /// to `held`, to be looked at again.
    fn flush(
        &self,
        chunk: &mut Vec<Row>,
        jobs: &mpsc::Sender<Job>,
        held_elsewhere: &mut Vec<u64>,
    ) -> anyhow::Result<bool> {
        drop_suppressed(&self.suppressions, chunk, &self.stats, &|text| {
            self.progress.report(text)
        })?;
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
        let (tokens, issued) = self.writer.issue(tokens)?;
        let mut queued = Vec::new();
        let mut superseded = Vec::new();
        let mut released = Vec::new();
        for (((line, recipient), issued), fresh) in chunk.drain(..).zip(issued).zip(tokens) {
            let held = match &issued {
                Issued::New => None,
                Issued::Existing(m) => Some(m),
                Issued::Held => {
                    held_elsewhere.push(line.line);
                    continue;
                }
            };
            let decision = decide(held, &self.rerun);
            let said = account(&decision, Mode::Run, &self.stats);
            let token = match decision {
                Decision::Send(reused) => {
                    reused.unwrap_or_else(|| fresh.token.as_str().to_string())
                }
                Decision::Resend(old) => {
                    let token = fresh.token.as_str().to_string();
                    superseded.push((old, fresh));
                    token
                }
                _ => {
                    // Not sent by this run: no other worker should wait for its claim.
                    if let Some(m) = held {
                        released.push(m.token.clone());
                    }
                    if let Some(why) = said {
                        self.progress
                            .report(&row_line(line.line, &recipient.phone, &why));
                        self.failures.write(&line.record, line.line, &why);
                    }
                    continue;
                }
            };
            queued.push(Job {
                token,
                recipient,
                line: line.line,
                record: line.record,
            });
        }
        if !superseded.is_empty() {
            self.writer.supersede(superseded)?;
        }
        self.writer.release(released)?;
        for job in queued {
            if jobs.blocking_send(job).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
