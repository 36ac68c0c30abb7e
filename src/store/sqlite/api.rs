//! Queries of the CRM API (`GET /api/responses`), paged with a keyset cursor.

use rusqlite::params;

use super::types::JsonObject;
use super::{FromRow, SqliteStore};
use crate::store::{ApiQueries, ApiResponse, ResponsesPage, ResponsesQuery, Result};

columns!(
    /// The columns of an [`ApiResponse`].
    ApiColumns { id, token, phone, customer_name, campaign, source, completed_at, answers }
);

impl FromRow for ApiResponse {
    type Columns = ApiColumns;

    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<ApiColumns> {
        ApiColumns::of(stmt)
    }

    fn from_row(r: &rusqlite::Row<'_>, c: &ApiColumns) -> rusqlite::Result<ApiResponse> {
        Ok(ApiResponse {
            id: r.get(c.id)?,
            flow_token: r.get(c.token)?,
            phone_number: r.get(c.phone)?,
            customer_name: r.get(c.customer_name)?,
            campaign: r.get(c.campaign)?,
            source: r.get(c.source)?,
            completed_at: r.get(c.completed_at)?,
            answers: r.get::<_, JsonObject>(c.answers)?.0,
        })
    }
}

impl ApiQueries for SqliteStore {
    fn api_responses(&self, q: &ResponsesQuery) -> Result<ResponsesPage> {
        let (after_at, after_id) = match &q.after {
            Some((at, id)) => (Some(at.as_str()), *id),
            None => (None, 0),
        };
        let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut responses: Vec<ApiResponse> = self.records(
            &format!(
                "SELECT {} FROM responses
             WHERE matched = 1 AND duplicate_of IS NULL
               AND (?1 IS NULL OR completed_at >= ?1)
               AND (?2 IS NULL OR campaign = ?2)
               AND (?3 IS NULL OR completed_at < ?3 OR (completed_at = ?3 AND id < ?4))
             ORDER BY completed_at DESC, id DESC
             LIMIT ?5",
                ApiColumns::LIST
            ),
            params![q.since, q.campaign, after_at, after_id, fetch],
        )?;
        let next = if responses.len() > q.limit {
            responses.truncate(q.limit);
            responses.last().map(|r| (r.completed_at.to_string(), r.id))
        } else {
            None
        };
        Ok(ResponsesPage { responses, next })
    }
}
