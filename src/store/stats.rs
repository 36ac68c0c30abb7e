//! What `flowctl stats` reads: the funnel per campaign, from the tokens and their responses.
//!
//! Every token issued is in exactly one of `sent`, `failed`, `deferred`, `pending`, `unknown`
//! and `replaced`, so those six add up to `issued`. The funnel is cumulative and disjoint from
//! failures:
//! - `sent`: accepted by the Graph API (`state = 'sent'`) or reported by a status
//!   (`delivery_rank >= 1`), and neither failed, deferred nor replaced;
//! - `delivered`: `delivery_rank >= 2` (a read message was delivered), not failed;
//! - `read`: `delivery_rank >= 3`, not failed;
//! - `failed`: refused by the API (`state = 'failed'`) or failed to deliver
//!   (`delivery = 'failed'`), broken down by error code (`unknown` when none was given);
//!   a row replaced by a resend with a fresh token (`superseded_by`) no longer counts;
//! - `failed_after_acceptance`: the failed ones Meta had accepted (a `failed` status);
//! - `deferred`: held back by a per-user limit, to be sent again later;
//! - `pending`: stored, no request has left for it yet (a run stopped before it);
//! - `unknown`: a request left and no answer was recorded (timeout, or a process that died
//!   mid-request): it may or may not have gone out;
//! - `replaced`: failed or deferred, then resent with a fresh token (that token counts instead);
//! - `completed`: tokens with a (primary) response;
//! - `unmatched`: completions joined to no token; counted in a campaign only when known.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Result;

/// The funnel of one campaign, or of all of them (`campaign: None`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Funnel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Tokens issued.
    pub issued: i64,
    /// Messages accepted (and not failed afterwards).
    pub sent: i64,
    /// Messages refused by the API or that failed to deliver.
    pub failed: i64,
    /// Error code (as text, `unknown` when none) → number of failed messages.
    pub failed_by_code: BTreeMap<String, i64>,
    /// Of the failed messages, those Meta accepted and reported failed later on the status
    /// webhook (131047, 131026, …).
    pub failed_after_acceptance: i64,
    /// Recipients held back by a per-user limit (131049, 131056), to be sent again later.
    pub deferred: i64,
    /// Tokens stored whose request has not left yet.
    pub pending: i64,
    /// Sends whose outcome is unknown (a request left, no answer recorded).
    pub unknown: i64,
    /// Failed or deferred tokens replaced by a resend with a fresh token.
    pub replaced: i64,
    /// Messages delivered (including read ones).
    pub delivered: i64,
    /// Messages read.
    pub read: i64,
    /// Tokens with a completion.
    pub completed: i64,
    /// Completions that could not be joined to a token.
    pub unmatched: i64,
    /// `completed / sent`; `None` when nothing was sent.
    pub completion_rate: Option<f64>,
    /// Median time from the send to the completion, in seconds (millisecond precision).
    pub median_completion_seconds: Option<f64>,
}

/// The funnel per campaign (by name) and over all of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FunnelReport {
    pub campaigns: Vec<Funnel>,
    pub total: Funnel,
    /// Delivery statuses received from Meta's webhook so far, all campaigns together: none
    /// means the delivered and read figures cannot have moved yet (nothing received them).
    pub statuses_received: i64,
}

/// Adds every campaign's counts into `total` (its codes, unmatched completions and median
/// are the backend's to fill: they are not sums), then sets each funnel's completion rate.
/// Shared by the backends, so that both total alike.
pub(crate) fn total_up(campaigns: &mut [Funnel], total: &mut Funnel) {
    for f in campaigns.iter() {
        total.issued += f.issued;
        total.sent += f.sent;
        total.failed += f.failed;
        total.delivered += f.delivered;
        total.read += f.read;
        total.failed_after_acceptance += f.failed_after_acceptance;
        total.deferred += f.deferred;
        total.pending += f.pending;
        total.unknown += f.unknown;
        total.replaced += f.replaced;
        total.completed += f.completed;
    }
    for f in campaigns.iter_mut().chain(std::iter::once(total)) {
        f.completion_rate = (f.sent > 0).then(|| f.completed as f64 / f.sent as f64);
    }
}

/// The median in seconds, to the millisecond, from the one or two middle durations (whole
/// milliseconds): their sum and how many they are. The mean of two is rounded half away from
/// zero in integers, so every backend gives the same figure (floating-point days would not).
pub(crate) fn median_seconds(middle_ms: i64, middle: i64) -> f64 {
    let ms = if middle == 2 {
        (middle_ms + middle_ms.signum()) / 2
    } else {
        middle_ms
    };
    ms as f64 / 1000.0
}

