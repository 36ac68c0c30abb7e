//! `flowctl sandbox`: runs the local Graph API stand-in.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{exit, UsageError};
use crate::cli::SandboxArgs;
use crate::sandbox::{FailRule, Probe, SandboxOptions};
use crate::store::Store;

/// Resolves the flags and runs the sandbox until SIGINT/SIGTERM.
pub async fn run(args: SandboxArgs) -> anyhow::Result<i32> {
    let failures = args
        .fail
        .iter()
        .map(|s| s.parse::<FailRule>().map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let probe = match &args.check_db {
        Some(db) => Some(token_probe(db)?),
        None => None,
    };
    let opts = SandboxOptions {
        listen: args.listen,
        latency: Duration::from_millis(args.latency_ms),
        failures,
        record: args.record.clone(),
        probe,
    };
    crate::sandbox::run(opts).await?;
    Ok(exit::OK)
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
fn token_probe(db: &Path) -> anyhow::Result<Probe> {
    let store = Store::open(db).map_err(|e| UsageError(format!("--check-db: {e}")))?;
    let store = Mutex::new(store);
    Ok(Arc::new(move |body: &Value| {
        let Some(token) = message_flow_token(body) else {
            return json!({ "token_stored": false, "reason": "no flow_token in the message" });
        };
        let guard = store.lock().unwrap_or_else(|p| p.into_inner());
        match guard.find_token(token) {
            Ok(Some(t)) => json!({ "token_stored": true, "phone": t.phone, "state": t.state.as_str() }),
            Ok(None) => json!({ "token_stored": false }),
            Err(e) => json!({ "token_stored": false, "error": e.to_string() }),
        }
    }))
}
