//! Graph API failures and what a sender should do about each.

use std::time::Duration;

/// What kind of failure a Graph error code is, following the protocol reference's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throughput exceeded (4, 80007, 130429, HTTP 429): slow the whole run down, retry.
    RateLimit,
    /// Too many messages to one user (131056): retry that recipient later, others unaffected.
    PairRateLimit,
    /// Temporary server trouble (1, 2, 131000, 131016, 131057, 133004, 5xx, no JSON): retry.
    Transient,
    /// This recipient or request cannot succeed as is (131026, 131047, 100, …): record, move on.
    Permanent,
    /// The business is being throttled for quality or the Flow is throttled/blocked
    /// (131048, 131049, 131064, 132015, 132016, 132068, 132069): stop the campaign.
    Throttled,
    /// Credentials, configuration or account trouble (0, 190, 3, 10, 200–299, …): abort.
    Fatal,
}

/// Classifies a Graph error `code`.
pub fn classify(code: i64) -> ErrorClass {
    use ErrorClass::*;
    match code {
        4 | 80007 | 130429 => RateLimit,
        131056 => PairRateLimit,
        1 | 2 | 131000 | 131016 | 131057 | 133004 => Transient,
        131048 | 131049 | 131064 | 132015 | 132016 | 132068 | 132069 => Throttled,
        0 | 190 | 3 | 10 | 33 | 131005 | 131045 | 133010 | 131031 | 368 | 130497 | 131042
        | 131037 | 131063 => Fatal,
        200..=299 => Fatal,
        _ => Permanent,
    }
}

/// A failed Graph API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// The API answered with its error envelope.
    #[error("Graph API error {code}: {message}{}", details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Api {
        status: u16,
        code: i64,
        message: String,
        details: Option<String>,
        fbtrace_id: Option<String>,
    },
    /// A non-2xx answer without a usable error envelope.
    #[error("Graph API answered HTTP {status} without an error envelope: {snippet}")]
    Http { status: u16, snippet: String },
    /// No answer within the timeout. The message may have gone out.
    #[error("no answer from the Graph API within {}s (the message may or may not have been sent)", .0.as_secs_f32())]
    Timeout(Duration),
    /// The connection could not be made: the request never left.
    #[error("cannot reach the Graph API: {0}")]
    Connect(String),
    /// The connection broke after the request may have left.
    #[error("connection to the Graph API failed mid-request (the message may or may not have been sent): {0}")]
    Network(String),
    /// A 2xx answer that is not the documented success shape.
    #[error("unexpected Graph API answer: {0}")]
    InvalidResponse(String),
}

