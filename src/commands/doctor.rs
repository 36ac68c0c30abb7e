//! `flowctl doctor`: every check at once, one line each, or `--json`; exit 1 when any fails.

use std::io::{IsTerminal, Write};

use super::exit;
use crate::cli::DoctorArgs;

/// Runs every check and prints the report on stdout.
pub async fn run(db: &crate::store::DbTarget, args: &DoctorArgs) -> anyhow::Result<i32> {
    let settings = args.resolve_all(db);
    let checks = crate::doctor::run(&settings).await;
    let text = if args.json {
        format!("{}\n", crate::doctor::to_json(&checks))
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        crate::doctor::to_text(&checks, color)
    };
    // Whatever a Graph answer echoed, no secret read so far is printed.
    let text = crate::secret::redact(&text);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(if crate::doctor::failed(&checks) {
        exit::FAILED
    } else {
        exit::OK
    })
}
