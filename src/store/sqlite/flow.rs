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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::test_util::temp_store;
    use crate::store::{SendState, TokenQueries};

    fn token(s: &mut SqliteStore) -> String {
        crate::store::sqlite::test_util::issue(s, SendState::Sent)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn answers_merge_screen_by_screen_and_replay_is_idempotent() {
        let (_d, mut s) = temp_store();
        let t = token(&mut s);
        s.merge_screen_answers(&t, Some("A"), &obj(serde_json::json!({"q1": "5"})))
            .unwrap();
        let m = s
            .merge_screen_answers(&t, Some("B"), &obj(serde_json::json!({"q2": "4"})))
            .unwrap();
        let again = s
            .merge_screen_answers(&t, Some("B"), &obj(serde_json::json!({"q2": "4"})))
            .unwrap();
        assert_eq!(m, again);
        assert_eq!(m, obj(serde_json::json!({"q1": "5", "q2": "4"})));
        assert_eq!(
            s.find_token(&t).unwrap().unwrap().flow_screen.as_deref(),
            Some("B")
        );
    }

    #[test]
    fn one_response_per_token_and_the_other_path_is_kept_as_duplicate() {
        let (_d, mut s) = temp_store();
        let t = token(&mut s);
        let answers = obj(serde_json::json!({"q1": "5"}));
        let input = CompletionInput {
            token: &t,
            answers: &answers,
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: "2026-01-01T00:00:00.000Z",
        };
        assert!(matches!(s.complete(&input).unwrap(), Completion::Stored(_)));
        assert_eq!(s.complete(&input).unwrap(), Completion::AlreadyCompleted);
        let hook = CompletionInput {
            source: "webhook",
            sender: Some("212610059159"),
            event_id: Some("wamid.1"),
            ..input
        };
        assert_eq!(s.complete(&hook).unwrap(), Completion::AlreadyCompleted);
        assert_eq!(s.complete(&hook).unwrap(), Completion::AlreadyCompleted);
        // A second webhook completion of the same token (new message id) is kept, as a duplicate.
        let second = CompletionInput {
            event_id: Some("wamid.2"),
            ..hook.clone()
        };
        assert_eq!(s.complete(&second).unwrap(), Completion::AlreadyCompleted);
        let n: i64 = s.value("SELECT COUNT(*) FROM responses", []).unwrap();
        let primaries: i64 = s
            .value(
                "SELECT COUNT(*) FROM responses WHERE duplicate_of IS NULL",
                [],
            )
            .unwrap();
        assert_eq!((n, primaries), (3, 1));
        assert!(s.find_token(&t).unwrap().unwrap().completed_at.is_some());
    }

    #[test]
    fn a_webhook_completion_keeps_what_the_endpoint_collected_on_earlier_screens() {
        let (_d, mut s) = temp_store();
        let t = token(&mut s);
        s.merge_screen_answers(&t, Some("A"), &obj(serde_json::json!({"q1": "5"})))
            .unwrap();
        // The last screen completes on the client: its answers arrive by webhook only.
        let last = obj(serde_json::json!({"q2": "4", "q1": "4"}));
        let hook = CompletionInput {
            token: &t,
            answers: &last,
            source: "webhook",
            sender: Some("212610059159"),
            event_id: Some("wamid.w1"),
            completed_at: "2026-01-01T00:00:00.000Z",
        };
        assert!(matches!(s.complete(&hook).unwrap(), Completion::Stored(_)));
        let r = &s.responses_for_token(&t).unwrap()[0];
        assert_eq!(
            r.answers,
            obj(serde_json::json!({"q1": "4", "q2": "4"})),
            "union, newer wins"
        );
    }

    #[test]
    fn the_other_paths_answers_join_the_primary_and_both_rows_are_kept() {
        let (_d, mut s) = temp_store();
        let t = token(&mut s);
        let endpoint = obj(serde_json::json!({"q1": "5"}));
        let input = CompletionInput {
            token: &t,
            answers: &endpoint,
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: "2026-01-01T00:00:00.000Z",
        };
        s.complete(&input).unwrap();
        let webhook = obj(serde_json::json!({"q1": "1", "photo_caption": "x"}));
        let hook = CompletionInput {
            answers: &webhook,
            source: "webhook",
            sender: Some("212610059159"),
            event_id: Some("wamid.w2"),
            ..input
        };
        s.complete(&hook).unwrap();
        let rows = s.responses_for_token(&t).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].answers,
            obj(serde_json::json!({"q1": "5", "photo_caption": "x"})),
            "the primary gains the missing key, keeps its own value"
        );
        assert_eq!(rows[1].answers, webhook, "the duplicate is kept as it came");
    }

    #[test]
    fn unknown_token_completion_is_reported() {
        let (_d, mut s) = temp_store();
        let answers = Map::new();
        let input = CompletionInput {
            token: "flow_nope",
            answers: &answers,
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: "x",
        };
        assert_eq!(s.complete(&input).unwrap(), Completion::UnknownToken);
    }
}
