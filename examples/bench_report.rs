//! Benchmark of `flowctl report`: builds a temporary database of N tokens of which one in ten
//! completed (default 1,000,000 tokens, 100,000 responses), renders the report of the campaign
//! through the library, and prints the time and the peak resident memory of the rendering
//! alone; then the same for a tenth of that, to show memory stays flat.
//!
//! ```text
//! cargo run --release --example bench_report -- [TOKENS]
//! ```
//!
//! Peak memory is VmHWM from /proc/self/status, reset (via /proc/self/clear_refs) after the
//! database is built, so it measures the report and not the set-up.

use std::time::Instant;

use flowctl::report::{Options, Questions};
use flowctl::store::Store;

const SURVEY: &str = include_str!("survey_flow.json");

fn main() -> anyhow::Result<()> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let questions = Questions::parse(SURVEY).map_err(anyhow::Error::msg)?;
    for tokens in [n / 10, n] {
        let tmp = tempfile::tempdir()?;
        let db = tmp.path().join("bench.db");
        let t = Instant::now();
        drop(Store::open(&db)?); // migrations
        fill(&db, tokens)?;
        println!(
            "built {tokens} tokens, {} responses in {:.1}s ({} MiB on disk)",
            tokens / 10,
            t.elapsed().as_secs_f64(),
            std::fs::metadata(&db)?.len() >> 20,
        );
        let store = Store::open_read_only(&db)?.ok_or_else(|| anyhow::anyhow!("no database"))?;
        // The funnel query alone first, to tell its memory from the report's.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let t = Instant::now();
        store.funnel(Some("bench"))?;
        println!(
            "  funnel query alone: {:.2}s; peak RSS {} KiB",
            t.elapsed().as_secs_f64(),
            status_kib("VmHWM").unwrap_or(0)
        );
        let reset = reset && std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let t = Instant::now();
        let html = flowctl::report::render(
            &store,
            Some("bench"),
            Options {
                questions: Some(&questions),
                show_phones: false,
            },
        )?;
        println!(
            "report: {tokens} tokens, {} responses -> {} KiB of HTML in {:.2}s; peak RSS {} KiB{}",
            tokens / 10,
            html.len() >> 10,
            t.elapsed().as_secs_f64(),
            status_kib("VmHWM").unwrap_or(0),
            if reset {
                " (report only)"
            } else {
                " (whole process: clear_refs unavailable)"
            }
        );
    }
    Ok(())
}

/// Inserts `n` sent tokens over a week, one in ten completed with the survey's answers.
fn fill(db: &std::path::Path, n: u64) -> rusqlite::Result<()> {
    let mut c = rusqlite::Connection::open(db)?;
    c.pragma_update(None, "synchronous", "OFF")?;
    let tx = c.transaction()?;
    {
        let mut tok = tx.prepare(
            "INSERT INTO tokens (token, phone, customer_name, campaign, origin, state, message_id,
                 created_at, expires_at, sent_at, completed_at, delivery, delivery_rank)
             VALUES (?1, ?2, ?3, 'bench', 'bulk', 'sent', ?4, ?5, '2099-01-01T00:00:00.000Z', ?5, ?6, ?7, ?8)",
        )?;
        let mut resp = tx.prepare(
            "INSERT INTO responses (token, phone, customer_name, campaign, source, answers, matched,
                 completed_at, received_at)
             VALUES (?1, ?2, ?3, 'bench', 'endpoint', ?4, 1, ?5, ?5)",
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
            let sent_secs = 1_767_225_600 + (i * 604_800 / n.max(1)) as i64;
            let sent = flowctl::time::from_unix(sent_secs).unwrap_or_default();
            let completed = i % 10 == 0;
            let done =
                flowctl::time::from_unix(sent_secs + 60 + (i % 3600) as i64).unwrap_or_default();
            let (delivery, rank) = match i % 10 {
                0..=5 => ("read", 3),
                6..=8 => ("delivered", 2),
                _ => ("sent", 1),
            };
            tok.execute(rusqlite::params![
                token,
                phone,
                name,
                format!("wamid.{i}"),
                sent,
                completed.then_some(&done),
                delivery,
                rank
            ])?;
            if completed {
                let answers = serde_json::json!({
                    "q1_accueil": stars[(i / 10 % 5) as usize],
                    "q2_delai": stars[(i / 50 % 5) as usize],
                    "q3_qualite": stars[(i / 250 % 5) as usize],
                    "q4_prix": stars[(i / 1250 % 5) as usize],
                    "q5_recommandation": stars[(i / 20 % 5) as usize],
                    "commentaire": format!("Commentaire {i} <b>ok</b>"),
                });
                resp.execute(rusqlite::params![
                    token,
                    phone,
                    name,
                    answers.to_string(),
                    done
                ])?;
            }
        }
    }
    tx.commit()
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
