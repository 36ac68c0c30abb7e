//! Bulk campaign bookkeeping: every operation `flowctl bulk` asks of the store.
//!
//! Bulk writes are batched: a chunk of rows is issued in one transaction, the rows whose
//! requests are about to leave are marked `sending` in one transaction (group commit), and
//! outcomes are recorded in batches. One transaction per message would cap a run at a few
//! hundred messages per second on a slow disk; batches keep bookkeeping off the critical path.

use std::time::Duration;

use super::{Failure, NewToken, Result, SendState};
use crate::phone::Phone;
use crate::time::Timestamp;

/// What a campaign already knows about one phone.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkMember {
    /// The token issued for this phone in this campaign (reused on a retry).
    pub token: String,
    pub state: SendState,
    /// For a failed row: whether the failure may clear up (transient, not the recipient's fault).
    pub retryable: bool,
    /// For a failed or unknown row: the stored reason.
    pub error: Option<String>,
    /// For a failed or deferred row: the Graph error code.
    pub error_code: Option<i64>,
    /// True when the message was accepted and a `failed` status settled it afterwards (a
    /// resend needs a fresh token: see [`BulkQueries::bulk_supersede`]).
    pub failed_after_acceptance: bool,
    /// For a deferred row: not sent before this time.
    pub not_before: Option<Timestamp>,
    /// The wamid of the accepted message, if one was.
    pub message_id: Option<String>,
}

/// The result of issuing one row's token in its campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum Issued {
    /// A fresh `pending` token was stored.
    New,
    /// The campaign already had a token for this phone; nothing was inserted.
    Existing(BulkMember),
    /// Another live worker holds the row (PostgreSQL, several workers on one campaign): it is
    /// that worker's to send. Look again once its lease may have run out.
    Held,
}

/// Permits granted from the shared send rate ([`BulkQueries::bulk_take_permits`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Permits {
    /// How many requests may leave now (0 to `want`).
    pub granted: u32,
    /// When none was granted: how long until the next one is due.
    pub wait: Duration,
}

/// A recorded outcome of one bulk send.
#[derive(Clone, Debug, PartialEq)]
pub enum BulkOutcome {
    Sent {
        token: String,
        message_id: String,
        wa_id: Option<String>,
        /// Requests beyond the first (the first was counted when the row was marked sending).
        extra_attempts: i64,
    },
    /// Held back by a per-user limit (131049, or 131056 after its retries): not sent before
    /// `until`.
    Deferred {
        token: String,
        until: Timestamp,
        failure: Failure,
        extra_attempts: i64,
    },
    /// A refusal (`Failed`) or a request with no answer (`Unknown`).
    NotSent {
        token: String,
        state: SendState,
        failure: Failure,
        extra_attempts: i64,
    },
}

/// `bulk`'s batched bookkeeping.
pub trait BulkQueries {
    /// Issues `pending` bulk tokens for a chunk of rows in ONE transaction. A row whose
    /// (campaign, phone) already has a token keeps it, and its stored state is returned so
    /// the caller decides to skip, resume or report it. A kept token that no message has
    /// carried yet (`pending`, or failed with a retryable error) takes the file's current
    /// name and data, since it is about to be sent with them.
    fn bulk_issue(&mut self, rows: &[NewToken]) -> Result<Vec<Issued>>;

    /// In ONE transaction: records finished outcomes, then marks `sending` the tokens whose
    /// requests leave right after the commit. After a crash, `sending` is therefore left only
    /// on rows whose request may really have left. A worker that joined a shared campaign
    /// ([`BulkQueries::bulk_join`]) marks only the rows it still holds and releases the rows
    /// whose outcome it records; the tokens it no longer holds (its lease ran out and another
    /// worker took them over) are returned, NOT marked: their requests must not leave.
    fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<Vec<String>>;

