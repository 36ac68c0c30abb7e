//! Reads of the `flow_alert` rows of `events` (see [`FlowAlertQueries`]).

use serde_json::Value;

use super::SqliteStore;
use crate::store::{FlowAlert, FlowAlertQueries, Result};

impl FlowAlertQueries for SqliteStore {
    fn last_flow_alert_id(&self) -> Result<i64> {
        self.value(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE kind = 'flow_alert'",
            [],
        )
    }

    fn flow_alerts_after(&self, after: i64, limit: usize) -> Result<Vec<FlowAlert>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "SELECT id, detail FROM events WHERE kind = 'flow_alert' AND id > ?1
             ORDER BY id LIMIT ?2",
            rusqlite::params![after, limit],
            |r| {
                let detail: String = r.get("detail")?;
                // Kept as `{"waba_id", "time", "value"}` by the inbox; the value is the event.
                let detail: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
                Ok(FlowAlert {
                    id: r.get("id")?,
                    value: detail.get("value").cloned().unwrap_or(Value::Null),
                })
            },
        )
    }
}
