//! The SQLite backend: the only place that holds SQL and knows the schema.
//!
//! SQLite in WAL mode with a busy timeout, so that `serve`, a concurrent `bulk` and an
//! `export` can share one file. Migrations (`migrations/*.sql`) are versioned and applied by
//! writers on open; read-only opens never migrate. Queries are grouped by area, one file per
//! area trait of the seam, each implementing it for [`SqliteStore`].
//!
//! Columns are read by name, never by a position written by hand. A record type declares its
//! columns once (`columns!`) and is read with [`SqliteStore::records`]/[`SqliteStore::record`];
//! the positions of those names are looked up once per statement, not once per value, which
//! keeps a streamed export as fast as positional reads. Small ad-hoc reads (counts, pairs) go
//! through [`SqliteStore::rows`]/[`SqliteStore::row`] with `row.get("name")`.

/// Declares the columns a record is read from: a struct holding each column's position in a
/// statement, found by name once per statement ([`FromRow::columns`]), and `LIST`, the same
/// names as a SELECT list, so that the query and the reads cannot drift apart.
macro_rules! columns {
    ($(#[$doc:meta])* $name:ident { $($col:ident),+ $(,)? }) => {
        $(#[$doc])*
        pub(crate) struct $name {
            $($col: usize),+
        }

        impl $name {
            /// The columns, comma-separated, for a SELECT list.
            pub(crate) const LIST: &'static str = stringify!($($col),+);

            /// The position of each column in `stmt`, found by its name.
            pub(crate) fn of(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<$name> {
                Ok($name {
                    $($col: stmt.column_index(stringify!($col))?),+
                })
            }
        }
    };
}

mod api;
mod bulk;
mod export;
mod flow;
mod flow_alerts;
mod media;
mod schema;
mod stats;
mod suppressions;
mod tokens;
mod types;
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, Row, TransactionBehavior};

use super::{Database, OpenReader, Result, Store, StoreError};

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Write-ahead log size past which the long-running writers (`serve`'s inbox worker, `bulk`'s
/// bookkeeping thread) checkpoint and truncate it; see [`Database::maintain_wal`].
pub const WAL_LIMIT: u64 = 64 << 20;

/// The text of a SQLite error, with what the user can do about the common ones.
pub(crate) fn describe(e: &rusqlite::Error) -> String {
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

/// A record read from a row through its declared columns (see `columns!`).
pub(crate) trait FromRow: Sized {
    /// The positions of the record's columns in one statement.
    type Columns;

    /// Finds the record's columns in `stmt`, by name.
    fn columns(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Self::Columns>;

    /// Reads the record from a row of that statement.
    fn from_row(row: &Row<'_>, columns: &Self::Columns) -> rusqlite::Result<Self>;
}

/// One connection to a flowctl SQLite database.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

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

/// Puts the database in WAL mode. Switching a new file's journal mode takes an exclusive lock,
/// and SQLite answers `SQLITE_BUSY` at once — without its busy handler — when another process
/// opening the same new file holds a lock at that moment (two `bulk` runs started together):
/// that is retried until [`BUSY_TIMEOUT`], like any other wait for the database.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
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
        set_wal(&conn).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database for reading only, without creating, migrating or writing
    /// anything. `Ok(None)` when there is no database file. The existence check is the open
    /// itself (SQLite refuses to open a missing file read-only), so nothing can change in
    /// between. The schema must be exactly this build's: an older one is the writers' to
    /// migrate ([`StoreError::TooOld`]), a newer one may mean things this build cannot read.
    pub fn open_read_only(path: &Path) -> Result<Option<SqliteStore>> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = match Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(conn) => conn,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen) => {
                return match std::fs::symlink_metadata(path) {
                    Err(missing) if missing.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    _ => Err(open_err(e)),
                };
            }
            Err(e) => return Err(open_err(e)),
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        let (found, known) = (store.schema_version()?, schema::latest());
        let path = path.to_path_buf();
        match found.cmp(&known) {
            std::cmp::Ordering::Equal => Ok(Some(store)),
            std::cmp::Ordering::Less => Err(StoreError::TooOld { path, found, known }),
            std::cmp::Ordering::Greater => Err(StoreError::TooNew { path, found, known }),
        }
    }

    /// Size of the write-ahead log file, in bytes (0 when there is none).
    fn wal_bytes(&self) -> u64 {
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
    fn truncate_wal_if_over(&mut self, limit: u64, wait: Duration) -> Result<Option<bool>> {
        if self.wal_bytes() <= limit {
            return Ok(None);
        }
        self.conn.busy_timeout(wait).map_err(|e| self.err(e))?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>("busy")
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
        let known = schema::latest();
        let current = self.schema_version()?;
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
                    rusqlite::params![version, crate::time::Timestamp::now()],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
        }
        Ok(())
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

    /// Every record a query returns.
    pub(crate) fn records<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let columns = T::columns(&stmt).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |r| T::from_row(r, &columns))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// The first record a query returns, if any.
    pub(crate) fn record<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<Option<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let columns = T::columns(&stmt).map_err(|e| self.err(e))?;
        stmt.query_row(params, |r| T::from_row(r, &columns))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every row of a query, each mapped by `map` (which reads columns by name).
    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(params, map).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// The first row of a query, if any, mapped by `map`.
    pub(crate) fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.query_row(params, map)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The single value of a query that always returns one row (`COUNT(*)`, `EXISTS`).
    pub(crate) fn value<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        params: impl Params,
    ) -> Result<T> {
        self.conn
            .query_row(sql, params, |r| r.get(0))
            .map_err(|e| self.err(e))
    }
}

impl Database for SqliteStore {
    fn schema_version(&self) -> Result<i64> {
        let exists: bool = self.value(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
            [],
        )?;
        if !exists {
            return Ok(0);
        }
        self.value(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
        )
    }

    fn ping(&self) -> Result<()> {
        self.value::<i64>("SELECT 1", []).map(drop)
    }

    fn maintain_wal(&mut self, wait: Duration) -> Result<Option<bool>> {
        self.truncate_wal_if_over(WAL_LIMIT, wait)
    }

    fn set_lock_wait(&mut self, wait: Option<Duration>) -> Result<()> {
        self.conn
            .busy_timeout(wait.unwrap_or(BUSY_TIMEOUT))
            .map_err(|e| self.err(e))
    }

    fn reader(&self) -> OpenReader {
        let path = self.path.clone();
        Arc::new(move || match SqliteStore::open_read_only(&path)? {
            Some(s) => Ok(Store(Box::new(s))),
            None => Err(StoreError::Open {
                path: path.clone(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some("the database file is gone".into()),
                ),
            }),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::SqliteStore;
    use crate::store::{NewToken, Origin, SendState, TokenQueries};

    /// A store in a fresh temporary directory (kept alive by the returned guard).
    pub fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    /// Issues a token for Ahmed (+212610059159, campaign "c") in `state`; returns it.
    pub fn issue(s: &mut (impl TokenQueries + ?Sized), state: SendState) -> String {
        issue_in(s, "c", state)
    }

    /// Issues a token for Ahmed (+212610059159) in `campaign` and `state`; returns it.
    pub fn issue_in(
        s: &mut (impl TokenQueries + ?Sized),
        campaign: &str,
        state: SendState,
    ) -> String {
        let t = NewToken {
            token: crate::token::FlowToken::generate(),
            phone: crate::phone::Phone::parse("+212610059159", None).unwrap(),
            customer_name: Some("Ahmed".into()),
            campaign: campaign.into(),
            origin: Origin::Send,
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
    use crate::store::{SendState, TokenQueries};

    #[test]
    fn a_large_log_is_truncated_once_its_readers_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut s = SqliteStore::open(&path).unwrap();
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
        // Under the writers' limit: the upkeep they call has nothing to do.
        assert_eq!(s.maintain_wal(Duration::ZERO).unwrap(), None);
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
        let n: i64 = s.value("SELECT COUNT(*) FROM tokens", []).unwrap();
        assert_eq!(n, 400);
    }

    #[test]
    fn open_applies_migrations_once_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::latest());
        let mode: String = s.value("PRAGMA journal_mode", []).unwrap();
        assert_eq!(mode, "wal");
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let n: i64 = s
            .value("SELECT COUNT(*) FROM schema_migrations", [])
            .unwrap();
        assert_eq!(n, schema::MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = SqliteStore::open(&path).unwrap();
        s.conn
            .execute("INSERT INTO schema_migrations VALUES (999, 'x')", [])
            .unwrap();
        drop(s);
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer flowctl"), "{err}");
        let err = SqliteStore::open_read_only(&path).unwrap_err().to_string();
        assert!(err.contains("newer flowctl"), "{err}");
    }

    #[test]
    fn a_read_only_open_of_a_missing_file_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("none.db");
        assert!(SqliteStore::open_read_only(&p).unwrap().is_none());
        assert!(!p.exists());
        // A directory in the way is not "missing".
        assert!(SqliteStore::open_read_only(d.path()).is_err());
    }

    #[test]
    fn a_read_only_open_neither_migrates_nor_writes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        // A database no flowctl has migrated yet: an empty file.
        std::fs::write(&p, b"").unwrap();
        let err = SqliteStore::open_read_only(&p).unwrap_err();
        assert!(
            matches!(err, StoreError::TooOld { found: 0, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("send, bulk or serve"), "{err}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "left as it was");

        let mut w = SqliteStore::open(&p).unwrap();
        let token = test_util::issue(&mut w, SendState::Pending);
        let mut r = SqliteStore::open_read_only(&p).unwrap().unwrap();
        assert_eq!(
            r.find_token(&token).unwrap().unwrap().state,
            SendState::Pending
        );
        let err = r.mark_sending(&token).unwrap_err().to_string();
        assert!(err.contains("read-only"), "{err}");
    }

    #[test]
    fn records_are_read_by_column_name_whatever_the_select_order() {
        use crate::store::{InboxRow, WebhookQueries};
        let (_d, mut s) = test_util::temp_store();
        let id = s.insert_inbox(b"{}").unwrap();
        let rows: Vec<InboxRow> = s
            .records("SELECT body, 0 AS other, id FROM webhook_inbox", [])
            .unwrap();
        assert_eq!(
            rows,
            [InboxRow {
                id,
                body: b"{}".to_vec()
            }]
        );
        let err = s
            .records::<InboxRow>("SELECT id FROM webhook_inbox", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("body"), "{err}");
    }

    #[test]
    fn an_unknown_stored_state_fails_the_read_and_names_the_value() {
        let (_d, mut s) = test_util::temp_store();
        let token = test_util::issue(&mut s, SendState::Sent);
        s.conn
            .execute(
                "UPDATE tokens SET state = 'bogus' WHERE token = ?1",
                [&token],
            )
            .unwrap();
        let err = s.find_token(&token).unwrap_err().to_string();
        assert!(err.contains("unknown send state \"bogus\""), "{err}");
    }
}
