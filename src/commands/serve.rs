//! `flowctl serve`: resolves the server's settings and runs it until SIGINT/SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::UsageError;
use crate::cli::ServeArgs;
use crate::config::{self, ConfigError, Secret};
use crate::crypto::PrivateKey;
use crate::flow_json::FlowJson;
use crate::server::{AppState, Limits, Metrics, Sender};
use crate::store::{SharedStore, Store};
use crate::{graph::GraphClient, outbound::RetryPolicy};

/// Loads the data endpoint's private key from `--private-key-file`/`PRIVATE_KEY_FILE` or the
/// `PRIVATE_KEY` text, with `PRIVATE_KEY_PASSPHRASE` when it is encrypted.
pub fn load_private_key(file: Option<&Path>) -> anyhow::Result<PrivateKey> {
    let passphrase = config::secret("PRIVATE_KEY_PASSPHRASE");
    let (pem, origin) = match (file, config::secret("PRIVATE_KEY")) {
        (Some(path), _) => (
            Secret::new(std::fs::read_to_string(path).map_err(|e| {
                UsageError(format!(
                    "cannot read private key file {}: {e}",
                    path.display()
                ))
            })?),
            path.display().to_string(),
        ),
        (None, Some(pem)) => (pem, "PRIVATE_KEY".to_string()),
        (None, None) => {
            return Err(ConfigError::Missing {
                var: "PRIVATE_KEY_FILE",
                flag: "--private-key-file (or set PRIVATE_KEY)",
            }
            .into())
        }
    };
    // PEM text pasted into an env var often has literal "\n".
    let text = pem.expose().replace("\\n", "\n");
    PrivateKey::from_pem(&text, passphrase.as_ref().map(Secret::expose))
        .map_err(|e| UsageError(format!("private key {origin}: {e}")).into())
}

/// The app secrets: `APP_SECRET`, plus `APP_SECRET_PREVIOUS` during a rotation.
pub fn app_secrets(allow_unsigned: bool) -> Result<Vec<Secret>, ConfigError> {
    let secrets: Vec<Secret> = ["APP_SECRET", "APP_SECRET_PREVIOUS"]
        .into_iter()
        .filter_map(config::secret)
        .collect();
    if secrets.is_empty() && !allow_unsigned {
        return Err(ConfigError::MissingSecret { var: "APP_SECRET" });
    }
    Ok(secrets)
}

/// The Graph settings for `/api/send-flow`. They are optional for `serve`: when they are
/// missing or invalid the server still starts and the route answers 503 with this reason.
pub fn resolve_sender(args: &ServeArgs) -> Result<Arc<Sender>, String> {
    let graph = args.graph.resolve().map_err(|e| e.to_string())?;
    let settings = args.message.resolve(None).map_err(|e| e.to_string())?;
    let graph = GraphClient::new(graph).map_err(|e| e.to_string())?;
    Ok(Arc::new(Sender {
        graph,
        settings,
        policy: RetryPolicy::default(),
    }))
}

/// Resolves settings, binds, serves until a signal, drains.
pub async fn run(db: &Path, args: ServeArgs) -> anyhow::Result<i32> {
    let app_secrets = app_secrets(args.allow_unsigned)?;
    if app_secrets.is_empty() {
        tracing::warn!(
            "APP_SECRET is not set and --allow-unsigned was given: requests are NOT authenticated"
        );
    }
    let key = load_private_key(args.private_key_file.as_deref())?;
    let flow = match &args.flow_json {
        Some(path) => {
            Some(Arc::new(FlowJson::load(path).map_err(|e| {
                UsageError(format!("--flow-json {}: {e}", path.display()))
            })?))
        }
        None => None,
    };
    let verify_token = config::secret("WEBHOOK_VERIFY_TOKEN");
    if verify_token.is_none() {
        tracing::warn!("WEBHOOK_VERIFY_TOKEN is not set: the webhook verification GET answers 403");
    }
    let api_key = config::secret("FLOWCTL_API_KEY");
    let sender = resolve_sender(&args);
    match (&api_key, &sender) {
        (None, _) => {
            tracing::info!("FLOWCTL_API_KEY is not set: /api/send-flow and /api/responses are off")
        }
        (Some(_), Err(reason)) => tracing::warn!(%reason, "/api/send-flow will answer 503"),
        (Some(_), Ok(_)) => {}
    }
    // An unusable limit is a configuration error (exit 2), not a silent fallback.
    let limits = Limits {
        max_body: args.max_body,
        ..Limits::from_env().map_err(UsageError)?
    };
    let store = Store::open(db).with_context(|| format!("opening {}", db.display()))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let state = Arc::new(AppState {
        store: SharedStore::new(store),
        key: Some(Arc::new(key)),
        app_secrets,
        flow,
        first_screen: args.message.screen.clone(),
        limits,
        metrics: Metrics::default(),
        rsa_slots: tokio::sync::Semaphore::new(cores),
        verify_token,
        api_key,
        sender,
        inbox: tokio::sync::Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    // One line on stdout so scripts and tests can find the port when --listen uses port 0.
    println!("flowctl serve listening on http://{addr}");
    tracing::info!(%addr, "listening");
    crate::server::serve(listener, state, shutdown_signal(), Duration::from_secs(10)).await?;
    tracing::info!("stopped");
    Ok(super::exit::OK)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
