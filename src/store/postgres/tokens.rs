//! Token rows on PostgreSQL: issued before a send, updated with its outcome. The behaviour is
//! SQLite's (`sqlite/tokens.rs`); what differs is that several processes (`serve` replicas,
//! `bulk` workers) write the same rows at once, so every write is one statement whose outcome
//! the database decides (`ON CONFLICT`, `attempts = attempts + n`), or takes the row's lock
//! before a read that decides a write (`FOR UPDATE`).

use postgres::{Row, Transaction};

use super::types::JsonObject;
use super::PgStore;
use crate::store::{Failure, NewToken, Result, SendState, TokenQueries, TokenRecord};
use crate::time::Timestamp;

/// The columns of a [`TokenRecord`], for a SELECT list read by [`token_record`].
pub(crate) const TOKEN_COLUMNS: &str = "token, phone, customer_name, campaign, origin, \
    initial_data, state, attempts, message_id, wa_id, error_code, error_message, \
    error_retryable, delivery, flow_screen, flow_answers, created_at, expires_at, sent_at, \
    completed_at, not_before, failed_after_acceptance, superseded_by";

/// Reads a [`TokenRecord`] from a row holding [`TOKEN_COLUMNS`], by column name. Flags are
/// stored as 0/1 integers, as in SQLite.
pub(crate) fn token_record(r: &Row) -> std::result::Result<TokenRecord, postgres::Error> {
    Ok(TokenRecord {
        token: r.try_get("token")?,
        phone: r.try_get("phone")?,
        customer_name: r.try_get("customer_name")?,
        campaign: r.try_get("campaign")?,
        origin: r.try_get("origin")?,
        initial_data: r
            .try_get::<_, Option<JsonObject>>("initial_data")?
            .map(|j| j.0),
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        message_id: r.try_get("message_id")?,
        wa_id: r.try_get("wa_id")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        error_retryable: r
            .try_get::<_, Option<i64>>("error_retryable")?
            .map(|v| v != 0),
        delivery: r.try_get("delivery")?,
        flow_screen: r.try_get("flow_screen")?,
        flow_answers: r
            .try_get::<_, Option<JsonObject>>("flow_answers")?
            .map(|j| j.0),
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        sent_at: r.try_get("sent_at")?,
        completed_at: r.try_get("completed_at")?,
        not_before: r.try_get("not_before")?,
        failed_after_acceptance: r.try_get::<_, i64>("failed_after_acceptance")? != 0,
        superseded_by: r.try_get("superseded_by")?,
    })
}

/// Issues a token inside an open transaction; the number of rows inserted (0 or 1).
///
/// `ON CONFLICT DO NOTHING` without a target covers every unique index, as SQLite's does:
/// the primary key (the same token twice) and the partial index `tokens_bulk_member` (a second
/// bulk token for one campaign and phone). Two writers inserting the same key at once do not
/// both succeed: the second waits for the first's commit, then inserts nothing
/// (<https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT>: without a
/// conflict target, a conflict on any unique constraint or index is avoided).
pub(crate) fn insert_token_tx(
    tx: &mut Transaction<'_>,
    t: &NewToken,
    state: SendState,
) -> std::result::Result<u64, postgres::Error> {
    let now = Timestamp::now();
    let initial_data = t
        .initial_data
        .as_ref()
        .map(|m| serde_json::Value::Object(m.clone()).to_string());
    tx.execute(
        "INSERT INTO tokens (token, phone, customer_name, campaign, origin, initial_data, state,
                             created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT DO NOTHING",
        &[
            &t.token,
            &t.phone,
            &t.customer_name,
            &t.campaign,
            &t.origin,
            &initial_data,
            &state,
            &now,
            &now.saturating_add(t.ttl),
        ],
    )
}

