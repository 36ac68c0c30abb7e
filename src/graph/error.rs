//! Graph API failures and what a sender should do about each.

use std::time::Duration;

/// What kind of failure a Graph error code is, and so what a sender does about it.
///
/// Meta's error codes page
/// (<https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>)
/// groups 4, 80007, 130429, 131048, 131056, 131064 and 133016 as throttling errors and says
/// errors arrive "synchronously as a Graph API response, asynchronously via Webhook, or
/// sometimes through both": the same table classifies a send's answer and a `failed` status.
/// The grouping into what a campaign does is flowctl's policy, following the advice of
/// `../shared/spec/whatsapp-cloud-api.md` section c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throughput of the number, app or account exceeded (130429, 4, 80007, HTTP 429): a
    /// campaign-wide pause — slow the whole run down, wait what the
    /// `X-Business-Use-Case-Usage` header says when it says it ([`GraphError::regain_after`]),
    /// and retry.
    RateLimit,
    /// Too many messages to one user (131056): back off for that recipient alone, 4^X seconds;
    /// others are unaffected, and a recipient still limited is deferred, not failed.
    PairRateLimit,
    /// A limit of this user (131049: Meta's per-user marketing limit, "to maintain healthy
    /// ecosystem engagement"): defer the recipient, no retry sooner than 24 hours.
    UserLimit,
    /// Temporary server trouble (1, 2, 131000, 131016, 131057, 133004, 5xx, no JSON): retry.
    Transient,
    /// This recipient cannot be reached by this message (131026 undeliverable, 131047 outside
    /// the 24-hour window — a template reaches them —, 131050 stopped marketing messages,
    /// 130403, 131021, 130472, …): record, move on.
    Permanent,
    /// The request as configured is wrong for everyone (100, 131008, 131009, 131051, 131053,
    /// 132000, 132001, 132005, 132007, 132012): a run that meets it again and again stops
    /// early, and the rows stay retryable for when the setting is fixed.
    Config,
    /// The business is being throttled for quality, or the template or Flow is paused,
    /// throttled or blocked (131048, 131064, 132015, 132016, 132068, 132069): stop the campaign.
    Throttled,
    /// Credentials, permissions or account trouble (0, 190, 3, 10, 200–299, …): abort.
    Fatal,
}

/// Classifies a Graph error `code`.
pub fn classify(code: i64) -> ErrorClass {
    use ErrorClass::*;
    match code {
        4 | 80007 | 130429 => RateLimit,
        131056 => PairRateLimit,
        131049 => UserLimit,
        1 | 2 | 131000 | 131016 | 131057 | 133004 => Transient,
        100 | 131008 | 131009 | 131051 | 131053 | 132000 | 132001 | 132005 | 132007 | 132012 => {
            Config
        }
        131048 | 131064 | 132015 | 132016 | 132068 | 132069 => Throttled,
        0 | 190 | 3 | 10 | 33 | 131005 | 131045 | 133010 | 131031 | 368 | 130497 | 131042
        | 131037 | 131063 => Fatal,
        200..=299 => Fatal,
        _ => Permanent,
    }
}

/// How long a recipient hit by Meta's per-user marketing limit (131049) is left alone: Meta
/// advises against retrying such a message within 24 hours.
pub const USER_LIMIT_DEFERRAL: Duration = Duration::from_secs(24 * 3600);

/// The likely cause of a configuration-level error, as a sentence naming what to check.
pub fn likely_cause(code: i64) -> Option<&'static str> {
    Some(match code {
        100 => "a parameter of the message is invalid: check FLOW_ID, FLOW_ACTION/FLOW_SCREEN and the template settings",
        131008 => "a required parameter of the message is missing: check FLOW_ID, FLOW_CTA, FLOW_BODY and the template settings",
        131009 => "a parameter value is not valid: check FLOW_ID (the Flow must be published), FLOW_SCREEN and the template's parameters",
        131051 => "this message type is not supported for this number: check FLOW_ACTION and the template",
        131053 => "the media of the message could not be uploaded: check the template's header media",
        132000 => "the number of template parameters does not match the template: check --template-name-param and the template's body",
        132001 => "the template does not exist in that language or is not approved: check --template and --lang",
        132005 | 132007 => "the template's text is refused: check the template in WhatsApp Manager",
        132012 => "the template parameters do not have the template's format: check the template's variables",
        190 => "the access token is invalid or expired: set a new WHATSAPP_ACCESS_TOKEN",
        0 => "the access token could not be authenticated: set a valid WHATSAPP_ACCESS_TOKEN",
        3 | 10 | 200..=299 => "the access token lacks a permission: give it whatsapp_business_messaging",
        33 | 133010 => "PHONE_NUMBER_ID is not a registered business number",
        _ => return None,
    })
}

