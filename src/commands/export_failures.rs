//! `export --failures`: the sends that did not reach their recipient, so that an operator can
//! see who was not messaged and why — refused by the API, failed after Meta accepted them (a
//! `failed` status on the webhook: 131047 outside the 24-hour window, 131026 undeliverable, …),
//! deferred by a per-user limit (131049, until `not_before`), or of unknown outcome.
//!
//! CSV columns: `flow_token,phone_number,customer_name,campaign,state,stage,error_code,error,
//! not_before,message_id,created_at` (text cells escaped against spreadsheet formulas, the
//! phone never altered); JSON and NDJSON carry the same fields.

use std::io::Write;

use super::{escape_formula, ExportFormat, Sink};
use crate::store::{FailedSend, Store};

/// The CSV header.
pub const COLUMNS: [&str; 11] = [
    "flow_token",
    "phone_number",
    "customer_name",
    "campaign",
    "state",
    "stage",
    "error_code",
    "error",
    "not_before",
    "message_id",
    "created_at",
];

/// Writes the failed sends of `campaign` (all campaigns when `None`) to `sink`.
pub fn write(
    store: &Store,
    campaign: Option<&str>,
    format: ExportFormat,
    bom: bool,
    mut sink: Sink,
) -> anyhow::Result<()> {
    let rows = store.failed_sends(campaign)?;
    match format {
        ExportFormat::Csv => {
            if bom {
                sink.write_all("\u{feff}".as_bytes())?;
            }
            let mut out = csv::Writer::from_writer(&mut sink);
            out.write_record(COLUMNS)?;
            for r in &rows {
                out.write_record(cells(r))?;
            }
            out.flush()?;
        }
        ExportFormat::Json => {
            serde_json::to_writer(&mut sink, &rows)?;
            sink.write_all(b"\n")?;
        }
        ExportFormat::Ndjson => {
            for r in &rows {
                serde_json::to_writer(&mut sink, r)?;
                sink.write_all(b"\n")?;
            }
        }
    }
    sink.commit()
}

fn cells(r: &FailedSend) -> [String; 11] {
    let text = |v: Option<&str>| escape_formula(v.unwrap_or("")).into_owned();
    [
        r.flow_token.clone(),
        r.phone_number.e164().to_string(),
        text(r.customer_name.as_deref()),
        text(Some(&r.campaign)),
        r.state.as_str().to_string(),
        r.stage.to_string(),
        r.error_code.map(|c| c.to_string()).unwrap_or_default(),
        text(r.error.as_deref()),
        r.not_before.map(|t| t.to_string()).unwrap_or_default(),
        r.message_id.clone().unwrap_or_default(),
        r.created_at.to_string(),
    ]
}
