//! The one retry policy of every send (`send`, `bulk`, `/api/send-flow`): per error class, how
//! many attempts a message gets and how long to wait between them.
//!
//! A caller asks [`RetryPolicy::retry_after`] after each failed attempt: "retry after how
//! long, or give up?". What a caller adds on top is its own business: a bulk run also slows
//! its whole pacer on a throughput limit and waits out outages without counting them, but a
//! row's attempts and its backoff come from here.

use std::time::Duration;

use rand::Rng;

use crate::graph::{ErrorClass, GraphError};

/// How one class of failure is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Attempts in all, the first included: 1 means never retried.
    pub attempts: u32,
    /// First backoff step, doubled per retry, with full jitter (half to all of the step).
    pub base_delay: Duration,
    /// Cap of one backoff step. The wait the error itself asks for
    /// ([`GraphError::min_retry_delay`]) is honoured even above it.
    pub max_delay: Duration,
}

impl Rule {
    /// Not retried: the first answer is the outcome.
    pub const NEVER: Rule = Rule {
        attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// Retried with exponential backoff from 0.5 s, capped at 30 s a step, `attempts` in all.
    pub const fn backoff(attempts: u32) -> Rule {
        Rule {
            attempts,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// One rule per retryable error class; permanent, throttled and fatal failures are never
/// retried (the API has no idempotency key, and those answers would not change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Throughput exceeded (130429, 80007, 4, HTTP 429); Meta asks for about a second.
    pub rate_limit: Rule,
    /// Too many messages to one user (131056); Meta asks for 4^X seconds.
    pub pair_rate_limit: Rule,
    /// Temporary trouble (1, 2, 131000, …, 5xx, refused connections).
    pub transient: Rule,
}

impl Default for RetryPolicy {
    /// At most 5 attempts for every retryable class (about 8 s of backoff, or 1 + 4 + 16 + 64 s
    /// for the pair limit), as the README documents for `send`.
    fn default() -> Self {
        RetryPolicy {
            rate_limit: Rule::backoff(5),
            pair_rate_limit: Rule::backoff(5),
            transient: Rule::backoff(5),
        }
    }
}

impl RetryPolicy {
    /// The rule for a class of failure.
    pub fn rule(&self, class: ErrorClass) -> Rule {
        match class {
            ErrorClass::RateLimit => self.rate_limit,
            ErrorClass::PairRateLimit => self.pair_rate_limit,
            ErrorClass::Transient => self.transient,
            ErrorClass::Permanent
            | ErrorClass::UserLimit
            | ErrorClass::Config
            | ErrorClass::Throttled
            | ErrorClass::Fatal => Rule::NEVER,
        }
    }

    /// Attempt number `attempt` (counted from 1) failed with `err`: the wait before the next
    /// attempt, or `None` when the message has had all its attempts (or is not retried).
    pub fn retry_after(&self, err: &GraphError, attempt: u32) -> Option<Duration> {
        self.retry_after_jittered(err, attempt, rand::rng().random_range(0.5..=1.0))
    }

    /// [`Self::retry_after`] with the jitter factor given (0.5 to 1): exponential backoff
    /// scaled by `jitter`, never shorter than what the error itself asks for.
    fn retry_after_jittered(
        &self,
        err: &GraphError,
        attempt: u32,
        jitter: f64,
    ) -> Option<Duration> {
        let rule = self.rule(err.class());
        if attempt >= rule.attempts {
            return None;
        }
        let step = rule
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(rule.max_delay);
        Some(step.mul_f64(jitter).max(err.min_retry_delay(attempt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64) -> GraphError {
        GraphError::Api {
            status: 400,
            code,
            message: String::new(),
            details: None,
            fbtrace_id: None,
            regain: None,
        }
    }

    fn http(status: u16) -> GraphError {
        GraphError::Http {
            status,
            snippet: String::new(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// The waits after attempts 1, 2, … until the policy gives up, at the given jitter.
    fn waits(p: &RetryPolicy, err: &GraphError, jitter: f64) -> Vec<Duration> {
        (1..)
            .map_while(|attempt| p.retry_after_jittered(err, attempt, jitter))
            .collect()
    }

    #[test]
    fn backoff_grows_is_capped_and_respects_the_error() {
        let rule = Rule {
            attempts: 10,
            base_delay: ms(100),
            max_delay: secs(2),
        };
        let p = RetryPolicy {
            rate_limit: rule,
            pair_rate_limit: rule,
            transient: rule,
        };
        let transient = http(503);
        for attempt in 1..10 {
            let d = p.retry_after(&transient, attempt).unwrap();
            let full = ms(100).saturating_mul(1 << (attempt - 1)).min(secs(2));
            assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
        }
        assert!(p.retry_after(&api(130429), 1).unwrap() >= secs(1));
    }

    #[test]
    fn a_throughput_limit_gets_5_attempts_a_second_apart_at_least() {
        let p = RetryPolicy::default();
        for err in [api(130429), api(80007), api(4), http(429)] {
            assert_eq!(
                waits(&p, &err, 1.0),
                [secs(1), secs(1), secs(2), secs(4)],
                "{err}"
            );
            // Jitter never brings a wait under Meta's second.
            assert_eq!(
                waits(&p, &err, 0.5),
                [secs(1), secs(1), secs(1), secs(2)],
                "{err}"
            );
        }
    }

    #[test]
    fn the_pair_limit_gets_5_attempts_4_to_the_x_seconds_apart() {
        let p = RetryPolicy::default();
        let waits_full = waits(&p, &api(131056), 1.0);
        assert_eq!(waits_full, [secs(1), secs(4), secs(16), secs(64)]);
        // Above the 30 s cap: the error's own minimum wins.
        assert_eq!(waits(&p, &api(131056), 0.5), waits_full);
    }

    #[test]
    fn transient_failures_get_5_attempts_with_jittered_exponential_backoff() {
        let p = RetryPolicy::default();
        for err in [
            api(131000),
            api(1),
            http(503),
            http(404),
            GraphError::Connect("refused".into()),
        ] {
            assert_eq!(
                waits(&p, &err, 1.0),
                [ms(500), secs(1), secs(2), secs(4)],
                "{err}"
            );
            assert_eq!(
                waits(&p, &err, 0.5),
                [ms(250), ms(500), secs(1), secs(2)],
                "{err}"
            );
            for attempt in 1..5 {
                let d = p.retry_after(&err, attempt).unwrap();
                let full = ms(500) * (1 << (attempt - 1));
                assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
            }
            assert_eq!(p.retry_after(&err, 5), None);
        }
    }

    #[test]
    fn permanent_throttled_fatal_and_ambiguous_failures_are_never_retried() {
        let p = RetryPolicy::default();
        for err in [
            api(131026),
            api(100),
            api(131048),
            api(132068),
            api(190),
            http(401),
            http(403),
            GraphError::Timeout(secs(1)),
            GraphError::Network("reset".into()),
            GraphError::InvalidResponse("<html>".into()),
        ] {
            assert_eq!(p.retry_after(&err, 1), None, "{err}");
        }
    }

    #[test]
    fn backoff_steps_are_capped_but_not_below_what_the_error_asks() {
        let p = RetryPolicy {
            transient: Rule {
                attempts: 12,
                base_delay: ms(100),
                max_delay: secs(2),
            },
            ..RetryPolicy::default()
        };
        let w = waits(&p, &http(503), 1.0);
        assert_eq!(w.len(), 11);
        assert_eq!(
            &w[..6],
            [ms(100), ms(200), ms(400), ms(800), ms(1600), secs(2)]
        );
        assert!(w[6..].iter().all(|d| *d == secs(2)));
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(p.retry_after_jittered(&http(503), 11, 1.0), Some(secs(2)));
        let long = RetryPolicy {
            transient: Rule {
                attempts: u32::MAX,
                ..p.transient
            },
            ..p
        };
        assert_eq!(
            long.retry_after_jittered(&http(503), 1000, 1.0),
            Some(secs(2))
        );
    }
}
