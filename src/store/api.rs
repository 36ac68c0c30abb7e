//! The records of the CRM API (`GET /api/responses`): completed responses, newest first,
//! paged with a keyset cursor so that pages stay stable while new completions arrive.

use serde_json::{Map, Value};

use super::Result;
use crate::phone::Phone;
use crate::time::Timestamp;
use crate::token::FlowToken;

/// What `GET /api/responses` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponsesQuery {
    /// Only responses completed at or after this stored time.
    pub since: Option<String>,
    /// Only this campaign.
    pub campaign: Option<String>,
    /// Continue after this position: `(completed_at, id)` of the last row already seen.
    pub after: Option<(String, i64)>,
    /// Page size.
    pub limit: usize,
}

/// One completed response as the CRM API shows it (a matched one: its token and phone are
/// those of the token row).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub id: i64,
    pub flow_token: Option<FlowToken>,
    pub phone_number: Option<Phone>,
    pub customer_name: Option<String>,
    pub campaign: Option<String>,
    pub source: String,
    pub completed_at: Timestamp,
    pub answers: Map<String, Value>,
}

/// One page of responses; `next` is the position to continue from, when there is more.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsesPage {
    pub responses: Vec<ApiResponse>,
    pub next: Option<(String, i64)>,
}

/// The CRM API's read.
pub trait ApiQueries {
    /// Matched primary responses (one per token), newest first, one page of them.
    fn api_responses(&self, q: &ResponsesQuery) -> Result<ResponsesPage>;
}
