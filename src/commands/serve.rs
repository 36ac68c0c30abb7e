//! `flowctl serve`: runs the server with its resolved settings until SIGINT/SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::UsageError;
use crate::config::ServeSettings;
use crate::graph::{GraphClient, GraphSettings};
use crate::outbound::{RetryPolicy, SendSettings};
use crate::server::forward::Forwarder;
use crate::server::{AppState, Metrics, Sender};
use crate::store::{SharedStore, Store};

/// What `/api/send-flow` sends with, or why it cannot send (the route then answers 503 with
/// this reason).
fn sender(resolved: Result<(GraphSettings, SendSettings), String>) -> Result<Arc<Sender>, String> {
    let (graph, send) = resolved?;
    let graph = GraphClient::new(graph).map_err(|e| e.to_string())?;
    Ok(Arc::new(Sender {
        graph,
        settings: send,
        policy: RetryPolicy::default(),
    }))
}

/// Binds, serves until a signal, drains.
pub async fn run(db: &Path, settings: ServeSettings) -> anyhow::Result<i32> {
    if settings.app_secrets.is_empty() {
        tracing::warn!(
            "APP_SECRET is not set and --allow-unsigned was given: requests are NOT authenticated"
        );
    }
    if settings.verify_token.is_none() {
        tracing::warn!("WEBHOOK_VERIFY_TOKEN is not set: the webhook verification GET answers 403");
    }
    let sender = sender(settings.sender);
    match (&settings.api_key, &sender) {
        (None, _) => {
            tracing::info!("FLOWCTL_API_KEY is not set: /api/send-flow and /api/responses are off")
        }
        (Some(_), Err(reason)) => tracing::warn!(%reason, "/api/send-flow will answer 503"),
        (Some(_), Ok(_)) => {}
    }
    if settings.chatwoot_secret.is_none() {
        tracing::info!("CHATWOOT_WEBHOOK_SECRET is not set: /api/chatwoot-webhook is off");
    }
    let forward = match settings.forward {
        Some(f) => {
            let forwarder = Forwarder::new(f).map_err(UsageError)?;
            tracing::info!(handler = %forwarder.origin(), "forward mode: each Flow request goes to the handler");
            Some(forwarder)
        }
        None => None,
    };
    let store = Store::open(db).with_context(|| format!("opening {}", db.display()))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let listen = settings.listen;
    let state = Arc::new(AppState {
        store: SharedStore::new(store),
        key: Some(Arc::new(settings.key)),
        app_secrets: settings.app_secrets,
        flow: settings.flow.map(Arc::new),
        first_screen: settings.first_screen,
        limits: settings.limits,
        metrics: Metrics::default(),
        rsa: crate::server::rsa_pool::RsaPool::new(cores)
            .context("starting the RSA worker threads")?,
        verify_token: settings.verify_token,
        api_key: settings.api_key,
        sender,
        inbox: tokio::sync::Notify::new(),
        success_answers: settings.success_answers,
        forward,
        chatwoot_secret: settings.chatwoot_secret,
        chatwoot_signing_secret: settings.chatwoot_signing_secret,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    // One line on stdout so scripts and tests can find the port when --listen uses port 0.
    println!("flowctl serve listening on http://{addr}");
    tracing::info!(%addr, "listening");
    crate::server::serve(listener, state, shutdown_signal(), Duration::from_secs(10)).await?;
    tracing::info!("stopped");
    Ok(super::exit::OK)
}

/// Resolves on SIGINT or SIGTERM; at once when neither can be watched, rather than serve
/// with no way to stop gracefully.
pub async fn shutdown_signal() {
    if let Err(e) = crate::signals::first().await {
        tracing::error!(error = %e, "stopping: no way to receive SIGINT or SIGTERM");
    }
}
