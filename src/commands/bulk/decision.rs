//! What happens to a row, given what its campaign already holds for its phone: the one
//! description that a run and a dry run both follow, so that the dry run tells exactly what
//! the run would do.
//!
//! A token a message carried is never sent again: Meta echoes it in that message's statuses
//! and completion, so a resend after an accepted message (a `failed` status, a per-user
//! deferral after acceptance, `--retry-failed`, `--template` after 131047) gets a fresh token
//! that supersedes the old one, which stays valid for a late completion. A token no message
//! carried (pending, refused at once for a reason that may clear up, deferred before
//! acceptance) is reused.

use super::Stats;
use crate::config::{BulkSettings, RetryFailed};
use crate::store::{BulkMember, SendState};
use crate::time::Timestamp;

/// Meta's "re-engagement message" error: more than 24 hours since the person last wrote, so
/// only a template reaches them (Meta's error codes page,
/// <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>).
pub const OUTSIDE_WINDOW: i64 = 131047;

/// What to do with a row, given what its campaign already holds for its phone.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Send, with the campaign's earlier token (`Some`) or with the row's new one (`None`).
    Send(Option<String>),
    /// Send with a fresh token that supersedes the campaign's earlier one (given here).
    Resend(String),
    /// Already sent in this campaign.
    AlreadySent,
    /// Refused for good in an earlier run: not resent (unless `--retry-failed`).
    PreviouslyFailed {
        /// The refusal's Graph error code.
        code: Option<i64>,
        /// The stored reason.
        why: String,
    },
    /// Accepted by Meta in an earlier run, then settled by a `failed` status: not resent
    /// (unless `--retry-failed`, or `--template` for 131047).
    FailedAfterAcceptance {
        /// The status's Graph error code.
        code: Option<i64>,
        /// The stored reason.
        why: String,
    },
    /// Held back by a per-user limit until this time: not sent before.
    Deferred(Timestamp),
    /// A request may have left and no outcome was recorded: reported, not resent.
    Unknown(String),
}

/// What a run is asked to send again, from its flags, and when it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Rerun {
    /// `--resend-unknown`.
    pub resend_unknown: bool,
    /// `--retry-failed [--codes …]`.
    pub retry_failed: RetryFailed,
    /// The run sends a template (`--template`): the rows that failed with 131047 (outside
    /// the 24-hour window) are resent, since a template is what reaches them.
    pub template: bool,
    /// Deferred rows whose time is after this are left alone.
    pub now: Timestamp,
}

impl Rerun {
    /// The rules of a run with `args`, starting now.
    pub fn of(args: &BulkSettings) -> Rerun {
        Rerun {
            resend_unknown: args.resend_unknown,
            retry_failed: args.retry_failed.clone(),
            template: args.send.message.template.is_some(),
            now: Timestamp::now(),
        }
    }

    /// Whether a row that failed for good with `code` is sent again by this run.
    fn resends_failed(&self, code: Option<i64>) -> bool {
        self.retry_failed.covers(code) || (self.template && code == Some(OUTSIDE_WINDOW))
    }
}

/// The campaign's rule for a row whose phone it holds `held` for (`None`: nothing yet).
pub fn decide(held: Option<&BulkMember>, rerun: &Rerun) -> Decision {
    let Some(m) = held else {
        return Decision::Send(None);
    };
    let why = || m.error.clone().unwrap_or_default();
    let reuse = || Decision::Send(Some(m.token.clone()));
    let fresh = || Decision::Resend(m.token.clone());
    let carried = m.message_id.is_some() || m.failed_after_acceptance;
    match m.state {
        SendState::Sent => Decision::AlreadySent,
        SendState::Pending => reuse(),
        SendState::Deferred => match m.not_before {
            Some(until) if until > rerun.now => Decision::Deferred(until),
            _ if carried => fresh(),
            _ => reuse(),
        },
        SendState::Failed if rerun.resends_failed(m.error_code) && carried => fresh(),
        SendState::Failed if m.failed_after_acceptance => Decision::FailedAfterAcceptance {
            code: m.error_code,
            why: why(),
        },
        SendState::Failed if m.retryable => reuse(),
        SendState::Failed if rerun.resends_failed(m.error_code) => fresh(),
        SendState::Failed => Decision::PreviouslyFailed {
            code: m.error_code,
            why: why(),
        },
        SendState::Sending | SendState::Unknown if rerun.resend_unknown => reuse(),
        SendState::Sending => Decision::Unknown(
            "a request left in an earlier run that stopped before its answer was recorded".into(),
        ),
        SendState::Unknown => Decision::Unknown(why()),
    }
}

/// A run, or a dry run that tells what the run would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Run,
    DryRun,
}

