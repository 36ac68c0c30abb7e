//! The Flow alerts `serve` records from Meta's `flows` webhook field, read back by `bulk`
//! while it runs (the database is the channel between the two processes).

use serde_json::Value;

use super::Result;

/// One recorded `flows` event (an `events` row of kind `flow_alert`).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowAlert {
    /// The row id: alerts are read in this order, and a reader resumes after the last one.
    pub id: i64,
    /// The change's `value` as Meta sent it (`event`, `flow_id`, `old_status`,
    /// `new_status`, `message`, …).
    pub value: Value,
}

/// Reading the recorded Flow alerts.
pub trait FlowAlertQueries {
    /// The id of the latest recorded alert (0 when there is none): a run watches what
    /// arrives after it.
    fn last_flow_alert_id(&self) -> Result<i64>;

    /// The alerts recorded after `after`, oldest first, at most `limit`.
    fn flow_alerts_after(&self, after: i64, limit: usize) -> Result<Vec<FlowAlert>>;
}

/// The behaviour of every backend, run on each ([`each_backend`](crate::store::test_util)).
#[cfg(test)]
mod backend_tests {
    use serde_json::json;

    use crate::store::test_util::each_backend;

    #[test]
    fn alerts_are_read_after_a_mark_in_order() {
        each_backend("flow alerts", |store| {
            assert_eq!(store.last_flow_alert_id().unwrap(), 0);
            let alert = |status: &str| json!({"value": {"event": "FLOW_STATUS_CHANGE", "new_status": status}});
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
        });
    }
}
