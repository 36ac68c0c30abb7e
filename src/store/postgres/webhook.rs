//! The message webhook's records on PostgreSQL (the inbox of signed bodies, unmatched
//! completions, delivery statuses, recorded alerts): the behaviour of `sqlite/webhook.rs`,
//! for several `serve` replicas on one database. Each replica's inbox worker claims the rows
//! it processes (`FOR UPDATE SKIP LOCKED` and a lease), and every event is written so that
//! two replicas applying the same one at once store it once: statuses by their primary key
//! (`ON CONFLICT`), under the lock of their message that the recording of a send takes too;
//! unmatched completions under the lock of the token they claim; alerts under the lock of
//! their reference.

use std::time::Duration;

use postgres::{Row, Transaction};
use serde_json::Value;

use super::flow::{event_seen, response_lock, RESPONSE_COLUMNS};
use super::statuses::apply_status_tx;
use super::types::TimeText;
use super::PgStore;
use crate::phone::Phone;
use crate::store::webhook::sender_e164;
use crate::store::{
    Delivery, InboxRow, Result, StatusInput, StatusOutcome, StatusRecord, StoredResponse,
    WebhookCompletion, WebhookCompletionOutcome, WebhookQueries,
};
use crate::time::Timestamp;

/// Takes the transaction-scoped lock of one message (its wamid), the same lock the recording
/// of that message's send takes (`message_lock` in `tokens.rs`): a status and the send it
/// belongs to, recorded by two replicas at once, are applied one after the other, so the
/// status is either matched at once or joined by the send, never left unmatched.
fn message_lock(
    tx: &mut Transaction<'_>,
    message_id: &str,
) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&message_id],
    )
    .map(drop)
}

/// A status naming its flow token (`biz_opaque_callback_data`) proves the API accepted that
/// message: it settles a send whose answer was lost (a crash, a timeout, a reset), and joins a
/// status that overtook the send's own commit. The recipient must be the token's phone, or the
/// WhatsApp id Meta uses for it (which may differ from the number sent to). The token's row
/// is locked from the read to the write.
fn settle_lost_answer(
    tx: &mut Transaction<'_>,
    token: &str,
    message_id: &str,
    recipient: Option<&str>,
    now: &Timestamp,
) -> std::result::Result<(), postgres::Error> {
    let Some(row) = tx.query_opt(
        "SELECT phone, wa_id FROM tokens
         WHERE token = $1 AND message_id IS NULL AND state IN ('sending', 'unknown')
         FOR UPDATE",
        &[&token],
    )?
    else {
        return Ok(());
    };
    let phone: Phone = row.try_get("phone")?;
    let wa_id: Option<String> = row.try_get("wa_id")?;
    let same = recipient.is_none_or(|r| phone.is_whatsapp_id(r) || wa_id.as_deref() == Some(r));
    if same {
        tx.execute(
            "UPDATE tokens SET state = 'sent', message_id = $2,
                sent_at = COALESCE(sent_at, $3), error_code = NULL,
                error_message = NULL, error_retryable = NULL
             WHERE token = $1",
            &[&token, &message_id, now],
        )?;
    }
    Ok(())
}

/// An inbox row's `(id, processed, error)`.
fn inbox_state(r: &Row) -> std::result::Result<(i64, bool, Option<String>), postgres::Error> {
    Ok((
        r.try_get("id")?,
        r.try_get("processed")?,
        r.try_get("error")?,
    ))
}

/// Reads a [`StatusRecord`] by column name (`matched` is stored as 0/1, as in SQLite).
fn status_record(r: &Row) -> std::result::Result<StatusRecord, postgres::Error> {
    Ok(StatusRecord {
        message_id: r.try_get("message_id")?,
        status: r.try_get("status")?,
        at: r.try_get("at")?,
        recipient: r.try_get("recipient")?,
        error_code: r.try_get("error_code")?,
        error_title: r.try_get("error_title")?,
        matched: r.try_get::<_, i64>("matched")? != 0,
    })
}

/// Reads a token's [`Delivery`] by column name.
fn delivery_of(r: &Row) -> std::result::Result<Delivery, postgres::Error> {
    Ok(Delivery {
        delivery: r.try_get("delivery")?,
        rank: r.try_get("delivery_rank")?,
        at: r.try_get("delivery_at")?,
        error_code: r.try_get("delivery_error_code")?,
        error_title: r.try_get("delivery_error_title")?,
    })
}

