//! The data endpoint's records on PostgreSQL (answers merged screen by screen, completions,
//! events): the behaviour of `sqlite/flow.rs`. Several `serve` replicas may receive the same
//! completion at once (Meta retries a webhook, the endpoint and the webhook race): a
//! completion takes its token's lock ([`response_lock`]) before reading what decides its
//! write, so one of them is the primary response and the other finds it.

use postgres::{Row, Transaction};
use serde_json::{Map, Value};

use super::types::{JsonObject, TimeText};
use super::PgStore;
use crate::phone::Phone;
use crate::store::flow::sender_matches;
use crate::store::{Completion, CompletionInput, FlowQueries, Result, StoredResponse};
use crate::time::Timestamp;

/// The columns of a [`StoredResponse`], for a SELECT list read by [`stored_response`].
pub(crate) const RESPONSE_COLUMNS: &str = "id, token, phone, sender, customer_name, campaign, \
    source, answers, matched, sender_mismatch, duplicate_of, completed_at";

/// Reads a [`StoredResponse`] from a row holding [`RESPONSE_COLUMNS`], by column name. Flags
/// are stored as 0/1 integers, as in SQLite.
pub(crate) fn stored_response(r: &Row) -> std::result::Result<StoredResponse, postgres::Error> {
    Ok(StoredResponse {
        id: r.try_get("id")?,
        token: r.try_get("token")?,
        phone: r.try_get("phone")?,
        sender: r.try_get("sender")?,
        customer_name: r.try_get("customer_name")?,
        campaign: r.try_get("campaign")?,
        source: r.try_get("source")?,
        answers: r.try_get::<_, JsonObject>("answers")?.0,
        matched: r.try_get::<_, i64>("matched")? != 0,
        sender_mismatch: r.try_get::<_, i64>("sender_mismatch")? != 0,
        duplicate_of: r.try_get("duplicate_of")?,
        completed_at: r.try_get("completed_at")?,
    })
}

/// Serialises, until the commit, everything that decides which response of a token text is
/// the primary one: a completion joined to that token, or an unmatched completion claiming
/// that text. Without it, two replicas storing completions of one token at once would both
/// find no primary (READ COMMITTED does not see the other's uncommitted row), and the loser
/// would fail on the unique index instead of being kept as a duplicate.
pub(crate) fn response_lock(
    tx: &mut Transaction<'_>,
    token: &str,
) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('flowctl response ' || $1, 0))",
        &[&token],
    )
    .map(drop)
}

/// True when a response already carries this webhook message id.
pub(crate) fn event_seen(
    tx: &mut Transaction<'_>,
    event_id: &str,
) -> std::result::Result<bool, postgres::Error> {
    tx.query_one(
        "SELECT EXISTS(SELECT 1 FROM responses WHERE event_id = $1) AS seen",
        &[&event_id],
    )?
    .try_get("seen")
}

