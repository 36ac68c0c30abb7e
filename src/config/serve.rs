//! Settings of `serve` (the server's secrets, key, Flow JSON, limits and what
//! `/api/send-flow` sends with) and of `keys`, which shares the private key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{env_value, secret, ConfigError};
use crate::cli::{FlowActionKind, KeysArgs, ServeArgs};
use crate::crypto::PrivateKey;
use crate::flow_json::{DataSources, FlowJson};
use crate::graph::GraphSettings;
use crate::outbound::SendSettings;
use crate::secret::Secret;
use crate::server::forward::ForwardSettings;
use crate::server::Limits;

// Environment variables (no flags) overriding `Limits::BUILTIN`: durations such as `10s` or
// `500ms` for the timeouts, whole numbers of connections and bytes for the others.
const HEADER_TIMEOUT_VAR: &str = "FLOWCTL_HEADER_TIMEOUT";
const BODY_TIMEOUT_VAR: &str = "FLOWCTL_BODY_TIMEOUT";
const WRITE_TIMEOUT_VAR: &str = "FLOWCTL_WRITE_TIMEOUT";
const MAX_CONNECTIONS_VAR: &str = "FLOWCTL_MAX_CONNECTIONS";
const BODY_MEMORY_VAR: &str = "FLOWCTL_BODY_MEMORY";

/// `flowctl serve`: everything the server is started with.
#[derive(Debug)]
pub struct ServeSettings {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `APP_SECRET`, plus `APP_SECRET_PREVIOUS` during a rotation. Empty only with
    /// `--allow-unsigned`.
    pub app_secrets: Vec<Secret>,
    /// The data endpoint's private key.
    pub key: PrivateKey,
    /// `--flow-json`, parsed: its routing model drives the next screen.
    pub flow: Option<FlowJson>,
    /// `FLOW_SCREEN`: the first screen when there is no Flow JSON.
    pub first_screen: Option<String>,
    /// `WEBHOOK_VERIFY_TOKEN` (`None`: the verification GET answers 403).
    pub verify_token: Option<Secret>,
    /// `FLOWCTL_API_KEY` (`None`: the CRM routes are off).
    pub api_key: Option<Secret>,
    /// What `/api/send-flow` sends with. Optional for `serve`: when the settings are missing
    /// or invalid the server still starts and the route answers 503 with this reason.
    pub sender: Result<(GraphSettings, SendSettings), String>,
    /// The server's limits: `--max-body`, and the environment's overrides of the others
    /// (`FLOWCTL_HEADER_TIMEOUT`, `FLOWCTL_BODY_TIMEOUT`, `FLOWCTL_WRITE_TIMEOUT`,
    /// `FLOWCTL_MAX_CONNECTIONS`, `FLOWCTL_BODY_MEMORY`).
    pub limits: Limits,
    /// `--success-answers`: the answers ride along in the `SUCCESS` params.
    pub success_answers: bool,
    /// `--forward`/`FLOW_FORWARD_URL`, with `FLOW_FORWARD_SECRET` and `--forward-timeout`.
    pub forward: Option<ForwardSettings>,
    /// `CHATWOOT_WEBHOOK_SECRET`: the secret path of `/api/chatwoot-webhook/<secret>`
    /// (`None`: the route is off).
    pub chatwoot_secret: Option<Secret>,
    /// `CHATWOOT_SIGNING_SECRET`: the webhook secret Chatwoot signs deliveries with; when
    /// set, `X-Chatwoot-Signature` is required.
    pub chatwoot_signing_secret: Option<Secret>,
    /// `--media-dir`/`FLOWCTL_MEDIA_DIR` (`None`: `media/` beside the database).
    pub media_dir: Option<std::path::PathBuf>,
    /// `--media-max-bytes`/`FLOWCTL_MEDIA_MAX_BYTES`.
    pub media_max_bytes: u64,
    /// `--stop-keywords`/`--start-keywords` (each list replaces its default when given).
    pub optout: crate::optout::Keywords,
    /// The questions of `--flow-json` (labels, option titles) for the `/ui` pages.
    pub ui_questions: Option<crate::report::Questions>,
}

