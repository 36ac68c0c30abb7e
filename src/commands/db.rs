//! `flowctl db migrate-to URL`: moves a SQLite database into PostgreSQL (the copy itself is
//! `store::copy`); this command checks its inputs, shows progress and prints the counts.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{exit, UsageError};
use crate::cli::{DbCommand, MigrateToArgs};
use crate::store::copy::{self, CopyProgress, TableCopy};
use crate::store::DbTarget;

/// Runs one `db` subcommand; `db` is the database `--db` / `FLOWCTL_DB` names.
pub fn run(db: &DbTarget, command: &DbCommand) -> anyhow::Result<i32> {
    match command {
        DbCommand::MigrateTo(args) => migrate_to(db, args),
    }
}

fn migrate_to(db: &DbTarget, args: &MigrateToArgs) -> anyhow::Result<i32> {
    let Some(source) = db.sqlite_path() else {
        return Err(UsageError(format!(
            "the database to copy from must be a SQLite file (--db or FLOWCTL_DB), not {db}"
        ))
        .into());
    };
    let target = match args.url.parse::<DbTarget>().map_err(UsageError)? {
        DbTarget::Postgres(url) => url,
        DbTarget::Sqlite(p) => {
            return Err(UsageError(format!(
                "the database to copy into must be a postgres:// URL, not {}",
                p.display()
            ))
            .into())
        }
    };
    if !source.exists() {
        return Err(UsageError(format!(
            "database {} does not exist (set FLOWCTL_DB or pass --db)",
            source.display()
        ))
        .into());
    }
    let mut display = Display::new();
    let counts = copy::sqlite_to_postgres(source, &target, args.batch as usize, &mut |p| {
        display.show(p)
    })
    .with_context(|| format!("copying {} into {target}", source.display()));
    display.finish();
    let counts = counts?;
    super::print_or_closed(&table(&counts))?;
    let differ: Vec<&TableCopy> = counts.iter().filter(|c| !c.matches()).collect();
    if differ.is_empty() {
        if !super::quiet() {
            eprintln!(
                "flowctl: {} copied into {target}: every table has as many rows on both sides",
                source.display()
            );
        }
        return Ok(exit::OK);
    }
    for c in differ {
        eprintln!(
            "flowctl: {}: {} rows in SQLite, {} in PostgreSQL (rows already in PostgreSQL under the same keys are not overwritten)",
            c.table, c.source, c.target
        );
    }
    Ok(exit::FAILED)
}

/// The counts, one table a line, aligned.
fn table(counts: &[TableCopy]) -> String {
    let mut out = format!(
        "{:<18} {:>10} {:>10} {:>10}\n",
        "table", "sqlite", "postgres", "copied"
    );
    for c in counts {
        out.push_str(&format!(
            "{:<18} {:>10} {:>10} {:>10}\n",
            c.table, c.source, c.target, c.copied
        ));
    }
    out
}

/// A bar per table on a terminal; a line per table otherwise; nothing with `--quiet`.
struct Display {
    bar: Option<ProgressBar>,
    table: String,
}

impl Display {
    fn new() -> Display {
        let bar = (std::io::stderr().is_terminal() && !super::quiet()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{msg:18} {bar:30} {pos}/{len} [{elapsed_precise}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Display {
            bar,
            table: String::new(),
        }
    }

    fn show(&mut self, p: CopyProgress<'_>) {
        if p.table != self.table {
            self.table = p.table.to_string();
            if let Some(bar) = &self.bar {
                bar.set_message(p.table.to_string());
                bar.set_length(p.total);
            }
        }
        match &self.bar {
            Some(bar) => bar.set_position(p.done),
            None if p.done == p.total && !super::quiet() => {
                eprintln!("flowctl: {}: {} rows read", p.table, p.total)
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
