//! Queries of the CRM API (`GET /api/responses`): completed responses, newest first, paged
//! with a keyset cursor so that pages stay stable while new completions arrive.

use rusqlite::params;
use serde_json::{Map, Value};

use super::{Result, Store};

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

/// One completed response as the CRM API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub id: i64,
    pub flow_token: Option<String>,
    pub phone_number: Option<String>,
    pub customer_name: Option<String>,
    pub campaign: Option<String>,
    pub source: String,
    pub completed_at: String,
    pub answers: Map<String, Value>,
}

/// One page of responses; `next` is the position to continue from, when there is more.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsesPage {
    pub responses: Vec<ApiResponse>,
    pub next: Option<(String, i64)>,
}

impl Store {
    /// Matched primary responses (one per token), newest first, one page of them.
    pub fn api_responses(&self, q: &ResponsesQuery) -> Result<ResponsesPage> {
        let (after_at, after_id) = match &q.after {
            Some((at, id)) => (Some(at.as_str()), *id),
            None => (None, 0),
        };
        let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, token, phone, customer_name, campaign, source, completed_at, answers
                 FROM responses
                 WHERE matched = 1 AND duplicate_of IS NULL
                   AND (?1 IS NULL OR completed_at >= ?1)
                   AND (?2 IS NULL OR campaign = ?2)
                   AND (?3 IS NULL OR completed_at < ?3 OR (completed_at = ?3 AND id < ?4))
                 ORDER BY completed_at DESC, id DESC
                 LIMIT ?5",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![q.since, q.campaign, after_at, after_id, fetch],
                |r| {
                    let answers: String = r.get(7)?;
                    Ok(ApiResponse {
                        id: r.get(0)?,
                        flow_token: r.get(1)?,
                        phone_number: r.get(2)?,
                        customer_name: r.get(3)?,
                        campaign: r.get(4)?,
                        source: r.get(5)?,
                        completed_at: r.get(6)?,
                        answers: match serde_json::from_str(&answers) {
                            Ok(Value::Object(m)) => m,
                            _ => Map::new(),
                        },
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        let mut responses = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let next = if responses.len() > q.limit {
            responses.truncate(q.limit);
            responses.last().map(|r| (r.completed_at.clone(), r.id))
        } else {
            None
        };
        Ok(ResponsesPage { responses, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::temp_store;
    use crate::store::{CompletionInput, SendState};

    fn completed(s: &mut Store, campaign: &str, at: &str) -> String {
        let t = crate::store::test_util::issue_in(s, campaign, SendState::Sent);
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
        let (_d, mut s) = temp_store();
        let mut tokens = Vec::new();
        for i in 0..5 {
            tokens.push(completed(
                &mut s,
                "a",
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
            seen.extend(page.responses.iter().map(|r| r.completed_at.clone()));
            match page.next {
                Some(n) => q.after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted);
    }
}
