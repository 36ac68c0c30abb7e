//! `flowctl sandbox`: runs the local Graph API stand-in.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{exit, UsageError};
use crate::cli::SandboxArgs;
use crate::crypto::PublicKey;
use crate::flow_json::FlowJson;
use crate::sandbox::user::{CompleteVia, UserOptions};
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
        users: user_options(&args)?,
    };
    crate::sandbox::run(opts).await?;
    Ok(exit::OK)
}

/// The simulated recipients' settings, when `--complete-via` is given.
fn user_options(args: &SandboxArgs) -> anyhow::Result<Option<UserOptions>> {
    let Some(via) = &args.complete_via else {
        return Ok(None);
    };
    let complete_via: CompleteVia = via.parse().map_err(UsageError)?;
    let needs_endpoint = matches!(complete_via, CompleteVia::Endpoint | CompleteVia::Both);
    if needs_endpoint && (args.endpoint.is_none() || args.public_key.is_none()) {
        return Err(UsageError(
            "--complete-via endpoint|both needs --endpoint URL and --public-key FILE".into(),
        )
        .into());
    }
    if !needs_endpoint && args.webhook.is_none() {
        return Err(UsageError("--complete-via webhook needs --webhook URL".into()).into());
    }
    let public_key = match &args.public_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                UsageError(format!("cannot read --public-key {}: {e}", path.display()))
            })?;
            Some(
                PublicKey::from_pem(&pem)
                    .map_err(|e| UsageError(format!("--public-key {}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let flow = match &args.flow_json {
        Some(path) => {
            Some(Arc::new(FlowJson::load(path).map_err(|e| {
                UsageError(format!("--flow-json {}: {e}", path.display()))
            })?))
        }
        None => None,
    };
    Ok(Some(UserOptions {
        complete_via,
        endpoint: args.endpoint.clone(),
        webhook: args.webhook.clone(),
        public_key,
        app_secret: crate::config::secret("APP_SECRET").map(|s| s.expose().to_string()),
        flow,
        delay: Duration::from_millis(args.user_delay_ms),
        phone_number_id: "106540352242922".into(),
    }))
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
    let store = Store::open_read_only(db)
        .map_err(|e| UsageError(format!("--check-db: {e}")))?
        .ok_or_else(|| UsageError(format!("--check-db: {} does not exist", db.display())))?;
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
