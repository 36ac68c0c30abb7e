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

/// Serialised as its stored text.
impl serde::Serialize for SendState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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

    /// The one token sent to this WhatsApp id (digits: the phone, another spelling of it, or
    /// the `wa_id` the send answer reported) that is still open — accepted, not completed, not
    /// expired. `None` when there is none, or more than one (a completion is never guessed).
    fn open_token_of_whatsapp_id(&self, wa_id: &str) -> Result<Option<TokenRecord>>;

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

/// The behaviour of every backend, run on each ([`each_backend`](crate::store::test_util)).
#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::store::test_util::each_backend;

    fn new_token(campaign: &str, phone: &str, origin: Origin) -> NewToken {
        NewToken {
            token: FlowToken::generate(),
            phone: Phone::parse(phone, None).unwrap(),
            customer_name: Some("Ahmed".into()),
            campaign: campaign.into(),
            origin,
            initial_data: Some(
                serde_json::json!({"city": "Rabat", "a": 1})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn token_round_trip_and_outcomes() {
        each_backend("token round trip", |s| {
            let t = new_token("c", "+212610059159", Origin::Send);
            assert!(s.insert_token(&t, SendState::Sending).unwrap());
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!(r.phone.e164(), "+212610059159");
            assert_eq!((&r.token, r.origin), (&t.token, Origin::Send));
            assert_eq!(r.state, SendState::Sending);
            assert_eq!(r.initial_data.as_ref().unwrap()["city"], "Rabat");
            // The keys keep their order.
            let keys: Vec<_> = r.initial_data.as_ref().unwrap().keys().collect();
            assert_eq!(keys, ["city", "a"]);
            assert!(!r.is_expired(crate::time::Timestamp::now()));
            assert!(r.created_at < r.expires_at);
            s.record_sent(t.token.as_str(), "wamid.1", Some("212610059159"))
                .unwrap();
            let r = s.find_token_by_message_id("wamid.1").unwrap().unwrap();
            assert_eq!(
                (r.state, r.wa_id.as_deref()),
                (SendState::Sent, Some("212610059159"))
            );
            assert!(r.sent_at.is_some());
            let f = Failure {
                code: Some(131026),
                message: "undeliverable".into(),
                retryable: false,
            };
            s.record_failed(t.token.as_str(), &f).unwrap();
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!((r.state, r.error_code), (SendState::Failed, Some(131026)));
            assert_eq!(r.error_retryable, Some(false));
            assert!(!r.failed_after_acceptance);
        });
    }

    #[test]
    fn attempts_count_and_outcomes_after_retries() {
        each_backend("token attempts", |s| {
            let t = new_token("c", "+212610059159", Origin::Api);
            s.insert_token(&t, SendState::Pending).unwrap();
            s.mark_sending(t.token.as_str()).unwrap();
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!((r.state, r.attempts), (SendState::Sending, 1));
            let f = Failure {
                code: Some(131000),
                message: "timeout".into(),
                retryable: true,
            };
            s.record_unknown(t.token.as_str(), &f).unwrap();
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!(r.state, SendState::Unknown);
            assert_eq!(r.error_retryable, Some(true));
            s.record_outcome_after(t.token.as_str(), SendState::Deferred, &f, 2)
                .unwrap();
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!((r.state, r.attempts), (SendState::Deferred, 3));
            s.record_sent_after(t.token.as_str(), "wamid.2", None, 3)
                .unwrap();
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!((r.state, r.attempts), (SendState::Sent, 6));
            // Acceptance clears the earlier failure.
            assert_eq!((r.error_code, r.error_retryable), (None, None));
            assert_eq!(r.message_id.as_deref(), Some("wamid.2"));
        });
    }

    #[test]
    fn a_131050_refusal_suppresses_the_phone_in_the_same_commit() {
        each_backend("token 131050", |s| {
            let t = new_token("c", "+212610059159", Origin::Bulk);
            s.insert_token(&t, SendState::Sending).unwrap();
            let f = Failure {
                code: Some(131050),
                message: "stopped marketing".into(),
                retryable: false,
            };
            s.record_failed(t.token.as_str(), &f).unwrap();
            let entry = s.suppression("+212610059159").unwrap().unwrap();
            assert_eq!(entry.source, crate::store::source::REFUSED_131050);
            // Another refusal keeps the first entry; other codes suppress nobody.
            let other = new_token("d", "+212610059160", Origin::Bulk);
            s.insert_token(&other, SendState::Sending).unwrap();
            let f = Failure {
                code: Some(131026),
                ..f
            };
            s.record_failed(other.token.as_str(), &f).unwrap();
            assert!(s.suppression("+212610059160").unwrap().is_none());
        });
    }

    #[test]
    fn bulk_tokens_are_unique_per_campaign_and_phone() {
        each_backend("bulk tokens unique", |s| {
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
            // The same token twice is refused too.
            let t = new_token("e", "+212610059159", Origin::Send);
            assert!(s.insert_token(&t, SendState::Pending).unwrap());
            assert!(!s.insert_token(&t, SendState::Sent).unwrap());
            let tokens = s.tokens_of_campaign("c").unwrap();
            assert_eq!(tokens.len(), 3);
            assert!(tokens
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at));
        });
    }

    #[test]
    fn the_one_open_token_of_a_whatsapp_id() {
        each_backend("open token", |s| {
            let t = new_token("c", "+212610059159", Origin::Send);
            s.insert_token(&t, SendState::Sending).unwrap();
            // Not sent yet: not open.
            assert!(s
                .open_token_of_whatsapp_id("212610059159")
                .unwrap()
                .is_none());
            s.record_sent(t.token.as_str(), "wamid.3", Some("212699999999"))
                .unwrap();
            let open = s
                .open_token_of_whatsapp_id("212610059159")
                .unwrap()
                .unwrap();
            assert_eq!(open.token, t.token);
            // The wa_id the send answer reported finds it too.
            let open = s
                .open_token_of_whatsapp_id("212699999999")
                .unwrap()
                .unwrap();
            assert_eq!(open.token, t.token);
            // Two open tokens for one person: no guess.
            let again = new_token("d", "+212610059159", Origin::Send);
            s.insert_token(&again, SendState::Sending).unwrap();
            s.record_sent(again.token.as_str(), "wamid.4", None)
                .unwrap();
            assert!(s
                .open_token_of_whatsapp_id("212610059159")
                .unwrap()
                .is_none());
        });
    }

    #[test]
    fn a_token_expires_when_its_lifetime_is_over() {
        each_backend("token expiry", |s| {
            let t = NewToken {
                ttl: Duration::ZERO,
                ..new_token("c", "+212610059159", Origin::Send)
            };
            s.insert_token(&t, SendState::Pending).unwrap();
            let r = s.find_token(t.token.as_str()).unwrap().unwrap();
            assert_eq!(r.created_at, r.expires_at);
            assert!(r.is_expired(r.created_at));
            assert!(r.is_expired(crate::time::Timestamp::now()));
        });
    }

    #[test]
    fn unknown_token_is_none() {
        each_backend("unknown token", |s| {
            assert!(s.find_token("flow_nope").unwrap().is_none());
            assert!(s.find_token_by_message_id("wamid.nope").unwrap().is_none());
            assert!(s.tokens_of_campaign("nope").unwrap().is_empty());
        });
    }
}
