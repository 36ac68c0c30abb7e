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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::store::Store;

    #[test]
    fn alerts_are_read_after_a_mark_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("a.db")).unwrap();
        assert_eq!(store.last_flow_alert_id().unwrap(), 0);
        let alert =
            |status: &str| json!({"value": {"event": "FLOW_STATUS_CHANGE", "new_status": status}});
        store
            .record_webhook_event("flow_alert", "a", None, &alert("THROTTLED"))
            .unwrap();
        let mark = store.last_flow_alert_id().unwrap();
        store
            .record_webhook_event("webhook_error", "b", None, &json!({}))
            .unwrap();
        store
            .record_webhook_event("flow_alert", "c", None, &alert("PUBLISHED"))
            .unwrap();
        let after = store.flow_alerts_after(mark, 10).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].value["new_status"], "PUBLISHED");
        assert_eq!(store.flow_alerts_after(0, 10).unwrap().len(), 2);
        assert!(store.events("flow_alert").unwrap().len() == 2);
    }
}
