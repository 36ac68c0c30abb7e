//! The data endpoint's records: answers merged screen by screen, completions, events.

use serde_json::{Map, Value};

use super::Result;
use crate::phone::Phone;
use crate::time::Timestamp;

/// Result of recording a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Stored as the token's response (id of the new row).
    Stored(i64),
    /// The token already had a response: nothing new was stored.
    AlreadyCompleted,
    /// No such token.
    UnknownToken,
}

/// A completion to record against a token.
#[derive(Clone, Debug)]
pub struct CompletionInput<'a> {
    pub token: &'a str,
    pub answers: &'a Map<String, Value>,
    /// `endpoint`, `webhook`, or `chatwoot` (an inbox forwarding Meta's webhook).
    pub source: &'a str,
    /// Sender's wa_id or business-scoped id (webhook only).
    pub sender: Option<&'a str>,
    /// Webhook message id, for deduplication.
    pub event_id: Option<&'a str>,
    /// When the user completed the Flow (stored form, see [`crate::time`]).
    pub completed_at: &'a str,
}

/// A stored response, as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    pub id: i64,
    /// The token it joined, or for an unmatched completion the token it claimed (any text).
    pub token: Option<String>,
    /// The joined phone, or for an unmatched completion the sender's number (`+` and the
    /// sender's digits, as the webhook gave them).
    pub phone: Option<String>,
    pub sender: Option<String>,
    pub customer_name: Option<String>,
    pub campaign: Option<String>,
    /// `endpoint`, `webhook`, or `chatwoot` (an inbox forwarding Meta's webhook).
    pub source: String,
    pub answers: Map<String, Value>,
    pub matched: bool,
    pub sender_mismatch: bool,
    pub duplicate_of: Option<i64>,
    pub completed_at: Timestamp,
}

/// What the data endpoint stores.
pub trait FlowQueries {
    /// Merges one screen's answers into the token's answers so far; returns the merged set.
    /// Replaying the same screen gives the same result.
    fn merge_screen_answers(
        &mut self,
        token: &str,
        screen: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>>;

    /// Stores a completion joined to its token's phone and marks the token completed, in one
    /// transaction. A second completion of the same token stores nothing new (from the other
    /// path it is kept, flagged as a duplicate, so no answer is ever dropped).
    fn complete(&mut self, c: &CompletionInput<'_>) -> Result<Completion>;

    /// Records something that is not an answer (error notification, alert, unmatched event).
    fn record_event(
        &mut self,
        kind: &str,
        token: Option<&str>,
        reference: Option<&str>,
        detail: &Value,
    ) -> Result<i64>;

    /// Events of one kind, oldest first (`(token, detail)`).
    fn events(&self, kind: &str) -> Result<Vec<(Option<String>, Value)>>;

    /// Every response stored for a token (the primary first, then duplicates).
    fn responses_for_token(&self, token: &str) -> Result<Vec<StoredResponse>>;
}

/// True when a webhook sender id designates the stored phone: its digits, the WhatsApp id the
/// send answer reported for it (`wa_id`), or the other spelling Meta uses for Brazilian and
/// Mexican mobiles ([`Phone::is_whatsapp_id`]). Business-scoped ids (not digits) cannot be
/// compared and are not flagged.
pub(crate) fn sender_matches(sender: &str, phone: &Phone, wa_id: Option<&str>) -> bool {
    if !sender.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    phone.is_whatsapp_id(sender) || wa_id == Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_mismatch_only_for_phone_digits() {
        let ma = Phone::parse("+212610059159", None).unwrap();
        assert!(sender_matches("212610059159", &ma, None));
        assert!(!sender_matches("212600000000", &ma, None));
        assert!(sender_matches("US.13491208655302741918", &ma, None));
    }

    #[test]
    fn a_whatsapp_id_that_differs_from_the_number_is_no_mismatch() {
        let br = Phone::parse("+5511987654321", None).unwrap();
        assert!(
            sender_matches("551187654321", &br, None),
            "Brazil's ninth digit"
        );
        let mx = Phone::parse("+525512345678", None).unwrap();
        assert!(sender_matches("5215512345678", &mx, None), "Mexico's 521");
        // Whatever Meta reported at send time is the recipient too.
        let other = Phone::parse("+212610059159", None).unwrap();
        assert!(sender_matches("212699999999", &other, Some("212699999999")));
        assert!(!sender_matches(
            "212699999999",
            &other,
            Some("212610059159")
        ));
    }
}
