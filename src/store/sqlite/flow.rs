//! Queries of the data endpoint: answers merged screen by screen, completion, events.

use rusqlite::{params, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::types::{json_text, JsonObject, TimeText};
use super::{FromRow, SqliteStore};
use crate::phone::Phone;
use crate::store::flow::sender_matches;
use crate::store::{Completion, CompletionInput, FlowQueries, Result, StoredResponse};
use crate::time::Timestamp;

columns!(
    /// The columns of a [`StoredResponse`].
    ResponseColumns {
        id, token, phone, sender, customer_name, campaign, source, answers, matched,
        sender_mismatch, duplicate_of, completed_at,
    }
);

impl FromRow for StoredResponse {
    type Columns = ResponseColumns;

    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<ResponseColumns> {
        ResponseColumns::of(stmt)
    }

    fn from_row(r: &Row<'_>, c: &ResponseColumns) -> rusqlite::Result<StoredResponse> {
        Ok(StoredResponse {
            id: r.get(c.id)?,
            token: r.get(c.token)?,
            phone: r.get(c.phone)?,
            sender: r.get(c.sender)?,
            customer_name: r.get(c.customer_name)?,
            campaign: r.get(c.campaign)?,
            source: r.get(c.source)?,
            answers: r.get::<_, JsonObject>(c.answers)?.0,
            matched: r.get(c.matched)?,
            sender_mismatch: r.get(c.sender_mismatch)?,
            duplicate_of: r.get(c.duplicate_of)?,
            completed_at: r.get(c.completed_at)?,
        })
    }
}

/// What a completion needs of its token: phone, name, campaign, the WhatsApp id the send
/// answer reported, and the answers the data endpoint collected so far.
type TokenForCompletion = (
    Phone,
    Option<String>,
    String,
    Option<String>,
    Option<JsonObject>,
);

impl FlowQueries for SqliteStore {
    fn merge_screen_answers(
        &mut self,
        token: &str,
        screen: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.write(|tx| {
            // Cached statements: this runs on every screen of every Flow.
            let current: Option<Option<JsonObject>> = tx
                .prepare_cached("SELECT flow_answers FROM tokens WHERE token = ?1")?
                .query_row([token], |r| r.get("flow_answers"))
                .optional()?;
            let mut merged = current.flatten().map(|j| j.0).unwrap_or_default();
            for (k, v) in data {
                merged.insert(k.clone(), v.clone());
            }
            tx.prepare_cached(
                "UPDATE tokens SET flow_answers = ?2, flow_screen = COALESCE(?3, flow_screen) WHERE token = ?1",
            )?
            .execute(params![token, json_text(&merged), screen])?;
            Ok(merged)
        })
    }

    fn complete(&mut self, c: &CompletionInput<'_>) -> Result<Completion> {
        let now = Timestamp::now();
        self.write(|tx| {
            if let Some(ev) = c.event_id {
                let seen: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM responses WHERE event_id = ?1)",
                    [ev],
                    |r| r.get(0),
                )?;
                if seen {
                    return Ok(Completion::AlreadyCompleted);
                }
            }
            let token: Option<TokenForCompletion> = tx
                .query_row(
                    "SELECT phone, customer_name, campaign, wa_id, flow_answers FROM tokens WHERE token = ?1",
                    [c.token],
                    |r| {
                        Ok((
                            r.get("phone")?,
                            r.get("customer_name")?,
                            r.get("campaign")?,
                            r.get("wa_id")?,
                            r.get("flow_answers")?,
                        ))
                    },
                )
                .optional()?;
            let Some((phone, name, campaign, wa_id, collected)) = token else {
                return Ok(Completion::UnknownToken);
            };
            // What the data endpoint collected on earlier screens is part of the answers of a
            // completion that arrives by webhook (its `response_json` carries only what the
            // last screen sent, or the SUCCESS params): the union is kept, the newer value
            // winning for a key given twice.
            let mut union = collected.map(|j| j.0).unwrap_or_default();
            union.extend(c.answers.iter().map(|(k, v)| (k.clone(), v.clone())));
            let answers = json_text(&union);
            let as_received = json_text(c.answers);
            let primary: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, source FROM responses WHERE token = ?1 AND duplicate_of IS NULL",
                    [c.token],
                    |r| Ok((r.get("id")?, r.get("source")?)),
                )
                .optional()?;
            let mismatch = c
                .sender
                .is_some_and(|s| !sender_matches(s, &phone, wa_id.as_deref()));
            match primary {
                // A replay from the same path without an event id (the data endpoint) is the
                // same completion again. A webhook message with a new id is a second
                // completion: kept below as a duplicate row, never silently dropped.
                Some((_, source)) if source == c.source && c.event_id.is_none() => {
                    Ok(Completion::AlreadyCompleted)
                }
                Some((id, _)) => {
                    tx.execute(
                        "INSERT INTO responses (token, phone, sender, customer_name, campaign, source, answers,
                            matched, sender_mismatch, duplicate_of, event_id, completed_at, received_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?12)",
                        params![
                            c.token, phone, c.sender, name, campaign, c.source, as_received,
                            mismatch, id, c.event_id, TimeText(c.completed_at), now
                        ],
                    )?;
                    if let Some(sender) = c.sender {
                        tx.execute(
                            "UPDATE responses SET sender = COALESCE(sender, ?2), sender_mismatch = ?3 WHERE id = ?1",
                            params![id, sender, mismatch],
                        )?;
                    }
                    // The other path's answers join the primary's: keys it lacks are added,
                    // its own values kept (both rows stay as they came).
                    let primary: Option<JsonObject> = tx.query_row(
                        "SELECT answers FROM responses WHERE id = ?1",
                        [id],
                        |r| r.get("answers"),
                    )?;
                    let mut merged = primary.map(|j| j.0).unwrap_or_default();
                    let before = merged.len();
                    for (k, v) in &union {
                        merged.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    if merged.len() != before {
                        tx.execute(
                            "UPDATE responses SET answers = ?2 WHERE id = ?1",
                            params![id, json_text(&merged)],
                        )?;
                    }
                    Ok(Completion::AlreadyCompleted)
                }
                None => {
                    tx.execute(
                        "INSERT INTO responses (token, phone, sender, customer_name, campaign, source, answers,
                            matched, sender_mismatch, event_id, completed_at, received_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11)",
                        params![
                            c.token, phone, c.sender, name, campaign, c.source, answers, mismatch,
                            c.event_id, TimeText(c.completed_at), now
                        ],
                    )?;
                    let id = tx.last_insert_rowid();
                    tx.execute(
                        "UPDATE tokens SET completed_at = COALESCE(completed_at, ?2) WHERE token = ?1",
                        params![c.token, TimeText(c.completed_at)],
                    )?;
                    Ok(Completion::Stored(id))
                }
            }
        })
    }

    fn record_event(
        &mut self,
        kind: &str,
        token: Option<&str>,
        reference: Option<&str>,
        detail: &Value,
    ) -> Result<i64> {
        let now = Timestamp::now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO events (kind, token, reference, detail, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind, token, reference, detail.to_string(), now],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn events(&self, kind: &str) -> Result<Vec<(Option<String>, Value)>> {
        self.rows(
            "SELECT token, detail FROM events WHERE kind = ?1 ORDER BY id",
            [kind],
            |r| {
                let detail: String = r.get("detail")?;
                let detail = serde_json::from_str(&detail).unwrap_or(Value::String(detail));
                Ok((r.get("token")?, detail))
            },
        )
    }

    fn responses_for_token(&self, token: &str) -> Result<Vec<StoredResponse>> {
        self.records(
            &format!(
                "SELECT {} FROM responses WHERE token = ?1 ORDER BY duplicate_of IS NOT NULL, id",
                ResponseColumns::LIST
            ),
            [token],
        )
    }
}
