//! Token rows: issued before a send, updated with its outcome.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::{Result, Store};
use crate::phone::Phone;
use crate::token::FlowToken;

/// Which command issued a token. Bulk tokens are unique per (campaign, phone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Send,
    Bulk,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Send => "send",
            Origin::Bulk => "bulk",
            Origin::Api => "api",
        }
    }
}

/// Where a token's message stands, from the sender's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendState {
    /// Stored; no request has left for it.
    Pending,
    /// A request may have left; the outcome is not recorded yet. Left behind by a process
    /// that died mid-request, this means "outcome unknown".
    Sending,
    /// The Graph API accepted the message (a wamid is stored).
    Sent,
    /// The Graph API refused it (error stored).
    Failed,
    /// The request left but no answer came back (timeout): it may or may not have gone out.
    Unknown,
}

impl SendState {
    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Pending => "pending",
            SendState::Sending => "sending",
            SendState::Sent => "sent",
            SendState::Failed => "failed",
            SendState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> SendState {
        match s {
            "pending" => SendState::Pending,
            "sending" => SendState::Sending,
            "sent" => SendState::Sent,
            "failed" => SendState::Failed,
            _ => SendState::Unknown,
        }
    }
}

/// What is needed to issue a token.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: FlowToken,
    pub phone: Phone,
    pub customer_name: Option<String>,
    pub campaign: String,
    pub origin: Origin,
    pub initial_data: Option<Map<String, Value>>,
    pub ttl: Duration,
}

/// A stored token with everything known about it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub token: String,
    pub phone: String,
    pub customer_name: Option<String>,
    pub campaign: String,
    pub origin: String,
    pub initial_data: Option<Map<String, Value>>,
    pub state: SendState,
    pub attempts: i64,
    pub message_id: Option<String>,
    pub wa_id: Option<String>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub error_retryable: Option<bool>,
    pub delivery: Option<String>,
    pub flow_screen: Option<String>,
    pub flow_answers: Option<Map<String, Value>>,
    pub created_at: String,
    pub expires_at: String,
    pub sent_at: Option<String>,
    pub completed_at: Option<String>,
}

impl TokenRecord {
    /// True once the token's lifetime is over.
    pub fn is_expired(&self, now: &str) -> bool {
        self.expires_at.as_str() <= now
    }
}

/// A refusal to record against a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub code: Option<i64>,
    pub message: String,
    pub retryable: bool,
}

pub(crate) const TOKEN_COLUMNS: &str = "token, phone, customer_name, campaign, origin, initial_data, state, \
     attempts, message_id, wa_id, error_code, error_message, error_retryable, delivery, flow_screen, \
     flow_answers, created_at, expires_at, sent_at, completed_at";

fn json_object(s: Option<String>) -> Option<Map<String, Value>> {
    s.and_then(|s| match serde_json::from_str::<Value>(&s) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    })
}

pub(crate) fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        token: r.get(0)?,
        phone: r.get(1)?,
        customer_name: r.get(2)?,
        campaign: r.get(3)?,
        origin: r.get(4)?,
        initial_data: json_object(r.get(5)?),
        state: SendState::parse(&r.get::<_, String>(6)?),
        attempts: r.get(7)?,
        message_id: r.get(8)?,
        wa_id: r.get(9)?,
        error_code: r.get(10)?,
        error_message: r.get(11)?,
        error_retryable: r.get(12)?,
        delivery: r.get(13)?,
        flow_screen: r.get(14)?,
        flow_answers: json_object(r.get(15)?),
        created_at: r.get(16)?,
        expires_at: r.get(17)?,
        sent_at: r.get(18)?,
        completed_at: r.get(19)?,
    })
}

pub(crate) fn insert_token_tx(
    tx: &rusqlite::Connection,
    t: &NewToken,
    state: SendState,
) -> rusqlite::Result<usize> {
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::from_std(t.ttl).unwrap_or(chrono::Duration::days(36500));
    let expires = now
        .checked_add_signed(ttl)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let data = t
        .initial_data
        .as_ref()
        .map(|m| Value::Object(m.clone()).to_string());
    tx.execute(
        "INSERT INTO tokens (token, phone, customer_name, campaign, origin, initial_data, state, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT DO NOTHING",
        params![
            t.token.as_str(),
            t.phone.e164(),
            t.customer_name,
            t.campaign,
            t.origin.as_str(),
            data,
            state.as_str(),
            crate::time::format(now),
            crate::time::format(expires),
        ],
    )
}

impl Store {
    /// Issues a token in the given state. Returns false (and changes nothing) when the token
    /// or, for bulk, the (campaign, phone) pair already exists.
    pub fn insert_token(&mut self, t: &NewToken, state: SendState) -> Result<bool> {
        self.write(|tx| insert_token_tx(tx, t, state))
            .map(|n| n == 1)
    }

