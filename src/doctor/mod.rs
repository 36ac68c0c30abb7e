//! `flowctl doctor`'s checks: each setting, then the account as the Graph API reports it
//! (token, phone number, Flow, registered key), the Graph API version, the database and the
//! listen address. Every check runs, whatever failed before it, so one run shows all that
//! needs fixing; a check that needs what is missing is skipped and says what it needs.

mod account;
mod local;

use serde::Serialize;

use crate::config::DoctorSettings;
use crate::graph::GraphClient;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth a look (a low messaging limit, a version expiring soon).
    Warn,
    /// Broken: sending, serving or completing will fail until it is fixed.
    Fail,
    /// Not checked: what it needs is missing or broken (see the other checks).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked (`access_token`, `flow`, `database`, …).
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found. Never a secret.
    pub detail: String,
    /// What to do about it, when something is to be done.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, detail)
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Fail, detail).with_fix(fix)
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Warn, detail).with_fix(fix)
    }

    fn skip(name: &'static str, needs: &str) -> Check {
        Check::new(name, Status::Skip, format!("not checked: needs {needs}"))
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check, in the order they are shown.
pub async fn run(settings: &DoctorSettings) -> Vec<Check> {
    let mut checks = local::settings(settings);
    checks.push(local::graph_version(&settings.graph_version, today()));
    let phone_ok = match &settings.phone_number_id {
        Some(id) => match local::phone_number_id_shape(id) {
            Some(bad) => {
                checks.push(bad);
                false
            }
            None => true,
        },
        None => false,
    };
    match &settings.graph {
        Some(graph) => match GraphClient::new(graph.clone()) {
            Ok(client) => checks.extend(account::checks(&client, settings, phone_ok).await),
            Err(e) => checks.push(Check::fail(
                "graph_api",
                e.to_string(),
                "check GRAPH_API_URL and the network",
            )),
        },
        None => {
            let needs = "a usable WHATSAPP_ACCESS_TOKEN and GRAPH_API_URL";
            for name in account::NAMES {
                checks.push(Check::skip(name, needs));
            }
        }
    }
    checks.push(local::database(&settings.db));
    checks.push(local::listen(settings.listen));
    checks
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Whether any check failed (the exit code is 1 then).
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// The report as one JSON object: `ok`, counts, and every check.
pub fn to_json(checks: &[Check]) -> serde_json::Value {
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    serde_json::json!({
        "ok": !failed(checks),
        "failed": count(Status::Fail),
        "warnings": count(Status::Warn),
        "skipped": count(Status::Skip),
        "checks": checks,
    })
}

/// The report as text: one line per check (`✓`, `✗`, `!` or `-`, its name, what was
/// found), the fix indented under it, and a summary line. `color` adds ANSI colors.
pub fn to_text(checks: &[Check], color: bool) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let (mark, ansi) = match c.status {
            Status::Ok => ("✓", "32"),
            Status::Warn => ("!", "33"),
            Status::Fail => ("✗", "31"),
            Status::Skip => ("-", "2"),
        };
        let mark = if color {
            format!("\x1b[{ansi}m{mark}\x1b[0m")
        } else {
            mark.to_string()
        };
        out.push_str(&format!("{mark} {:width$}  {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("  {:width$}  fix: {fix}\n", ""));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    out.push_str(&if failed == 0 {
        format!(
            "doctor: no problem found ({} checks, {})\n",
            checks.len(),
            plural(warned, "warning")
        )
    } else {
        format!(
            "doctor: {} failed, {}\n",
            plural(failed, "check"),
            plural(warned, "warning")
        )
    });
    out
}
