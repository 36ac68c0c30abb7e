//! What happens to a row, given what its campaign already holds for its phone: the one
//! description that a run and a dry run both follow, so that the dry run tells exactly what
//! the run would do.

use super::Stats;
use crate::store::{BulkMember, SendState};

/// What to do with a row, given what its campaign already holds for its phone.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Send, with the campaign's earlier token (`Some`) or with the row's new one (`None`).
    Send(Option<String>),
    /// Already sent in this campaign.
    AlreadySent,
    /// Failed for good in an earlier run: not resent.
    PreviouslyFailed(String),
    /// A request may have left and no outcome was recorded: reported, not resent.
    Unknown(String),
}

/// The campaign's rule for a row whose phone it holds `held` for (`None`: nothing yet).
pub fn decide(held: Option<&BulkMember>, resend_unknown: bool) -> Decision {
    let Some(member) = held else {
        return Decision::Send(None);
    };
    let reason = || member.error.clone().unwrap_or_default();
    let resend = || Decision::Send(Some(member.token.clone()));
    match member.state {
        SendState::Sent => Decision::AlreadySent,
        SendState::Pending => resend(),
        SendState::Failed if member.retryable => resend(),
        SendState::Failed => Decision::PreviouslyFailed(reason()),
        SendState::Sending | SendState::Unknown if resend_unknown => resend(),
        SendState::Sending => Decision::Unknown(
            "a request left in an earlier run that stopped before its answer was recorded".into(),
        ),
        SendState::Unknown => Decision::Unknown(reason()),
        // Held back by a per-user limit: not resent by this rule (the bulk side decides when
        // its time has come).
        SendState::Deferred => Decision::PreviouslyFailed(reason()),
    }
}

/// A run, or a dry run that tells what the run would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Run,
    DryRun,
}

/// Counts `decision` in `stats` (a row to send as `queued`: in a dry run, a row that would
/// be sent) and returns what to say about a row that is not sent.
pub(super) fn account(decision: &Decision, mode: Mode, stats: &Stats) -> Option<String> {
    match decision {
        Decision::Send(_) => {
            Stats::bump(&stats.queued);
            None
        }
        Decision::AlreadySent => {
            Stats::bump(&stats.skipped);
            None
        }
        Decision::PreviouslyFailed(why) => {
            Stats::bump(&stats.failed);
            Stats::bump(&stats.previously_failed);
            Some(match mode {
                Mode::Run => format!("failed in an earlier run, not resent: {why}"),
                Mode::DryRun => format!("failed in an earlier run, would not be resent: {why}"),
            })
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

    fn member(state: SendState, retryable: bool) -> BulkMember {
        BulkMember {
            token: "flow_t".into(),
            state,
            retryable,
            error: Some("why".into()),
            error_code: None,
            failed_after_acceptance: false,
            not_before: None,
            message_id: None,
        }
    }

    fn decide_for(state: SendState, retryable: bool, resend_unknown: bool) -> Decision {
        decide(Some(&member(state, retryable)), resend_unknown)
    }

    #[test]
    fn a_rerun_skips_sent_resumes_pending_and_transient_and_reports_unknown() {
        use Decision::*;
        let send = Send(Some("flow_t".into()));
        assert_eq!(decide(None, false), Send(None));
        assert_eq!(decide_for(SendState::Sent, false, false), AlreadySent);
        assert_eq!(decide_for(SendState::Pending, false, false), send);
        assert_eq!(decide_for(SendState::Failed, true, false), send);
        assert_eq!(
            decide_for(SendState::Failed, false, false),
            PreviouslyFailed("why".into())
        );
        assert!(matches!(
            decide_for(SendState::Sending, false, false),
            Unknown(_)
        ));
        assert_eq!(
            decide_for(SendState::Unknown, false, false),
            Unknown("why".into())
        );
        assert_eq!(decide_for(SendState::Unknown, false, true), send);
        assert_eq!(decide_for(SendState::Sending, false, true), send);
    }

    #[test]
    fn a_run_and_a_dry_run_count_every_decision_alike() {
        let decisions = [
            Decision::Send(None),
            Decision::Send(Some("flow_t".into())),
            Decision::AlreadySent,
            Decision::PreviouslyFailed("why".into()),
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
                ],
            )
        };
        assert_eq!(counts(Mode::Run), counts(Mode::DryRun));
        assert_eq!(
            counts(Mode::Run),
            (vec![false, false, false, true, true], [2, 1, 1, 1, 1])
        );
        let say = |d: &Decision, mode| account(d, mode, &Stats::default()).unwrap();
        let unknown = Decision::Unknown("why".into());
        assert!(say(&unknown, Mode::Run).contains("--resend-unknown"));
        assert!(say(&unknown, Mode::DryRun).contains("would not be resent: why"));
    }
}
