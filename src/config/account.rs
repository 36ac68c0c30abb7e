//! Settings of the commands that manage the account's Flows and templates (`flows`,
//! `templates`): the Graph API and the WhatsApp Business Account id.

use super::{require_secret, ConfigError};
use crate::cli::AccountArgs;
use crate::graph::GraphSettings;

/// `flowctl flows …` and `flowctl templates …`.
#[derive(Clone, Debug)]
pub struct AccountSettings {
    /// Where the Graph API is, with the access token; `phone_number_id` may be empty (these
    /// commands address the account and its Flows, not the number).
    pub graph: GraphSettings,
    /// `WABA_ID`: the account that owns the Flows and templates (list and create need it).
    pub waba_id: Option<String>,
}

impl AccountArgs {
    /// The settings, with the access token from the environment.
    pub fn resolve(&self) -> Result<AccountSettings, ConfigError> {
        let access_token = require_secret("WHATSAPP_ACCESS_TOKEN")?;
        let base_url = self.graph.base_url()?;
        Ok(AccountSettings {
            graph: GraphSettings {
                base_url,
                version: self.graph.graph_version.clone(),
                phone_number_id: self
                    .graph
                    .phone_number_id
                    .as_deref()
                    .map(str::trim)
                    .unwrap_or("")
                    .to_string(),
                access_token,
                timeout: self.graph.graph_timeout,
            },
            waba_id: waba_id(&self.waba_id)?,
        })
    }
}

/// `WABA_ID`, trimmed; digits only, as Meta's ids are.
pub(super) fn waba_id(value: &Option<String>) -> Result<Option<String>, ConfigError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(id) if id.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(id.to_string())),
        Some(id) => Err(ConfigError::Invalid {
            name: "WABA_ID",
            reason: format!("{id:?} is not a WhatsApp Business Account id (digits)"),
        }),
    }
}
