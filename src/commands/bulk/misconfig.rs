//! A wrong setting cannot burn a campaign: when [`STREAK`] sends in a row are refused with the
//! same configuration-level error (a missing template, a bad parameter, …), the run stops with
//! one sentence naming the likely cause, and the rows it refused stay retryable, so that fixing
//! the setting and rerunning sends them.
//!
//! Meta's error codes page
//! (<https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>)
//! lists these codes as problems of the request (100, 131008, 131009, 132000, 132001, …): the
//! same request fails for every recipient, so a run that goes on only marks more rows failed.

use std::sync::Mutex;

use crate::graph::likely_cause;

/// Sends in a row refused with the same configuration-level error that stop a run.
pub const STREAK: u32 = 5;

/// The current run of sends refused with the same configuration-level code.
#[derive(Debug, Default)]
pub struct ConfigStreak {
    /// The code, and how many sends in a row it refused.
    current: Mutex<(Option<i64>, u32)>,
}

impl ConfigStreak {
    /// Counts one finished send: `config_code` is the code of a configuration-level refusal,
    /// `None` for any other outcome (a success, another kind of failure), which ends the
    /// streak. Returns the sentence that stops the run when this send makes [`STREAK`].
    pub fn observe(&self, config_code: Option<i64>) -> Option<String> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(code) = config_code else {
            *cur = (None, 0);
            return None;
        };
        let count = if cur.0 == Some(code) { cur.1 + 1 } else { 1 };
        *cur = (Some(code), count);
        (count == STREAK).then(|| stop_sentence(count, code))
    }
}

/// Why the run stopped: `5 sends in a row failed with 132001: the template does not exist in
/// that language or is not approved: check --template and --lang`.
pub fn stop_sentence(count: u32, code: i64) -> String {
    let cause = likely_cause(code)
        .unwrap_or("the message as configured is refused: check the message and template settings");
    format!("{count} sends in a row failed with {code}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_in_a_row_with_the_same_code_stop_the_run_once() {
        let s = ConfigStreak::default();
        for _ in 0..STREAK - 1 {
            assert_eq!(s.observe(Some(132001)), None);
        }
        let why = s.observe(Some(132001)).unwrap();
        assert_eq!(
            why,
            "5 sends in a row failed with 132001: the template does not exist in that language or is not approved: check --template and --lang"
        );
        assert_eq!(s.observe(Some(132001)), None, "said once");
    }

    #[test]
    fn a_success_or_another_code_starts_the_count_again() {
        let s = ConfigStreak::default();
        for _ in 0..4 {
            s.observe(Some(131009));
        }
        s.observe(None);
        for _ in 0..4 {
            assert_eq!(s.observe(Some(131009)), None);
        }
        assert_eq!(s.observe(Some(132000)), None, "another code");
        for _ in 0..3 {
            assert_eq!(s.observe(Some(132000)), None);
        }
        assert!(s.observe(Some(132000)).unwrap().contains("132000"));
    }
}
