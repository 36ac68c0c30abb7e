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

/// The behaviour of every backend, run on each ([`each_backend`](crate::store::test_util)).
#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::store::test_util::each_backend;
    use crate::store::{CompletionInput, SendState, Store};

    fn completed(s: &mut Store, campaign: &str, at: &str) -> String {
        let t = crate::store::sqlite::test_util::issue_in(&mut **s, campaign, SendState::Sent);
        let answers = Map::new();
        s.complete(&CompletionInput {
            token: &t,
            answers: &answers,
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: at,
        })
        .unwrap();
        t
    }

    #[test]
    fn pages_newest_first_without_gaps_or_repeats() {
        each_backend("api pages", |s| {
            let mut tokens = Vec::new();
            for i in 0..5 {
                tokens.push(completed(
                    s,
                    if i == 4 { "b" } else { "a" },
                    &format!("2026-01-0{}T00:00:00.000Z", 1 + i % 2),
                ));
            }
            let mut q = ResponsesQuery {
                limit: 2,
                ..Default::default()
            };
            let mut seen = Vec::new();
            loop {
                let page = s.api_responses(&q).unwrap();
                assert!(page.responses.len() <= 2);
                seen.extend(page.responses.iter().map(|r| (r.completed_at, r.id)));
                match page.next {
                    Some(n) => q.after = Some(n),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 5);
            let mut sorted = seen.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            assert_eq!(seen, sorted);
            // Filters: a campaign, and a time from which on.
            let only_b = s
                .api_responses(&ResponsesQuery {
                    campaign: Some("b".into()),
                    limit: 10,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(only_b.responses.len(), 1);
            assert_eq!(
                only_b.responses[0].flow_token.as_ref().unwrap().as_str(),
                tokens[4]
            );
            assert_eq!(only_b.next, None);
            let since = s
                .api_responses(&ResponsesQuery {
                    since: Some("2026-01-02T00:00:00.000Z".into()),
                    limit: 10,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(since.responses.len(), 2);
        });
    }
}