impl ServeArgs {
    /// The settings of `flowctl serve`. What `/api/send-flow` needs is not required (see
    /// [`ServeSettings::sender`]); an unusable limit is an error, not a silent fallback.
    pub fn resolve(&self) -> Result<ServeSettings, ConfigError> {
        let app_secrets = app_secrets(self.allow_unsigned)?;
        let key = private_key(self.private_key_file.as_deref())?;
        let flow = self.flow()?;
        let verify_token = secret("WEBHOOK_VERIFY_TOKEN");
        let api_key = secret("FLOWCTL_API_KEY");
        let sender = self
            .graph
            .resolve()
            .and_then(|graph| Ok((graph, self.message.resolve(None)?)))
            .map_err(|e| e.to_string());
        let limits = Limits {
            max_body: self.max_body,
            ..limits_with_overrides(Limits::BUILTIN, env_value).map_err(ConfigError::Unusable)?
        };
        let forward = self.forward_settings()?;
        let first_screen = self.message.screen.clone();
        if let Some(flow) = flow.as_ref().filter(|_| forward.is_none()) {
            flow.check_builtin_routing().map_err(|e| {
                ConfigError::Unusable(format!(
                    "--flow-json {}: {e}",
                    self.flow_json.as_deref().unwrap_or(Path::new("")).display()
                ))
            })?;
        }
        if self.message.flow_action == FlowActionKind::DataExchange
            && flow.is_none()
            && forward.is_none()
            && first_screen.is_none()
        {
            return Err(ConfigError::Unusable(NOTHING_TO_ANSWER.into()));
        }
        Ok(ServeSettings {
            listen: self.listen,
            app_secrets,
            key,
            flow,
            first_screen,
            verify_token,
            api_key,
            sender,
            limits,
            success_answers: self.success_answers,
            forward,
            chatwoot_secret: chatwoot_secret()?,
            chatwoot_signing_secret: secret("CHATWOOT_SIGNING_SECRET"),
            media_dir: self.media_dir.clone(),
            media_max_bytes: self.media_max_bytes,
            optout: self.optout_keywords(),
            ui_questions: match &self.flow_json {
                Some(path) => Some(crate::report::Questions::load(path).map_err(|e| {
                    ConfigError::Unusable(format!("--flow-json {}: {e}", path.display()))
                })?),
                None => None,
            },
        })
    }

    /// The opt-out keywords: each list given replaces its default.
    fn optout_keywords(&self) -> crate::optout::Keywords {
        use crate::optout::{Keywords, DEFAULT_START, DEFAULT_STOP};
        let given = |list: &[String], default: &[&str]| -> Vec<String> {
            let list: Vec<String> = list
                .iter()
                .filter(|k| !k.trim().is_empty())
                .cloned()
                .collect();
            if list.is_empty() {
                default.iter().map(|k| k.to_string()).collect()
            } else {
                list
            }
        };
        Keywords::new(
            &given(&self.stop_keywords, DEFAULT_STOP),
            &given(&self.start_keywords, DEFAULT_START),
        )
    }

    /// `--flow-json`, with the lists of `--flow-data` when given.
    fn flow(&self) -> Result<Option<FlowJson>, ConfigError> {
        let Some(path) = &self.flow_json else {
            if let Some(data) = &self.flow_data {
                return Err(ConfigError::Unusable(format!(
                    "--flow-data {} needs --flow-json (the screens whose data it fills)",
                    data.display()
                )));
            }
            return Ok(None);
        };
        let flow = FlowJson::load(path)
            .map_err(|e| ConfigError::Unusable(format!("--flow-json {}: {e}", path.display())))?;
        let Some(data) = &self.flow_data else {
            return Ok(Some(flow));
        };
        let sources = DataSources::load(data)
            .map_err(|e| ConfigError::Unusable(format!("--flow-data {}: {e}", data.display())))?;
        Ok(Some(flow.with_data_sources(sources)))
    }

    /// Forward mode, when `--forward` is set: a usable URL, the secret, a timeout inside
    /// Meta's budget.
    fn forward_settings(&self) -> Result<Option<ForwardSettings>, ConfigError> {
        let Some(raw) = self.forward.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let url = forward_url(raw.trim()).map_err(|reason| ConfigError::Invalid {
            name: "--forward (FLOW_FORWARD_URL)",
            reason,
        })?;
        if self.forward_timeout.is_zero() || self.forward_timeout > MAX_FORWARD_TIMEOUT {
            return Err(ConfigError::Invalid {
                name: "--forward-timeout (FLOW_FORWARD_TIMEOUT)",
                reason: format!(
                    "{:?}: expected from 1ms to 9s (Meta gives up on the endpoint after 10s)",
                    self.forward_timeout
                ),
            });
        }
        let secret = secret(FORWARD_SECRET_VAR).ok_or(ConfigError::MissingSecret {
            var: FORWARD_SECRET_VAR,
        })?;
        Ok(Some(ForwardSettings {
            url,
            secret,
            timeout: self.forward_timeout,
        }))
    }
}

