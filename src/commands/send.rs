//! `flowctl send`: one Flow to one number, through the send path of [`crate::outbound`].

use serde_json::{Map, Value};

use crate::graph::GraphClient;
use crate::outbound::{send_one, RetryPolicy, SendRequest};
use crate::phone::Phone;
use crate::store::{Origin, SharedStore};

/// Parses `--data` / the API's `data`: a JSON object, or nothing.
pub fn parse_data(text: &str) -> Result<Option<Map<String, Value>>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) if m.is_empty() => Ok(None),
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(format!("invalid --data {text:?}: expected a JSON object")),
        Err(e) => Err(format!("invalid --data {text:?}: {e}")),
    }
}

/// `flowctl send`: prints the JSON outcome on stdout; on failure one line on stderr.
pub async fn run(db: &std::path::Path, args: crate::cli::SendArgs) -> anyhow::Result<i32> {
    use anyhow::Context;

    use super::{exit, UsageError};

    let template = args.template.clone().zip(args.lang.clone());
    let settings = args.message.resolve(template)?;
    let phone = Phone::parse(&args.phone, settings.default_country)
        .map_err(|e| UsageError(e.to_string()))?;
    let data = match &args.data {
        Some(text) => parse_data(text).map_err(UsageError)?,
        None => None,
    };
    let graph = GraphClient::new(args.graph.resolve()?)?;
    let store = crate::store::Store::open(db)?;
    let store = SharedStore::new(store);
    let req = SendRequest {
        phone,
        customer_name: args.name.clone().filter(|n| !n.trim().is_empty()),
        data,
        campaign: args.campaign.clone(),
        origin: Origin::Send,
    };
    let outcome = send_one(
        &store,
        &graph,
        &settings.message,
        settings.token_ttl,
        &RetryPolicy::default(),
        req,
    )
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
