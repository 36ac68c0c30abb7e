//! `flowctl report`: the campaign report as one self-contained HTML file, read from the
//! store opened read-only (like `export` and `stats`). See [`crate::report`].

use std::io::Write as _;

use anyhow::Context as _;

use super::{exit, UsageError};
use crate::atomic_file::{AtomicFile, Mode};
use crate::cli::ReportArgs;
use crate::report::{Options, Questions};

/// Runs `flowctl report`: prints the path of the file written.
pub fn run(db: &crate::store::DbTarget, args: &ReportArgs) -> anyhow::Result<i32> {
    let questions = match &args.flow_json {
        Some(path) => Some(
            Questions::load(path)
                .map_err(|e| UsageError(format!("--flow-json {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let store = super::open_db_read_only(db)?;
    if let Some(name) = &args.campaign {
        if store.funnel(Some(name))?.campaigns.is_empty() {
            return Err(
                UsageError(format!("--campaign {name}: no such campaign in {}", db)).into(),
            );
        }
    }
    let out = &args.out;
    let cannot = |e: &dyn std::fmt::Display| {
        UsageError(format!("cannot write --out {}: {e}", out.display()))
    };
    if out.is_dir() {
        return Err(cannot(&"it is a directory").into());
    }
    // Owner-only for a new file: the report names people and their answers.
    let mut file =
        AtomicFile::create(out, ".flowctl-report-", Mode::KeepExisting).map_err(|e| {
            match e.io_error() {
                Some(io) => cannot(io),
                None => cannot(&e),
            }
        })?;
    let opts = Options {
        questions: questions.as_ref(),
        show_phones: args.show_phones,
    };
    let html = crate::report::render(&store, args.campaign.as_deref(), opts)?;
    file.write_all(html.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    file.commit()?;
    println!("{}", out.display());
    Ok(exit::OK)
}