/// Records a status in an open transaction: `record_status`'s body.
fn record_status_tx(
    tx: &mut Transaction<'_>,
    s: &StatusInput<'_>,
    now: &Timestamp,
) -> std::result::Result<StatusOutcome, postgres::Error> {
    message_lock(tx, s.message_id)?;
    if let Some(token) = s.callback {
        settle_lost_answer(tx, token, s.message_id, s.recipient, now)?;
    }
    let matched: bool = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM tokens WHERE message_id = $1) AS matched",
            &[&s.message_id],
        )?
        .try_get("matched")?;
    let settle = s.settle.as_ref();
    // The primary key (message, status) decides between two replicas storing the same status.
    let inserted = tx.execute(
        "INSERT INTO message_statuses
            (message_id, status, at, recipient, error_code, error_title, matched, received_at,
             settle_state, settle_retryable, settle_not_before)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (message_id, status) DO NOTHING",
        &[
            &s.message_id,
            &s.status,
            &TimeText(s.at),
            &s.recipient,
            &s.error_code,
            &s.error_title,
            &i64::from(matched),
            now,
            &settle.map(|x| x.state),
            &settle.map(|x| i64::from(x.retryable)),
            &settle.and_then(|x| x.not_before),
        ],
    )?;
    if inserted == 0 {
        return Ok(StatusOutcome::Duplicate);
    }
    if matched {
        apply_status_tx(
            tx,
            s.message_id,
            s.status,
            TimeText(s.at),
            s.error_code,
            s.error_title,
            settle,
        )?;
    }
    Ok(StatusOutcome::Recorded { matched })
}

/// Stores an unmatched completion in an open transaction: `store_unmatched`'s body.
fn store_unmatched_tx(
    tx: &mut Transaction<'_>,
    c: &WebhookCompletion<'_>,
    source: &str,
    now: &Timestamp,
) -> std::result::Result<WebhookCompletionOutcome, postgres::Error> {
    let claimed = c.flow_token.filter(|t| !t.is_empty());
    // Several unmatched completions may claim one token text (Meta's default is "unused"):
    // the first is primary, and the lock keeps two replicas from both taking that place.
    if let Some(t) = claimed {
        response_lock(tx, t)?;
    }
    if event_seen(tx, c.event_id)? {
        return Ok(WebhookCompletionOutcome::Duplicate);
    }
    let first: Option<i64> = match claimed {
        Some(t) => tx
            .query_opt(
                "SELECT id FROM responses WHERE token = $1 AND duplicate_of IS NULL",
                &[&t],
            )?
            .map(|r| r.try_get("id"))
            .transpose()?,
        None => None,
    };
    // A replica storing the same message at this moment (under another claim, or none):
    // the message id decides, and this one is the duplicate.
    let id = tx.query_opt(
        "INSERT INTO responses (token, phone, sender, source, answers, matched,
            sender_mismatch, duplicate_of, event_id, completed_at, received_at)
         VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7, $8, $9)
         ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING
         RETURNING id",
        &[
            &claimed,
            &sender_e164(c.sender),
            &c.sender,
            &source,
            &Value::Object(c.answers.clone()).to_string(),
            &first,
            &c.event_id,
            &TimeText(c.completed_at),
            now,
        ],
    )?;
    Ok(match id {
        Some(row) => WebhookCompletionOutcome::Unmatched {
            id: row.try_get("id")?,
        },
        None => WebhookCompletionOutcome::Duplicate,
    })
}

impl WebhookQueries for PgStore {
    fn insert_inbox(&mut self, body: &[u8]) -> Result<i64> {
        self.value(
            "INSERT INTO webhook_inbox (body, received_at) VALUES ($1, $2) RETURNING id",
            &[&body, &Timestamp::now()],
        )
    }

