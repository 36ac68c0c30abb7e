//! The commands. Each orchestrates store, Graph API client and server; none holds SQL or HTTP.

pub mod bulk;
pub mod keygen;
pub mod keys;
pub mod send;
pub mod serve;

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
