//! Settings of `sandbox`, the local Graph API stand-in, and of the recipients it plays.

use std::sync::Arc;
use std::time::Duration;

use super::{secret, ConfigError};
use crate::cli::{CompleteViaArg, SandboxArgs};
use crate::crypto::PublicKey;
use crate::flow_json::FlowJson;
use crate::sandbox::chatwoot::ChatwootTarget;
use crate::sandbox::user::{CompleteVia, Habits, UserOptions};
use crate::sandbox::{FailRule, SandboxOptions};

/// `flowctl sandbox`: the stand-in's options, and the database its probe checks.
#[derive(Debug)]
pub struct SandboxSettings {
    /// Everything but [`SandboxOptions::probe`], which needs the database open.
    pub options: SandboxOptions,
    /// `--check-db`: the database in which each message's flow_token must already be.
    pub check_db: Option<crate::store::DbTarget>,
}

impl SandboxArgs {
    /// The settings of `flowctl sandbox`: the failure rules, then the simulated people.
    pub fn resolve(&self) -> Result<SandboxSettings, ConfigError> {
        let failures = self
            .fail
            .iter()
            .map(|s| {
                s.parse::<FailRule>()
                    .map_err(|e| ConfigError::Unusable(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SandboxSettings {
            options: SandboxOptions {
                listen: self.listen,
                latency: Duration::from_millis(self.latency_ms),
                failures,
                record: self.record.clone(),
                probe: None,
                users: self.user_options()?,
                webhook: self.webhook.clone(),
                app_secret: secret("APP_SECRET").map(|s| s.expose().to_string()),
                status_delay: Duration::from_millis(self.user_delay_ms),
                chatwoot: self.chatwoot_webhook.clone().map(|url| ChatwootTarget {
                    url,
                    signing_secret: secret("CHATWOOT_SIGNING_SECRET")
                        .map(|s| s.expose().to_string()),
                }),
                flows: self.flows()?,
                tamper_media: self.tamper_media.clone(),
                duplicate_webhooks: self.duplicate_webhooks,
                throughput: self.throughput,
            },
            check_db: self.check_db.clone(),
        })
    }

    /// `--flow ID[=STATUS]`: the simulated account's Flows (PUBLISHED when no status).
    fn flows(&self) -> Result<Vec<(String, String)>, ConfigError> {
        const STATUSES: [&str; 5] = ["PUBLISHED", "DRAFT", "THROTTLED", "BLOCKED", "DEPRECATED"];
        self.flows
            .iter()
            .map(|f| {
                let (id, status) = f.split_once('=').unwrap_or((f, "PUBLISHED"));
                let (id, status) = (id.trim(), status.trim().to_ascii_uppercase());
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ConfigError::Unusable(format!(
                        "--flow {f:?}: the Flow id must be digits, as Meta's are"
                    )));
                }
                if !STATUSES.contains(&status.as_str()) {
                    return Err(ConfigError::Unusable(format!(
                        "--flow {f:?}: the status must be one of {}",
                        STATUSES.join(", ")
                    )));
                }
                Ok((id.to_string(), status))
            })
            .collect()
    }

    /// The simulated recipients' settings, when `--complete-via` is given.
    fn user_options(&self) -> Result<Option<UserOptions>, ConfigError> {
        let Some(via) = self.complete_via else {
            return Ok(None);
        };
        let complete_via = match via {
            CompleteViaArg::Endpoint => CompleteVia::Endpoint,
            CompleteViaArg::Webhook => CompleteVia::Webhook,
            CompleteViaArg::Both => CompleteVia::Both,
            CompleteViaArg::Chatwoot => CompleteVia::Chatwoot,
        };
        if complete_via == CompleteVia::Chatwoot && self.chatwoot_webhook.is_none() {
            return Err(ConfigError::Unusable(
                "--complete-via chatwoot needs --chatwoot-webhook URL".into(),
            ));
        }
        let needs_endpoint = matches!(complete_via, CompleteVia::Endpoint | CompleteVia::Both);
        if needs_endpoint && (self.endpoint.is_none() || self.public_key.is_none()) {
            return Err(ConfigError::Unusable(
                "--complete-via endpoint|both needs --endpoint URL and --public-key FILE".into(),
            ));
        }
        if complete_via == CompleteVia::Webhook && self.webhook.is_none() {
            return Err(ConfigError::Unusable(
                "--complete-via webhook needs --webhook URL".into(),
            ));
        }
        let public_key = match &self.public_key {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Unusable(format!(
                        "cannot read --public-key {}: {e}",
                        path.display()
                    ))
                })?;
                Some(PublicKey::from_pem(&pem).map_err(|e| {
                    ConfigError::Unusable(format!("--public-key {}: {e}", path.display()))
                })?)
            }
            None => None,
        };
        let flow = match &self.flow_json {
            Some(path) => Some(Arc::new(FlowJson::load(path).map_err(|e| {
                ConfigError::Unusable(format!("--flow-json {}: {e}", path.display()))
            })?)),
            None => None,
        };
        Ok(Some(UserOptions {
            complete_via,
            endpoint: self.endpoint.clone(),
            public_key,
            flow,
            delay: Duration::from_millis(self.user_delay_ms),
            habits: Habits {
                forget_required_pct: self.forget_required,
                retry_final_submit_pct: self.retry_final_submit,
                data_api_4: self.data_api == "4.0",
                stop_pct: self.stop_pct,
            },
        }))
    }
}