    /// In ONE transaction, for each `(old token, new token)`: the old row is marked superseded
    /// (it stays valid, so a late completion of it is still joined) and the new one is issued
    /// `pending` as the campaign's member for that phone. For a resend with a fresh token
    /// (`bulk --retry-failed`, `--template` after 131047).
    fn bulk_supersede(&mut self, pairs: &[(String, NewToken)]) -> Result<()>;

    /// What the campaign already holds for each phone (read only, for `--dry-run`).
    fn bulk_members(&self, campaign: &str, phones: &[Phone]) -> Result<Vec<Option<BulkMember>>>;

    /// Counts a campaign's bulk tokens per state (tests and summaries).
    fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>>;

    /// Whether several workers may share a campaign on this database (PostgreSQL: yes;
    /// SQLite: no, one run per campaign under its lock file).
    fn bulk_shared(&self) -> bool;

    /// Makes this handle the bookkeeping of worker `worker` on a shared campaign: from now on
    /// the rows it issues or takes over are claimed by it for `lease`, and
    /// [`BulkQueries::bulk_issue`] answers [`Issued::Held`] for a row another live worker
    /// holds. Without a shared database (SQLite) nothing changes.
    fn bulk_join(&mut self, worker: &str, lease: Duration) -> Result<()>;

    /// Renews the lease of every row this worker holds (call well within the lease); the
    /// number of rows renewed.
    fn bulk_renew(&mut self) -> Result<u64>;

    /// Lets go of rows this worker holds without an outcome to record (rows it decided not
    /// to send, rows it will not send after all), so that no other worker waits for their
    /// lease.
    fn bulk_release(&mut self, tokens: &[String]) -> Result<()>;

    /// Lets go of every row this worker still holds (at the end of its run).
    fn bulk_leave(&mut self) -> Result<()>;

    /// Takes up to `want` permits from the shared budget of sending number `key`: a token
    /// bucket refilled at `rate` per second up to `burst`, on the database's clock, shared by
    /// every worker. Without a shared database (SQLite) everything asked is granted: the run's
    /// own pacer is the only one.
    fn bulk_take_permits(&mut self, key: &str, rate: f64, burst: f64, want: u32)
        -> Result<Permits>;

    /// A worker met a rate-limit answer (130429: the number's throughput is exceeded): the
    /// shared budget of `key` pauses every worker for [`RATE_LIMIT_PAUSE`], then refills at
    /// half the rate in force, stepping back up by [`RATE_RECOVERY`] every
    /// [`RATE_QUIET`] without another cut, never above `rate` (the configured one). Answers
    /// within a second of a cut are the same episode: one cut. Without a shared database
    /// (SQLite) nothing to do: the run's own pacer does this.
    fn bulk_rate_limited(&mut self, key: &str, rate: f64) -> Result<()>;
}

