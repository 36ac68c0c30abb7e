//! Settings of `doctor`: everything the other commands need, each problem collected instead
//! of stopping at the first, so that one run lists them all.

use std::net::SocketAddr;

use super::serve::{app_secrets, private_key};
use super::{require_secret, required, secret, ConfigError};
use crate::cli::{DoctorArgs, FlowActionKind};
use crate::crypto::PrivateKey;
use crate::graph::GraphSettings;

/// `flowctl doctor`: what could be resolved, and every problem met on the way.
#[derive(Debug)]
pub struct DoctorSettings {
    /// Each setting that is missing or unusable, in the order the settings are read.
    pub problems: Vec<ConfigError>,
    /// The Graph API settings, when the token and the URL are usable; `phone_number_id` is
    /// empty when it is not set (the checks that need it are skipped then).
    pub graph: Option<GraphSettings>,
    /// `GRAPH_API_VERSION`, checked against Meta's expiry dates even without a token.
    pub graph_version: String,
    /// `PHONE_NUMBER_ID` as given (trimmed), when set.
    pub phone_number_id: Option<String>,
    /// `FLOW_ID`, when set.
    pub flow_id: Option<String>,
    /// Whether the Flow opens with a data exchange (then it needs an `endpoint_uri`).
    pub data_exchange: bool,
    /// The data endpoint's private key, when it loads.
    pub key: Option<PrivateKey>,
    /// `FLOWCTL_LISTEN`, when it is an address.
    pub listen: Option<SocketAddr>,
    /// Whether `WEBHOOK_VERIFY_TOKEN` is set (Meta's webhook verification needs it).
    pub verify_token: bool,
    /// The database file.
    pub db: crate::store::DbTarget,
}

impl DoctorArgs {
    /// Resolves everything it can and collects every problem (never fails).
    pub fn resolve_all(&self, db: &crate::store::DbTarget) -> DoctorSettings {
        let mut problems = Vec::new();
        let mut keep = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                problems.push(e);
            }
        };
        let phone_number_id = required(
            &self.graph.phone_number_id,
            "PHONE_NUMBER_ID",
            "--phone-number-id",
        );
        let token = require_secret("WHATSAPP_ACCESS_TOKEN");
        let base_url = self.graph.base_url();
        let graph = match (&token, &base_url) {
            (Ok(token), Ok(url)) => Some(GraphSettings {
                base_url: url.clone(),
                version: self.graph.graph_version.clone(),
                phone_number_id: phone_number_id.clone().unwrap_or_default(),
                access_token: token.clone(),
                timeout: self.graph.graph_timeout,
            }),
            _ => None,
        };
        keep(phone_number_id.as_ref().map(|_| ()).map_err(Clone::clone));
        keep(token.as_ref().map(|_| ()).map_err(Clone::clone));
        keep(base_url.as_ref().map(|_| ()).map_err(Clone::clone));
        for problem in self.message.problems() {
            keep(Err(problem));
        }
        let key = match private_key(self.private_key_file.as_deref()) {
            Ok(key) => Some(key),
            Err(e) => {
                keep(Err(e));
                None
            }
        };
        keep(app_secrets(false).map(|_| ()));
        let listen = match self.listen.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                keep(Err(ConfigError::Invalid {
                    name: "FLOWCTL_LISTEN",
                    reason: format!("{:?} is not an address such as 127.0.0.1:8080", self.listen),
                }));
                None
            }
        };
        DoctorSettings {
            problems,
            graph,
            graph_version: self.graph.graph_version.clone(),
            phone_number_id: phone_number_id.ok(),
            flow_id: required(&self.message.flow_id, "FLOW_ID", "--flow-id").ok(),
            data_exchange: self.message.flow_action == FlowActionKind::DataExchange,
            key,
            listen,
            verify_token: secret("WEBHOOK_VERIFY_TOKEN").is_some(),
            db: db.clone(),
        }
    }
}
