//! Benchmark of `flowctl export`: builds a temporary database with N completed responses
//! (default 1,000,000), then exports them as CSV into a sink (like `> /dev/null`) through the
//! library, and prints rows/s and the peak resident memory of the export alone.
//!
//! ```text
//! cargo run --release --example bench_export -- [N] [--format csv|json|ndjson] [--keep DIR]
//! ```
//!
//! Peak memory is VmHWM from /proc/self/status, reset (via /proc/self/clear_refs) after the
//! database is built, so it measures the export and not the set-up. Flat memory means the
//! figure for 1M rows is about the one for 100k.

use std::path::PathBuf;
use std::time::Instant;

use flowctl::cli::ExportFormat;
use flowctl::commands::export::{export, Sink};
use flowctl::store::{ExportFilter, Store};

fn main() -> anyhow::Result<()> {
    let mut n: u64 = 1_000_000;
    let mut format = ExportFormat::Csv;
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--format" => {
                format = match args.next().as_deref() {
                    Some("json") => ExportFormat::Json,
                    Some("ndjson") => ExportFormat::Ndjson,
                    _ => ExportFormat::Csv,
                }
            }
            "--keep" => keep = args.next().map(PathBuf::from),
            other => n = other.replace('_', "").parse()?,
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("bench.db");
    let _ = std::fs::remove_file(&db);

    let t = Instant::now();
    drop(Store::open(&db)?); // migrations
    fill(&db, n)?;
    println!(
        "built {n} responses in {:.1}s ({} MiB on disk); rss before export {} KiB",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&db)?.len() >> 20,
        status_kib("VmRSS").unwrap_or(0)
    );

    let store = Store::open(&db)?;
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let counter = Counter::default();
    let bytes = counter.0.clone();
    export(
        &store,
        &ExportFilter::default(),
        None,
        format,
        false,
        Sink::Writer(Box::new(counter)),
    )?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "export --{format:?}: {n} rows, {} MiB in {secs:.2}s wall = {:.0} rows/s \
         ({cpu:.2}s CPU = {:.0} rows/s per core); peak RSS {} KiB{}",
        bytes.load(std::sync::atomic::Ordering::Relaxed) >> 20,
        n as f64 / secs,
        n as f64 / cpu.max(1e-9),
        status_kib("VmHWM").unwrap_or(0),
        if reset {
            " (export only)"
        } else {
            " (whole process: clear_refs unavailable)"
        }
    );
    Ok(())
}

/// Inserts `n` sent tokens and their completed responses in one transaction.
fn fill(db: &std::path::Path, n: u64) -> rusqlite::Result<()> {
    let mut c = rusqlite::Connection::open(db)?;
    c.pragma_update(None, "synchronous", "OFF")?;
    let tx = c.transaction()?;
    {
        let mut tok = tx.prepare(
            "INSERT INTO tokens (token, phone, customer_name, campaign, origin, state, message_id,
                 created_at, expires_at, sent_at, completed_at)
             VALUES (?1, ?2, ?3, 'bench', 'bulk', 'sent', ?4, ?5, '2099-01-01T00:00:00.000Z', ?5, ?6)",
        )?;
        let mut resp = tx.prepare(
            "INSERT INTO responses (token, phone, customer_name, campaign, source, answers, matched,
                 completed_at, received_at)
             VALUES (?1, ?2, ?3, 'bench', ?4, ?5, 1, ?6, ?6)",
        )?;
        let stars = [
            "1_etoile",
            "2_etoiles",
            "3_etoiles",
            "4_etoiles",
            "5_etoiles",
        ];
        for i in 0..n {
            let token = format!("flow_bench{i:016}");
            let phone = format!("+2126{:08}", i % 100_000_000);
            let name = format!("Client {i}");
            let sent = flowctl::time::from_unix(1_767_225_600 + i as i64).unwrap_or_default();
            let done = flowctl::time::from_unix(1_767_225_660 + i as i64).unwrap_or_default();
            let answers = serde_json::json!({
                "q1_accueil": stars[(i % 5) as usize],
                "q2_delai": stars[(i / 5 % 5) as usize],
                "q3_qualite": stars[(i / 25 % 5) as usize],
                "q4_prix": stars[(i / 125 % 5) as usize],
                "q5_recommandation": stars[(i / 625 % 5) as usize],
                "commentaire": if i % 10 == 0 { "=SUM(A1) Très bien ⭐" } else { "Très bien ⭐" },
            });
            tok.execute(rusqlite::params![
                token,
                phone,
                name,
                format!("wamid.{i}"),
                sent,
                done
            ])?;
            let source = if i % 2 == 0 { "endpoint" } else { "webhook" };
            resp.execute(rusqlite::params![
                token,
                phone,
                name,
                source,
                answers.to_string(),
                done
            ])?;
        }
    }
    tx.commit()
}

/// A sink that counts bytes.
#[derive(Default)]
struct Counter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `VmXXX:` line of /proc/self/status, in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU time of this process (from /proc/self/stat, assuming 100 ticks/s),
/// which stays meaningful on a busy machine where wall-clock time does not.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}