/// How long every worker of a number pauses after a rate-limit answer (Meta: retry 130429
/// after about a second); the same figures as a single run's pacer.
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Rate-limit answers within this time of a cut are the same episode: one cut, not many
/// (every request in flight when the limit hit comes back with the same answer).
pub const RATE_SAME_EPISODE: Duration = Duration::from_secs(1);
/// Time without a cut before the shared rate steps back up.
pub const RATE_QUIET: Duration = Duration::from_secs(2);
/// The shared rate's step back up after each quiet period.
pub const RATE_RECOVERY: f64 = 1.25;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::each_backend;
    use crate::store::{Failure, Origin};
    use crate::token::FlowToken;

    fn row(phone: &str) -> NewToken {
        NewToken {
            token: FlowToken::generate(),
            phone: Phone::parse(phone, None).unwrap(),
            customer_name: None,
            campaign: "c".into(),
            origin: Origin::Bulk,
            initial_data: None,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn bulk_issue_inserts_once_per_campaign_and_phone() {
        each_backend("bulk_issue", |s| {
            let a = row("+212610059159");
            let out = s.bulk_issue(&[a.clone(), row("+33612345678")]).unwrap();
            assert_eq!(out, vec![Issued::New, Issued::New]);
            let again = s.bulk_issue(&[row("+212610059159")]).unwrap();
            match &again[0] {
                Issued::Existing(m) => {
                    assert_eq!(m.token, a.token.as_str());
                    assert_eq!(m.state, SendState::Pending);
                }
                other => panic!("{other:?}"),
            }
        });
    }

    #[test]
    fn bulk_commit_records_outcomes_and_marks_sending_in_one_go() {
        each_backend("bulk_commit", |s| {
            let a = row("+212610059159");
            let b = row("+33612345678");
            s.bulk_issue(&[a.clone(), b.clone()]).unwrap();
            let ta = a.token.as_str().to_string();
            let tb = b.token.as_str().to_string();
            s.bulk_commit(&[], &[ta.clone(), tb.clone()]).unwrap();
            assert_eq!(
                s.find_token(&ta).unwrap().unwrap().state,
                SendState::Sending
            );
            s.bulk_commit(
                &[
                    BulkOutcome::Sent {
                        token: ta.clone(),
                        message_id: "wamid.1".into(),
                        wa_id: None,
                        extra_attempts: 2,
                    },
                    BulkOutcome::NotSent {
                        token: tb.clone(),
                        state: SendState::Failed,
                        failure: Failure {
                            code: Some(131026),
                            message: "undeliverable".into(),
                            retryable: false,
                        },
                        extra_attempts: 0,
                    },
                ],
                &[],
            )
            .unwrap();
            let ra = s.find_token(&ta).unwrap().unwrap();
            assert_eq!((ra.state, ra.attempts), (SendState::Sent, 3));
            let members = s
                .bulk_members(
                    "c",
                    &[b.phone.clone(), Phone::parse("+14155550123", None).unwrap()],
                )
                .unwrap();
            let mb = members[0].clone().unwrap();
            assert_eq!((mb.state, mb.retryable), (SendState::Failed, false));
            assert!(members[1].is_none());
            assert_eq!(
                s.bulk_state_counts("c").unwrap(),
                vec![(SendState::Failed, 1), (SendState::Sent, 1)]
            );
        });
    }

    #[test]
    fn a_deferred_row_keeps_its_time_and_a_superseded_row_its_validity() {
        each_backend("bulk_supersede", |s| {
            let a = row("+212610059159");
            s.bulk_issue(std::slice::from_ref(&a)).unwrap();
            let ta = a.token.as_str().to_string();
            let until = crate::time::Timestamp::parse("2026-01-02T00:00:00.000Z").unwrap();
            s.bulk_commit(
                &[BulkOutcome::Deferred {
                    token: ta.clone(),
                    until,
                    failure: Failure {
                        code: Some(131049),
                        message: "per-user marketing limit".into(),
                        retryable: false,
                    },
                    extra_attempts: 0,
                }],
                &[],
            )
            .unwrap();
            let m = s.bulk_members("c", std::slice::from_ref(&a.phone)).unwrap()[0]
                .clone()
                .unwrap();
            assert_eq!(m.state, SendState::Deferred);
            assert_eq!((m.not_before, m.error_code), (Some(until), Some(131049)));

            // A resend with a fresh token: the new row is the member, the old one stays valid.
            let fresh = row("+212610059159");
            s.bulk_supersede(&[(ta.clone(), fresh.clone())]).unwrap();
            let m = s.bulk_members("c", std::slice::from_ref(&a.phone)).unwrap()[0]
                .clone()
                .unwrap();
            assert_eq!(
                (m.token.as_str(), m.state),
                (fresh.token.as_str(), SendState::Pending)
            );
            let old = s.find_token(&ta).unwrap().unwrap();
            assert_eq!(old.superseded_by.as_deref(), Some(fresh.token.as_str()));
            // Issuing the phone again finds the new member, not a conflict.
            match &s.bulk_issue(&[row("+212610059159")]).unwrap()[0] {
                Issued::Existing(m) => assert_eq!(m.token, fresh.token.as_str()),
                other => panic!("{other:?}"),
            }
        });
    }
}
