//! `flowctl send`, and the send path it shares with `POST /api/send-flow`.
//!
//! Order matters and is the point of the tool: the token row is committed first, then the
//! request leaves, then its outcome is recorded. A completion can therefore always be joined.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::SendSettings;
use crate::graph::{flow_message, GraphClient, GraphError, Recipient, RetryPolicy};
use crate::phone::Phone;
use crate::store::{Failure, NewToken, Origin, SendState, SharedStore, StoreError};
use crate::token::FlowToken;

/// One recipient to send to.
#[derive(Clone, Debug)]
pub struct SendRequest {
    pub phone: Phone,
    pub customer_name: Option<String>,
    pub data: Option<Map<String, Value>>,
    pub campaign: String,
    pub origin: Origin,
}

/// The error part of a failed send's JSON answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SendErrorInfo {
    /// Graph error code, when the API gave one.
    pub code: Option<i64>,
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
    pub success: bool,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(rename = "flowToken")]
    pub flow_token: String,
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SendErrorInfo>,
    /// Requests made, retries included.
    pub attempts: u32,
}

/// Issues a token, sends the Flow (retrying rate limits and transient failures), records the
/// outcome. `Err` only when the store fails; a refused send is an `Ok` outcome with `success: false`.
pub async fn send_one(
    store: &SharedStore,
    graph: &GraphClient,
    settings: &SendSettings,
    policy: RetryPolicy,
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
        ttl: settings.token_ttl,
    };
    // The row is committed (as "sending") before the request can leave.
    store
        .call(move |s| s.insert_token(&new, SendState::Sending))
        .await?;

    let body = flow_message(
        &settings.message,
        &Recipient {
            phone: &req.phone,
            flow_token: token.as_str(),
            customer_name: req.customer_name.as_deref(),
            data: req.data.as_ref(),
        },
    );
    let (result, attempts) = graph.send_message_with_retry(&body, policy, |_| {}).await;
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

/// What to store about a failed send. The message is redacted: it quotes the Graph API's
/// answer, which must not bring a secret (an echoed access token) into the store or the output.
pub fn failure_of(e: &GraphError) -> Failure {
    Failure {
        code: e.code(),
        message: crate::secret::redact(&e.to_string()).into_owned(),
        retryable: e.is_retryable(),
    }
}

/// `flowctl send`: prints the JSON outcome on stdout; on failure one line on stderr.
pub async fn run(
    db: &std::path::Path,
    settings: crate::config::SendCommandSettings,
) -> anyhow::Result<i32> {
    use anyhow::Context;

    use super::exit;

    let graph = GraphClient::new(settings.graph)?;
    let store = crate::store::Store::open(db)?;
    let store = SharedStore::new(store);
    let req = SendRequest {
        phone: settings.phone,
        customer_name: settings.customer_name,
        data: settings.data,
        campaign: settings.campaign,
        origin: Origin::Send,
    };
    let outcome = send_one(&store, &graph, &settings.send, RetryPolicy::default(), req)
        .await
        .context("cannot record the send")?;
    println!("{}", serde_json::to_string(&outcome)?);
    if let Some(err) = &outcome.error {
        let retry = if err.outcome_unknown {
            " The outcome is unknown: check before sending again."
        } else if err.retryable {
            " It may succeed later."
        } else {
            ""
        };
        eprintln!(
            "flowctl: sending to {} failed after {} attempt(s): {}.{}",
            outcome.phone_number, outcome.attempts, err.message, retry
        );
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}