/// What a Graph error `code` means, in a few words, for a report a person reads (`stats`).
///
/// From Meta's error codes page
/// (<https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>)
/// and the Flow error codes
/// (<https://developers.facebook.com/docs/whatsapp/flows/reference/error-codes>), as summed up
/// in `../shared/spec/whatsapp-cloud-api.md` section c. `None` for a code not in that table.
pub fn meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        0 => "access token could not be authenticated",
        190 => "access token invalid or expired",
        3 | 10 | 200..=299 | 131005 => "permission missing",
        4 | 80007 | 130429 => "rate limit hit",
        33 | 131045 | 133010 => "phone number not registered",
        100 => "invalid parameter",
        130403 => "the business blocked this user",
        130472 => "user's number is part of an experiment",
        130497 => "business cannot message users in this country",
        131000 => "unknown send failure",
        131008 => "required parameter missing",
        131009 => "parameter value invalid",
        131016 => "service temporarily unavailable",
        131021 => "recipient is the sender",
        131026 => "message undeliverable (not on WhatsApp, old app, or terms not accepted)",
        131030 => "recipient not in the allowed list (test number)",
        131031 | 368 => "business account locked or restricted",
        131037 => "display name not approved",
        131042 => "payment problem",
        131047 => "more than 24 hours since the user last wrote (use a template)",
        131048 => "spam rate limit: earlier messages were blocked or flagged",
        131049 => "per-user marketing limit (retry after 24 hours)",
        131050 => "user stopped marketing messages from this business",
        131051 => "unsupported message type",
        131053 => "media upload failed",
        131056 => "too many messages to this user (pair rate limit)",
        131057 => "business account in maintenance mode",
        131063 => "marketing templates disabled for this account",
        131064 => "messaging limited for template classification violations",
        132000 => "template parameter count mismatch",
        132001 => "template missing in this language or not approved",
        132005 => "template text too long once translated",
        132007 => "template content violates a policy",
        132012 => "template parameter format mismatch",
        132015 => "template paused for low quality",
        132016 => "template disabled",
        132068 => "Flow is blocked",
        132069 => "Flow is throttled",
        133004 => "server temporarily unavailable",
        _ => return None,
    })
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
        /// `estimated_time_to_regain_access` of the `X-Business-Use-Case-Usage` header, when
        /// the answer carried one above zero.
        regain: Option<Duration>,
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

    /// This error with the throttle time of the answer's business-use-case header.
    pub fn with_regain(mut self, after: Option<Duration>) -> GraphError {
        if let GraphError::Api { regain, .. } = &mut self {
            *regain = after;
        }
        self
    }

    /// How long the whole app or account is throttled, when the answer said so
    /// (`X-Business-Use-Case-Usage`): a run pauses that long instead of burning rows.
    pub fn regain_after(&self) -> Option<Duration> {
        match self {
            GraphError::Api { regain, .. } => *regain,
            _ => None,
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
            regain: None,
        }
    }

    #[test]
    fn the_reference_table_is_followed() {
        for c in [4, 80007, 130429] {
            assert_eq!(api(c).class(), ErrorClass::RateLimit, "{c}");
        }
        assert_eq!(api(131056).class(), ErrorClass::PairRateLimit);
        assert_eq!(api(131049).class(), ErrorClass::UserLimit);
        assert!(!api(131049).is_retryable(), "never retried within the run");
        for c in [1, 2, 131000, 131016, 131057, 133004] {
            assert_eq!(api(c).class(), ErrorClass::Transient, "{c}");
            assert!(api(c).is_retryable());
        }
        for c in [131026, 131047, 131050, 130403, 131021, 130472, 135000] {
            assert_eq!(api(c).class(), ErrorClass::Permanent, "{c}");
            assert!(!api(c).is_retryable());
        }
        for c in [
            100, 131008, 131009, 131051, 131053, 132000, 132001, 132005, 132007, 132012,
        ] {
            assert_eq!(api(c).class(), ErrorClass::Config, "{c}");
            assert!(!api(c).is_retryable());
            assert!(likely_cause(c).is_some(), "{c} names its likely cause");
        }
        for c in [132068, 132069, 131048, 131064, 132015, 132016] {
            assert_eq!(api(c).class(), ErrorClass::Throttled, "{c}");
        }
        for c in [
            0, 3, 10, 33, 190, 200, 299, 368, 131005, 131031, 131037, 131042, 131045, 131063,
            130497, 133010,
        ] {
            assert_eq!(api(c).class(), ErrorClass::Fatal, "{c}");
        }
        for c in [0, 190, 10, 200, 33, 133010] {
            assert!(likely_cause(c).is_some(), "{c} names its likely cause");
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