/// `stats`' read.
pub trait StatsQueries {
    /// The funnel of every campaign (or only `campaign`), with the total. Without a campaign
    /// filter, the total also counts unmatched completions whose campaign is unknown.
    fn funnel(&self, campaign: Option<&str>) -> Result<FunnelReport>;

    /// The names of every campaign that issued a token, sorted.
    fn campaign_names(&self) -> Result<Vec<String>>;
}

/// The behaviour of every backend, run on each ([`each_backend`](crate::store::test_util)).
#[cfg(test)]
mod backend_tests {
    use std::time::Duration;

    use crate::store::test_util::each_backend;
    use crate::store::{CompletionInput, Failure, SendState, StatusInput, Store};

    fn token(s: &mut Store, campaign: &str) -> String {
        crate::store::sqlite::test_util::issue_in(&mut **s, campaign, SendState::Pending)
    }

    /// A token sent as `wamid.<token>`, with the delivery statuses given.
    fn sent(s: &mut Store, campaign: &str, statuses: &[&str]) -> String {
        let t = token(s, campaign);
        let wamid = format!("wamid.{t}");
        s.record_sent(&t, &wamid, None).unwrap();
        for status in statuses {
            s.record_status(&StatusInput {
                message_id: &wamid,
                status,
                at: "2026-01-01T00:00:00.000Z",
                recipient: None,
                error_code: None,
                error_title: None,
                callback: None,
                settle: None,
            })
            .unwrap();
        }
        t
    }

    /// Completes `t` `secs` seconds after its send.
    fn complete_after(s: &mut Store, t: &str, secs: u64) {
        let sent_at = s.find_token(t).unwrap().unwrap().sent_at.unwrap();
        let at = sent_at
            .saturating_add(Duration::from_secs(secs))
            .to_string();
        s.complete(&CompletionInput {
            token: t,
            answers: &serde_json::Map::new(),
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: &at,
        })
        .unwrap();
    }

    #[test]
    fn funnel_is_cumulative_and_failures_are_broken_down() {
        each_backend("funnel", |s| {
            token(s, "a"); // issued only
            sent(s, "a", &[]);
            let d = sent(s, "a", &["sent", "delivered"]);
            let r = sent(s, "a", &["delivered", "read"]);
            sent(s, "a", &["failed"]);
            let f = token(s, "a");
            let refusal = Failure {
                code: Some(131026),
                message: "x".into(),
                retryable: false,
            };
            s.record_failed(&f, &refusal).unwrap();
            complete_after(s, &d, 60);
            complete_after(s, &r, 120);
            let other = sent(s, "b", &[]);
            complete_after(s, &other, 10);

            let report = s.funnel(None).unwrap();
            let a = &report.campaigns[0];
            assert_eq!(a.campaign.as_deref(), Some("a"));
            assert_eq!(
                (a.issued, a.sent, a.failed, a.delivered, a.read, a.completed),
                (6, 3, 2, 2, 1, 2)
            );
            assert_eq!(
                a.sent + a.failed + a.deferred + a.pending + a.unknown + a.replaced,
                a.issued,
                "the buckets add up: {a:?}"
            );
            assert_eq!(a.pending, 1);
            assert_eq!(a.failed_by_code["131026"], 1);
            assert_eq!(a.failed_by_code["unknown"], 1);
            assert_eq!(a.completion_rate, Some(2.0 / 3.0));
            assert_eq!(a.median_completion_seconds, Some(90.0));
            assert_eq!((report.total.issued, report.total.completed), (7, 3));
            assert_eq!(report.total.median_completion_seconds, Some(60.0));
            assert_eq!(report.statuses_received, 5);
            assert_eq!(s.campaign_names().unwrap(), ["a", "b"]);

            let only_b = s.funnel(Some("b")).unwrap();
            assert_eq!(only_b.campaigns.len(), 1);
            assert_eq!(only_b.total.issued, 1);
            assert_eq!(only_b.total.completion_rate, Some(1.0));
        });
    }

    #[test]
    fn an_empty_database_has_an_empty_funnel() {
        each_backend("empty funnel", |s| {
            let report = s.funnel(None).unwrap();
            assert!(report.campaigns.is_empty());
            assert_eq!(report.total.completion_rate, None);
            assert_eq!(report.total.median_completion_seconds, None);
            assert!(s.campaign_names().unwrap().is_empty());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::median_seconds;

    #[test]
    fn the_median_of_two_middles_rounds_half_away_from_zero() {
        assert_eq!(median_seconds(90_000, 1), 90.0);
        assert_eq!(median_seconds(3_801_003 + 3_860_000, 2), 3830.502);
        assert_eq!(median_seconds(3, 2), 0.002);
        assert_eq!(median_seconds(-3, 2), -0.002);
        assert_eq!(median_seconds(-4, 2), -0.002);
    }
}