/// Why `serve` refuses to start when a Flow opened with `data_exchange` would get a 400 for
/// every `INIT` (a rising error rate is what makes Meta throttle, then block, a Flow).
const NOTHING_TO_ANSWER: &str = "the Flow opens with an INIT to this server (--flow-action \
data_exchange) but nothing says what to answer; give one of: --flow-json FILE (built-in \
routing over the Flow's routing_model), --forward URL (your own handler decides), or \
FLOW_SCREEN=SCREEN_ID (a one-screen Flow: INIT shows it, its submit completes)";

/// `CHATWOOT_WEBHOOK_SECRET`, which becomes a URL path segment: long enough not to be
/// guessed, and made of characters that need no escaping in a path.
fn chatwoot_secret() -> Result<Option<Secret>, ConfigError> {
    let Some(s) = secret("CHATWOOT_WEBHOOK_SECRET") else {
        return Ok(None);
    };
    check_chatwoot_secret(s.expose()).map_err(|reason| ConfigError::Invalid {
        name: "CHATWOOT_WEBHOOK_SECRET",
        reason,
    })?;
    Ok(Some(s))
}

/// Why a value cannot be `CHATWOOT_WEBHOOK_SECRET` (the error never quotes it).
fn check_chatwoot_secret(s: &str) -> Result<(), String> {
    if s.len() < 16 {
        return Err(format!(
            "{} characters: use at least 16 (e.g. `openssl rand -hex 16`)",
            s.len()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err("use only letters, digits, '-', '_', '.' and '~' (it is part of a URL)".into());
    }
    Ok(())
}

/// The key of the forwarded body's HMAC; required with `--forward`.
const FORWARD_SECRET_VAR: &str = "FLOW_FORWARD_SECRET";

/// Meta waits 10 s for the endpoint; the handler gets at most 9 of them.
const MAX_FORWARD_TIMEOUT: Duration = Duration::from_secs(9);

/// A forward URL the answers may travel to: HTTPS anywhere, plain HTTP only on the loopback
/// (the request carries phone numbers and answers). Errors never quote the URL, which may
/// carry a credential.
fn forward_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!(
            "plain http to {} (http only on a loopback address: 127.0.0.1, ::1, localhost; use https)",
            url.host_str().unwrap_or("no host")
        )),
        scheme => Err(format!(
            "scheme {scheme:?} (expected https://, or http:// on a loopback address)"
        )),
    }
}

/// `flowctl keys upload|check`: the local key and the Graph API.
#[derive(Debug)]
pub struct KeysSettings {
    /// The data endpoint's private key.
    pub key: PrivateKey,
    /// Where the key is registered.
    pub graph: GraphSettings,
}

impl KeysArgs {
    /// The settings of `flowctl keys`: the key first, then the Graph API.
    pub fn resolve(&self) -> Result<KeysSettings, ConfigError> {
        let key = private_key(self.private_key_file.as_deref())?;
        Ok(KeysSettings {
            key,
            graph: self.graph.resolve()?,
        })
    }
}

/// The app secrets: `APP_SECRET`, plus `APP_SECRET_PREVIOUS` during a rotation.
pub(super) fn app_secrets(allow_unsigned: bool) -> Result<Vec<Secret>, ConfigError> {
    let secrets: Vec<Secret> = ["APP_SECRET", "APP_SECRET_PREVIOUS"]
        .into_iter()
        .filter_map(secret)
        .collect();
    if secrets.is_empty() && !allow_unsigned {
        return Err(ConfigError::MissingSecret { var: "APP_SECRET" });
    }
    Ok(secrets)
}

