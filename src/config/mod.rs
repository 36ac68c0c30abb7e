//! Settings resolution: flags > environment > `.env`, resolved once per command into typed
//! settings, and the errors for what is missing or unusable.
//!
//! This is the only reader of the environment. Flags and their variables are declared once,
//! in `cli.rs`, where clap reads the environment for them and checks what it can
//! (enumerations, durations); `.env` is loaded into the environment at start-up without
//! overriding what is already set, which gives the documented precedence. Secrets and a few
//! tuning values are read from the environment only, here. `main` calls a command's resolver
//! once and hands the command its settings:
//!
//! - `message`: what every sending command shares ([`GraphSettings`](crate::graph::GraphSettings),
//!   [`crate::outbound::SendSettings`]);
//! - `send`: [`SendCommandSettings`] and [`BulkSettings`];
//! - `serve`: [`ServeSettings`] (with the server's [`Limits`](crate::server::Limits)) and
//!   [`KeysSettings`], which share the private key;
//! - `sandbox`: [`SandboxSettings`].

mod account;
mod doctor;
mod message;
mod sandbox;
mod send;
mod serve;

pub use account::AccountSettings;
pub use doctor::DoctorSettings;
pub use sandbox::SandboxSettings;
pub use send::{BulkSettings, CsvInput, RetryFailed, SendCommandSettings};
pub use serve::{KeysSettings, ServeSettings};

use crate::secret::Secret;

/// A configuration problem; always exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is not set.
    #[error("missing {var} (set {var} or pass {flag})")]
    Missing {
        var: &'static str,
        flag: &'static str,
    },
    /// A required secret is not in the environment.
    #[error(
        "missing {var} (set it in the environment or in .env; secrets are never accepted as flags)"
    )]
    MissingSecret { var: &'static str },
    /// A setting has a value that cannot be used.
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// A value or a file named by a flag cannot be used; the message names it.
    #[error("{0}")]
    Unusable(String),
}

/// Reads a secret from the environment; empty counts as unset. The value is registered so
/// that [`crate::secret::redact`] blanks it out of any text about to be printed or logged.
fn secret(var: &'static str) -> Option<Secret> {
    let value = env_value(var)?;
    crate::secret::remember(&value);
    Some(Secret::new(value))
}

/// Reads a secret that must be set.
fn require_secret(var: &'static str) -> Result<Secret, ConfigError> {
    secret(var).ok_or(ConfigError::MissingSecret { var })
}

/// The value `flowctl init` writes for `var` when the environment (or the settings file
/// loaded into it) already has one; empty counts as unset.
pub fn init_value(var: &str) -> Option<String> {
    env_value(var)
}

/// Reads a variable that has no flag; empty counts as unset.
fn env_value(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// The `--env-file PATH` (or `--env-file=PATH`) of a command line, read ahead of clap: the
/// file must be loaded before clap reads the environment. Stops at `--`.
pub fn env_file_arg<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Option<std::path::PathBuf> {
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--env-file" {
            return args.next().map(Into::into);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--env-file=")) {
            return Some(path.into());
        }
    }
    None
}

/// Loads the settings file without overriding the environment: `explicit` (`--env-file`),
/// which must exist, else `.env` in the working directory, if present.
///
/// Only the working directory: a `.env` in a parent directory (say `/tmp/.env`, which any
/// local user can create) is not read, since it could point `GRAPH_API_URL` elsewhere and
/// receive the access token. A line that cannot be parsed is named by its number, never
/// quoted: it may hold a secret.
pub fn load_dotenv(explicit: Option<&std::path::Path>) -> Result<(), ConfigError> {
    let path = explicit.unwrap_or(std::path::Path::new(".env"));
    if explicit.is_some() && !path.is_file() {
        return Err(ConfigError::Unusable(format!(
            "--env-file {}: no such file (create one with `flowctl init`)",
            path.display()
        )));
    }
    if !path.is_file() {
        return Ok(());
    }
    let name = if explicit.is_some() {
        "--env-file"
    } else {
        ".env"
    };
    // An explicit file is named in the error: the user may have several.
    let file = explicit
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default();
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::LineParse(line, _)) => Err(ConfigError::Invalid {
            name,
            reason: format!(
                "{file}cannot parse {} (the line is not shown: it may hold a secret)",
                line_number(path, &line)
                    .map(|n| format!("line {n}"))
                    .unwrap_or_else(|| "a line".into())
            ),
        }),
        Err(dotenvy::Error::EnvVar(_)) => Err(ConfigError::Invalid {
            name,
            reason: format!("{file}a value refers to a variable that is not valid unicode"),
        }),
        Err(e) => Err(ConfigError::Invalid {
            name,
            reason: format!("{file}{e}"),
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

/// A setting that must be set: its flag or variable, trimmed, not empty.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_is_found_anywhere_before_a_double_dash() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let found = |a: &[&str]| env_file_arg(args(a));
        assert_eq!(
            found(&["flowctl", "--env-file", "p.env", "stats"]),
            Some("p.env".into())
        );
        assert_eq!(
            found(&["flowctl", "send", "+212600000000", "--env-file=q.env"]),
            Some("q.env".into())
        );
        assert_eq!(found(&["flowctl", "stats"]), None);
        assert_eq!(found(&["flowctl", "send", "--", "--env-file", "x"]), None);
        assert_eq!(found(&["flowctl", "--env-file"]), None, "clap reports it");
    }

    #[test]
    fn missing_setting_names_variable_and_flag() {
        let e = required(&None, "FLOW_ID", "--flow-id")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing FLOW_ID (set FLOW_ID or pass --flow-id)");
    }
}
