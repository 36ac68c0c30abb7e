//! The suppression list: people who asked not to be messaged, and why.
//!
//! An entry comes from a STOP reply (`keyword`), Meta's marketing-preference webhook
//! (`user_preferences`), a send refused with 131050 ("this recipient has chosen to stop
//! receiving marketing messages", `131050`), or the business itself (`manual`, `import`).
//! `bulk` skips suppressed people, `send` and `/api/send-flow` refuse them unless forced.

use super::Result;
use crate::phone::{whatsapp_form, Phone};
use crate::time::Timestamp;

/// Where a suppression came from.
pub mod source {
    /// An inbound message matching a stop keyword.
    pub const KEYWORD: &str = "keyword";
    /// Meta's `user_preferences` webhook (`marketing_messages` → `stop`).
    pub const USER_PREFERENCES: &str = "user_preferences";
    /// A send refused with Graph error 131050.
    pub const REFUSED_131050: &str = "131050";
    /// `flowctl suppress add`.
    pub const MANUAL: &str = "manual";
    /// `flowctl suppress import`.
    pub const IMPORT: &str = "import";
}

/// One suppressed person.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Suppression {
    /// The number as it was given (E.164).
    pub phone: String,
    /// Why, in words (`replied "STOP"`, `stopped marketing messages`, …).
    pub reason: String,
    /// Where it came from (see [`source`]).
    pub source: String,
    /// When it was recorded.
    pub at: Timestamp,
}

/// The matching key of a number: E.164 in the spelling Meta uses for WhatsApp ids, so that
/// both spellings of a Brazilian or Mexican mobile find the same entry.
pub fn suppression_key(e164: &str) -> String {
    format!("+{}", whatsapp_form(e164.trim_start_matches('+')))
}

/// The suppression list's operations.
pub trait SuppressionQueries {
    /// Suppresses `phone` (E.164). An existing entry is kept as it is (its first reason and
    /// time are the ones that matter); returns true when the entry is new.
    fn suppress(&mut self, phone: &str, reason: &str, source: &str) -> Result<bool>;

    /// Lifts the suppression of `phone`; returns true when there was one.
    fn unsuppress(&mut self, phone: &str) -> Result<bool>;

    /// The entry of `phone`, if it is suppressed.
    fn suppression(&self, phone: &str) -> Result<Option<Suppression>>;

    /// For each phone, whether it is suppressed (one query per call).
    fn suppressed_among(&self, phones: &[Phone]) -> Result<Vec<bool>>;

    /// Every entry, oldest first.
    fn suppressions(&self) -> Result<Vec<Suppression>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_a_number_share_a_key() {
        assert_eq!(
            suppression_key("+5511987654321"),
            suppression_key("+551187654321")
        );
        assert_eq!(
            suppression_key("+525512345678"),
            suppression_key("+5215512345678")
        );
        assert_eq!(suppression_key("+212610059159"), "+212610059159");
    }
}

/// The behaviour of every backend, run on each ([`each_backend`](crate::store::test_util)).
#[cfg(test)]
mod backend_tests {
    use crate::store::test_util::each_backend;

    #[test]
    fn suppress_lift_and_look_up_by_either_spelling() {
        each_backend("suppressions", |store| {
            assert!(store
                .suppress("+5511987654321", "replied \"STOP\"", "keyword")
                .unwrap());
            // The first reason is kept.
            assert!(!store.suppress("+551187654321", "again", "manual").unwrap());
            let entry = store.suppression("+551187654321").unwrap().unwrap();
            assert_eq!(entry.phone, "+5511987654321");
            assert_eq!(entry.reason, "replied \"STOP\"");
            let phones = [
                crate::phone::Phone::from_e164("+5511987654321").unwrap(),
                crate::phone::Phone::from_e164("+212610059159").unwrap(),
            ];
            assert_eq!(store.suppressed_among(&phones).unwrap(), vec![true, false]);
            assert_eq!(store.suppressed_among(&[]).unwrap(), Vec::<bool>::new());
            assert!(store.suppress("+212610059159", "asked", "manual").unwrap());
            let all = store.suppressions().unwrap();
            assert_eq!(all.len(), 2);
            assert!(all[0].at <= all[1].at);
            assert!(store.unsuppress("+551187654321").unwrap());
            assert!(!store.unsuppress("+551187654321").unwrap());
            assert!(store.suppression("+5511987654321").unwrap().is_none());
            assert_eq!(store.suppressions().unwrap().len(), 1);
        });
    }
}
