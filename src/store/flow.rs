//! Queries of the data endpoint: answers merged screen by screen, completion, events.

use rusqlite::{params, OptionalExtension};
use serde_json::{Map, Value};

use super::{Result, Store};

/// Result of recording a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Stored as the token's response (id of the new row).
    Stored(i64),
    /// The token already had a response: nothing new was stored.
    AlreadyCompleted,
    /// No such token.
    UnknownToken,
}

/// A completion to record against a token.
#[derive(Clone, Debug)]
pub struct CompletionInput<'a> {
    pub token: &'a str,
    pub answers: &'a Map<String, Value>,
    /// `endpoint` or `webhook`.
    pub source: &'a str,
    /// Sender's wa_id or business-scoped id (webhook only).
    pub sender: Option<&'a str>,
    /// Webhook message id, for deduplication.
    pub event_id: Option<&'a str>,
    /// When the user completed the Flow (stored form).
    pub completed_at: &'a str,
}

impl Store {
    /// Merges one screen's answers into the token's answers so far; returns the merged set.
    /// Replaying the same screen gives the same result.
    pub fn merge_screen_answers(
        &mut self,
        token: &str,
        screen: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.write(|tx| {
            let current: Option<Option<String>> = tx
                .query_row("SELECT flow_answers FROM tokens WHERE token = ?1", [token], |r| r.get(0))
                .optional()?;
            let mut merged = match current.flatten().map(|s| serde_json::from_str::<Value>(&s)) {
                Some(Ok(Value::Object(m))) => m,
                _ => Map::new(),
            };
            for (k, v) in data {
                merged.insert(k.clone(), v.clone());
            }
            tx.execute(
                "UPDATE tokens SET flow_answers = ?2, flow_screen = COALESCE(?3, flow_screen) WHERE token = ?1",
                params![token, Value::Object(merged.clone()).to_string(), screen],
            )?;
            Ok(merged)
        })
    }

    /// Stores a completion joined to its token's phone and marks the token completed, in one
    /// transaction. A second completion of the same token stores nothing new (from the other
    /// path it is kept, flagged as a duplicate, so no answer is ever dropped).
    pub fn complete(&mut self, c: &CompletionInput<'_>) -> Result<Completion> {
        let now = crate::time::now();
        self.write(|tx| {
            if let Some(ev) = c.event_id {
                let seen: bool =
                    tx.query_row("SELECT EXISTS(SELECT 1 FROM responses WHERE event_id = ?1)", [ev], |r| r.get(0))?;
                if seen {
                    return Ok(Completion::AlreadyCompleted);
                }
            }
            let token: Option<(String, Option<String>, String)> = tx
                .query_row("SELECT phone, customer_name, campaign FROM tokens WHERE token = ?1", [c.token], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((phone, name, campaign)) = token else {
                return Ok(Completion::UnknownToken);
            };
            let primary: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, source FROM responses WHERE token = ?1 AND duplicate_of IS NULL",
                    [c.token],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let mismatch = c.sender.is_some_and(|s| !sender_matches(s, &phone));
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
                            c.token, phone, c.sender, name, campaign, c.source,
                            Value::Object(c.answers.clone()).to_string(), mismatch, id, c.event_id,
                            c.completed_at, now
                        ],
                    )?;
                    if let Some(sender) = c.sender {
                        tx.execute(
                            "UPDATE responses SET sender = COALESCE(sender, ?2), sender_mismatch = ?3 WHERE id = ?1",
                            params![id, sender, mismatch],
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
                            c.token, phone, c.sender, name, campaign, c.source,
                            Value::Object(c.answers.clone()).to_string(), mismatch, c.event_id,
                            c.completed_at, now
                        ],
                    )?;
                    let id = tx.last_insert_rowid();
                    tx.execute(
                        "UPDATE tokens SET completed_at = COALESCE(completed_at, ?2) WHERE token = ?1",
                        params![c.token, c.completed_at],
                    )?;
                    Ok(Completion::Stored(id))
                }
            }
        })
    }

    /// Records something that is not an answer (error notification, alert, unmatched event).
    pub fn record_event(
        &mut self,
        kind: &str,
        token: Option<&str>,
        reference: Option<&str>,
        detail: &Value,
    ) -> Result<i64> {
        let now = crate::time::now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO events (kind, token, reference, detail, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind, token, reference, detail.to_string(), now],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Events of one kind, oldest first (`(token, detail)`).
    pub fn events(&self, kind: &str) -> Result<Vec<(Option<String>, Value)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT token, detail FROM events WHERE kind = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([kind], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (t, d) = row.map_err(|e| self.err(e))?;
            out.push((t, serde_json::from_str(&d).unwrap_or(Value::String(d))));
        }
        Ok(out)
    }
}

/// A stored response, as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    pub id: i64,
    pub token: Option<String>,
    pub phone: Option<String>,
    pub sender: Option<String>,
    pub customer_name: Option<String>,
    pub campaign: Option<String>,
    pub source: String,
    pub answers: Map<String, Value>,
    pub matched: bool,
    pub sender_mismatch: bool,
    pub duplicate_of: Option<i64>,
    pub completed_at: String,
}

pub(crate) const RESPONSE_COLUMNS: &str =
    "id, token, phone, sender, customer_name, campaign, source, answers, \
     matched, sender_mismatch, duplicate_of, completed_at";

pub(crate) fn response_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResponse> {
    let answers: String = r.get(7)?;
    Ok(StoredResponse {
        id: r.get(0)?,
        token: r.get(1)?,
        phone: r.get(2)?,
        sender: r.get(3)?,
        customer_name: r.get(4)?,
        campaign: r.get(5)?,
        source: r.get(6)?,
        answers: match serde_json::from_str(&answers) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        matched: r.get(8)?,
        sender_mismatch: r.get(9)?,
        duplicate_of: r.get(10)?,
        completed_at: r.get(11)?,
    })
}

impl Store {
    /// Every response stored for a token (the primary first, then duplicates).
    pub fn responses_for_token(&self, token: &str) -> Result<Vec<StoredResponse>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RESPONSE_COLUMNS} FROM responses WHERE token = ?1 ORDER BY duplicate_of IS NOT NULL, id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([token], response_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

/// True when a webhook sender id designates the stored E.164 phone. Business-scoped ids
/// (not digits) cannot be compared and are not flagged.
fn sender_matches(sender: &str, phone: &str) -> bool {
    if !sender.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    sender == phone.trim_start_matches('+')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::temp_store;
    use crate::store::SendState;

    fn token(s: &mut Store) -> String {
        crate::store::test_util::issue(s, SendState::Sent)
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
        let n: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM responses", [], |r| r.get(0))
            .unwrap();
        let primaries: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM responses WHERE duplicate_of IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((n, primaries), (3, 1));
        assert!(s.find_token(&t).unwrap().unwrap().completed_at.is_some());
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

    #[test]
    fn sender_mismatch_only_for_phone_digits() {
        assert!(sender_matches("212610059159", "+212610059159"));
        assert!(!sender_matches("212600000000", "+212610059159"));
        assert!(sender_matches("US.13491208655302741918", "+212610059159"));
    }
}
