//! Where a run stands: shared counters, the progress bar (or plain lines when stderr is not a
//! terminal) and the final summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::decision::OUTSIDE_WINDOW;
use crate::time::Timestamp;

/// The counters of a run, updated from every thread and task.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from the file.
    pub read: AtomicU64,
    /// Accepted by the API in this run.
    pub sent: AtomicU64,
    /// Refused in this run, or refused for good in an earlier run (not resent).
    pub failed: AtomicU64,
    /// Of `failed`: permanent failures of an earlier run, not resent.
    pub previously_failed: AtomicU64,
    /// Rows that could not be read or validated.
    pub invalid: AtomicU64,
    /// Already sent in this campaign by an earlier run.
    pub skipped: AtomicU64,
    /// Phones met earlier in the same file.
    pub duplicates: AtomicU64,
    /// Outcome unknown (no answer, or left `sending` by a dead process): not resent.
    pub unknown: AtomicU64,
    /// Rows handed to the sender, stored as `pending`, not yet attempted.
    pub queued: AtomicU64,
    /// Total records of the file, once the background count is done (0 before).
    pub total: AtomicU64,
    /// Graph API outages waited out (sends paused until the API answered again).
    pub outages: AtomicU64,
    /// Milliseconds spent paused by those outages.
    pub outage_ms: AtomicU64,
    /// Pauses of the whole run that Meta asked for (app or account throttled).
    pub throttles: AtomicU64,
    /// Milliseconds of those pauses.
    pub throttle_ms: AtomicU64,
    /// Of `sent`: committed to the store by the bookkeeping thread.
    pub recorded: Arc<AtomicU64>,
    /// Of `sent`: accepted by the API but lost with a failed commit (the store keeps them
    /// `sending`); set at the end of a run, the summary counts them as unknown, not sent.
    pub unrecorded: AtomicU64,
    /// Rows held back by a per-user limit: deferred by this run, or by an earlier one and
    /// their time has not come.
    pub deferred: AtomicU64,
    /// Rows not sent because their person is on the suppression list (opted out).
    pub suppressed: AtomicU64,
    /// Pauses because Meta held the Flow (THROTTLED, BLOCKED, DEPRECATED).
    pub flow_pauses: AtomicU64,
    /// Milliseconds of those pauses.
    pub flow_pause_ms: AtomicU64,
    /// The earliest time one of the `deferred` rows may be sent.
    next_deferred: Mutex<Option<Timestamp>>,
    /// Of `previously_failed`: rows Meta accepted in an earlier run and a `failed` status
    /// settled afterwards, per Graph error code.
    after_acceptance: Mutex<BTreeMap<String, u64>>,
    /// `previously_failed` per Graph error code (`none` without one).
    earlier_failures: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a deferred row, not sent before `until`.
    pub fn note_deferred(&self, until: Timestamp) {
        Stats::bump(&self.deferred);
        let mut next = self.next_deferred.lock().unwrap_or_else(|p| p.into_inner());
        *next = Some(next.map_or(until, |n| n.min(until)));
    }

    /// The earliest time a deferred row may be sent, when there is one.
    pub fn next_deferred(&self) -> Option<Timestamp> {
        *self.next_deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a row that failed after acceptance with `code`.
    pub fn note_failed_after_acceptance(&self, code: Option<i64>) {
        let key = code.map_or_else(|| "none".to_string(), |c| c.to_string());
        let mut by_code = self
            .after_acceptance
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *by_code.entry(key).or_default() += 1;
    }

    /// Counts a row that failed for good in an earlier run with `code`.
    pub fn note_previously_failed(&self, code: Option<i64>) {
        let key = code.map_or_else(|| "none".to_string(), |c| c.to_string());
        let mut by_code = self
            .earlier_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *by_code.entry(key).or_default() += 1;
    }

    /// The rows that failed for good in an earlier run, per Graph error code.
    pub fn previously_failed_by_code(&self) -> BTreeMap<String, u64> {
        self.earlier_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rows that failed after acceptance, per Graph error code (`none` without one).
    pub fn failed_after_acceptance(&self) -> BTreeMap<String, u64> {
        self.after_acceptance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rows whose fate is settled for this run.
    pub fn done(&self) -> u64 {
        self.sent.load(Relaxed)
            + self.deferred.load(Relaxed)
            + self.suppressed.load(Relaxed)
            + self.failed.load(Relaxed)
            + self.invalid.load(Relaxed)
            + self.skipped.load(Relaxed)
            + self.duplicates.load(Relaxed)
            + self.unknown.load(Relaxed)
    }
}

/// The machine-readable summary (`--json`), also the source of the human one.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub campaign: String,
    pub dry_run: bool,
    /// Records read.
    pub rows: u64,
    pub sent: u64,
    pub failed: u64,
    pub previously_failed: u64,
    /// `previously_failed` per Graph error code (`none` without one).
    pub previously_failed_by_code: BTreeMap<String, u64>,
    pub invalid: u64,
    pub skipped: u64,
    pub duplicates: u64,
    pub unknown: u64,
    /// Rows not attempted because the run stopped early (they are resumed by a rerun).
    pub not_attempted: u64,
    /// In a dry run: rows that would be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_send: Option<u64>,
    pub elapsed_s: f64,
    /// Messages accepted per second over the run.
    pub rate: f64,
    pub interrupted: bool,
    /// Of `unknown`: accepted by the API, but the database refused to record it.
    pub unrecorded: u64,
    /// Graph API outages waited out, and the seconds spent paused by them.
    pub outages: u64,
    pub outage_s: f64,
    /// Rows held back by a per-user limit (131049 for 24 h, 131056 for 15 min after its
    /// retries), by this run or an earlier one: not sent before `next_deferred_at` at the
    /// earliest.
    pub deferred: u64,
    /// Rows not sent because their person opted out (`flowctl suppress list`).
    pub suppressed: u64,
    /// Pauses while Meta held the Flow (THROTTLED, BLOCKED, DEPRECATED), and their seconds.
    pub flow_pauses: u64,
    pub flow_pause_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_deferred_at: Option<Timestamp>,
    /// Rows Meta accepted in an earlier run and a `failed` status settled afterwards (of
    /// `previously_failed`), per Graph error code.
    pub failed_after_acceptance: BTreeMap<String, u64>,
    /// Pauses of the whole run that Meta asked for (`X-Business-Use-Case-Usage`: the app or
    /// account was throttled), and their seconds in all.
    pub throttles: u64,
    pub throttle_s: f64,
    /// Why the run stopped taking rows, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl Summary {
    /// From the counters at the end of a run.
    pub fn collect(campaign: &str, stats: &Stats, elapsed: Duration) -> Summary {
        let unrecorded = stats.unrecorded.load(Relaxed);
        let sent = stats.sent.load(Relaxed).saturating_sub(unrecorded);
        let secs = elapsed.as_secs_f64();
        Summary {
            campaign: campaign.to_string(),
            dry_run: false,
            rows: stats.read.load(Relaxed),
            sent,
            failed: stats.failed.load(Relaxed),
            previously_failed: stats.previously_failed.load(Relaxed),
            previously_failed_by_code: stats.previously_failed_by_code(),
            invalid: stats.invalid.load(Relaxed),
            skipped: stats.skipped.load(Relaxed),
            duplicates: stats.duplicates.load(Relaxed),
            unknown: stats.unknown.load(Relaxed) + unrecorded,
            unrecorded,
            not_attempted: stats.queued.load(Relaxed),
            would_send: None,
            elapsed_s: (secs * 1000.0).round() / 1000.0,
            rate: if secs > 0.0 {
                ((sent as f64 / secs) * 10.0).round() / 10.0
            } else {
                0.0
            },
            interrupted: false,
            outages: stats.outages.load(Relaxed),
            outage_s: stats.outage_ms.load(Relaxed) as f64 / 1000.0,
            deferred: stats.deferred.load(Relaxed),
            suppressed: stats.suppressed.load(Relaxed),
            flow_pauses: stats.flow_pauses.load(Relaxed),
            flow_pause_s: stats.flow_pause_ms.load(Relaxed) as f64 / 1000.0,
            next_deferred_at: stats.next_deferred(),
            failed_after_acceptance: stats.failed_after_acceptance(),
            throttles: stats.throttles.load(Relaxed),
            throttle_s: stats.throttle_ms.load(Relaxed) as f64 / 1000.0,
            stopped: None,
        }
    }

    /// True when every row was sent or skipped.
    pub fn all_good(&self) -> bool {
        self.failed == 0
            && self.invalid == 0
            && self.unknown == 0
            && self.not_attempted == 0
            && self.deferred == 0
    }

    /// When a run sent nothing (or a dry run would send nothing) although the file had rows:
    /// why, and what to do about it. `None` when something was sent, or when the run stopped
    /// or was interrupted (those say why themselves).
    pub fn nothing_sent_hint(&self) -> Option<String> {
        let sent = if self.dry_run {
            self.would_send.unwrap_or(0)
        } else {
            self.sent
        };
        if sent > 0
            || self.rows == 0
            || self.interrupted
            || self.stopped.is_some()
            || self.not_attempted > 0
        {
            return None;
        }
        let (skipped, before) = (self.skipped, self.previously_failed);
        let campaign = &self.campaign;
        let again = "use --campaign NEW to send to them again";
        let codes: Vec<&str> = self
            .previously_failed_by_code
            .keys()
            .map(String::as_str)
            .filter(|c| *c != "none")
            .collect();
        let pick = if codes.is_empty() {
            String::new()
        } else {
            format!(" (--codes {} picks which)", codes.join(","))
        };
        let retry = |n: u64| {
            format!(
                "{n} {} in an earlier run ({}) and {} not resent: --retry-failed resends them with a fresh token{pick}",
                if n == 1 { "row failed" } else { "rows failed" },
                by_code(&self.previously_failed_by_code),
                if n == 1 { "is" } else { "are" },
            )
        };
        let verb = if self.dry_run {
            "nothing would be sent"
        } else {
            "nothing was sent"
        };
        // Invalid rows are told line by line above; they do not change why the others were
        // not sent, only add to it.
        let invalid = if self.invalid > 0 {
            format!("; {} invalid (see the lines above)", rows(self.invalid))
        } else {
            String::new()
        };
        let others_clear = self.unknown == 0 && self.deferred == 0;
        let why = if skipped > 0 && before == 0 && self.failed == 0 && others_clear {
            format!(
                "every valid phone of this file was already sent in campaign {campaign:?}: {again}{invalid}"
            )
        } else if before > 0 && before == self.failed && skipped == 0 && others_clear {
            format!(
                "every valid row failed in an earlier run of campaign {campaign:?}: {}{invalid}",
                retry(before)
            )
        } else {
            let mut parts = Vec::new();
            if skipped > 0 {
                parts.push(format!(
                    "{} already sent in campaign {campaign:?} ({again})",
                    rows(skipped)
                ));
            }
            if before > 0 {
                parts.push(retry(before));
            }
            if parts.is_empty() {
                // Invalid, deferred or unknown rows only: their own lines say what to do.
                return None;
            }
            format!("{}{invalid}", parts.join("; "))
        };
        Some(format!("{verb}: {why}"))
    }

    /// The human summary, a few lines for stderr.
    pub fn human(&self) -> String {
        let mut s = if self.dry_run {
            format!(
                "dry run, campaign {:?}: {}, {} would be sent, {} already sent (skipped), {} deferred, {}, {} invalid",
                self.campaign,
                rows(self.rows),
                self.would_send.unwrap_or(0),
                self.skipped,
                self.deferred,
                duplicates(self.duplicates),
                self.invalid
            )
        } else {
            format!(
                "campaign {:?}: {}, {} sent, {} failed, {} deferred, {} invalid, {} skipped (already sent), {}, {} unknown; {:.1}s, {:.1} msg/s",
                self.campaign,
                rows(self.rows),
                self.sent,
                self.failed,
                self.deferred,
                self.invalid,
                self.skipped,
                duplicates(self.duplicates),
                self.unknown,
                self.elapsed_s,
                self.rate
            )
        };
        let after: u64 = self.failed_after_acceptance.values().sum();
        let refused_before = self.previously_failed.saturating_sub(after);
        if refused_before > 0 {
            s.push_str(&format!(
                "\n{refused_before} of the failed rows failed for good in an earlier run and were not resent (--retry-failed resends them with a fresh token)"
            ));
        }
        if after > 0 {
            s.push_str(&format!(
                "\nfailed after acceptance: {after} ({}): Meta accepted them in an earlier run, then reported them failed; --retry-failed [--codes …] resends them with a fresh token",
                by_code(&self.failed_after_acceptance)
            ));
            if self
                .failed_after_acceptance
                .contains_key(&OUTSIDE_WINDOW.to_string())
            {
                s.push_str(&format!(
                    "\n{OUTSIDE_WINDOW} is outside the 24-hour window: rerun with --template NAME --lang CODE to reach them with a template (a --template rerun resends them even without --retry-failed)"
                ));
            }
        }
        if self.deferred > 0 {
            let next = self
                .next_deferred_at
                .map(|t| format!(" (next at {t})"))
                .unwrap_or_default();
            s.push_str(&format!(
                "\ndeferred: {}{next}: per-user limits (131049: 24 h, 131056: 15 min); a rerun from then sends them",
                self.deferred
            ));
        }
        if self.unknown > 0 {
            s.push_str(&format!(
                "\n{} {} an unknown outcome (the message may have gone out); {} not resent unless you pass --resend-unknown",
                self.unknown,
                if self.unknown == 1 { "send has" } else { "sends have" },
                if self.unknown == 1 { "it is" } else { "they are" }
            ));
        }
        if self.unrecorded > 0 {
            s.push_str(&format!(
                "\n{} of the unknown were accepted by the API, but the database refused to record them; the store keeps them as 'sending' and a rerun reports them as unknown",
                self.unrecorded
            ));
        }
        if self.outages > 0 {
            s.push_str(&format!(
                "\nsends paused for {} Graph API outage{} ({:.1}s in all) and resumed when it answered again",
                self.outages,
                if self.outages == 1 { "" } else { "s" },
                self.outage_s
            ));
        }
        if self.throttles > 0 {
            s.push_str(&format!(
                "\nsends paused {} time{} by Meta (app/account throttled, {:.0}s in all); no row was failed for it",
                self.throttles,
                if self.throttles == 1 { "" } else { "s" },
                self.throttle_s
            ));
        }
        if let Some(hint) = self.nothing_sent_hint() {
            s.push('\n');
            s.push_str(&hint);
        }
        if self.flow_pauses > 0 {
            s.push_str(&format!(
                "\nsends paused {} time{} while Meta held the Flow (THROTTLED, BLOCKED or DEPRECATED; {:.1}s in all)",
                self.flow_pauses,
                if self.flow_pauses == 1 { "" } else { "s" },
                self.flow_pause_s
            ));
        }
        if self.suppressed > 0 {
            s.push_str(&format!(
                "\nsuppressed: {} (opted out; not {}; `flowctl suppress list` shows who and why)",
                rows(self.suppressed),
                if self.dry_run { "to be sent" } else { "sent" }
            ));
        }
        if self.not_attempted > 0 {
            s.push_str(&format!(
                "\n{} not attempted",
                if self.not_attempted == 1 {
                    "1 row was".to_string()
                } else {
                    format!("{} rows were", self.not_attempted)
                }
            ));
        }
        s
    }
}

/// `1 row`, `3 rows`.
fn rows(n: u64) -> String {
    format!("{n} {}", if n == 1 { "row" } else { "rows" })
}

/// `1 duplicate`, `2 duplicates`.
fn duplicates(n: u64) -> String {
    format!("{n} {}", if n == 1 { "duplicate" } else { "duplicates" })
}

/// `131047: 3, 131026: 1`, the most frequent first.
fn by_code(counts: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(code, n)| format!("{code}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The live display on stderr.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Interval of the plain lines printed when there is no bar.
    lines_every: Duration,
}

impl Progress {
    /// A bar when stderr is a terminal; otherwise a plain line every `lines_every` (see
    /// [`Progress::spawn_updates`]).
    pub fn new(lines_every: Duration) -> Progress {
        if !std::io::stderr().is_terminal() || crate::commands::quiet() {
            return Progress {
                bar: None,
                lines_every,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar: Some(bar),
            lines_every,
        }
    }

    /// Prints a line (a bad row, a failure) without tearing the bar.
    pub fn report(&self, line: &str) {
        if crate::commands::quiet() {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Keeps the display up to date until `done` is dropped or sent. With a bar, it is
    /// refreshed; without one, a plain line is printed every interval. `pace` tells the
    /// pacer's state at each update.
    pub fn spawn_updates(
        &self,
        stats: Arc<Stats>,
        pace: impl Fn() -> Pace + Send + 'static,
        mut done: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let bar = self.bar.clone();
        if crate::commands::quiet() {
            return tokio::spawn(async move {
                let _ = done.await;
            });
        }
        let interval = if bar.is_some() {
            Duration::from_millis(200)
        } else {
            self.lines_every
        };
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    _ = &mut done => break,
                    _ = tick.tick() => {}
                }
                let line = status_line(&stats, start.elapsed(), &pace());
                match &bar {
                    Some(bar) => {
                        let total = stats.total.load(Relaxed);
                        if total > 0 {
                            bar.set_length(total);
                        }
                        bar.set_position(stats.done());
                        bar.set_message(format!("{} | {}", line.counts, line.rate));
                    }
                    None => eprintln!("progress: {}", line.full()),
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        })
    }
}

/// The pacer's state, as the display shows it.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// The rate in force, messages per second.
    pub rate: f64,
    /// Until when Meta's throttle of the app or account holds every send, while it does.
    pub throttled_until: Option<Instant>,
    /// The Flow's status while Meta holds it (THROTTLED, BLOCKED, DEPRECATED).
    pub flow_held: Option<&'static str>,
}

/// How the display names a pause Meta asked for: `paused by Meta until 14:05:09
/// (app/account throttled)`, in local time.
pub fn throttle_text(until: Instant) -> String {
    let left = until.saturating_duration_since(Instant::now());
    let at = chrono::Local::now() + chrono::Duration::from_std(left).unwrap_or_default();
    format!(
        "paused by Meta until {} (app/account throttled)",
        at.format("%H:%M:%S")
    )
}

struct StatusLine {
    counts: String,
    rate: String,
    tail: String,
}

impl StatusLine {
    fn full(&self) -> String {
        format!("{} | {} {}", self.counts, self.rate, self.tail)
    }
}

fn status_line(stats: &Stats, elapsed: Duration, pace: &Pace) -> StatusLine {
    let sent = stats.sent.load(Relaxed);
    let done = stats.done();
    let total = stats.total.load(Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = sent as f64 / secs;
    let eta = if total > done && rate > 0.0 {
        let left = (total - done) as f64 / rate.max(1e-9);
        humantime::format_duration(Duration::from_secs(left.ceil() as u64)).to_string()
    } else {
        "-".to_string()
    };
    let of = if total > 0 {
        format!("{done}/{total}")
    } else {
        format!("{done}/?")
    };
    StatusLine {
        counts: format!(
            "sent {sent}, failed {}, deferred {}, skipped {}, invalid {}, unknown {}",
            stats.failed.load(Relaxed),
            stats.deferred.load(Relaxed),
            stats.skipped.load(Relaxed)
                + stats.duplicates.load(Relaxed)
                + stats.suppressed.load(Relaxed),
            stats.invalid.load(Relaxed),
            stats.unknown.load(Relaxed),
        ),
        rate: match (pace.flow_held, pace.throttled_until) {
            (Some(status), _) => {
                format!("{rate:.1} msg/s, paused: the Flow is {status} (waiting for PUBLISHED)")
            }
            (None, Some(until)) => format!("{rate:.1} msg/s, {}", throttle_text(until)),
            (None, None) => format!("{rate:.1} msg/s (pacing at {:.0}/s)", pace.rate),
        },
        tail: format!("| {of} rows | ETA {eta}"),
    }
}
