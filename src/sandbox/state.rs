//! What the sandbox's service shares across connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::notify::Notifier;
use super::record::Recorder;
use super::rules::{ActiveRules, Fault};
use super::Probe;

/// Everything the service shares across connections.
pub(crate) struct State {
    pub(crate) latency: Duration,
    pub(crate) rules: ActiveRules,
    pub(crate) probe: Option<Probe>,
    pub(crate) recorder: Recorder,
    /// Uploaded business public keys by phone number id.
    pub(crate) keys: Mutex<HashMap<String, StoredKey>>,
    /// Simulated recipients, when the sandbox plays the user.
    pub(crate) users: Option<Arc<super::user::Users>>,
    /// Posts to the server under test's webhook.
    pub(crate) notifier: Arc<Notifier>,
    /// Delay before a `@status` failure is posted.
    pub(crate) status_delay: Duration,
    /// Becomes `true` when the sandbox shuts down; releases hanging requests.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// A whole-API outage set through `POST /_sandbox/outage`: every Graph request gets this
    /// fault (503, dropped connection, hang, or an error code) until it is cleared.
    pub(crate) outage: Mutex<Option<Fault>>,
    /// The phone number's profile, the Flows and the token's debug info (see `account`).
    pub(crate) account: Mutex<super::account::Account>,
    /// The CDN holding the files the simulated people attach (`/_sandbox/cdn/…`).
    pub(crate) cdn: Arc<super::media::Cdn>,
    /// The uploaded Flow JSON of each Flow (see `flows_api`).
    pub(crate) flow_assets: Mutex<super::flows_api::FlowAssets>,
    /// The account's message templates (see `templates`).
    pub(crate) templates: Mutex<super::templates::Templates>,
    /// The sandbox's own `http://ADDR`, for the download URLs it hands out.
    pub(crate) base_url: String,
    /// The number's throughput limit, when one is simulated (see `throughput::Throughput`).
    pub(crate) throughput: Option<super::throughput::Throughput>,
}

/// A business public key the sandbox holds for one phone number.
pub(crate) struct StoredKey {
    pub(crate) pem: String,
    /// `business_public_key_signature_status` as GET reports it: `VALID` after an upload,
    /// `MISMATCH` once `POST /_sandbox/key-status` says so.
    pub(crate) signature_status: &'static str,
}