    /// Rows are claimed in one statement: the oldest claimable ones are locked with `SKIP
    /// LOCKED` (a row another replica is claiming at this instant is left to it) and marked
    /// with this worker's name and lease, by the database's clock (the one every replica
    /// shares).
    fn claim_inbox(
        &mut self,
        worker: &str,
        after: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<InboxRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = lease.as_secs_f64();
        let mut rows = self
            .rows(
                "WITH claimable AS (
                    SELECT id FROM webhook_inbox
                    WHERE processed_at IS NULL AND id > $1
                      AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = $2)
                    ORDER BY id LIMIT $3
                    FOR UPDATE SKIP LOCKED)
                 UPDATE webhook_inbox w
                 SET claimed_by = $2, claimed_until = now() + make_interval(secs => $4)
                 FROM claimable WHERE w.id = claimable.id
                 RETURNING w.id, w.body",
                &[&after, &worker, &limit, &lease],
            )?
            .iter()
            .map(|r| {
                Ok(InboxRow {
                    id: r.try_get("id").map_err(|e| self.err(e))?,
                    body: r.try_get("body").map_err(|e| self.err(e))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING keeps no order.
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    fn finish_inbox(&mut self, id: i64, error: Option<&str>) -> Result<()> {
        self.execute(
            "UPDATE webhook_inbox
             SET processed_at = $2, error = $3, claimed_by = NULL, claimed_until = NULL
             WHERE id = $1",
            &[&id, &Timestamp::now(), &error],
        )
        .map(drop)
    }

    fn inbox_pending_count(&self) -> Result<i64> {
        self.value(
            "SELECT COUNT(*) FROM webhook_inbox WHERE processed_at IS NULL",
            &[],
        )
    }

    fn inbox_rows(&self) -> Result<Vec<(i64, bool, Option<String>)>> {
        self.rows(
            "SELECT id, processed_at IS NOT NULL AS processed, error FROM webhook_inbox ORDER BY id",
            &[],
        )?
        .iter()
        .map(|r| inbox_state(r).map_err(|e| self.err(e)))
        .collect()
    }

    fn store_unmatched(
        &mut self,
        c: &WebhookCompletion<'_>,
        source: &'static str,
    ) -> Result<WebhookCompletionOutcome> {
        let now = Timestamp::now();
        self.write(|tx| store_unmatched_tx(tx, c, source, &now))
    }

    fn record_status(&mut self, s: &StatusInput<'_>) -> Result<StatusOutcome> {
        let now = Timestamp::now();
        self.write(|tx| record_status_tx(tx, s, &now))
    }

    fn record_webhook_event(
        &mut self,
        kind: &str,
        reference: &str,
        token: Option<&str>,
        detail: &Value,
    ) -> Result<bool> {
        let now = Timestamp::now();
        let detail = detail.to_string();
        self.write(|tx| {
            // Once per (kind, reference) with no unique index to say so (events also holds
            // rows without a reference): the lock makes the check and the insert one step for
            // two replicas processing the same body.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('flowctl event ' || $1 || ' ' || $2, 0))",
                &[&kind, &reference],
            )?;
            let seen: bool = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM events WHERE kind = $1 AND reference = $2) AS seen",
                    &[&kind, &reference],
                )?
                .try_get("seen")?;
            if seen {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO events (kind, token, reference, detail, received_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&kind, &token, &reference, &detail, &now],
            )?;
            Ok(true)
        })
    }

    fn statuses_for_message(&self, message_id: &str) -> Result<Vec<StatusRecord>> {
        self.rows(
            "SELECT message_id, status, at, recipient, error_code, error_title, matched
             FROM message_statuses WHERE message_id = $1 ORDER BY seq",
            &[&message_id],
        )?
        .iter()
        .map(|r| status_record(r).map_err(|e| self.err(e)))
        .collect()
    }

    fn delivery(&self, token: &str) -> Result<Option<Delivery>> {
        self.row(
            "SELECT delivery, delivery_rank, delivery_at, delivery_error_code,
                    delivery_error_title
             FROM tokens WHERE token = $1",
            &[&token],
        )?
        .map(|r| delivery_of(&r).map_err(|e| self.err(e)))
        .transpose()
    }

    fn unmatched_responses(&self) -> Result<Vec<StoredResponse>> {
        self.responses(
            &format!("SELECT {RESPONSE_COLUMNS} FROM responses WHERE matched = 0 ORDER BY id"),
            &[],
        )
    }

    fn response_count(&self) -> Result<i64> {
        self.value("SELECT COUNT(*) FROM responses", &[])
    }
}

#[cfg(test)]
mod tests {
    //! Two replicas (two connections, two threads) receiving the same webhook event, or
    //! working through one inbox, at the same instant.

    use std::collections::BTreeSet;

    use serde_json::Map;

