//! Token rows: issued before a send, updated with its outcome.

use rusqlite::{params, OptionalExtension, Row};

use super::types::{json_text, JsonObject};
use super::{FromRow, SqliteStore};
use crate::store::{Failure, NewToken, Result, SendState, TokenQueries, TokenRecord};
use crate::time::Timestamp;

columns!(
    /// The columns of a [`TokenRecord`].
    TokenColumns {
        token, phone, customer_name, campaign, origin, initial_data, state, attempts,
        message_id, wa_id, error_code, error_message, error_retryable, delivery, flow_screen,
        flow_answers, created_at, expires_at, sent_at, completed_at, not_before,
        failed_after_acceptance, superseded_by,
    }
);

impl FromRow for TokenRecord {
    type Columns = TokenColumns;

    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<TokenColumns> {
        TokenColumns::of(stmt)
    }

    fn from_row(r: &Row<'_>, c: &TokenColumns) -> rusqlite::Result<TokenRecord> {
        Ok(TokenRecord {
            token: r.get(c.token)?,
            phone: r.get(c.phone)?,
            customer_name: r.get(c.customer_name)?,
            campaign: r.get(c.campaign)?,
            origin: r.get(c.origin)?,
            initial_data: r.get::<_, Option<JsonObject>>(c.initial_data)?.map(|j| j.0),
            state: r.get(c.state)?,
            attempts: r.get(c.attempts)?,
            message_id: r.get(c.message_id)?,
            wa_id: r.get(c.wa_id)?,
            error_code: r.get(c.error_code)?,
            error_message: r.get(c.error_message)?,
            error_retryable: r.get(c.error_retryable)?,
            delivery: r.get(c.delivery)?,
            flow_screen: r.get(c.flow_screen)?,
            flow_answers: r.get::<_, Option<JsonObject>>(c.flow_answers)?.map(|j| j.0),
            created_at: r.get(c.created_at)?,
            expires_at: r.get(c.expires_at)?,
            sent_at: r.get(c.sent_at)?,
            completed_at: r.get(c.completed_at)?,
            not_before: r.get(c.not_before)?,
            failed_after_acceptance: r.get(c.failed_after_acceptance)?,
            superseded_by: r.get(c.superseded_by)?,
        })
    }
}

pub(crate) fn insert_token_tx(
    tx: &rusqlite::Connection,
    t: &NewToken,
    state: SendState,
) -> rusqlite::Result<usize> {
    let now = Timestamp::now();
    tx.execute(
        "INSERT INTO tokens (token, phone, customer_name, campaign, origin, initial_data, state, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT DO NOTHING",
        params![
            t.token,
            t.phone,
            t.customer_name,
            t.campaign,
            t.origin,
            t.initial_data.as_ref().map(json_text),
            state,
            now,
            now.saturating_add(t.ttl),
        ],
    )
}

pub(crate) fn record_sent_tx(
    tx: &rusqlite::Connection,
    token: &str,
    message_id: &str,
    wa_id: Option<&str>,
) -> rusqlite::Result<usize> {
    // A `failed` status naming this token (its callback data) may already have settled this
    // very message while the answer was on its way: the answer then only adds what it knows.
    let settled: bool = tx
        .query_row(
            "SELECT failed_after_acceptance = 1 AND message_id IS ?2 FROM tokens WHERE token = ?1",
            params![token, message_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false);
    if settled {
        return tx.execute(
            "UPDATE tokens SET wa_id = COALESCE(?2, wa_id) WHERE token = ?1",
            params![token, wa_id],
        );
    }
    let n = tx.execute(
        "UPDATE tokens SET state = 'sent', message_id = ?2, wa_id = ?3, sent_at = ?4,
                error_code = NULL, error_message = NULL, error_retryable = NULL,
                not_before = NULL
         WHERE token = ?1",
        params![token, message_id, wa_id, Timestamp::now()],
    )?;
    // A status may have overtaken this commit (Meta posts statuses concurrently with the API
    // answer): it was stored unmatched, and is joined now.
    super::webhook::join_early_statuses_tx(tx, message_id)?;
    Ok(n)
}

pub(crate) fn record_outcome_tx(
    tx: &rusqlite::Connection,
    token: &str,
    state: SendState,
    f: &Failure,
) -> rusqlite::Result<usize> {
    let n = tx.execute(
        "UPDATE tokens SET state = ?2, error_code = ?3, error_message = ?4, error_retryable = ?5 WHERE token = ?1",
        params![token, state, f.code, f.message, f.retryable],
    )?;
    // 131050: the recipient stopped marketing messages from this business. Suppressed in
    // the same commit, so that no later send (this run's rerun, `send`, the API) tries again.
    if f.code == Some(131050) {
        let phone: Option<String> = tx
            .query_row("SELECT phone FROM tokens WHERE token = ?1", [token], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(phone) = phone {
            super::suppressions::suppress_tx(
                tx,
                &phone,
                "stopped marketing messages (131050)",
                crate::store::source::REFUSED_131050,
            )?;
        }
    }
    Ok(n)
}

fn add_attempts_tx(
    tx: &rusqlite::Connection,
    token: &str,
    attempts: i64,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE tokens SET attempts = attempts + ?2 WHERE token = ?1",
        params![token, attempts],
    )
}

impl TokenQueries for SqliteStore {
    fn insert_token(&mut self, t: &NewToken, state: SendState) -> Result<bool> {
        self.write(|tx| insert_token_tx(tx, t, state))
            .map(|n| n == 1)
    }

    fn find_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        self.record(
            &format!("SELECT {} FROM tokens WHERE token = ?1", TokenColumns::LIST),
            [token],
        )
    }

    fn find_token_by_message_id(&self, message_id: &str) -> Result<Option<TokenRecord>> {
        self.record(
            &format!(
                "SELECT {} FROM tokens WHERE message_id = ?1",
                TokenColumns::LIST
            ),
            [message_id],
        )
    }

    fn open_token_of_whatsapp_id(&self, wa_id: &str) -> Result<Option<TokenRecord>> {
        let numbers = crate::phone::numbers_of_whatsapp_id(wa_id);
        let second = numbers
            .get(1)
            .cloned()
            .unwrap_or_else(|| numbers[0].clone());
        let mut open: Vec<TokenRecord> = self.records(
            &format!(
                "SELECT {} FROM tokens
                 WHERE (phone IN (?1, ?2) OR wa_id = ?3) AND state = 'sent'
                   AND completed_at IS NULL AND expires_at > ?4
                 LIMIT 2",
                TokenColumns::LIST
            ),
            params![numbers[0], second, wa_id, Timestamp::now()],
        )?;
        Ok(if open.len() == 1 { open.pop() } else { None })
    }

    fn tokens_of_campaign(&self, campaign: &str) -> Result<Vec<TokenRecord>> {
        self.records(
            &format!(
                "SELECT {} FROM tokens WHERE campaign = ?1 ORDER BY created_at, rowid",
                TokenColumns::LIST
            ),
            [campaign],
        )
    }

    fn mark_sending(&mut self, token: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE tokens SET state = 'sending', attempts = attempts + 1 WHERE token = ?1",
                [token],
            )
        })
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
