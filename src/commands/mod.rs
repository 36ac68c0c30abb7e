//! The commands. Each orchestrates store, Graph API client and server; none holds SQL or HTTP.

pub mod bulk;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod export;
pub mod init;
pub mod keygen;
pub mod keys;
pub mod sandbox;
pub mod send;
pub mod serve;
pub mod stats;

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
pub fn open_db_read_only(db: &std::path::Path) -> anyhow::Result<crate::store::Store> {
    crate::store::Store::open_read_only(db)?.ok_or_else(|| {
        UsageError(format!(
            "database {} does not exist (set FLOWCTL_DB or pass --db)",
            db.display()
        ))
        .into()
    })
}
