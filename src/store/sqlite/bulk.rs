//! Bulk campaign bookkeeping: every statement `flowctl bulk` runs, batched (see
//! [`BulkQueries`]).

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::tokens::{insert_token_tx, record_outcome_tx, record_sent_tx};
use super::types::json_text;
use super::SqliteStore;
use crate::phone::Phone;
use crate::store::{
    BulkMember, BulkOutcome, BulkQueries, Issued, NewToken, Permits, Result, SendState,
};

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

    fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<Vec<String>> {
        if outcomes.is_empty() && sending.is_empty() {
            return Ok(Vec::new());
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
            // One run per campaign (the lock file): no claim is ever lost.
            Ok(Vec::new())
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

    // One run per campaign on a SQLite file (the campaign lock): there is nobody to share
    // rows or the rate with, so claims, leases and the shared budget are no-ops.

    fn bulk_shared(&self) -> bool {
        false
    }

    fn bulk_join(&mut self, _worker: &str, _lease: Duration) -> Result<()> {
        Ok(())
    }

    fn bulk_renew(&mut self) -> Result<u64> {
        Ok(0)
    }

    fn bulk_release(&mut self, _tokens: &[String]) -> Result<()> {
        Ok(())
    }

    fn bulk_leave(&mut self) -> Result<()> {
        Ok(())
    }

    fn bulk_take_permits(
        &mut self,
        _key: &str,
        _rate: f64,
        _burst: f64,
        want: u32,
    ) -> Result<Permits> {
        Ok(Permits {
            granted: want,
            wait: Duration::ZERO,
        })
    }

    fn bulk_rate_limited(&mut self, _key: &str, _rate: f64) -> Result<()> {
        Ok(())
    }
}