    use super::*;
    use crate::store::postgres::flow::tests::{race, raw_token};
    use crate::store::postgres::test_util::temp_database;
    use crate::store::FlowQueries;

    const ROUNDS: usize = 25;

    fn status<'a>(id: &'a str, st: &'a str) -> StatusInput<'a> {
        StatusInput {
            message_id: id,
            status: st,
            at: "2026-01-01T00:00:00.000Z",
            recipient: None,
            error_code: None,
            error_title: None,
            callback: None,
            settle: None,
        }
    }

    #[test]
    fn one_status_received_by_two_replicas_at_once_is_recorded_once() {
        let Some(url) = temp_database("status race") else {
            return;
        };
        let setup = PgStore::open(&url).unwrap();
        for i in 0..ROUNDS {
            let token = format!("flow_st{i}");
            raw_token(&setup, &token);
            setup
                .execute(
                    "UPDATE tokens SET message_id = $2 WHERE token = $1",
                    &[&token, &format!("wamid.st{i}")],
                )
                .unwrap();
        }
        let record = |s: &mut PgStore, i: usize| {
            s.record_status(&status(&format!("wamid.st{i}"), "delivered"))
        };
        for (i, (a, b)) in race(&url, ROUNDS, record, record).into_iter().enumerate() {
            let mut outcomes = [a.unwrap(), b.unwrap()];
            outcomes.sort_by_key(|o| *o == StatusOutcome::Duplicate);
            assert_eq!(
                outcomes,
                [
                    StatusOutcome::Recorded { matched: true },
                    StatusOutcome::Duplicate
                ],
                "round {i}"
            );
            assert_eq!(
                setup
                    .statuses_for_message(&format!("wamid.st{i}"))
                    .unwrap()
                    .len(),
                1
            );
            let d = setup.delivery(&format!("flow_st{i}")).unwrap().unwrap();
            assert_eq!((d.delivery.as_deref(), d.rank), (Some("delivered"), 2));
        }
    }

