//! Settings resolution: flags > environment > `.env`, and the errors for what is missing.
//!
//! Flags and their variables are declared once, in `cli.rs`; clap reads the environment for
//! them. `.env` is loaded into the environment at start-up without overriding what is already
//! set, which gives the documented precedence. Secrets are read from the environment only.

use std::fmt;

use crate::cli::{GraphArgs, MessageArgs};
use crate::graph::{FlowAction, GraphSettings, MessageSettings, Template};
use crate::phone::DefaultCountry;

/// A configuration problem; always exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing {var} (set {var} or pass {flag})")]
    Missing {
        var: &'static str,
        flag: &'static str,
    },
    #[error(
        "missing {var} (set it in the environment or in .env; secrets are never accepted as flags)"
    )]
    MissingSecret { var: &'static str },
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A secret value (token, key, passphrase). Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret from the environment; empty counts as unset.
pub fn secret(var: &'static str) -> Option<Secret> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(Secret)
}

/// Reads a secret that must be set.
pub fn require_secret(var: &'static str) -> Result<Secret, ConfigError> {
    secret(var).ok_or(ConfigError::MissingSecret { var })
}

/// Loads `.env` from the working directory, if present, without overriding the environment.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::Invalid {
            name: ".env",
            reason: e.to_string(),
        }),
    }
}

fn required(
    value: &Option<String>,
    var: &'static str,
    flag: &'static str,
) -> Result<String, ConfigError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or(ConfigError::Missing { var, flag })
}

impl GraphArgs {
    /// The Graph API settings, with the access token from the environment.
    pub fn resolve(&self) -> Result<GraphSettings, ConfigError> {
        let phone_number_id = required(
            &self.phone_number_id,
            "PHONE_NUMBER_ID",
            "--phone-number-id",
        )?;
        let access_token = require_secret("WHATSAPP_ACCESS_TOKEN")?;
        let base_url = self.graph_url.trim().trim_end_matches('/').to_string();
        if url::Url::parse(&base_url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(ConfigError::Invalid {
                name: "GRAPH_API_URL",
                reason: format!("{base_url:?} is not an http(s) URL"),
            });
        }
        let timeout =
            crate::time::parse_ttl(&self.graph_timeout).map_err(|reason| ConfigError::Invalid {
                name: "GRAPH_API_TIMEOUT",
                reason,
            })?;
        Ok(GraphSettings {
            base_url,
            version: self.graph_version.clone(),
            phone_number_id,
            access_token,
            timeout,
        })
    }
}

/// Message settings plus the per-command values that go with them.
#[derive(Clone, Debug)]
pub struct SendSettings {
    pub message: MessageSettings,
    pub default_country: Option<DefaultCountry>,
    pub token_ttl: std::time::Duration,
}

impl MessageArgs {
    /// The message settings; `template` is `(name, language)` from `--template/--lang`.
    pub fn resolve(&self, template: Option<(String, String)>) -> Result<SendSettings, ConfigError> {
        let flow_id = required(&self.flow_id, "FLOW_ID", "--flow-id")?;
        let action = match self.flow_action.trim() {
            "data_exchange" => FlowAction::DataExchange,
            "navigate" => FlowAction::Navigate {
                screen: required(&self.screen, "FLOW_SCREEN", "--screen")?,
            },
            other => {
                return Err(ConfigError::Invalid {
                    name: "FLOW_ACTION",
                    reason: format!("{other:?}: expected data_exchange or navigate"),
                })
            }
        };
        let cta = self.cta.trim().to_string();
        if cta.is_empty() || cta.chars().count() > 30 {
            return Err(ConfigError::Invalid {
                name: "FLOW_CTA",
                reason: format!("{cta:?}: the button text must be 1 to 30 characters"),
            });
        }
        if self.body.trim().is_empty() || self.body.chars().count() > 1024 {
            return Err(ConfigError::Invalid {
                name: "FLOW_BODY",
                reason: "the message text must be 1 to 1024 characters".into(),
            });
        }
        let default_country = match self
            .default_country
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(c) => Some(
                c.parse::<DefaultCountry>()
                    .map_err(|e| ConfigError::Invalid {
                        name: "DEFAULT_COUNTRY",
                        reason: e.to_string(),
                    })?,
            ),
        };
        let token_ttl =
            crate::time::parse_ttl(&self.token_ttl).map_err(|reason| ConfigError::Invalid {
                name: "FLOW_TOKEN_TTL",
                reason,
            })?;
        let template = template.map(|(name, language)| Template {
            name,
            language,
            button_index: self.template_button_index,
            name_param: self.template_name_param,
        });
        Ok(SendSettings {
            message: MessageSettings {
                flow_id,
                action,
                cta,
                body: self.body.clone(),
                template,
            },
            default_country,
            token_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let s = Secret::new("EAAG-very-secret");
        assert!(!format!("{s:?} {s}").contains("very-secret"));
    }

    #[test]
    fn missing_setting_names_variable_and_flag() {
        let e = required(&None, "FLOW_ID", "--flow-id")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing FLOW_ID (set FLOW_ID or pass --flow-id)");
    }
}
