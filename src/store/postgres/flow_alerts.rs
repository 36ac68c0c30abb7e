//! Reads of the `flow_alert` rows of `events` on PostgreSQL (see [`FlowAlertQueries`]): the
//! behaviour of `sqlite/flow_alerts.rs`.

use serde_json::Value;

use super::PgStore;
use crate::store::{FlowAlert, FlowAlertQueries, Result};

impl FlowAlertQueries for PgStore {
    fn last_flow_alert_id(&self) -> Result<i64> {
        self.value(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE kind = 'flow_alert'",
            &[],
        )
    }

    fn flow_alerts_after(&self, after: i64, limit: usize) -> Result<Vec<FlowAlert>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "SELECT id, detail FROM events WHERE kind = 'flow_alert' AND id > $1
             ORDER BY id LIMIT $2",
            &[&after, &limit],
        )?
        .iter()
        .map(|r| {
            let id: i64 = r.try_get("id").map_err(|e| self.err(e))?;
            let detail: String = r.try_get("detail").map_err(|e| self.err(e))?;
            // Kept as `{"waba_id", "time", "value"}` by the inbox; the value is the event.
            let detail: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
            Ok(FlowAlert {
                id,
                value: detail.get("value").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::postgres::test_util::temp_store;

    /// The alert rows as the inbox writes them (plain SQL: the webhook area is tested on
    /// its own).
    fn record(s: &PgStore, kind: &str, detail: &Value) {
        s.execute(
            "INSERT INTO events (kind, detail, received_at) VALUES ($1, $2, '2026-01-01T00:00:00.000Z')",
            &[&kind, &detail.to_string()],
        )
        .unwrap();
    }

    #[test]
    fn alerts_are_read_after_a_mark_in_order() {
        let Some(s) = temp_store("flow alerts") else {
            return;
        };
        assert_eq!(s.last_flow_alert_id().unwrap(), 0);
        let alert =
            |status: &str| json!({"value": {"event": "FLOW_STATUS_CHANGE", "new_status": status}});
        record(&s, "flow_alert", &alert("THROTTLED"));
        let mark = s.last_flow_alert_id().unwrap();
        assert!(mark > 0);
        record(&s, "webhook_error", &json!({}));
        record(&s, "flow_alert", &alert("PUBLISHED"));
        record(&s, "flow_alert", &alert("BLOCKED"));
        let after = s.flow_alerts_after(mark, 10).unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].value["new_status"], "PUBLISHED");
        assert_eq!(after[1].value["new_status"], "BLOCKED");
        assert!(after[0].id < after[1].id);
        assert_eq!(s.flow_alerts_after(0, 10).unwrap().len(), 3);
        assert_eq!(s.flow_alerts_after(0, 1).unwrap().len(), 1);
        assert_eq!(s.flow_alerts_after(0, usize::MAX).unwrap().len(), 3);
    }
}