/// A JSON object as stored (text, keys in their order).
fn json_text(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

impl PgStore {
    /// The responses a query returns.
    pub(crate) fn responses(
        &self,
        sql: &str,
        params: super::Params<'_>,
    ) -> Result<Vec<StoredResponse>> {
        self.rows(sql, params)?
            .iter()
            .map(|r| stored_response(r).map_err(|e| self.err(e)))
            .collect()
    }
}

/// Stores a completion in an open transaction: `complete`'s body, under the token's lock.
fn complete_tx(
    tx: &mut Transaction<'_>,
    c: &CompletionInput<'_>,
    now: &Timestamp,
) -> std::result::Result<Completion, postgres::Error> {
    response_lock(tx, c.token)?;
    if let Some(ev) = c.event_id {
        if event_seen(tx, ev)? {
            return Ok(Completion::AlreadyCompleted);
        }
    }
    let Some(token) = tx.query_opt(
        "SELECT phone, customer_name, campaign, wa_id, flow_answers FROM tokens WHERE token = $1",
        &[&c.token],
    )?
    else {
        return Ok(Completion::UnknownToken);
    };
    let phone: Phone = token.try_get("phone")?;
    let name: Option<String> = token.try_get("customer_name")?;
    let campaign: String = token.try_get("campaign")?;
    let wa_id: Option<String> = token.try_get("wa_id")?;
    let collected: Option<JsonObject> = token.try_get("flow_answers")?;
    // What the data endpoint collected on earlier screens is part of the answers of a
    // completion that arrives by webhook (its `response_json` carries only what the last
    // screen sent, or the SUCCESS params): the union is kept, the newer value winning for a
    // key given twice.
    let mut union = collected.map(|j| j.0).unwrap_or_default();
    union.extend(c.answers.iter().map(|(k, v)| (k.clone(), v.clone())));
    let primary = tx.query_opt(
        "SELECT id, source FROM responses WHERE token = $1 AND duplicate_of IS NULL",
        &[&c.token],
    )?;
    let mismatch = i64::from(
        c.sender
            .is_some_and(|s| !sender_matches(s, &phone, wa_id.as_deref())),
    );
    let completed_at = TimeText(c.completed_at);
    let Some(primary) = primary else {
        // `ON CONFLICT` on the message id only: a primary for this token cannot appear
        // meanwhile (the lock), while the same message may be stored under another join by a
        // replica that processed it before its send was recorded.
        let id = tx.query_opt(
            "INSERT INTO responses (token, phone, sender, customer_name, campaign, source, answers,
                matched, sender_mismatch, event_id, completed_at, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11)
             ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING
             RETURNING id",
            &[
                &c.token,
                &phone,
                &c.sender,
                &name,
                &campaign,
                &c.source,
                &json_text(&union),
                &mismatch,
                &c.event_id,
                &completed_at,
                now,
            ],
        )?;
        let Some(id) = id else {
            return Ok(Completion::AlreadyCompleted);
        };
        tx.execute(
            "UPDATE tokens SET completed_at = COALESCE(completed_at, $2) WHERE token = $1",
            &[&c.token, &completed_at],
        )?;
        return Ok(Completion::Stored(id.try_get("id")?));
    };
    let id: i64 = primary.try_get("id")?;
    let source: String = primary.try_get("source")?;
    // A replay from the same path without an event id (the data endpoint) is the same
    // completion again. A webhook message with a new id is a second completion: kept as a
    // duplicate row, never silently dropped.
    if source == c.source && c.event_id.is_none() {
        return Ok(Completion::AlreadyCompleted);
    }
    let inserted = tx.execute(
        "INSERT INTO responses (token, phone, sender, customer_name, campaign, source, answers,
            matched, sender_mismatch, duplicate_of, event_id, completed_at, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11, $12)
         ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING",
        &[
            &c.token,
            &phone,
            &c.sender,
            &name,
            &campaign,
            &c.source,
            &json_text(c.answers),
            &mismatch,
            &id,
            &c.event_id,
            &completed_at,
            now,
        ],
    )?;
    if inserted == 0 {
        return Ok(Completion::AlreadyCompleted);
    }
    if let Some(sender) = c.sender {
        tx.execute(
            "UPDATE responses SET sender = COALESCE(sender, $2), sender_mismatch = $3 WHERE id = $1",
            &[&id, &sender, &mismatch],
        )?;
    }
    // The other path's answers join the primary's: keys it lacks are added, its own values
    // kept (both rows stay as they came). The primary's row is locked for this
    // read-then-write.
    let answers: Option<JsonObject> = tx
        .query_one(
            "SELECT answers FROM responses WHERE id = $1 FOR UPDATE",
            &[&id],
        )?
        .try_get("answers")?;
    let mut merged = answers.map(|j| j.0).unwrap_or_default();
    let before = merged.len();
    for (k, v) in &union {
        merged.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if merged.len() != before {
        tx.execute(
            "UPDATE responses SET answers = $2 WHERE id = $1",
            &[&id, &json_text(&merged)],
        )?;
    }
    Ok(Completion::AlreadyCompleted)
}

