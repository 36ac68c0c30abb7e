//! `flowctl stats`: the funnel per campaign (issued → sent → delivered → read → completed,
//! with failures by error code), as an aligned table or as JSON. The counting rules are those
//! of [`crate::store::Funnel`].

use std::fmt::Write as _;

use super::{exit, UsageError};
use crate::cli::StatsArgs;
use crate::store::{Funnel, FunnelReport};
use crate::time::human_duration;

/// Runs `flowctl stats`.
pub fn run(db: &crate::store::DbTarget, args: &StatsArgs) -> anyhow::Result<i32> {
    let store = super::open_db_read_only(db)?;
    let report = store.funnel(args.campaign.as_deref())?;
    if let (Some(name), true) = (&args.campaign, report.campaigns.is_empty()) {
        // An empty table would read as "nothing sent yet"; a misspelt name is the likelier cause.
        return Err(UsageError(no_such_campaign(name, &store.campaign_names()?)).into());
    }
    let text = if args.json {
        let mut s = serde_json::to_string(&report)?;
        s.push('\n');
        s
    } else {
        table(&report)
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(exit::OK),
    }
}

/// The error for `--campaign NAME` when the database holds no such campaign.
fn no_such_campaign(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no campaign {name:?}: the database holds no campaign yet")
    } else {
        format!(
            "no campaign {name:?} in the database (campaigns: {})",
            known.join(", ")
        )
    }
}

const COLUMNS: usize = 14;

const HEADERS: [&str; COLUMNS] = [
    "campaign",
    "issued",
    "sent",
    "failed",
    "deferred",
    "pending",
    "unknown",
    "replaced",
    "delivered",
    "read",
    "completed",
    "unmatched",
    "completion",
    "median",
];

/// The report as an aligned table: one row per campaign, then `TOTAL`, then the failures by
/// error code (with what each code means) when there are any, and notes on what the figures
/// cannot show yet. `sent + failed + deferred + pending + unknown + replaced = issued`.
pub fn table(report: &FunnelReport) -> String {
    let mut rows: Vec<[String; COLUMNS]> = vec![HEADERS.map(String::from)];
    for f in &report.campaigns {
        rows.push(cells(f.campaign.as_deref().unwrap_or(""), f));
    }
    rows.push(cells("TOTAL", &report.total));
    let mut widths = [0usize; COLUMNS];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(line, "{c:<w$}");
            } else {
                let _ = write!(line, "  {c:>w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let failing: Vec<&Funnel> = report
        .campaigns
        .iter()
        .filter(|f| !f.failed_by_code.is_empty())
        .collect();
    for f in report
        .campaigns
        .iter()
        .filter(|f| f.failed_after_acceptance > 0 || f.deferred > 0)
    {
        let _ = writeln!(
            out,
            "\n{}: {} failed after acceptance (reported later by a status), {} deferred by a per-user limit",
            f.campaign.as_deref().unwrap_or(""),
            f.failed_after_acceptance,
            f.deferred
        );
    }
    if !failing.is_empty() {
        out.push_str("\nfailed by error code:\n");
        for f in failing {
            let codes: Vec<String> = f
                .failed_by_code
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  {}  {}",
                f.campaign.as_deref().unwrap_or(""),
                codes.join(", ")
            );
        }
        let _ = writeln!(out, "\nwhat the codes mean:");
        for code in report.total.failed_by_code.keys() {
            let _ = writeln!(out, "  {code}  {}", code_meaning(code));
        }
    }
    out.push_str(&notes(report));
    out
}

/// What an error code of the failures table means.
fn code_meaning(code: &str) -> &'static str {
    match code.parse::<i64>().ok().and_then(crate::graph::meaning) {
        Some(m) => m,
        None if code == "unknown" => "no error code was given (a network failure or an answer that was not the API's)",
        None => "see Meta's error codes page: https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/",
    }
}

/// The lines that say what the figures cannot show, and what to do about it.
fn notes(report: &FunnelReport) -> String {
    let t = &report.total;
    let mut out = String::new();
    if t.sent > 0 && report.statuses_received == 0 {
        // Meta reports delivered/read (and late failures) only through the webhook's
        // `statuses`:
        // https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status
        out.push_str(
            "\nno delivery status has been received yet: delivered and read stay at 0 until `flowctl serve` receives Meta's status webhooks (the app subscribed to the `messages` field)\n",
        );
    }
    if t.pending > 0 {
        let _ = writeln!(
            out,
            "\npending: {} {} not sent yet (a run stopped before them); rerun the same `flowctl bulk` to send them",
            t.pending,
            if t.pending == 1 { "token was" } else { "tokens were" }
        );
    }
    if t.unknown > 0 {
        let _ = writeln!(
            out,
            "\nunknown: {} {} an unknown outcome (the message may have gone out); `flowctl bulk --resend-unknown` sends them again",
            t.unknown,
            if t.unknown == 1 { "send has" } else { "sends have" }
        );
    }
    out
}

fn cells(name: &str, f: &Funnel) -> [String; COLUMNS] {
    [
        name.to_string(),
        f.issued.to_string(),
        f.sent.to_string(),
        f.failed.to_string(),
        f.deferred.to_string(),
        f.pending.to_string(),
        f.unknown.to_string(),
        f.replaced.to_string(),
        f.delivered.to_string(),
        f.read.to_string(),
        f.completed.to_string(),
        f.unmatched.to_string(),
        f.completion_rate
            .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0)),
        f.median_completion_seconds
            .map_or_else(|| "-".into(), human_duration),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_with_a_total_row() {
        let mut a = Funnel {
            campaign: Some("spring".into()),
            issued: 10,
            sent: 8,
            failed: 2,
            completed: 4,
            completion_rate: Some(0.5),
            median_completion_seconds: Some(90.0),
            ..Funnel::default()
        };
        a.failed_by_code.insert("131026".into(), 2);
        let total = Funnel {
            campaign: None,
            ..a.clone()
        };
        let t = table(&FunnelReport {
            campaigns: vec![a],
            total,
            statuses_received: 0,
        });
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("campaign"));
        assert!(lines[1].starts_with("spring"));
        assert!(lines[2].starts_with("TOTAL"));
        assert_eq!(lines[0].len(), lines[1].len());
        assert!(lines[1].contains("50.0%") && lines[1].contains("1m 30s"));
        assert!(t.contains("spring  131026: 2"));
        assert!(t.contains("131026  message undeliverable"), "{t}");
        assert!(
            t.contains("no delivery status has been received yet"),
            "{t}"
        );
    }

    #[test]
    fn an_unknown_campaign_names_the_known_ones() {
        assert_eq!(
            no_such_campaign("nope", &["a".into(), "b".into()]),
            "no campaign \"nope\" in the database (campaigns: a, b)"
        );
        assert!(no_such_campaign("nope", &[]).contains("no campaign yet"));
    }
}
