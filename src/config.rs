//! Settings resolution: flags > environment > `.env`, and the errors for what is missing.
//!
//! Flags and their variables are declared once, in `cli.rs`; clap reads the environment for
//! them. `.env` is loaded into the environment at start-up without overriding what is already
//! set, which gives the documented precedence. Secrets are read from the environment only.

use std::borrow::Cow;
use std::fmt;
use std::sync::{PoisonError, RwLock};

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
///
/// Deliberately not `PartialEq`: `==` on strings stops at the first differing byte, which
/// tells a remote caller how much of a guess was right. Compare what a client sent with a
/// secret in constant time (`subtle::ConstantTimeEq`, over SHA-256 digests of both sides so
/// that the length does not show either).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when `given` (what a client sent) is this secret. Constant time, and the
    /// secret's length does not show either: both sides are hashed with SHA-256, then the
    /// digests are compared with `subtle`.
    pub fn matches(&self, given: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let a = Sha256::digest(given);
        let b = Sha256::digest(self.0.as_bytes());
        a.ct_eq(&b).into()
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

/// Reads a secret from the environment; empty counts as unset. The value is remembered so
/// that [`redact`] can blank it out of any text that is about to be printed or logged.
pub fn secret(var: &'static str) -> Option<Secret> {
    let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
    remember(&value);
    Some(Secret(value))
}

/// Values of the secrets read so far, longest first (so that a secret containing another one
/// is replaced whole).
static SEEN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shortest secret value [`redact`] replaces: shorter ones would blank out ordinary words, and
/// are too weak to be worth protecting this way.
pub const REDACT_MIN_LEN: usize = 4;

/// What [`redact`] puts in place of a secret.
pub const REDACTED: &str = "***";

fn remember(value: &str) {
    let value = value.trim();
    if value.chars().count() < REDACT_MIN_LEN {
        return;
    }
    let mut seen = SEEN.write().unwrap_or_else(PoisonError::into_inner);
    if !seen.iter().any(|s| s == value) {
        seen.push(value.to_string());
        seen.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every secret read so far (through [`secret`]) replaced by `***`.
///
/// A last line of defence for text that comes from elsewhere and is about to be printed,
/// stored or logged: a Graph API error message, an error chain, a log line. A server or proxy
/// that echoes the `Authorization` header back must not make flowctl print the token.
pub fn redact(text: &str) -> Cow<'_, str> {
    let seen = SEEN.read().unwrap_or_else(PoisonError::into_inner);
    if !seen.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in seen.iter() {
        out = out.replace(s.as_str(), REDACTED);
    }
    Cow::Owned(out)
}

/// Reads a secret that must be set.
pub fn require_secret(var: &'static str) -> Result<Secret, ConfigError> {
    secret(var).ok_or(ConfigError::MissingSecret { var })
}

/// Loads `.env` from the working directory, if present, without overriding the environment.
///
/// Only the working directory: a `.env` in a parent directory (say `/tmp/.env`, which any
/// local user can create) is not read, since it could point `GRAPH_API_URL` elsewhere and
/// receive the access token. A line that cannot be parsed is named by its number, never
/// quoted: it may hold a secret.
pub fn load_dotenv() -> Result<(), ConfigError> {
    let path = std::path::Path::new(".env");
    if !path.is_file() {
        return Ok(());
    }
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::LineParse(line, _)) => Err(ConfigError::Invalid {
            name: ".env",
            reason: format!(
                "cannot parse {} (the line is not shown: it may hold a secret)",
                line_number(path, &line)
                    .map(|n| format!("line {n}"))
                    .unwrap_or_else(|| "a line".into())
            ),
        }),
        Err(dotenvy::Error::EnvVar(_)) => Err(ConfigError::Invalid {
            name: ".env",
            reason: "a value refers to a variable that is not valid unicode".into(),
        }),
        Err(e) => Err(ConfigError::Invalid {
            name: ".env",
            reason: e.to_string(),
        }),
    }
}

/// The 1-based number of the line where `text` (the unparsable rest of a line, as the parser
/// reports it) starts in the file.
fn line_number(path: &std::path::Path, text: &str) -> Option<usize> {
    let content = std::fs::read_to_string(path).ok()?;
    let first = text.lines().next().unwrap_or(text).trim();
    let at = content
        .lines()
        .position(|l| !first.is_empty() && l.contains(first))?;
    Some(at + 1)
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
    fn matches_accepts_the_secret_only() {
        let s = Secret::new("verify-token-77a1");
        assert!(s.matches(b"verify-token-77a1"));
        for near in [
            &b"verify-token-77a"[..],
            b"verify-token-77a1x",
            b"verify-token-77a2",
            b"Verify-token-77a1",
            b"",
            b"verify-token-77a1\0",
        ] {
            assert!(!s.matches(near), "{:?}", String::from_utf8_lossy(near));
        }
    }

    #[test]
    fn redact_blanks_out_every_secret_read_and_nothing_else() {
        // What `secret` does with each value it reads.
        remember("tok-abc-123");
        remember(" tok-abc-123-longer\n");
        remember("abc");
        assert_eq!(
            redact("Bearer tok-abc-123 then tok-abc-123-longer, abc"),
            "Bearer *** then ***, abc"
        );
        assert!(matches!(redact("nothing secret"), Cow::Borrowed(_)));
    }

    #[test]
    fn missing_setting_names_variable_and_flag() {
        let e = required(&None, "FLOW_ID", "--flow-id")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing FLOW_ID (set FLOW_ID or pass --flow-id)");
    }
}