    #[test]
    fn unmatched_completions_claiming_one_token_at_once_keep_one_primary() {
        let Some(url) = temp_database("unmatched race") else {
            return;
        };
        let store = |event: &'static str| {
            move |s: &mut PgStore, i: usize| {
                s.store_unmatched(
                    &WebhookCompletion {
                        flow_token: Some(&format!("unused{i}")),
                        context_id: None,
                        answers: &Map::new(),
                        sender: Some("212610059159"),
                        event_id: &format!("wamid.{event}{i}"),
                        completed_at: "2026-01-01T00:00:00.000Z",
                    },
                    "webhook",
                )
            }
        };
        let results = race(&url, ROUNDS, store("a"), store("b"));
        let s = PgStore::open(&url).unwrap();
        for (i, (a, b)) in results.into_iter().enumerate() {
            assert!(matches!(
                a.unwrap(),
                WebhookCompletionOutcome::Unmatched { .. }
            ));
            assert!(matches!(
                b.unwrap(),
                WebhookCompletionOutcome::Unmatched { .. }
            ));
            let rows = s
                .responses(
                    &format!("SELECT {RESPONSE_COLUMNS} FROM responses WHERE token = $1"),
                    &[&format!("unused{i}")],
                )
                .unwrap();
            let primaries: Vec<_> = rows.iter().filter(|r| r.duplicate_of.is_none()).collect();
            assert_eq!((rows.len(), primaries.len()), (2, 1), "round {i}");
        }
        // The same message received twice at once: stored once.
        let same = |s: &mut PgStore, i: usize| {
            s.store_unmatched(
                &WebhookCompletion {
                    flow_token: None,
                    context_id: None,
                    answers: &Map::new(),
                    sender: Some("212610059159"),
                    event_id: &format!("wamid.same{i}"),
                    completed_at: "2026-01-01T00:00:00.000Z",
                },
                "webhook",
            )
        };
        let before = s.response_count().unwrap();
        for (i, (a, b)) in race(&url, ROUNDS, same, same).into_iter().enumerate() {
            let outcomes = [a.unwrap(), b.unwrap()];
            let dup = outcomes
                .iter()
                .filter(|o| **o == WebhookCompletionOutcome::Duplicate)
                .count();
            assert_eq!(dup, 1, "round {i}: {outcomes:?}");
        }
        assert_eq!(s.response_count().unwrap(), before + ROUNDS as i64);
    }

    #[test]
    fn one_alert_recorded_by_two_replicas_at_once_is_recorded_once() {
        let Some(url) = temp_database("event race") else {
            return;
        };
        let record = |s: &mut PgStore, i: usize| {
            s.record_webhook_event(
                "flow_alert",
                &format!("inbox:{i}/0"),
                None,
                &serde_json::json!({ "i": i }),
            )
        };
        for (i, (a, b)) in race(&url, ROUNDS, record, record).into_iter().enumerate() {
            assert!(a.unwrap() ^ b.unwrap(), "round {i}: exactly one records it");
        }
        let s = PgStore::open(&url).unwrap();
        assert_eq!(s.events("flow_alert").unwrap().len(), ROUNDS);
    }

    /// Claims and finishes inbox rows as `worker` until none is left; the ids it processed.
    fn work_through(s: &mut PgStore, worker: &str) -> Vec<i64> {
        let mut done = Vec::new();
        loop {
            let rows = s
                .claim_inbox(worker, 0, 7, Duration::from_secs(60))
                .unwrap();
            if rows.is_empty() {
                return done;
            }
            for row in rows {
                s.finish_inbox(row.id, None).unwrap();
                done.push(row.id);
            }
        }
    }

    #[test]
    fn two_replicas_working_through_one_inbox_process_each_row_once() {
        let Some(url) = temp_database("inbox race") else {
            return;
        };
        let mut setup = PgStore::open(&url).unwrap();
        let ids: BTreeSet<i64> = (0..300)
            .map(|i| {
                setup
                    .insert_inbox(format!("{{\"n\":{i}}}").as_bytes())
                    .unwrap()
            })
            .collect();
        let results = race(
            &url,
            1,
            |s, _| work_through(s, "replica-a"),
            |s, _| work_through(s, "replica-b"),
        );
        let (a, b) = results.into_iter().next().unwrap();
        let (sa, sb): (BTreeSet<i64>, BTreeSet<i64>) =
            (a.iter().copied().collect(), b.iter().copied().collect());
        assert_eq!(a.len() + b.len(), ids.len(), "no row processed twice");
        assert!(sa.is_disjoint(&sb));
        assert_eq!(&sa | &sb, ids, "every row processed");
        assert!(!a.is_empty() && !b.is_empty(), "both replicas took part");
        assert_eq!(setup.inbox_pending_count().unwrap(), 0);
    }

    #[test]
    fn a_claimed_row_is_left_to_its_worker_until_its_lease_runs_out() {
        let Some(url) = temp_database("inbox lease") else {
            return;
        };
        let mut a = PgStore::open(&url).unwrap();
        let mut b = PgStore::open(&url).unwrap();
        let first = a.insert_inbox(b"{}").unwrap();
        let second = a.insert_inbox(b"[]").unwrap();
        let lease = Duration::from_secs(60);
        let claimed = a.claim_inbox("a", 0, 1, lease).unwrap();
        assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [first]);
        assert_eq!(claimed[0].body, b"{}");
        // The other replica gets the next row only; the claimer gets its own row again (a
        // retry after an error keeps the order).
        let other = b.claim_inbox("b", 0, 10, lease).unwrap();
        assert_eq!(other.iter().map(|r| r.id).collect::<Vec<_>>(), [second]);
        let again = a.claim_inbox("a", 0, 10, lease).unwrap();
        assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [first]);
        // The claimer dies: once its lease is over, the row is the other's.
        a.execute(
            "UPDATE webhook_inbox SET claimed_until = now() - interval '1 second' WHERE id = $1",
            &[&first],
        )
        .unwrap();
        let taken = b.claim_inbox("b", 0, 10, lease).unwrap();
        assert_eq!(
            taken.iter().map(|r| r.id).collect::<Vec<_>>(),
            [first, second]
        );
        // A finished row is nobody's any more.
        b.finish_inbox(first, Some("unusable")).unwrap();
        a.execute(
            "UPDATE webhook_inbox SET claimed_until = now() - interval '1 second'",
            &[],
        )
        .unwrap();
        let left = a.claim_inbox("a", 0, 10, lease).unwrap();
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [second]);
        assert_eq!(
            a.inbox_rows().unwrap(),
            vec![
                (first, true, Some("unusable".to_string())),
                (second, false, None)
            ]
        );
    }
}
