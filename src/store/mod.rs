//! `Store`: the one place that knows the schema and holds SQL.
//!
//! SQLite in WAL mode with a busy timeout, so that `serve`, a concurrent `bulk` and an
//! `export` can share one file. Migrations are versioned and applied on open. The commands
//! only see `Store` methods and plain record types, so a second backend (PostgreSQL, for
//! users who outgrow one machine) can be added behind the same methods without touching them.
//!
//! Queries are grouped by area in submodules, each adding an `impl Store` block.

mod api;
mod bulk;
mod export;
mod flow;
mod schema;
mod shared;
mod stats;
mod tokens;
mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use api::{ApiResponse, ResponsesPage, ResponsesQuery};
pub use bulk::{BulkMember, BulkOutcome, Issued};
pub use export::{ExportFilter, ExportSnapshot};
pub use flow::{Completion, CompletionInput, StoredResponse};
pub use shared::SharedStore;
pub use stats::{Funnel, FunnelReport};
pub use tokens::{Failure, NewToken, Origin, SendState, TokenRecord};
pub use webhook::{
    delivery_rank, Delivery, InboxRow, StatusInput, StatusOutcome, StatusRecord, WebhookCompletion,
    WebhookCompletionOutcome,
};

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Write-ahead log size past which the long-running writers (`serve`'s inbox worker, `bulk`'s
/// bookkeeping thread) checkpoint and truncate it; see [`Store::truncate_wal_if_over`].
pub const WAL_LIMIT: u64 = 64 << 20;

/// A store failure, with the database path for the user.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {}", describe(.source))]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} was written by a newer flowctl (schema {found}, this build knows {known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path}: {}", describe(.source))]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(ReadOnly) => format!("{e} (the file or its directory is read-only)"),
        Some(DiskFull) => format!("{e} (the disk is full)"),
        Some(DatabaseBusy) | Some(DatabaseLocked) => {
            format!(
                "{e} (another process held the database for over {}s)",
                BUSY_TIMEOUT.as_secs()
            )
        }
        _ => e.to_string(),
    }
}

impl StoreError {
    /// True when the failure is the database being busy (worth retrying later).
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Sql { source, .. }
            if matches!(source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)))
    }
}

/// The flowctl database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// Creates a missing database file readable by its owner only (it links phone numbers to
/// answers); SQLite then gives its `-wal` and `-shm` files the same mode. An existing file
/// keeps its mode.
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        create_owner_only(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e.to_string()),
            ),
        })?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // WAL lets readers run beside one writer; NORMAL sync is durable across process
        // crashes (the case that matters for a killed bulk run) at a fraction of FULL's cost.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the write-ahead log file, in bytes (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(PathBuf::from(wal))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Checkpoints the log into the database and truncates it, when it has grown past
    /// `limit` bytes. SQLite restarts its log only when no reader still uses it, so readers
    /// that never stop (exports and stats back to back beside a writer) would let it grow
    /// without end. Waits at most `wait` for the readers; `None`: under the limit,
    /// `Some(true)`: truncated, `Some(false)`: readers were still busy (try again later).
    pub fn truncate_wal_if_over(&mut self, limit: u64, wait: Duration) -> Result<Option<bool>> {
        if self.wal_bytes() <= limit {
            return Ok(None);
        }
        self.conn.busy_timeout(wait).map_err(|e| self.err(e))?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err(e))?;
        match busy {
            Ok(busy) => Ok(Some(busy == 0)),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                Ok(Some(false))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .map_err(sql)?;
        let known = schema::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        let current: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if current > known {
            return Err(StoreError::TooNew {
                path: path.clone(),
                found: current,
                known,
            });
        }
        for (version, body) in schema::MIGRATIONS.iter().filter(|m| m.0 > current) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            // Another process may have migrated while we waited for the write lock.
            let done: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
                    [version],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            if !done {
                tx.execute_batch(body).map_err(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    rusqlite::params![version, crate::time::now()],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
        }
        Ok(())
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// A cheap query that proves the database answers (`/healthz`).
    pub fn ping(&self) -> Result<()> {
        self.conn
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` inside an IMMEDIATE transaction (the write lock is taken up front, so the
    /// busy timeout applies instead of a deadlock-prone upgrade).
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let out = f(&tx).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::Store;

    /// A store in a fresh temporary directory (kept alive by the returned guard).
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    /// Issues a token for Ahmed (+212610059159, campaign "c") in `state`; returns it.
    pub fn issue(s: &mut Store, state: super::SendState) -> String {
        issue_in(s, "c", state)
    }

    /// Issues a token for Ahmed (+212610059159) in `campaign` and `state`; returns it.
    pub fn issue_in(s: &mut Store, campaign: &str, state: super::SendState) -> String {
        let t = super::NewToken {
            token: crate::token::FlowToken::generate(),
            phone: crate::phone::Phone::parse("+212610059159", None).unwrap(),
            customer_name: Some("Ahmed".into()),
            campaign: campaign.into(),
            origin: super::Origin::Send,
            initial_data: None,
            ttl: std::time::Duration::from_secs(600),
        };
        s.insert_token(&t, state).unwrap();
        t.token.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_log_is_truncated_once_its_readers_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut s = Store::open(&path).unwrap();
        // A reader holding a snapshot keeps SQLite from restarting the log.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
            .unwrap();
        for _ in 0..400 {
            test_util::issue(&mut s, SendState::Pending);
        }
        let grown = s.wal_bytes();
        assert!(grown > 64 << 10, "{grown}");
        assert_eq!(
            s.truncate_wal_if_over(u64::MAX, Duration::ZERO).unwrap(),
            None
        );
        let started = std::time::Instant::now();
        assert_eq!(
            s.truncate_wal_if_over(1, Duration::from_millis(100))
                .unwrap(),
            Some(false),
            "a reader still holds the log"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "bounded wait");
        reader.execute_batch("COMMIT").unwrap();
        assert_eq!(
            s.truncate_wal_if_over(1, Duration::from_millis(100))
                .unwrap(),
            Some(true)
        );
        assert_eq!(s.wal_bytes(), 0);
        // Nothing lost.
        let n: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 400);
    }

    #[test]
    fn open_applies_migrations_once_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.schema_version().unwrap(),
            schema::MIGRATIONS.last().unwrap().0
        );
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(s);
        let s = Store::open(&path).unwrap();
        let n: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, schema::MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = Store::open(&path).unwrap();
        s.conn
            .execute("INSERT INTO schema_migrations VALUES (999, 'x')", [])
            .unwrap();
        drop(s);
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer flowctl"), "{err}");
    }
}
