//! The settings every sending command shares: where the Graph API is, and what is sent.

use super::{require_secret, required, ConfigError};
use crate::cli::{FlowActionKind, GraphArgs, MessageArgs};
use crate::graph::{FlowAction, GraphSettings, MessageSettings, Template};
use crate::outbound::SendSettings;
use crate::phone::DefaultCountry;

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
        warn_if_expiring(&self.graph_version);
        Ok(GraphSettings {
            base_url,
            version: self.graph_version.clone(),
            phone_number_id,
            access_token,
            timeout: self.graph_timeout,
        })
    }
}

/// Warns once on stderr when the configured Graph API version has expired or expires within
/// 90 days (see [`crate::graph::version`]).
fn warn_if_expiring(version: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let today = chrono::Utc::now().date_naive();
    if let Some(warning) = crate::graph::version::warning(version, today) {
        ONCE.call_once(|| eprintln!("flowctl: warning: {warning}"));
    }
}

impl MessageArgs {
    /// The message settings; `template` is `(name, language)` from `--template/--lang`.
    pub fn resolve(&self, template: Option<(String, String)>) -> Result<SendSettings, ConfigError> {
        let flow_id = required(&self.flow_id, "FLOW_ID", "--flow-id")?;
        let action = match self.flow_action {
            FlowActionKind::DataExchange => FlowAction::DataExchange,
            FlowActionKind::Navigate => FlowAction::Navigate {
                screen: required(&self.screen, "FLOW_SCREEN", "--screen")?,
            },
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
            token_ttl: self.token_ttl,
        })
    }
}
