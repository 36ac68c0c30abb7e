//! Queries of the CRM API (`GET /api/responses`) on PostgreSQL, paged with a keyset cursor:
//! the behaviour of `sqlite/api.rs`.

use postgres::Row;

use super::types::JsonObject;
use super::PgStore;
use crate::store::{ApiQueries, ApiResponse, ResponsesPage, ResponsesQuery, Result};

fn api_response(r: &Row) -> std::result::Result<ApiResponse, postgres::Error> {
    Ok(ApiResponse {
        id: r.try_get("id")?,
        flow_token: r.try_get("token")?,
        phone_number: r.try_get("phone")?,
        customer_name: r.try_get("customer_name")?,
        campaign: r.try_get("campaign")?,
        source: r.try_get("source")?,
        completed_at: r.try_get("completed_at")?,
        answers: r.try_get::<_, JsonObject>("answers")?.0,
    })
}

impl ApiQueries for PgStore {
    fn api_responses(&self, q: &ResponsesQuery) -> Result<ResponsesPage> {
        let (after_at, after_id) = match &q.after {
            Some((at, id)) => (Some(at.as_str()), *id),
            None => (None, 0),
        };
        let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut responses = self
            .rows(
                "SELECT id, token, phone, customer_name, campaign, source, completed_at, answers
                 FROM responses
                 WHERE matched = 1 AND duplicate_of IS NULL
                   AND ($1::text IS NULL OR completed_at >= $1)
                   AND ($2::text IS NULL OR campaign = $2)
                   AND ($3::text IS NULL OR completed_at < $3 OR (completed_at = $3 AND id < $4))
                 ORDER BY completed_at DESC, id DESC
                 LIMIT $5",
                &[&q.since, &q.campaign, &after_at, &after_id, &fetch],
            )?
            .iter()
            .map(|r| api_response(r).map_err(|e| self.err(e)))
            .collect::<Result<Vec<_>>>()?;
        let next = if responses.len() > q.limit {
            responses.truncate(q.limit);
            responses.last().map(|r| (r.completed_at.to_string(), r.id))
        } else {
            None
        };
        Ok(ResponsesPage { responses, next })
    }
}
