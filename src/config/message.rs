//! The settings every sending command shares: where the Graph API is, and what is sent.

use super::{require_secret, required, ConfigError};
use crate::cli::{FlowActionKind, GraphArgs, MessageArgs, TemplateButtonArgs};
use crate::graph::{FlowAction, GraphSettings, MessageSettings, Slot, Template, TemplateParam};
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
        let base_url = self.base_url()?;
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

impl GraphArgs {
    /// `GRAPH_API_URL` without its trailing slash, when it is an http(s) URL.
    pub(super) fn base_url(&self) -> Result<String, ConfigError> {
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
        Ok(base_url)
    }
}

impl TemplateButtonArgs {
    /// The template to send as, when `--template` and `--lang` name one, with its
    /// `--template-param`s (each slot once; `body.1` not with `--template-name-param`).
    pub(super) fn template(
        &self,
        name_and_language: Option<(String, String)>,
    ) -> Result<Option<Template>, ConfigError> {
        let Some((name, language)) = name_and_language else {
            if !self.template_params.is_empty() {
                return Err(ConfigError::Unusable(
                    "--template-param needs --template and --lang".into(),
                ));
            }
            return Ok(None);
        };
        let mut params: Vec<TemplateParam> = Vec::new();
        for p in &self.template_params {
            let param: TemplateParam = p.parse().map_err(ConfigError::Unusable)?;
            if params.iter().any(|q| q.slot == param.slot) {
                return Err(ConfigError::Unusable(format!(
                    "--template-param {}: that slot is given twice",
                    param.slot
                )));
            }
            if self.template_name_param && param.slot == Slot::Body(1) {
                return Err(ConfigError::Unusable(
                    "--template-param body.1 and --template-name-param both fill body.1: keep one"
                        .into(),
                ));
            }
            params.push(param);
        }
        Ok(Some(Template {
            name,
            language,
            button_index: self.template_button_index,
            name_param: self.template_name_param,
            params,
            waba_id: super::account::waba_id(&self.waba_id)?,
        }))
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
    /// The message settings, sent as `template` when there is one (`--template/--lang`).
    pub fn resolve(&self, template: Option<Template>) -> Result<SendSettings, ConfigError> {
        let flow_id = required(&self.flow_id, "FLOW_ID", "--flow-id")?;
        let action = self.action()?;
        let cta = self.cta()?;
        self.check_body()?;
        let default_country = self.default_country()?;
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

impl MessageArgs {
    /// Every problem of these settings, not only the first (for `doctor`).
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        [
            required(&self.flow_id, "FLOW_ID", "--flow-id").err(),
            self.action().err(),
            self.cta().err(),
            self.check_body().err(),
            self.default_country().err(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `--flow-action`, with its screen for `navigate`.
    fn action(&self) -> Result<FlowAction, ConfigError> {
        Ok(match self.flow_action {
            FlowActionKind::DataExchange => FlowAction::DataExchange,
            FlowActionKind::Navigate => FlowAction::Navigate {
                screen: required(&self.screen, "FLOW_SCREEN", "--screen")?,
            },
        })
    }

    /// The button text, trimmed: 1 to 30 characters.
    fn cta(&self) -> Result<String, ConfigError> {
        let cta = self.cta.trim().to_string();
        if cta.is_empty() || cta.chars().count() > 30 {
            return Err(ConfigError::Invalid {
                name: "FLOW_CTA",
                reason: format!("{cta:?}: the button text must be 1 to 30 characters"),
            });
        }
        Ok(cta)
    }

    /// The message text: 1 to 1024 characters.
    fn check_body(&self) -> Result<(), ConfigError> {
        if self.body.trim().is_empty() || self.body.chars().count() > 1024 {
            return Err(ConfigError::Invalid {
                name: "FLOW_BODY",
                reason: "the message text must be 1 to 1024 characters".into(),
            });
        }
        Ok(())
    }

    /// `DEFAULT_COUNTRY`, when set.
    fn default_country(&self) -> Result<Option<DefaultCountry>, ConfigError> {
        match self
            .default_country
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => Ok(None),
            Some(c) => c
                .parse::<DefaultCountry>()
                .map(Some)
                .map_err(|e| ConfigError::Invalid {
                    name: "DEFAULT_COUNTRY",
                    reason: e.to_string(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(params: &[&str], name_param: bool) -> TemplateButtonArgs {
        TemplateButtonArgs {
            template_button_index: 0,
            template_name_param: name_param,
            template_params: params.iter().map(|s| s.to_string()).collect(),
            waba_id: Some(" 102290129340398 ".into()),
        }
    }

    fn named() -> Option<(String, String)> {
        Some(("enquete".into(), "fr".into()))
    }

    #[test]
    fn template_params_are_parsed_and_checked_once() {
        let t = args(&["body.2=ville", "header.image=photo"], true)
            .template(named())
            .unwrap()
            .unwrap();
        assert_eq!(t.params.len(), 2);
        assert_eq!(t.waba_id.as_deref(), Some("102290129340398"));
        let err = |a: TemplateButtonArgs, named| a.template(named).unwrap_err().to_string();
        assert!(err(args(&["body.1=x"], true), named()).contains("--template-name-param"));
        assert!(err(args(&["body.2=x", "body.2=y"], false), named()).contains("twice"));
        assert!(err(args(&["body.2=x"], false), None).contains("needs --template"));
        assert!(err(args(&["footer.1=x"], false), named()).contains("footer.1=x"));
        let mut bad_waba = args(&[], false);
        bad_waba.waba_id = Some("waba-12".into());
        assert!(err(bad_waba, named()).contains("WABA_ID"));
    }
}