/// Records an accepted send inside an open transaction; the number of token rows changed.
///
/// Statuses of this message that arrived before the send was recorded are joined in the same
/// transaction. The advisory lock on the wamid serialises this with the recording of a status
/// of the same message (which takes the same lock, [`message_lock`]): otherwise, under READ
/// COMMITTED, each could miss the other's uncommitted row and the status would stay unmatched.
pub(crate) fn record_sent_tx(
    tx: &mut Transaction<'_>,
    token: &str,
    message_id: &str,
    wa_id: Option<&str>,
) -> std::result::Result<u64, postgres::Error> {
    message_lock(tx, message_id)?;
    // A `failed` status naming this token (its callback data) may already have settled this
    // very message while the answer was on its way: the answer then only adds what it knows.
    // The row lock keeps a settlement from landing between this read and the update.
    let settled: bool = tx
        .query_opt(
            "SELECT failed_after_acceptance = 1 AND message_id IS NOT DISTINCT FROM $2 AS settled
             FROM tokens WHERE token = $1 FOR UPDATE",
            &[&token, &message_id],
        )?
        .map(|r| r.try_get("settled"))
        .transpose()?
        .unwrap_or(false);
    if settled {
        return tx.execute(
            "UPDATE tokens SET wa_id = COALESCE($2, wa_id) WHERE token = $1",
            &[&token, &wa_id],
        );
    }
    let n = tx.execute(
        "UPDATE tokens SET state = 'sent', message_id = $2, wa_id = $3, sent_at = $4,
                error_code = NULL, error_message = NULL, error_retryable = NULL,
                not_before = NULL
         WHERE token = $1",
        &[&token, &message_id, &wa_id, &Timestamp::now()],
    )?;
    // A status may have overtaken this commit (Meta posts statuses concurrently with the API
    // answer, in no guaranteed order:
    // https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status):
    // it was stored unmatched, and is joined now.
    super::statuses::join_early_statuses_tx(tx, message_id)?;
    Ok(n)
}

/// Takes the transaction-scoped advisory lock of one message (its wamid): held by whoever
/// records the send of that message or one of its statuses, until their commit.
pub(crate) fn message_lock(
    tx: &mut Transaction<'_>,
    message_id: &str,
) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&message_id],
    )
    .map(drop)
}

/// Records a failed or unknown outcome inside an open transaction; the number of token rows
/// changed. A 131050 refusal suppresses the phone in the same commit.
pub(crate) fn record_outcome_tx(
    tx: &mut Transaction<'_>,
    token: &str,
    state: SendState,
    f: &Failure,
) -> std::result::Result<u64, postgres::Error> {
    let retryable = i64::from(f.retryable);
    let phones = tx.query(
        "UPDATE tokens SET state = $2, error_code = $3, error_message = $4, error_retryable = $5
         WHERE token = $1 RETURNING phone",
        &[&token, &state, &f.code, &f.message, &retryable],
    )?;
    // 131050: the recipient stopped marketing messages from this business. Suppressed in
    // the same commit, so that no later send (this run's rerun, `send`, the API) tries again.
    if f.code == Some(131050) {
        for row in &phones {
            let phone: String = row.try_get("phone")?;
            super::suppressions::suppress_tx(
                tx,
                &phone,
                "stopped marketing messages (131050)",
                crate::store::source::REFUSED_131050,
            )?;
        }
    }
    Ok(phones.len() as u64)
}

/// Adds the requests a send took to its token's count (one statement: concurrent additions
/// all count).
fn add_attempts_tx(
    tx: &mut Transaction<'_>,
    token: &str,
    attempts: i64,
) -> std::result::Result<u64, postgres::Error> {
    tx.execute(
        "UPDATE tokens SET attempts = attempts + $2 WHERE token = $1",
        &[&token, &attempts],
    )
}

/// The token records a query selecting [`TOKEN_COLUMNS`] returns.
pub(crate) fn token_records(
    store: &PgStore,
    sql: &str,
    params: super::Params<'_>,
) -> Result<Vec<TokenRecord>> {
    store
        .rows(sql, params)?
        .iter()
        .map(|r| token_record(r).map_err(|e| store.err(e)))
        .collect()
}

impl TokenQueries for PgStore {
    fn insert_token(&mut self, t: &NewToken, state: SendState) -> Result<bool> {
        self.write(|tx| insert_token_tx(tx, t, state))
            .map(|n| n == 1)
    }

