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
use crate::server::media::{MediaQueue, MediaSettings};
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
pub async fn run(db: &crate::store::DbTarget, settings: ServeSettings) -> anyhow::Result<i32> {
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
    let media = MediaQueue::new(MediaSettings {
        dir: settings
            .media_dir
            .clone()
            .unwrap_or_else(|| media_dir_beside(db)),
        max_bytes: settings.media_max_bytes,
    })
    .map_err(UsageError)?;
    tracing::info!(dir = %media.settings().dir.display(), "Flow media (photos, documents) are stored here");
    let store = Store::open(db).with_context(|| format!("opening {}", db))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let listen = settings.listen;
    let state = Arc::new(AppState {
        // A local database: the threads doing RSA (the lane's and the queue's, one per core
        // each) look the token up themselves (see `prefetch`).
        store: SharedStore::with_inline_reads(store, (!db.is_postgres()).then_some(2 * cores)),
        key: Some(Arc::new(settings.key)),
        app_secrets: settings.app_secrets,
        flow: settings.flow.map(Arc::new),
        first_screen: settings.first_screen,
        limits: settings.limits,
        metrics: Metrics::default(),
        rsa: crate::server::rsa_pool::RsaPool::with_lane(cores)
            .context("starting the RSA worker threads")?,
        verify_token: settings.verify_token,
        api_key: settings.api_key,
        sender,
        inbox: tokio::sync::Notify::new(),
        success_answers: settings.success_answers,
        forward,
        chatwoot_secret: settings.chatwoot_secret,
        chatwoot_signing_secret: settings.chatwoot_signing_secret,
        media,
        db_file: db.sqlite_path().map(crate::server::health::DbFile::new),
        optout: settings.optout,
        ui_questions: settings.ui_questions.map(Arc::new),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    // The handlers are in place before the address is told: a signal sent as soon as the
    // line is read must stop the server gracefully, not kill it.
    let signals = crate::signals::Signals::install();
    // One line on stdout so scripts and tests can find the port when --listen uses port 0.
    // A closed stdout (`serve | head -0`) is no reason to stop serving.
    super::print_or_closed(&format!("flowctl serve listening on http://{addr}\n"))?;
    tracing::info!(%addr, "listening");
    let received = Arc::new(std::sync::OnceLock::new());
    let seen = received.clone();
    let shutdown = async move {
        match signals {
            Ok(mut signals) => {
                if let Some(which) = signals.recv_which().await {
                    let _ = seen.set(which);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "stopping: no way to receive SIGINT or SIGTERM")
            }
        }
    };
    crate::server::serve(listener, state, shutdown, Duration::from_secs(10)).await?;
    tracing::info!("stopped");
    Ok(stop_code(received.get().copied()))
}

/// The exit code after a stop: 130 after Ctrl-C (SIGINT), as for every interrupted command;
/// 0 after SIGTERM, the way a supervisor ends a server normally.
pub fn stop_code(received: Option<crate::signals::Received>) -> i32 {
    match received {
        Some(crate::signals::Received::Interrupt) => super::exit::INTERRUPTED,
        _ => super::exit::OK,
    }
}

/// The default media folder: `media/` in the database's directory, or in the working
/// directory (for a PostgreSQL database, or a database file named without a directory).
fn media_dir_beside(db: &crate::store::DbTarget) -> std::path::PathBuf {
    match db
        .sqlite_path()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
    {
        Some(dir) => dir.join("media"),
        None => std::env::current_dir()
            .unwrap_or_else(|_| ".".into())
            .join("media"),
    }
}
