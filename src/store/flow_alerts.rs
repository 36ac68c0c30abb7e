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
