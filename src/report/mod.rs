//! The campaign report: the funnel, completions over time, one chart per question and the
//! most recent responses, as one self-contained HTML page (inline CSS and SVG, no script, no
//! network). `flowctl report` writes it to a file; `serve` shows the same sections live under
//! `/ui`.
//!
//! - [`collect`] reads a campaign in one streaming pass with bounded memory;
//! - [`flow`] takes question labels and option titles from a Flow JSON;
//! - [`svg`] draws the charts; [`html`] renders the pages with `maud`, which escapes every
//!   value (answers are attacker-controlled text).

pub mod collect;
pub mod flow;
pub mod html;
pub mod svg;

pub use collect::{collect, CampaignData};
pub use flow::{Question, QuestionKind, Questions};
pub use html::Options;

use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// Reads the campaigns of `store` (all, or only `campaign`) and renders the report file.
pub fn render(
    store: &Store,
    campaign: Option<&str>,
    opts: Options<'_>,
) -> Result<String, StoreError> {
    let campaigns = collect(store, campaign)?;
    Ok(html::document(&campaigns, Timestamp::now(), opts).into_string())
}