    /// Looks a token up.
    pub fn find_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE token = ?1"),
                [token],
                token_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Looks a token up by the wamid of the message that carried it.
    pub fn find_token_by_message_id(&self, message_id: &str) -> Result<Option<TokenRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE message_id = ?1"),
                [message_id],
                token_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every token of a campaign, oldest first.
    pub fn tokens_of_campaign(&self, campaign: &str) -> Result<Vec<TokenRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE campaign = ?1 ORDER BY created_at, rowid"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([campaign], token_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Marks a token as about to be sent (its request may leave from now on).
    pub fn mark_sending(&mut self, token: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE tokens SET state = 'sending', attempts = attempts + 1 WHERE token = ?1",
                [token],
            )
        })
        .map(drop)
    }

    /// Records an accepted send.
    pub fn record_sent(
        &mut self,
        token: &str,
        message_id: &str,
        wa_id: Option<&str>,
    ) -> Result<()> {
        self.write(|tx| record_sent_tx(tx, token, message_id, wa_id))
            .map(drop)
    }

    /// Records a refused send.
    pub fn record_failed(&mut self, token: &str, failure: &Failure) -> Result<()> {
        self.write(|tx| record_outcome_tx(tx, token, SendState::Failed, failure))
            .map(drop)
    }

    /// Records a send whose outcome is unknown (the request left, no answer came back).
    pub fn record_unknown(&mut self, token: &str, failure: &Failure) -> Result<()> {
        self.write(|tx| record_outcome_tx(tx, token, SendState::Unknown, failure))
            .map(drop)
    }
}

pub(crate) fn record_sent_tx(
    tx: &rusqlite::Connection,
    token: &str,
    message_id: &str,
    wa_id: Option<&str>,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE tokens SET state = 'sent', message_id = ?2, wa_id = ?3, sent_at = ?4,
                error_code = NULL, error_message = NULL, error_retryable = NULL
         WHERE token = ?1",
        params![token, message_id, wa_id, crate::time::now()],
    )
}

pub(crate) fn record_outcome_tx(
    tx: &rusqlite::Connection,
    token: &str,
    state: SendState,
    f: &Failure,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE tokens SET state = ?2, error_code = ?3, error_message = ?4, error_retryable = ?5 WHERE token = ?1",
        params![token, state.as_str(), f.code, f.message, f.retryable],
    )
}

impl Store {
    /// Records an accepted send together with the number of requests it took.
    pub fn record_sent_after(
        &mut self,
        token: &str,
        message_id: &str,
        wa_id: Option<&str>,
        attempts: i64,
    ) -> Result<()> {
        self.write(|tx| {
            record_sent_tx(tx, token, message_id, wa_id)?;
            tx.execute(
                "UPDATE tokens SET attempts = attempts + ?2 WHERE token = ?1",
                params![token, attempts],
            )
        })
        .map(drop)
    }

    /// Records a failed or unknown outcome together with the number of requests it took.
    pub fn record_outcome_after(
        &mut self,
        token: &str,
        state: SendState,
        f: &Failure,
        attempts: i64,
    ) -> Result<()> {
        self.write(|tx| {
            record_outcome_tx(tx, token, state, f)?;
            tx.execute(
                "UPDATE tokens SET attempts = attempts + ?2 WHERE token = ?1",
                params![token, attempts],
            )
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::temp_store;

    fn new_token(campaign: &str, phone: &str, origin: Origin) -> NewToken {
        NewToken {
            token: FlowToken::generate(),
            phone: Phone::parse(phone, None).unwrap(),
            customer_name: Some("Ahmed".into()),
            campaign: campaign.into(),
            origin,
            initial_data: Some(
                serde_json::json!({"city": "Rabat"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn token_round_trip_and_outcomes() {
        let (_d, mut s) = temp_store();
        let t = new_token("c", "+212610059159", Origin::Send);
        assert!(s.insert_token(&t, SendState::Sending).unwrap());
        let r = s.find_token(t.token.as_str()).unwrap().unwrap();
        assert_eq!(r.phone, "+212610059159");
        assert_eq!(r.state, SendState::Sending);
        assert_eq!(r.initial_data.as_ref().unwrap()["city"], "Rabat");
        assert!(!r.is_expired(&crate::time::now()));
        s.record_sent(t.token.as_str(), "wamid.1", Some("212610059159"))
            .unwrap();
        let r = s.find_token_by_message_id("wamid.1").unwrap().unwrap();
        assert_eq!(
            (r.state, r.wa_id.as_deref()),
            (SendState::Sent, Some("212610059159"))
        );
        let f = Failure {
            code: Some(131026),
            message: "undeliverable".into(),
            retryable: false,
        };
        s.record_failed(t.token.as_str(), &f).unwrap();
        let r = s.find_token(t.token.as_str()).unwrap().unwrap();
        assert_eq!((r.state, r.error_code), (SendState::Failed, Some(131026)));
    }

    #[test]
    fn bulk_tokens_are_unique_per_campaign_and_phone() {
        let (_d, mut s) = temp_store();
        assert!(s
            .insert_token(
                &new_token("c", "+212610059159", Origin::Bulk),
                SendState::Pending
            )
            .unwrap());
        assert!(!s
            .insert_token(
                &new_token("c", "+212610059159", Origin::Bulk),
                SendState::Pending
            )
            .unwrap());
        assert!(s
            .insert_token(
                &new_token("d", "+212610059159", Origin::Bulk),
                SendState::Pending
            )
            .unwrap());
        // A plain send may message the same phone again.
        assert!(s
            .insert_token(
                &new_token("c", "+212610059159", Origin::Send),
                SendState::Pending
            )
            .unwrap());
        assert!(s
            .insert_token(
                &new_token("c", "+212610059159", Origin::Send),
                SendState::Pending
            )
            .unwrap());
    }

    #[test]
    fn unknown_token_is_none() {
        let (_d, s) = temp_store();
        assert!(s.find_token("flow_nope").unwrap().is_none());
    }
}
