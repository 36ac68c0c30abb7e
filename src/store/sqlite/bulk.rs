//! Bulk campaign bookkeeping: every statement `flowctl bulk` runs, batched (see
//! [`BulkQueries`]).

use rusqlite::{params, OptionalExtension};

use super::tokens::{insert_token_tx, record_outcome_tx, record_sent_tx};
use super::types::json_text;
use super::SqliteStore;
use crate::phone::Phone;
use crate::store::{BulkMember, BulkOutcome, BulkQueries, Issued, NewToken, Result, SendState};

const MEMBER_SQL: &str =
    "SELECT token, state, COALESCE(error_retryable, 0) AS retryable, error_message, error_code,
            failed_after_acceptance, not_before, message_id
     FROM tokens WHERE campaign = ?1 AND phone = ?2 AND origin = 'bulk' AND superseded_by IS NULL";

fn member_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BulkMember> {
    Ok(BulkMember {
        token: r.get("token")?,
        state: r.get("state")?,
        retryable: r.get("retryable")?,
        error: r.get("error_message")?,
        error_code: r.get("error_code")?,
        failed_after_acceptance: r.get("failed_after_acceptance")?,
        not_before: r.get("not_before")?,
        message_id: r.get("message_id")?,
    })
}

impl BulkQueries for SqliteStore {
    fn bulk_issue(&mut self, rows: &[NewToken]) -> Result<Vec<Issued>> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(rows.len());
            let mut lookup = tx.prepare_cached(MEMBER_SQL)?;
            let mut refresh = tx.prepare_cached(
                "UPDATE tokens SET customer_name = ?2, initial_data = ?3
                 WHERE token = ?1 AND (state = 'pending' OR (state = 'failed' AND error_retryable = 1))",
            )?;
            for t in rows {
                if insert_token_tx(tx, t, SendState::Pending)? == 1 {
                    out.push(Issued::New);
                    continue;
                }
                let member = lookup
                    .query_row(params![t.campaign, t.phone], member_from_row)
                    .optional()?;
                if let Some(m) = &member {
                    let data = t.initial_data.as_ref().map(json_text);
                    refresh.execute(params![m.token, t.customer_name, data])?;
                }
                // No bulk row for the pair means the insert lost on the token's primary key
                // (a 2^-128 collision): report a retryable failure rather than send without
                // a stored token.
                out.push(Issued::Existing(member.unwrap_or(BulkMember {
                    token: t.token.as_str().to_string(),
                    state: SendState::Failed,
                    retryable: true,
                    error: Some("token collision; run again".into()),
                    error_code: None,
                    failed_after_acceptance: false,
                    not_before: None,
                    message_id: None,
                })));
            }
            Ok(out)
        })
    }

    fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<()> {
        if outcomes.is_empty() && sending.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut attempts =
                tx.prepare_cached("UPDATE tokens SET attempts = attempts + ?2 WHERE token = ?1")?;
            for o in outcomes {
                match o {
                    BulkOutcome::Sent {
                        token,
                        message_id,
                        wa_id,
                        extra_attempts,
                    } => {
                        record_sent_tx(tx, token, message_id, wa_id.as_deref())?;
                        if *extra_attempts > 0 {
                            attempts.execute(params![token, extra_attempts])?;
                        }
                    }
                    BulkOutcome::NotSent {
                        token,
                        state,
                        failure,
                        extra_attempts,
                    } => {
                        record_outcome_tx(tx, token, *state, failure)?;
                        if *extra_attempts > 0 {
                            attempts.execute(params![token, extra_attempts])?;
                        }
                    }
                    BulkOutcome::Deferred {
                        token,
                        until,
                        failure,
                        extra_attempts,
                    } => {
                        record_outcome_tx(tx, token, SendState::Deferred, failure)?;
                        tx.execute(
                            "UPDATE tokens SET not_before = ?2 WHERE token = ?1",
                            params![token, until],
                        )?;
                        if *extra_attempts > 0 {
                            attempts.execute(params![token, extra_attempts])?;
                        }
                    }
                }
            }
            let mut mark = tx.prepare_cached(
                "UPDATE tokens SET state = 'sending', attempts = attempts + 1 WHERE token = ?1",
            )?;
            for token in sending {
                mark.execute([token])?;
            }
            Ok(())
        })
    }

    fn bulk_supersede(&mut self, pairs: &[(String, NewToken)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut retire =
                tx.prepare_cached("UPDATE tokens SET superseded_by = ?2 WHERE token = ?1")?;
            for (old, new) in pairs {
                retire.execute(params![old, new.token])?;
                insert_token_tx(tx, new, SendState::Pending)?;
            }
            Ok(())
        })
    }

    fn bulk_members(&self, campaign: &str, phones: &[Phone]) -> Result<Vec<Option<BulkMember>>> {
        phones
            .iter()
            .map(|p| self.row(MEMBER_SQL, params![campaign, p], member_from_row))
            .collect()
    }

    fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>> {
        self.rows(
            "SELECT state, COUNT(*) AS n FROM tokens WHERE campaign = ?1 AND origin = 'bulk'
             GROUP BY state ORDER BY state",
            [campaign],
            |r| Ok((r.get("state")?, r.get("n")?)),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::sqlite::test_util::temp_store;
    use crate::store::{Failure, Origin, TokenQueries};
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
        let (_d, mut s) = temp_store();
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
    }

    #[test]
    fn bulk_commit_records_outcomes_and_marks_sending_in_one_go() {
        let (_d, mut s) = temp_store();
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
    }

    #[test]
    fn a_deferred_row_keeps_its_time_and_a_superseded_row_its_validity() {
        let (_d, mut s) = temp_store();
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
    }
}
