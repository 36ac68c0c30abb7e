//! The suppression list on PostgreSQL (table `suppressions`): the behaviour of
//! `sqlite/suppressions.rs`. The key is the primary key, so two writers suppressing one person
//! at once keep one entry, the first committed.

use postgres::{Row, Transaction};

use super::PgStore;
use crate::phone::Phone;
use crate::store::{suppression_key, Result, Suppression, SuppressionQueries};
use crate::time::Timestamp;

fn suppression_of(r: &Row) -> std::result::Result<Suppression, postgres::Error> {
    Ok(Suppression {
        phone: r.try_get("phone")?,
        reason: r.try_get("reason")?,
        source: r.try_get("source")?,
        at: r.try_get("at")?,
    })
}

/// Suppresses `phone` inside a transaction already open (the 131050 refusal is recorded in
/// the same commit as the send's outcome); the number of entries added (0 or 1).
pub(crate) fn suppress_tx(
    tx: &mut Transaction<'_>,
    phone: &str,
    reason: &str,
    source: &str,
) -> std::result::Result<u64, postgres::Error> {
    tx.execute(
        "INSERT INTO suppressions (key, phone, reason, source, at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key) DO NOTHING",
        &[
            &suppression_key(phone),
            &phone,
            &reason,
            &source,
            &Timestamp::now(),
        ],
    )
}

/// The entries a query selecting `phone, reason, source, at` returns.
fn suppression_rows(
    store: &PgStore,
    sql: &str,
    params: super::Params<'_>,
) -> Result<Vec<Suppression>> {
    store
        .rows(sql, params)?
        .iter()
        .map(|r| suppression_of(r).map_err(|e| store.err(e)))
        .collect()
}

impl SuppressionQueries for PgStore {
    fn suppress(&mut self, phone: &str, reason: &str, source: &str) -> Result<bool> {
        self.write(|tx| suppress_tx(tx, phone, reason, source))
            .map(|n| n == 1)
    }

    fn unsuppress(&mut self, phone: &str) -> Result<bool> {
        self.execute(
            "DELETE FROM suppressions WHERE key = $1",
            &[&suppression_key(phone)],
        )
        .map(|n| n > 0)
    }

    fn suppression(&self, phone: &str) -> Result<Option<Suppression>> {
        Ok(suppression_rows(
            self,
            "SELECT phone, reason, source, at FROM suppressions WHERE key = $1",
            &[&suppression_key(phone)],
        )?
        .pop())
    }

    fn suppressed_among(&self, phones: &[Phone]) -> Result<Vec<bool>> {
        if phones.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for the whole chunk: the keys as one array parameter.
        let keys: Vec<String> = phones.iter().map(|p| suppression_key(p.e164())).collect();
        let found: std::collections::HashSet<String> = self
            .rows("SELECT key FROM suppressions WHERE key = ANY($1)", &[&keys])?
            .iter()
            .map(|r| r.try_get("key").map_err(|e| self.err(e)))
            .collect::<Result<_>>()?;
        Ok(keys.iter().map(|k| found.contains(k)).collect())
    }

    fn suppressions(&self) -> Result<Vec<Suppression>> {
        // Byte order for the key, as SQLite compares text (whatever the database's collation).
        suppression_rows(
            self,
            "SELECT phone, reason, source, at FROM suppressions ORDER BY at, key COLLATE \"C\"",
            &[],
        )
    }
}