impl GraphError {
    /// The Graph error code, when the API gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How to react to this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            GraphError::Api { status: 429, .. } | GraphError::Http { status: 429, .. } => {
                ErrorClass::RateLimit
            }
            GraphError::Api { code, .. } => classify(*code),
            // Refused credentials without an envelope (a proxy, an expired token): retrying
            // cannot help, and every other row would meet the same answer.
            GraphError::Http {
                status: 401 | 403, ..
            } => ErrorClass::Fatal,
            GraphError::Http { .. } | GraphError::Connect(_) => ErrorClass::Transient,
            // Ambiguous outcomes are not retried blindly: the API has no idempotency key.
            GraphError::Timeout(_) | GraphError::Network(_) | GraphError::InvalidResponse(_) => {
                ErrorClass::Permanent
            }
        }
    }

    /// True for failures worth retrying with backoff (rate limits and transient errors).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.class(),
            ErrorClass::RateLimit | ErrorClass::PairRateLimit | ErrorClass::Transient
        )
    }

    /// True when the failure says the API itself is unreachable or broken (a 5xx without an
    /// error envelope, a refused connection) rather than refusing this one request: a bulk
    /// run stops sending until the API answers again.
    pub fn is_outage(&self) -> bool {
        match self {
            GraphError::Connect(_) => true,
            GraphError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// True when the request may have been delivered although no success was seen.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            GraphError::Timeout(_) | GraphError::Network(_) | GraphError::InvalidResponse(_)
        )
    }

    /// The shortest sensible wait before retrying after this failure, attempt counted from 1.
    pub fn min_retry_delay(&self, attempt: u32) -> Duration {
        match self.class() {
            // Meta: retry after about a second for per-number throughput.
            ErrorClass::RateLimit => Duration::from_secs(1),
            // Meta: 4^X seconds per consecutive pair-limit failure.
            ErrorClass::PairRateLimit => {
                Duration::from_secs(4u64.saturating_pow(attempt.saturating_sub(1).min(4)))
            }
            _ => Duration::ZERO,
        }
    }

    /// A short stable word for logs, metrics and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            GraphError::Api { .. } => "api",
            GraphError::Http { .. } => "http",
            GraphError::Timeout(_) => "timeout",
            GraphError::Connect(_) => "connect",
            GraphError::Network(_) => "network",
            GraphError::InvalidResponse(_) => "invalid_response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64) -> GraphError {
        GraphError::Api {
            status: 400,
            code,
            message: "x".into(),
            details: None,
            fbtrace_id: None,
        }
    }

    #[test]
    fn the_reference_table_is_followed() {
        for c in [4, 80007, 130429] {
            assert_eq!(api(c).class(), ErrorClass::RateLimit, "{c}");
        }
        assert_eq!(api(131056).class(), ErrorClass::PairRateLimit);
        for c in [1, 2, 131000, 131016, 131057, 133004] {
            assert_eq!(api(c).class(), ErrorClass::Transient, "{c}");
            assert!(api(c).is_retryable());
        }
        for c in [
            131026, 131047, 131050, 130403, 131021, 100, 131008, 131009, 132000, 132001, 135000,
        ] {
            assert_eq!(api(c).class(), ErrorClass::Permanent, "{c}");
            assert!(!api(c).is_retryable());
        }
        for c in [132068, 132069, 131048, 131049] {
            assert_eq!(api(c).class(), ErrorClass::Throttled, "{c}");
        }
        for c in [0, 190, 10, 200, 131031, 131042] {
            assert_eq!(api(c).class(), ErrorClass::Fatal, "{c}");
        }
    }

    #[test]
    fn http_failures_without_envelope_are_transient_and_timeouts_ambiguous() {
        assert!(GraphError::Http {
            status: 503,
            snippet: String::new()
        }
        .is_retryable());
        assert!(GraphError::Connect("refused".into()).is_retryable());
        for status in [401, 403] {
            let refused = GraphError::Http {
                status,
                snippet: String::new(),
            };
            assert_eq!(refused.class(), ErrorClass::Fatal, "{status}");
            assert!(!refused.is_retryable());
        }
        let t = GraphError::Timeout(Duration::from_secs(1));
        assert!(!t.is_retryable() && t.outcome_unknown());
    }

    #[test]
    fn only_an_unreachable_or_broken_api_is_an_outage() {
        let http = |status| GraphError::Http {
            status,
            snippet: String::new(),
        };
        assert!(http(503).is_outage());
        assert!(http(502).is_outage());
        assert!(GraphError::Connect("refused".into()).is_outage());
        assert!(!http(429).is_outage());
        assert!(!http(404).is_outage());
        // An error envelope means the API answered: this request's problem, not an outage.
        assert!(!api(131000).is_outage());
        // Ambiguous outcomes are recorded as unknown, never waited out and resent.
        assert!(!GraphError::Network("reset".into()).is_outage());
        assert!(!GraphError::Timeout(Duration::from_secs(1)).is_outage());
    }

    #[test]
    fn pair_limit_waits_grow_as_powers_of_four() {
        let e = api(131056);
        assert_eq!(e.min_retry_delay(1), Duration::from_secs(1));
        assert_eq!(e.min_retry_delay(2), Duration::from_secs(4));
        assert_eq!(e.min_retry_delay(3), Duration::from_secs(16));
    }
}