impl FlowQueries for PgStore {
    fn merge_screen_answers(
        &mut self,
        token: &str,
        screen: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.write(|tx| {
            // The token's row is locked from the read to the write: two screens of one token
            // received by two replicas at once both keep their answers.
            let current: Option<JsonObject> = match tx.query_opt(
                "SELECT flow_answers FROM tokens WHERE token = $1 FOR UPDATE",
                &[&token],
            )? {
                Some(row) => row.try_get("flow_answers")?,
                None => None,
            };
            let mut merged = current.map(|j| j.0).unwrap_or_default();
            for (k, v) in data {
                merged.insert(k.clone(), v.clone());
            }
            tx.execute(
                "UPDATE tokens SET flow_answers = $2, flow_screen = COALESCE($3, flow_screen)
                 WHERE token = $1",
                &[&token, &json_text(&merged), &screen],
            )?;
            Ok(merged)
        })
    }

    fn complete(&mut self, c: &CompletionInput<'_>) -> Result<Completion> {
        let now = Timestamp::now();
        self.write(|tx| complete_tx(tx, c, &now))
    }

    fn record_event(
        &mut self,
        kind: &str,
        token: Option<&str>,
        reference: Option<&str>,
        detail: &Value,
    ) -> Result<i64> {
        self.value(
            "INSERT INTO events (kind, token, reference, detail, received_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &kind,
                &token,
                &reference,
                &detail.to_string(),
                &Timestamp::now(),
            ],
        )
    }

    fn events(&self, kind: &str) -> Result<Vec<(Option<String>, Value)>> {
        self.rows(
            "SELECT token, detail FROM events WHERE kind = $1 ORDER BY id",
            &[&kind],
        )?
        .iter()
        .map(|r| {
            let token: Option<String> = r.try_get("token").map_err(|e| self.err(e))?;
            let detail: String = r.try_get("detail").map_err(|e| self.err(e))?;
            let detail = serde_json::from_str(&detail).unwrap_or(Value::String(detail));
            Ok((token, detail))
        })
        .collect()
    }

    fn responses_for_token(&self, token: &str) -> Result<Vec<StoredResponse>> {
        self.responses(
            &format!(
                "SELECT {RESPONSE_COLUMNS} FROM responses WHERE token = $1
                 ORDER BY duplicate_of IS NOT NULL, id"
            ),
            &[&token],
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! What SQLite's single writer gives for free and PostgreSQL must earn: two replicas (two
    //! connections, two threads) doing the same thing at the same instant.

    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::store::postgres::test_util::temp_database;
    use crate::store::target::PgUrl;
    use crate::store::WebhookQueries;

    /// Inserts a sent token for +212610059159 with plain SQL (the token queries are not the
    /// subject here).
    pub(crate) fn raw_token(s: &PgStore, token: &str) {
        s.execute(
            "INSERT INTO tokens (token, phone, campaign, origin, state, created_at, expires_at)
             VALUES ($1, '+212610059159', 'c', 'send', 'sent', $2, $2)",
            &[&token, &Timestamp::now()],
        )
        .unwrap();
    }

    /// Runs `a` and `b` at the same instant, each on its own connection to `url`, `rounds`
    /// times (round `i` given to both); their results, round by round.
    pub(crate) fn race<A, B>(
        url: &PgUrl,
        rounds: usize,
        a: impl Fn(&mut PgStore, usize) -> A + Send + 'static,
        b: impl Fn(&mut PgStore, usize) -> B + Send + 'static,
    ) -> Vec<(A, B)>
    where
        A: Send + 'static,
        B: Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(2));
        let ta = side(url.clone(), rounds, barrier.clone(), a);
        let tb = side(url.clone(), rounds, barrier, b);
        let ra = ta.join().unwrap();
        let rb = tb.join().unwrap();
        ra.into_iter().zip(rb).collect()
    }

    /// One side of a [`race`]: its own connection, waiting for the other at every round.
    fn side<T: Send + 'static>(
        url: PgUrl,
        rounds: usize,
        barrier: Arc<Barrier>,
        f: impl Fn(&mut PgStore, usize) -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Vec<T>> {
        std::thread::spawn(move || {
            let mut s = PgStore::open(&url).unwrap();
            (0..rounds)
                .map(|i| {
                    barrier.wait();
                    f(&mut s, i)
                })
                .collect()
        })
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const ROUNDS: usize = 25;

    #[test]
    fn the_endpoint_and_the_webhook_completing_one_token_at_once_store_one_primary() {
        let Some(url) = temp_database("completion race") else {
            return;
        };
        let setup = PgStore::open(&url).unwrap();
        for i in 0..ROUNDS {
            raw_token(&setup, &format!("flow_race{i}"));
        }
        let answers = obj(serde_json::json!({"q1": "5"}));
        let (a1, a2) = (answers.clone(), answers);
        let results = race(
            &url,
            ROUNDS,
            move |s, i| {
                s.complete(&CompletionInput {
                    token: &format!("flow_race{i}"),
                    answers: &a1,
                    source: "endpoint",
                    sender: None,
                    event_id: None,
                    completed_at: "2026-01-01T00:00:00.000Z",
                })
            },
            move |s, i| {
                s.complete(&CompletionInput {
                    token: &format!("flow_race{i}"),
                    answers: &a2,
                    source: "webhook",
                    sender: Some("212610059159"),
                    event_id: Some(&format!("wamid.race{i}")),
                    completed_at: "2026-01-01T00:00:00.000Z",
                })
            },
        );
        for (i, (a, b)) in results.into_iter().enumerate() {
            let outcomes = [a.unwrap(), b.unwrap()];
            let stored = outcomes
                .iter()
                .filter(|o| matches!(o, Completion::Stored(_)))
                .count();
            assert_eq!(stored, 1, "round {i}: {outcomes:?}");
            let rows = setup.responses_for_token(&format!("flow_race{i}")).unwrap();
            assert_eq!(rows.len(), 2, "round {i}: both kept");
            assert_eq!(rows.iter().filter(|r| r.duplicate_of.is_none()).count(), 1);
        }
    }

    #[test]
    fn one_webhook_message_completed_by_two_replicas_at_once_is_stored_once() {
        let Some(url) = temp_database("same event race") else {
            return;
        };
        let setup = PgStore::open(&url).unwrap();
        for i in 0..ROUNDS {
            raw_token(&setup, &format!("flow_same{i}"));
        }
        let complete = |s: &mut PgStore, i: usize| {
            s.complete(&CompletionInput {
                token: &format!("flow_same{i}"),
                answers: &Map::new(),
                source: "webhook",
                sender: Some("212610059159"),
                event_id: Some(&format!("wamid.same{i}")),
                completed_at: "2026-01-01T00:00:00.000Z",
            })
        };
        for (i, (a, b)) in race(&url, ROUNDS, complete, complete)
            .into_iter()
            .enumerate()
        {
            let mut outcomes = [a.unwrap(), b.unwrap()];
            outcomes.sort_by_key(|o| matches!(o, Completion::Stored(_)));
            assert!(
                matches!(
                    outcomes,
                    [Completion::AlreadyCompleted, Completion::Stored(_)]
                ),
                "round {i}: {outcomes:?}"
            );
        }
        assert_eq!(setup.response_count().unwrap(), ROUNDS as i64);
    }

    #[test]
    fn two_screens_of_one_token_merged_at_once_both_keep_their_answers() {
        let Some(url) = temp_database("merge race") else {
            return;
        };
        let setup = PgStore::open(&url).unwrap();
        for i in 0..ROUNDS {
            raw_token(&setup, &format!("flow_merge{i}"));
        }
        let merge = |key: &'static str| {
            move |s: &mut PgStore, i: usize| {
                s.merge_screen_answers(
                    &format!("flow_merge{i}"),
                    Some(key),
                    &obj(serde_json::json!({ key: i })),
                )
            }
        };
        for (i, (a, b)) in race(&url, ROUNDS, merge("A"), merge("B"))
            .into_iter()
            .enumerate()
        {
            let (a, b) = (a.unwrap(), b.unwrap());
            // The one merged last saw the other's answers.
            assert_eq!(a.len().max(b.len()), 2, "round {i}");
            let row = setup
                .row(
                    "SELECT flow_answers FROM tokens WHERE token = $1",
                    &[&format!("flow_merge{i}")],
                )
                .unwrap()
                .unwrap();
            let stored: JsonObject = row.try_get("flow_answers").unwrap();
            assert_eq!(
                stored.0,
                obj(serde_json::json!({"A": i, "B": i})),
                "round {i}"
            );
        }
    }
}
