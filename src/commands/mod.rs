//! The commands. Each orchestrates store, Graph API client and server; none holds SQL or HTTP.

pub mod bulk;
pub mod completions;
pub mod db;
pub mod demo;
pub mod doctor;
pub mod export;
mod flow_check;
pub mod flows;
pub mod init;
pub mod keygen;
pub mod keys;
pub mod report;
pub mod sandbox;
pub mod send;
pub mod serve;
pub mod stats;
pub mod suppress;
pub mod templates;

/// Exit codes of the spec.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The work failed (API refused, some rows failed).
    pub const FAILED: i32 = 1;
    /// Bad usage, bad input or missing configuration.
    pub const USAGE: i32 = 2;
    /// Interrupted (SIGINT/SIGTERM).
    pub const INTERRUPTED: i32 = 130;
}

/// Bad input from the user (exit code 2), as opposed to a failure of the work (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Opens the database of a read-only command (export, stats) for reading only: nothing is
/// created, migrated or written. A database that does not exist is a usage error, instead of
/// an empty one created to report nothing; one this build cannot read as it is (an older or
/// newer schema) is an error that says so.
pub fn open_db_read_only(db: &crate::store::DbTarget) -> anyhow::Result<crate::store::Store> {
    crate::store::Store::open_read_only(db)?.ok_or_else(|| {
        let missing = if db.is_postgres() {
            "has no flowctl tables yet (send, bulk or serve create them; check FLOWCTL_DB or --db)"
        } else {
            "does not exist (set FLOWCTL_DB or pass --db)"
        };
        UsageError(format!("database {db} {missing}")).into()
    })
}

/// Writes `text` to stdout and flushes. A reader that went away (`flowctl … | head`) is not
/// an error here: the text had nowhere to go, and the command goes on.
pub fn print_or_closed(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Writes `value` as one line of JSON to stdout; a reader that went away is not an error
/// (see [`print_or_closed`]): the command's exit code still says how its work went.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    print_or_closed(&line)
}

/// Whether a person can answer a question: stdin and stderr are both terminals. Off a
/// terminal (a script, a pipe, a test) commands never ask, so automation never hangs.
pub fn interactive() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks `question` on stderr and reads the answer from stdin: true for `y` or `yes` (any
/// case); anything else, an empty line included, is no.
pub fn ask(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, Write as _};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

/// `y` or `yes`, in any case, spaces around ignored.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets `-q/--quiet` for the process (the binary does, once, from the command line): what
/// commands print for a person watching (progress, per-row lines, human summaries) is left
/// out; errors and the output asked for on stdout are not.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `-q/--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether text for a terminal may carry colours: stderr is a terminal and `NO_COLOR` is not
/// set to a non-empty value (<https://no-color.org>).
pub fn colours_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `value` with a snake_case twin beside every camelCase key (at every depth), the twin first.
///
/// flowctl's JSON output is snake_case (`bulk`, `stats`, `export`); `send` and `keys` printed
/// camelCase keys before (`messageId`, `flowToken`, …) and the spec's contract names them, so
/// they keep those beside the snake_case ones for one release. The HTTP API (`/api/send-flow`)
/// is unchanged: it is the original deployment's contract.
pub fn with_snake_case_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, v) in map {
                let v = with_snake_case_keys(v);
                let snake = snake_case(&key);
                if snake != key {
                    out.entry(snake).or_insert_with(|| v.clone());
                }
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(with_snake_case_keys).collect()),
        other => other,
    }
}

/// `messageId` → `message_id`.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_keys_get_a_snake_case_twin() {
        let v = with_snake_case_keys(serde_json::json!({
            "success": true,
            "messageId": "wamid.1",
            "error": {"outcomeUnknown": false},
        }));
        assert_eq!(
            v,
            serde_json::json!({
                "success": true,
                "message_id": "wamid.1",
                "messageId": "wamid.1",
                "error": {"outcome_unknown": false, "outcomeUnknown": false},
            })
        );
    }
}
