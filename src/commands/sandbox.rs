//! `flowctl sandbox`: runs the local Graph API stand-in.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::UsageError;
use crate::config::SandboxSettings;
use crate::sandbox::{Probe, SandboxOptions};
use crate::store::Store;

/// Runs the sandbox with its resolved settings until SIGINT/SIGTERM.
pub async fn run(settings: SandboxSettings) -> anyhow::Result<i32> {
    let probe = match &settings.check_db {
        Some(db) => Some(token_probe(db)?),
        None => None,
    };
    let opts = SandboxOptions {
        probe,
        ..settings.options
    };
    let listen = opts.listen;
    // Same exit code as `serve` when the address cannot be bound (2: fix --listen).
    let handle = crate::sandbox::start(opts).await.map_err(|e| {
        // Only the bind's error (its context names the address); a --record file that
        // cannot be created stays a plain failure.
        if e.to_string() == format!("cannot listen on {listen}") {
            anyhow::Error::from(UsageError(format!("{e:#}")))
        } else {
            e
        }
    })?;
    // Handlers first, then the address (see `serve`).
    let mut signals = crate::signals::Signals::install()?;
    super::print_or_closed(&format!("sandbox listening on http://{}\n", handle.addr()))?;
    let received = signals.recv_which().await;
    handle.shutdown().await?;
    Ok(super::serve::stop_code(received))
}

/// The flow_token a message carries (interactive or template), if any.
pub fn message_flow_token(body: &Value) -> Option<&str> {
    body.pointer("/interactive/action/parameters/flow_token")
        .and_then(Value::as_str)
        .or_else(|| {
            body.pointer("/template/components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.pointer("/parameters/0/action/flow_token"))
                .find_map(Value::as_str)
        })
}

/// A probe that looks each message's flow_token up in the flowctl database at the moment the
/// request arrives, proving the token was stored before the request left.
fn token_probe(db: &crate::store::DbTarget) -> anyhow::Result<Probe> {
    let store = Store::open_read_only(db)
        .map_err(|e| UsageError(format!("--check-db: {e}")))?
        .ok_or_else(|| UsageError(format!("--check-db: {} does not exist", db)))?;
    let store = Mutex::new(store);
    Ok(Arc::new(move |body: &Value| {
        let Some(token) = message_flow_token(body) else {
            return json!({ "token_stored": false, "reason": "no flow_token in the message" });
        };
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        match guard.find_token(token) {
            Ok(Some(t)) => {
                json!({ "token_stored": true, "phone": t.phone.e164(), "state": t.state.as_str() })
            }
            Ok(None) => json!({ "token_stored": false }),
            Err(e) => json!({ "token_stored": false, "error": e.to_string() }),
        }
    }))
}
