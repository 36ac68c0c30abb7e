//! `--dry-run`: the run's row loop and decisions over the file, reading (never writing) the
//! campaign's state, and a summary of what a run would do.

use std::collections::HashMap;
use std::time::Instant;

use super::decision::{account, decide, Mode, Rerun};
use super::failures::FailureLog;
use super::feed::{drop_suppressed, row_line, Row, RowLoop};
use super::reader::{self, CsvRows};
use super::{exit, Stats, Summary};
use crate::config::BulkSettings;
use crate::phone::Phone;
use crate::store::Store;

/// Validates and counts every row, tells what a run would do with each, and exits as the
/// run would (1 when some rows would not be sent).
pub(super) async fn dry_run(
    db: &crate::store::DbTarget,
    args: &BulkSettings,
    rows: CsvRows,
    campaign: String,
) -> anyhow::Result<i32> {
    let failures = FailureLog::create(args.failures.as_deref(), &rows.headers(), rows.format())?;
    let db = db.clone();
    let rerun = Rerun::of(args);
    let start = Instant::now();
    let camp = campaign.clone();
    let stats = tokio::task::spawn_blocking(move || dry_count(&db, rows, &camp, &rerun, &failures))
        .await??;
    let mut summary = Summary::collect(&campaign, &stats, start.elapsed());
    summary.dry_run = true;
    // Nothing is attempted in a dry run: the rows queued are the rows a run would send.
    summary.would_send = Some(std::mem::take(&mut summary.not_attempted));
    summary.rate = 0.0;
    // The human summary goes to stderr and the JSON one to stdout, as in a real run: a
    // script reads stdout the same way with or without --dry-run.
    if !crate::commands::quiet() {
        eprintln!("{}", summary.human());
    }
    if args.json {
        crate::commands::print_json(&summary)?;
    }
    Ok(if summary.all_good() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// The row loop with the campaign's state read, not written: each chunk's phones are looked
/// up, and each row is decided and counted as a run would.
fn dry_count(
    db: &crate::store::DbTarget,
    mut rows: CsvRows,
    campaign: &str,
    rerun: &Rerun,
    failures: &FailureLog,
) -> anyhow::Result<Stats> {
    let store = Store::open_read_only(db)?;
    let stats = Stats::default();
    // Sized up front from a streamed count: growing a map of a million phones would hold the
    // old and the new table at once.
    let expected = reader::count_records(rows.path(), rows.format()).unwrap_or(0);
    let mut seen: HashMap<u64, u64> = HashMap::with_capacity(expected as usize);
    let settle = |chunk: &mut Vec<Row>| -> anyhow::Result<bool> {
        if let Some(store) = &store {
            drop_suppressed(store, chunk, &stats, &|text| {
                if !crate::commands::quiet() {
                    eprintln!("{text}");
                }
            })?;
        }
        let phones: Vec<Phone> = chunk.iter().map(|(_, r)| r.phone.clone()).collect();
        let members = match &store {
            Some(s) => s.bulk_members(campaign, &phones)?,
            None => vec![None; phones.len()],
        };
        for ((line, recipient), member) in chunk.drain(..).zip(members) {
            let decision = decide(member.as_ref(), rerun);
            if let Some(why) = account(&decision, Mode::DryRun, &stats) {
                // Said only: a dry run's --failures file lists the rows it finds invalid.
                if !crate::commands::quiet() {
                    eprintln!("{}", row_line(line.line, &recipient.phone, &why));
                }
            }
        }
        Ok(true)
    };
    let say = |text: &str| {
        if !crate::commands::quiet() {
            eprintln!("{text}")
        }
    };
    let rows_loop = RowLoop {
        chunk: super::feed::CHUNK,
        stats: &stats,
        failures,
        say: &say,
    };
    rows_loop.run(&mut rows, &mut seen, || false, settle)?;
    Ok(stats)
}
