//! The suppression list's SQL (table `suppressions`, migration 0004).

use rusqlite::params;

use super::SqliteStore;
use crate::phone::Phone;
use crate::store::{suppression_key, Result, Suppression, SuppressionQueries};
use crate::time::Timestamp;

fn suppression_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Suppression> {
    Ok(Suppression {
        phone: r.get("phone")?,
        reason: r.get("reason")?,
        source: r.get("source")?,
        at: r.get("at")?,
    })
}

/// Suppresses `phone` inside a transaction already open (the 131050 refusal is recorded in
/// the same commit as the send's outcome).
pub(crate) fn suppress_tx(
    tx: &rusqlite::Connection,
    phone: &str,
    reason: &str,
    source: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT OR IGNORE INTO suppressions (key, phone, reason, source, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            suppression_key(phone),
            phone,
            reason,
            source,
            Timestamp::now()
        ],
    )
}

impl SuppressionQueries for SqliteStore {
    fn suppress(&mut self, phone: &str, reason: &str, source: &str) -> Result<bool> {
        self.write(|tx| suppress_tx(tx, phone, reason, source))
            .map(|n| n == 1)
    }

    fn unsuppress(&mut self, phone: &str) -> Result<bool> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM suppressions WHERE key = ?1",
                [suppression_key(phone)],
            )
        })
        .map(|n| n > 0)
    }

    fn suppression(&self, phone: &str) -> Result<Option<Suppression>> {
        self.row(
            "SELECT phone, reason, source, at FROM suppressions WHERE key = ?1",
            [suppression_key(phone)],
            suppression_of,
        )
    }

    fn suppressed_among(&self, phones: &[Phone]) -> Result<Vec<bool>> {
        if phones.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for the whole chunk: the keys as a JSON array, unpacked by SQLite.
        let keys: Vec<String> = phones.iter().map(|p| suppression_key(p.e164())).collect();
        let json = serde_json::to_string(&keys)?;
        let found: std::collections::HashSet<String> = self
            .rows(
                "SELECT key FROM suppressions WHERE key IN (SELECT value FROM json_each(?1))",
                [json],
                |r| r.get("key"),
            )?
            .into_iter()
            .collect();
        Ok(keys.iter().map(|k| found.contains(k)).collect())
    }

    fn suppressions(&self) -> Result<Vec<Suppression>> {
        self.rows(
            "SELECT phone, reason, source, at FROM suppressions ORDER BY at, key",
            [],
            suppression_of,
        )
    }
}