/// Loads the data endpoint's private key from `--private-key-file`/`PRIVATE_KEY_FILE` or the
/// `PRIVATE_KEY` text, with `PRIVATE_KEY_PASSPHRASE` when it is encrypted.
pub(super) fn private_key(file: Option<&Path>) -> Result<PrivateKey, ConfigError> {
    let passphrase = secret("PRIVATE_KEY_PASSPHRASE");
    let (pem, origin) = match (file, secret("PRIVATE_KEY")) {
        (Some(path), _) => (
            Secret::new(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Unusable(format!(
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
            })
        }
    };
    // PEM text pasted into an env var often has literal "\n".
    let text = pem.expose().replace("\\n", "\n");
    PrivateKey::from_pem(&text, passphrase.as_ref().map(Secret::expose))
        .map_err(|e| ConfigError::Unusable(format!("private key {origin}: {e}")))
}

/// `base` with the overrides found by `lookup` (the environment in `serve`); `Err` names the
/// first unusable value.
fn limits_with_overrides(
    mut base: Limits,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Limits, String> {
    let duration = |var: &str, current: Duration| -> Result<Duration, String> {
        match lookup(var) {
            None => Ok(current),
            Some(v) => match humantime::parse_duration(v.trim()) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(3600) => Ok(d),
                _ => Err(format!(
                    "{var}={v:?}: expected a duration from 1ms to 1h, such as 10s or 500ms"
                )),
            },
        }
    };
    base.header_timeout = duration(HEADER_TIMEOUT_VAR, base.header_timeout)?;
    base.body_timeout = duration(BODY_TIMEOUT_VAR, base.body_timeout)?;
    base.write_timeout = duration(WRITE_TIMEOUT_VAR, base.write_timeout)?;
    let number =
        |var: &str, current: usize, range: std::ops::RangeInclusive<usize>| match lookup(var) {
            None => Ok(current),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(format!(
                    "{var}={v:?}: expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                )),
            },
        };
    base.max_connections = number(MAX_CONNECTIONS_VAR, base.max_connections, 1..=1 << 20)?;
    base.body_memory = number(BODY_MEMORY_VAR, base.body_memory, 1 << 20..=1 << 40)?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn forward_urls_are_https_or_loopback_http() {
        for ok in [
            "https://hooks.example.com/flow",
            "http://127.0.0.1:9000/flow",
            "http://localhost:9000",
            "http://[::1]:9000/",
        ] {
            assert!(forward_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/flow",
            "http://10.0.0.5/flow",
            "ftp://127.0.0.1/",
            "127.0.0.1:9000",
        ] {
            assert!(forward_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_take_the_environments_overrides() {
        assert_eq!(
            limits_with_overrides(Limits::BUILTIN, vars(&[])),
            Ok(Limits::BUILTIN)
        );
        let l = limits_with_overrides(
            Limits::BUILTIN,
            vars(&[
                (HEADER_TIMEOUT_VAR, "750ms"),
                (BODY_TIMEOUT_VAR, "2s"),
                (WRITE_TIMEOUT_VAR, "3s"),
                (MAX_CONNECTIONS_VAR, " 8 "),
                (BODY_MEMORY_VAR, "16777216"),
            ]),
        )
        .unwrap();
        assert_eq!(l.header_timeout, Duration::from_millis(750));
        assert_eq!(l.body_timeout, Duration::from_secs(2));
        assert_eq!(l.write_timeout, Duration::from_secs(3));
        assert_eq!(l.max_connections, 8);
        assert_eq!(l.body_memory, 16 << 20);
        assert_eq!(l.max_body, Limits::BUILTIN.max_body);
    }

    #[test]
    fn a_chatwoot_secret_is_long_and_fits_in_a_url() {
        assert!(check_chatwoot_secret("0123456789abcdef-_.~XYZ").is_ok());
        assert!(check_chatwoot_secret("short").is_err());
        assert!(check_chatwoot_secret("0123456789abcdef/").is_err());
        assert!(check_chatwoot_secret("0123456789 abcdef").is_err());
    }

    #[test]
    fn unusable_limits_are_refused_by_name() {
        for (var, value) in [
            (HEADER_TIMEOUT_VAR, "0s"),
            (HEADER_TIMEOUT_VAR, "soon"),
            (BODY_TIMEOUT_VAR, "2h"),
            (MAX_CONNECTIONS_VAR, "0"),
            (MAX_CONNECTIONS_VAR, "-3"),
            (BODY_MEMORY_VAR, "1k"),
            (BODY_MEMORY_VAR, "1024"),
        ] {
            let err = limits_with_overrides(Limits::BUILTIN, vars(&[(var, value)])).unwrap_err();
            assert!(err.starts_with(var), "{err}");
        }
    }
}
