//! Applying delivery statuses to token rows on PostgreSQL: shared by the recording of a send
//! (which joins the statuses that overtook it) and the recording of a status. The behaviour is
//! SQLite's (`apply_status_tx` and `join_early_statuses_tx` in `sqlite/webhook.rs`).

use postgres::Transaction;

use super::types::TimeText;
use crate::store::{delivery_rank, SendState, Settlement};
use crate::time::Timestamp;

/// Moves the delivery state of the token that carries `message_id` forward (sent < delivered
/// < read = played), and lets a `failed` status settle the send as `settle` says, unless the
/// message was already delivered or read. Each change is one conditional UPDATE, so a status
/// applied twice or out of order by two writers never moves the state back.
pub(crate) fn apply_status_tx(
    tx: &mut Transaction<'_>,
    message_id: &str,
    status: &str,
    at: TimeText<'_>,
    error_code: Option<i64>,
    error_title: Option<&str>,
    settle: Option<&Settlement>,
) -> Result<(), postgres::Error> {
    let rank = delivery_rank(status);
    if status == "failed" {
        if let Some(x) = settle {
            tx.execute(
                "UPDATE tokens SET state = $2, error_code = $3, error_message = $4,
                    error_retryable = $5, not_before = $6, failed_after_acceptance = 1
                 WHERE message_id = $1 AND delivery_rank < 2 AND state = 'sent'",
                &[
                    &message_id,
                    &x.state,
                    &error_code,
                    &error_title,
                    &i64::from(x.retryable),
                    &x.not_before,
                ],
            )?;
        }
        tx.execute(
            "UPDATE tokens SET delivery = 'failed', delivery_rank = GREATEST(delivery_rank, 1),
                delivery_at = $2, delivery_error_code = $3, delivery_error_title = $4
             WHERE message_id = $1 AND delivery_rank < 2",
            &[&message_id, &at, &error_code, &error_title],
        )?;
    } else if rank > 0 {
        let status = if status == "played" { "read" } else { status };
        tx.execute(
            "UPDATE tokens SET delivery = $2, delivery_rank = $3, delivery_at = $4
             WHERE message_id = $1 AND delivery_rank < $3",
            &[&message_id, &status, &rank, &at],
        )?;
    }
    Ok(())
}

/// Applies the statuses of `message_id` that arrived before its send was recorded (they are
/// stored unmatched), in the order of their times, and marks them matched. Called in the
/// transaction that records the send, under the message's lock
/// ([`message_lock`](super::tokens::message_lock)).
///
/// SQLite breaks ties of one time by arrival (rowid); here the time of receipt does, then the
/// status.
pub(crate) fn join_early_statuses_tx(
    tx: &mut Transaction<'_>,
    message_id: &str,
) -> Result<(), postgres::Error> {
    let rows = tx.query(
        "SELECT status, at, error_code, error_title, settle_state, settle_retryable,
                settle_not_before
         FROM message_statuses WHERE message_id = $1 AND matched = 0
         ORDER BY at, received_at, status",
        &[&message_id],
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    for r in &rows {
        let state: Option<SendState> = r.try_get("settle_state")?;
        let settle = match state {
            Some(state) => Some(Settlement {
                state,
                retryable: r
                    .try_get::<_, Option<i64>>("settle_retryable")?
                    .is_some_and(|v| v != 0),
                not_before: r.try_get::<_, Option<Timestamp>>("settle_not_before")?,
            }),
            None => None,
        };
        let status: String = r.try_get("status")?;
        let at: String = r.try_get("at")?;
        let code: Option<i64> = r.try_get("error_code")?;
        let title: Option<String> = r.try_get("error_title")?;
        apply_status_tx(
            tx,
            message_id,
            &status,
            TimeText(&at),
            code,
            title.as_deref(),
            settle.as_ref(),
        )?;
    }
    tx.execute(
        "UPDATE message_statuses SET matched = 1 WHERE message_id = $1 AND matched = 0",
        &[&message_id],
    )?;
    Ok(())
}
