//! The send path: send one Flow and record its outcome, shared by `flowctl send` and
//! `POST /api/send-flow`, and the one retry policy that `bulk` follows too.
//!
//! Order matters and is the point of the tool: the token row is committed first, then the
//! request leaves, then its outcome is recorded. A completion can therefore always be joined.

mod retry;

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

pub use retry::{RetryPolicy, Rule};

use crate::graph::{flow_message, GraphClient, GraphError, MessageSettings, Recipient, Sent};
use crate::phone::{DefaultCountry, Phone};
use crate::store::{Failure, NewToken, Origin, SendState, Settlement, SharedStore, StoreError};
use crate::token::FlowToken;

/// What a send needs besides the Graph API: the message, the region of numbers written
/// without a country code, and the lifetime of the tokens issued. Shared by `send`, `bulk`
/// and `serve`'s `/api/send-flow`.
#[derive(Clone, Debug)]
pub struct SendSettings {
    /// The Flow message (interactive, or a template with a Flow button).
    pub message: MessageSettings,
    /// `DEFAULT_COUNTRY`, for numbers written without a country code.
    pub default_country: Option<DefaultCountry>,
    /// `FLOW_TOKEN_TTL`: how long an issued token can be completed.
    pub token_ttl: Duration,
}

/// One recipient to send to.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// Who gets the message.
    pub phone: Phone,
    /// Stored with the token, and shown in the message when the template asks for it.
    pub customer_name: Option<String>,
    /// The Flow's initial data, stored with the token.
    pub data: Option<Map<String, Value>>,
    /// The campaign the token belongs to.
    pub campaign: String,
    /// Which door the send came through.
    pub origin: Origin,
}

/// The error part of a failed send's JSON answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SendErrorInfo {
    /// Graph error code, when the API gave one.
    pub code: Option<i64>,
    /// What went wrong, redacted.
    pub message: String,
    /// Whether trying again later may succeed.
    pub retryable: bool,
    /// True when the request may have been delivered although no success was seen.
    #[serde(rename = "outcomeUnknown")]
    pub outcome_unknown: bool,
}

/// The JSON answer of `send` and `/api/send-flow`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SendOutcome {
    /// True when the API accepted the message.
    pub success: bool,
    /// The wamid of an accepted message.
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The token the completion will come back with.
    #[serde(rename = "flowToken")]
    pub flow_token: String,
    /// The recipient, in E.164.
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    /// When the outcome was known.
    pub timestamp: String,
    /// Why the send failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SendErrorInfo>,
    /// Requests made, retries included.
    pub attempts: u32,
}

/// Issues a token (living `token_ttl`), sends the Flow (retrying per `policy`), records the
/// outcome. `Err` only when the store fails; a refused send is an `Ok` outcome with
/// `success: false`.
pub async fn send_one(
    store: &SharedStore,
    graph: &GraphClient,
    message: &MessageSettings,
    token_ttl: Duration,
    policy: &RetryPolicy,
    req: SendRequest,
) -> Result<SendOutcome, StoreError> {
    let token = FlowToken::generate();
    let new = NewToken {
        token: token.clone(),
        phone: req.phone.clone(),
        customer_name: req.customer_name.clone(),
        campaign: req.campaign.clone(),
        origin: req.origin,
        initial_data: req.data.clone(),
        ttl: token_ttl,
    };
    // The row is committed (as "sending") before the request can leave.
    store
        .call(move |s| s.insert_token(&new, SendState::Sending))
        .await?;

    let body = flow_message(
        message,
        &Recipient {
            phone: &req.phone,
            flow_token: token.as_str(),
            customer_name: req.customer_name.as_deref(),
            data: req.data.as_ref(),
        },
    );
    let (result, attempts) = send_with_retry(graph, &body, policy).await;
    let key = token.as_str().to_string();
    let attempts_i = i64::from(attempts);
    let outcome = match &result {
        Ok(sent) => {
            let (id, wa) = (sent.message_id.clone(), sent.wa_id.clone());
            store
                .call(move |s| s.record_sent_after(&key, &id, wa.as_deref(), attempts_i))
                .await?;
            None
        }
        Err(e) => {
            let failure = failure_of(e);
            let unknown = e.outcome_unknown();
            let f = failure.clone();
            store
                .call(move |s| {
                    let state = if unknown {
                        SendState::Unknown
                    } else {
                        SendState::Failed
                    };
                    s.record_outcome_after(&key, state, &f, attempts_i)
                })
                .await?;
            Some(SendErrorInfo {
                code: failure.code,
                message: failure.message,
                retryable: failure.retryable,
                outcome_unknown: unknown,
            })
        }
    };
    Ok(SendOutcome {
        success: result.is_ok(),
        message_id: result.ok().map(|s| s.message_id),
        flow_token: token.as_str().to_string(),
        phone_number: req.phone.e164().to_string(),
        timestamp: crate::time::now(),
        error: outcome,
        attempts,
    })
}

/// Sends one message body, retrying per `policy`. Returns the last answer and the number of
/// requests made.
async fn send_with_retry(
    graph: &GraphClient,
    body: &Value,
    policy: &RetryPolicy,
) -> (Result<Sent, GraphError>, u32) {
    let mut attempt = 1;
    loop {
        let err = match graph.send_message(body).await {
            Ok(sent) => return (Ok(sent), attempt),
            Err(e) => e,
        };
        let Some(wait) = policy.retry_after(&err, attempt) else {
            return (Err(err), attempt);
        };
        tracing::debug!(
            attempt,
            code = err.code(),
            wait_ms = wait.as_millis() as u64,
            "retrying send"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// What to store about a failed send. The message is redacted: it quotes the Graph API's
/// answer, which must not bring a secret (an echoed access token) into the store or the output.
pub fn failure_of(e: &GraphError) -> Failure {
    Failure {
        code: e.code(),
        message: crate::secret::redact(&e.to_string()).into_owned(),
        retryable: e.is_retryable(),
    }
}

/// How a `failed` status with `code`, reported at `at`, settles a send Meta had accepted: a
/// per-user limit (131049) defers the recipient for 24 hours (Meta advises no retry sooner);
/// anything else fails the send with its code. Neither is resent by a plain rerun: the message
/// was accepted, so a resend needs a fresh token (`bulk --retry-failed`, or `--template` for
/// 131047, the 24-hour window).
pub fn settlement_of_failed_status(code: Option<i64>, at: crate::time::Timestamp) -> Settlement {
    match code.map(crate::graph::classify) {
        Some(crate::graph::ErrorClass::UserLimit) => Settlement {
            state: SendState::Deferred,
            retryable: false,
            not_before: Some(at.saturating_add(crate::graph::USER_LIMIT_DEFERRAL)),
        },
        _ => Settlement {
            state: SendState::Failed,
            retryable: false,
            not_before: None,
        },
    }
}