/// Counts `decision` in `stats` (a row to send as `queued`: in a dry run, a row that would
/// be sent) and returns what to say about a row that is not sent. Deferred rows are counted
/// and summed up at the end, not told one by one: their time has simply not come.
pub(super) fn account(decision: &Decision, mode: Mode, stats: &Stats) -> Option<String> {
    let not = match mode {
        Mode::Run => "not resent",
        Mode::DryRun => "would not be resent",
    };
    match decision {
        Decision::Send(_) | Decision::Resend(_) => {
            Stats::bump(&stats.queued);
            None
        }
        Decision::AlreadySent => {
            Stats::bump(&stats.skipped);
            None
        }
        Decision::Deferred(until) => {
            stats.note_deferred(*until);
            None
        }
        Decision::PreviouslyFailed { code, why } => {
            Stats::bump(&stats.failed);
            Stats::bump(&stats.previously_failed);
            stats.note_previously_failed(*code);
            Some(format!("failed in an earlier run, {not}: {why}"))
        }
        Decision::FailedAfterAcceptance { code, why } => {
            Stats::bump(&stats.failed);
            Stats::bump(&stats.previously_failed);
            stats.note_previously_failed(*code);
            stats.note_failed_after_acceptance(*code);
            let reason = match code {
                Some(code) => format!("{code}: {why}"),
                None => why.clone(),
            };
            Some(format!("failed after Meta accepted it ({reason}), {not}"))
        }
        Decision::Unknown(why) => {
            Stats::bump(&stats.unknown);
            Some(match mode {
                Mode::Run => format!(
                    "outcome unknown, not resent (pass --resend-unknown to send it again): {why}"
                ),
                Mode::DryRun => format!("outcome unknown, would not be resent: {why}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    fn rerun() -> Rerun {
        Rerun {
            resend_unknown: false,
            retry_failed: RetryFailed::No,
            template: false,
            now: Timestamp::parse("2026-03-01T12:00:00.000Z").unwrap(),
        }
    }

    fn member(state: SendState) -> BulkMember {
        BulkMember {
            token: "flow_t".into(),
            state,
            retryable: false,
            error: Some("why".into()),
            error_code: None,
            failed_after_acceptance: false,
            not_before: None,
            message_id: None,
        }
    }

    fn retryable(state: SendState) -> BulkMember {
        BulkMember {
            retryable: true,
            ..member(state)
        }
    }

    /// Accepted as `wamid.1`, then settled by a `failed` status with `code`.
    fn after_acceptance(code: i64) -> BulkMember {
        BulkMember {
            error_code: Some(code),
            failed_after_acceptance: true,
            message_id: Some("wamid.1".into()),
            ..member(SendState::Failed)
        }
    }

    /// Refused at once with `code`, for good.
    fn refused(code: i64) -> BulkMember {
        BulkMember {
            error_code: Some(code),
            ..member(SendState::Failed)
        }
    }

    fn deferred(hours_from_now: i64, accepted: bool) -> BulkMember {
        let now = rerun().now.as_datetime();
        BulkMember {
            error_code: Some(131049),
            not_before: Some(Timestamp::from_datetime(
                now + chrono::Duration::hours(hours_from_now),
            )),
            message_id: accepted.then(|| "wamid.1".into()),
            failed_after_acceptance: accepted,
            ..member(SendState::Deferred)
        }
    }

    /// The decision table: (what the campaign holds, the run's flags) → what the run does.
    #[test]
    fn the_decision_table() {
        use Decision::*;
        let reuse = Send(Some("flow_t".into()));
        let fresh = Resend("flow_t".into());
        let plain = rerun();
        let unknown_too = Rerun {
            resend_unknown: true,
            ..rerun()
        };
        let retry_all = Rerun {
            retry_failed: RetryFailed::All,
            ..rerun()
        };
        let retry_131047 = Rerun {
            retry_failed: RetryFailed::Codes(vec![131047]),
            ..rerun()
        };
        let template = Rerun {
            template: true,
            ..rerun()
        };
        let soon = Timestamp::from_datetime(plain.now.as_datetime() + chrono::Duration::hours(3));
        let after = |code| FailedAfterAcceptance {
            code: Some(code),
            why: "why".into(),
        };
        let table: Vec<(&str, Option<BulkMember>, &Rerun, Decision)> = vec![
            ("a new phone", None, &plain, Send(None)),
            (
                "sent",
                Some(member(SendState::Sent)),
                &retry_all,
                AlreadySent,
            ),
            (
                "pending",
                Some(member(SendState::Pending)),
                &plain,
                reuse.clone(),
            ),
            (
                "refused, may clear up",
                Some(retryable(SendState::Failed)),
                &plain,
                reuse.clone(),
            ),
            (
                "refused, may clear up, --retry-failed",
                Some(retryable(SendState::Failed)),
                &retry_all,
                reuse.clone(),
            ),
            (
                "refused for good",
                Some(refused(131026)),
                &plain,
                PreviouslyFailed {
                    code: Some(131026),
                    why: "why".into(),
                },
            ),
            (
                "refused for good, --retry-failed",
                Some(refused(131026)),
                &retry_all,
                fresh.clone(),
            ),
            (
                "refused for good, other --codes",
                Some(refused(131026)),
                &retry_131047,
                PreviouslyFailed {
                    code: Some(131026),
                    why: "why".into(),
                },
            ),
            (
                "refused with 131047, --template",
                Some(refused(131047)),
                &template,
                fresh.clone(),
            ),
            (
                "failed after acceptance",
                Some(after_acceptance(131047)),
                &plain,
                after(131047),
            ),
            (
                "failed after acceptance, --retry-failed",
                Some(after_acceptance(131026)),
                &retry_all,
                fresh.clone(),
            ),
            (
                "failed after acceptance, its --codes",
                Some(after_acceptance(131047)),
                &retry_131047,
                fresh.clone(),
            ),
            (
                "failed after acceptance, other --codes",
                Some(after_acceptance(131026)),
                &retry_131047,
                after(131026),
            ),
            (
                "131047 after acceptance, --template",
                Some(after_acceptance(131047)),
                &template,
                fresh.clone(),
            ),
            (
                "131026 after acceptance, --template",
                Some(after_acceptance(131026)),
                &template,
                after(131026),
            ),
            (
                "deferred, time not come",
                Some(deferred(3, false)),
                &retry_all,
                Deferred(soon),
            ),
            (
                "deferred before acceptance, time come",
                Some(deferred(-1, false)),
                &plain,
                reuse.clone(),
            ),
            (
                "deferred after acceptance, time come",
                Some(deferred(-1, true)),
                &plain,
                fresh.clone(),
            ),
            (
                "sending",
                Some(member(SendState::Sending)),
                &retry_all,
                Unknown(
                    "a request left in an earlier run that stopped before its answer was recorded"
                        .into(),
                ),
            ),
            (
                "unknown",
                Some(member(SendState::Unknown)),
                &retry_all,
                Unknown("why".into()),
            ),
            (
                "unknown, --resend-unknown",
                Some(member(SendState::Unknown)),
                &unknown_too,
                reuse.clone(),
            ),
            (
                "sending, --resend-unknown",
                Some(member(SendState::Sending)),
                &unknown_too,
                reuse.clone(),
            ),
        ];
        for (case, held, flags, expected) in table {
            assert_eq!(decide(held.as_ref(), flags), expected, "{case}");
        }
    }

    #[test]
    fn a_run_and_a_dry_run_count_every_decision_alike() {
        let t = rerun().now;
        let decisions = [
            Decision::Send(None),
            Decision::Send(Some("flow_t".into())),
            Decision::Resend("flow_t".into()),
            Decision::AlreadySent,
            Decision::PreviouslyFailed {
                code: None,
                why: "why".into(),
            },
            Decision::FailedAfterAcceptance {
                code: Some(131047),
                why: "why".into(),
            },
            Decision::Deferred(t),
            Decision::Unknown("why".into()),
        ];
        let counts = |mode| {
            let stats = Stats::default();
            let said: Vec<bool> = decisions
                .iter()
                .map(|d| account(d, mode, &stats).is_some())
                .collect();
            let c = &stats;
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
            (
                said,
                [
                    n(&c.queued),
                    n(&c.skipped),
                    n(&c.failed),
                    n(&c.previously_failed),
                    n(&c.unknown),
                    n(&c.deferred),
                ],
                stats.failed_after_acceptance(),
                stats.next_deferred(),
            )
        };
        assert_eq!(counts(Mode::Run), counts(Mode::DryRun));
        let (said, numbers, by_code, next) = counts(Mode::Run);
        assert_eq!(
            said,
            vec![false, false, false, false, true, true, false, true]
        );
        assert_eq!(numbers, [3, 1, 2, 2, 1, 1]);
        assert_eq!(by_code.get("131047"), Some(&1));
        assert_eq!(next, Some(t));
        let say = |d: &Decision, mode| account(d, mode, &Stats::default()).unwrap();
        let unknown = Decision::Unknown("why".into());
        assert!(say(&unknown, Mode::Run).contains("--resend-unknown"));
        assert!(say(&unknown, Mode::DryRun).contains("would not be resent: why"));
    }
}
