//! Token rows: issued before a send, updated with its outcome.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Result;
use crate::phone::Phone;
use crate::time::Timestamp;
use crate::token::FlowToken;

/// A stored text that names none of the values its column may hold (a database written by
/// hand, or by a newer flowctl): reading it is an error that quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} in the database")]
pub struct UnknownValue {
    /// What the column holds (`send state`, `origin`).
    pub what: &'static str,
    pub value: String,
}

/// Which command issued a token. Bulk tokens are unique per (campaign, phone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Send,
    Bulk,
    Api,
}

impl Origin {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Send => "send",
            Origin::Bulk => "bulk",
            Origin::Api => "api",
        }
    }
}

impl FromStr for Origin {
    type Err = UnknownValue;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "send" => Ok(Origin::Send),
            "bulk" => Ok(Origin::Bulk),
            "api" => Ok(Origin::Api),
            _ => Err(UnknownValue {
                what: "origin",
                value: s.to_string(),
            }),
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
    /// Held back by a per-user limit (131049, 131056), before or after acceptance: not to be
    /// sent again before [`TokenRecord::not_before`].
    Deferred,
}

impl SendState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Pending => "pending",
            SendState::Sending => "sending",
            SendState::Sent => "sent",
            SendState::Failed => "failed",
            SendState::Unknown => "unknown",
            SendState::Deferred => "deferred",
        }
    }
}

/// Only the six stored texts parse: anything else is an error, not [`SendState::Unknown`]
/// (which is a real state with its own meaning).
impl FromStr for SendState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pending" => Ok(SendState::Pending),
            "sending" => Ok(SendState::Sending),
            "sent" => Ok(SendState::Sent),
            "failed" => Ok(SendState::Failed),
            "unknown" => Ok(SendState::Unknown),
            "deferred" => Ok(SendState::Deferred),
            _ => Err(UnknownValue {
                what: "send state",
                value: s.to_string(),
            }),
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
    pub token: FlowToken,
    pub phone: Phone,
    pub customer_name: Option<String>,
    pub campaign: String,
    pub origin: Origin,
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
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    /// For a deferred token: not sent again before this time.
    pub not_before: Option<Timestamp>,
    /// True when the message was accepted and a `failed` status settled it afterwards.
    pub failed_after_acceptance: bool,
    /// The token sent instead of this one by a later run (this one stays valid).
    pub superseded_by: Option<String>,
}

impl TokenRecord {
    /// True once the token's lifetime is over.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// A refusal to record against a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub code: Option<i64>,
    pub message: String,
    pub retryable: bool,
}

/// Issuing tokens and recording what became of their sends. Tokens are looked up by their
/// text: a token a user sends is not trusted to be well formed, and an unknown one is an
/// answer (`None`), not an error.
pub trait TokenQueries {
    /// Issues a token in the given state. Returns false (and changes nothing) when the token
    /// or, for bulk, the (campaign, phone) pair already exists.
    fn insert_token(&mut self, t: &NewToken, state: SendState) -> Result<bool>;

    /// Looks a token up.
    fn find_token(&self, token: &str) -> Result<Option<TokenRecord>>;

    /// Looks a token up by the wamid of the message that carried it.
    fn find_token_by_message_id(&self, message_id: &str) -> Result<Option<TokenRecord>>;

    /// Every token of a campaign, oldest first.
    fn tokens_of_campaign(&self, campaign: &str) -> Result<Vec<TokenRecord>>;

    /// Marks a token as about to be sent (its request may leave from now on).
    fn mark_sending(&mut self, token: &str) -> Result<()>;

    /// Records an accepted send.
    fn record_sent(&mut self, token: &str, message_id: &str, wa_id: Option<&str>) -> Result<()>;

    /// Records a refused send.
    fn record_failed(&mut self, token: &str, failure: &Failure) -> Result<()>;

    /// Records a send whose outcome is unknown (the request left, no answer came back).
    fn record_unknown(&mut self, token: &str, failure: &Failure) -> Result<()>;

    /// Records an accepted send together with the number of requests it took.
    fn record_sent_after(
        &mut self,
        token: &str,
        message_id: &str,
        wa_id: Option<&str>,
        attempts: i64,
    ) -> Result<()>;

    /// Records a failed or unknown outcome together with the number of requests it took.
    fn record_outcome_after(
        &mut self,
        token: &str,
        state: SendState,
        f: &Failure,
        attempts: i64,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_origin_round_trips_through_its_text() {
        use SendState::*;
        for s in [Pending, Sending, Sent, Failed, Unknown, Deferred] {
            assert_eq!(s.as_str().parse::<SendState>().unwrap(), s);
        }
        for o in [Origin::Send, Origin::Bulk, Origin::Api] {
            assert_eq!(o.as_str().parse::<Origin>().unwrap(), o);
        }
    }

    #[test]
    fn an_unknown_text_is_an_error_that_quotes_it() {
        let err = "delivered".parse::<SendState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown send state \"delivered\" in the database"
        );
        assert!("API".parse::<Origin>().is_err());
    }
}
