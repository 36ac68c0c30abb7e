//! Bulk campaign bookkeeping: every statement `flowctl bulk` runs.
//!
//! Bulk writes are batched: a chunk of rows is issued in one transaction, the rows whose
//! requests are about to leave are marked `sending` in one transaction (group commit), and
//! outcomes are recorded in batches. One transaction per message would cap a run at a few
//! hundred messages per second on a slow disk; batches keep bookkeeping off the critical path.

use std::path::Path;

use rusqlite::{params, OpenFlags, OptionalExtension};
use serde_json::Value;

use super::tokens::{insert_token_tx, record_outcome_tx, record_sent_tx};
use super::{Failure, NewToken, Result, SendState, Store, StoreError};
use crate::phone::Phone;

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
}

/// The result of issuing one row's token in its campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum Issued {
    /// A fresh `pending` token was stored.
    New,
    /// The campaign already had a token for this phone; nothing was inserted.
    Existing(BulkMember),
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
    /// A refusal (`Failed`) or a request with no answer (`Unknown`).
    NotSent {
        token: String,
        state: SendState,
        failure: Failure,
        extra_attempts: i64,
    },
}

const MEMBER_SQL: &str = "SELECT token, state, COALESCE(error_retryable, 0), error_message
     FROM tokens WHERE campaign = ?1 AND phone = ?2 AND origin = 'bulk'";

fn member_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BulkMember> {
    Ok(BulkMember {
        token: r.get(0)?,
        state: SendState::parse(&r.get::<_, String>(1)?),
        retryable: r.get(2)?,
        error: r.get(3)?,
    })
}

impl Store {
    /// Opens an existing database without writing to it (`bulk --dry-run`). `Ok(None)` when
    /// the file does not exist: nothing was sent yet, and a dry run must not create it.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(super::BUSY_TIMEOUT)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// Issues `pending` bulk tokens for a chunk of rows in ONE transaction. A row whose
    /// (campaign, phone) already has a token keeps it, and its stored state is returned so
    /// the caller decides to skip, resume or report it. A kept token that no message has
    /// carried yet (`pending`, or failed with a retryable error) takes the file's current
    /// name and data, since it is about to be sent with them.
    pub fn bulk_issue(&mut self, rows: &[NewToken]) -> Result<Vec<Issued>> {
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
                    .query_row(params![t.campaign, t.phone.e164()], member_from_row)
                    .optional()?;
                if let Some(m) = &member {
                    let data = t
                        .initial_data
                        .as_ref()
                        .map(|d| Value::Object(d.clone()).to_string());
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
                })));
            }
            Ok(out)
        })
    }

    /// In ONE transaction: records finished outcomes, then marks `sending` the tokens whose
    /// requests leave right after the commit. After a crash, `sending` is therefore left only
    /// on rows whose request may really have left.
    pub fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<()> {
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

    /// What the campaign already holds for each phone (read only, for `--dry-run`).
    pub fn bulk_members(
        &self,
        campaign: &str,
        phones: &[Phone],
    ) -> Result<Vec<Option<BulkMember>>> {
        let mut stmt = self
            .conn
            .prepare_cached(MEMBER_SQL)
            .map_err(|e| self.err(e))?;
        phones
            .iter()
            .map(|p| {
                stmt.query_row(params![campaign, p.e164()], member_from_row)
                    .optional()
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    /// Counts a campaign's bulk tokens per state (tests and summaries).
    pub fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT state, COUNT(*) FROM tokens WHERE campaign = ?1 AND origin = 'bulk'
                 GROUP BY state ORDER BY state",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([campaign], |r| {
                Ok((SendState::parse(&r.get::<_, String>(0)?), r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::test_util::temp_store;
    use crate::store::Origin;
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
    fn read_only_open_of_a_missing_file_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("none.db");
        assert!(Store::open_read_only(&p).unwrap().is_none());
        assert!(!p.exists());
    }
}