    fn find_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(token_records(
            self,
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE token = $1"),
            &[&token],
        )?
        .pop())
    }

    fn find_token_by_message_id(&self, message_id: &str) -> Result<Option<TokenRecord>> {
        // message_id is unique (tokens_message_id): one row at most.
        Ok(token_records(
            self,
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE message_id = $1"),
            &[&message_id],
        )?
        .pop())
    }

    fn open_token_of_whatsapp_id(&self, wa_id: &str) -> Result<Option<TokenRecord>> {
        let numbers = crate::phone::numbers_of_whatsapp_id(wa_id);
        let second = numbers
            .get(1)
            .cloned()
            .unwrap_or_else(|| numbers[0].clone());
        let mut open = token_records(
            self,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens
                 WHERE (phone IN ($1, $2) OR wa_id = $3) AND state = 'sent'
                   AND completed_at IS NULL AND expires_at > $4
                 LIMIT 2"
            ),
            &[&numbers[0], &second, &wa_id, &Timestamp::now()],
        )?;
        Ok(if open.len() == 1 { open.pop() } else { None })
    }

    fn tokens_of_campaign(&self, campaign: &str) -> Result<Vec<TokenRecord>> {
        // SQLite breaks ties of the same millisecond by rowid (insertion order); here `seq`
        // does (the token among rows from before migration 7, which have none).
        token_records(
            self,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE campaign = $1
                 ORDER BY created_at, seq, token COLLATE \"C\""
            ),
            &[&campaign],
        )
    }

    fn mark_sending(&mut self, token: &str) -> Result<()> {
        self.execute(
            "UPDATE tokens SET state = 'sending', attempts = attempts + 1 WHERE token = $1",
            &[&token],
        )
        .map(drop)
    }

    fn record_sent(&mut self, token: &str, message_id: &str, wa_id: Option<&str>) -> Result<()> {
        self.write(|tx| record_sent_tx(tx, token, message_id, wa_id))
            .map(drop)
    }

    fn record_failed(&mut self, token: &str, failure: &Failure) -> Result<()> {
        self.write(|tx| record_outcome_tx(tx, token, SendState::Failed, failure))
            .map(drop)
    }

    fn record_unknown(&mut self, token: &str, failure: &Failure) -> Result<()> {
        self.write(|tx| record_outcome_tx(tx, token, SendState::Unknown, failure))
            .map(drop)
    }

    fn record_sent_after(
        &mut self,
        token: &str,
        message_id: &str,
        wa_id: Option<&str>,
        attempts: i64,
    ) -> Result<()> {
        self.write(|tx| {
            record_sent_tx(tx, token, message_id, wa_id)?;
            add_attempts_tx(tx, token, attempts)
        })
        .map(drop)
    }

    fn record_outcome_after(
        &mut self,
        token: &str,
        state: SendState,
        f: &Failure,
        attempts: i64,
    ) -> Result<()> {
        self.write(|tx| {
            record_outcome_tx(tx, token, state, f)?;
            add_attempts_tx(tx, token, attempts)
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;
    use crate::phone::Phone;
    use crate::store::postgres::test_util::temp_database;
    use crate::store::Origin;
    use crate::token::FlowToken;

    fn bulk_token(phone: &str) -> NewToken {
        NewToken {
            token: FlowToken::generate(),
            phone: Phone::parse(phone, None).unwrap(),
            customer_name: None,
            campaign: "race".into(),
            origin: Origin::Bulk,
            initial_data: None,
            ttl: Duration::from_secs(3600),
        }
    }

    /// Runs `f(worker, store)` on `n` threads, each with its own connection to `url`, all
    /// starting together; their results in worker order.
    fn race<T: Send + 'static>(
        url: &crate::store::PgUrl,
        n: usize,
        f: impl Fn(usize, &mut PgStore) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let start = Arc::new(Barrier::new(n));
        let workers: Vec<_> = (0..n)
            .map(|i| {
                let mut store = PgStore::open(url).unwrap();
                let (f, start) = (f.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    f(i, &mut store)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    }

    /// Tokens of the same millisecond are listed in the order they were issued, as SQLite
    /// lists them (by rowid): not by the random token.
    #[test]
    fn tokens_of_one_millisecond_are_listed_in_issue_order() {
        let Some(url) = temp_database("token order") else {
            return;
        };
        let mut s = PgStore::open(&url).unwrap();
        let issued: Vec<String> = (0..30)
            .map(|i| {
                let t = bulk_token(&format!("+2126100591{i:02}"));
                assert!(s.insert_token(&t, SendState::Pending).unwrap());
                t.token.as_str().to_string()
            })
            .collect();
        s.execute(
            "UPDATE tokens SET created_at = (SELECT MIN(created_at) FROM tokens)",
            &[],
        )
        .unwrap();
        let listed: Vec<String> = s
            .tokens_of_campaign("race")
            .unwrap()
            .into_iter()
            .map(|t| t.token.as_str().to_string())
            .collect();
        assert_eq!(listed, issued);
    }

    #[test]
    fn two_workers_issuing_a_bulk_token_for_one_phone_at_once_issue_one() {
        let Some(url) = temp_database("token insert race") else {
            return;
        };
        for round in 0..20 {
            let phone = format!("+2126100591{round:02}");
            // Different tokens, same (campaign, phone): the partial unique index decides.
            let phone_ = phone.clone();
            let won = race(&url, 2, move |_, s| {
                s.insert_token(&bulk_token(&phone_), SendState::Pending)
                    .unwrap()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}");
            // The very same token from two writers: the primary key decides.
            let same = bulk_token(&format!("+2126100592{round:02}"));
            let won = race(&url, 2, move |_, s| {
                s.insert_token(&same, SendState::Pending).unwrap()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}");
        }
        let s = PgStore::open(&url).unwrap();
        assert_eq!(s.tokens_of_campaign("race").unwrap().len(), 40);
    }

    #[test]
    fn concurrent_outcomes_of_one_token_lose_no_attempt() {
        let Some(url) = temp_database("token attempts race") else {
            return;
        };
        let t = bulk_token("+212610059159");
        PgStore::open(&url)
            .unwrap()
            .insert_token(&t, SendState::Pending)
            .unwrap();
        let token = t.token.as_str().to_string();
        let failure = Failure {
            code: Some(131000),
            message: "timeout".into(),
            retryable: true,
        };
        race(&url, 2, move |worker, s| {
            for i in 0..25 {
                s.mark_sending(&token).unwrap();
                if worker == 0 {
                    s.record_sent_after(&token, &format!("wamid.{i}"), None, 2)
                        .unwrap();
                } else {
                    s.record_outcome_after(&token, SendState::Unknown, &failure, 2)
                        .unwrap();
                }
            }
        });
        let r = PgStore::open(&url)
            .unwrap()
            .find_token(t.token.as_str())
            .unwrap()
            .unwrap();
        // 2 workers x 25 rounds x (1 + 2): a read-then-write of the count would lose some.
        assert_eq!(r.attempts, 150);
    }

    #[test]
    fn a_status_recorded_before_its_send_is_joined_when_the_send_is_recorded() {
        let Some(url) = temp_database("early status") else {
            return;
        };
        let mut s = PgStore::open(&url).unwrap();
        let t = bulk_token("+212610059159");
        s.insert_token(&t, SendState::Sending).unwrap();
        // As the webhook stores a status whose message no token carries yet.
        s.execute(
            "INSERT INTO message_statuses (message_id, status, at, matched, received_at)
             VALUES ('wamid.early', 'delivered', '2026-01-01T00:00:01.000Z', 0, '2026-01-01T00:00:02.000Z')",
            &[],
        )
        .unwrap();
        s.record_sent(t.token.as_str(), "wamid.early", None)
            .unwrap();
        let r = s.find_token(t.token.as_str()).unwrap().unwrap();
        assert_eq!(
            (r.state, r.delivery.as_deref()),
            (SendState::Sent, Some("delivered"))
        );
        let unmatched: i64 = s
            .value(
                "SELECT COUNT(*) FROM message_statuses WHERE matched = 0",
                &[],
            )
            .unwrap();
        assert_eq!(unmatched, 0);
    }
}
