//! `flowctl send`: one Flow to one number, through the send path of [`crate::outbound`].

use crate::config::SendCommandSettings;
use crate::graph::GraphClient;
use crate::outbound::{send_one, RetryPolicy, SendRequest};
use crate::store::{Origin, SharedStore};

/// `flowctl send`: prints the JSON outcome on stdout; on failure one line on stderr.
pub async fn run(
    db: &crate::store::DbTarget,
    settings: SendCommandSettings,
) -> anyhow::Result<i32> {
    use anyhow::Context;

    use super::exit;

    let graph = GraphClient::new(settings.graph)?;
    if let Some(t) = &settings.send.message.template {
        super::templates::preflight(&graph, t, None).await?;
    }
    let store = crate::store::Store::open(db)?;
    if !settings.force {
        if let Some(held) = store.suppression(settings.phone.e164())? {
            return Err(super::UsageError(refusal(&settings.phone, &held)).into());
        }
    }
    let store = SharedStore::new(store);
    let req = SendRequest {
        phone: settings.phone,
        customer_name: settings.customer_name,
        data: settings.data,
        campaign: settings.campaign,
        origin: Origin::Send,
    };
    let outcome = send_one(
        &store,
        &graph,
        &settings.send.message,
        settings.send.token_ttl,
        &RetryPolicy::default(),
        req,
    )
    .await
    .context("cannot record the send")?;
    super::print_json(&super::with_snake_case_keys(serde_json::to_value(
        &outcome,
    )?))?;
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

/// Why a send to a suppressed number is refused, and how to send anyway.
pub fn refusal(phone: &crate::phone::Phone, held: &crate::store::Suppression) -> String {
    format!(
        "{phone} is on the suppression list since {} ({}, from {}): nothing sent; --force sends anyway, `flowctl suppress remove {phone}` lifts it",
        held.at, held.reason, held.source
    )
}
