//! What `flowctl stats` reads: the funnel per campaign, from the tokens and their responses.
//!
//! The funnel is cumulative and disjoint from failures:
//! - `sent`: accepted by the Graph API (`state = 'sent'`) or reported by a status
//!   (`delivery_rank >= 1`), and not failed;
//! - `delivered`: `delivery_rank >= 2` (a read message was delivered), not failed;
//! - `read`: `delivery_rank >= 3`, not failed;
//! - `failed`: refused by the API (`state = 'failed'`) or failed to deliver
//!   (`delivery = 'failed'`), broken down by error code (`unknown` when none was given);
//! - `completed`: tokens with a (primary) response;
//! - `unmatched`: completions joined to no token; counted in a campaign only when known.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Result;

/// The funnel of one campaign, or of all of them (`campaign: None`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Funnel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Tokens issued.
    pub issued: i64,
    /// Messages accepted (and not failed afterwards).
    pub sent: i64,
    /// Messages refused by the API or that failed to deliver.
    pub failed: i64,
    /// Error code (as text, `unknown` when none) → number of failed messages.
    pub failed_by_code: BTreeMap<String, i64>,
    /// Messages delivered (including read ones).
    pub delivered: i64,
    /// Messages read.
    pub read: i64,
    /// Tokens with a completion.
    pub completed: i64,
    /// Completions that could not be joined to a token.
    pub unmatched: i64,
    /// `completed / sent`; `None` when nothing was sent.
    pub completion_rate: Option<f64>,
    /// Median time from the send to the completion, in seconds (millisecond precision).
    pub median_completion_seconds: Option<f64>,
}

/// The funnel per campaign (by name) and over all of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FunnelReport {
    pub campaigns: Vec<Funnel>,
    pub total: Funnel,
}

/// `stats`' read.
pub trait StatsQueries {
    /// The funnel of every campaign (or only `campaign`), with the total. Without a campaign
    /// filter, the total also counts unmatched completions whose campaign is unknown.
    fn funnel(&self, campaign: Option<&str>) -> Result<FunnelReport>;
}
