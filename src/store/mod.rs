//! The store: every record flowctl keeps, behind one seam a second backend can implement.
//!
//! Commands and the server see only [`Store`] (a handle on one database) and the
//! backend-neutral record types of this folder; the SQL lives in one folder per backend
//! (`sqlite/`, with its migrations; PostgreSQL is next). The seam is the [`Database`] trait,
//! made of one trait per area, each declared beside its record types:
//!
//! | area | trait | records |
//! |------|-------|---------|
//! | tokens issued before a send, and their outcome | [`TokenQueries`] | [`TokenRecord`], [`NewToken`] |
//! | the data endpoint: answers, completions, events | [`FlowQueries`] | [`StoredResponse`], [`CompletionInput`] |
//! | the message webhook: inbox, statuses, unmatched completions | [`WebhookQueries`] | [`StatusRecord`], [`Delivery`] |
//! | `bulk`'s batched bookkeeping | [`BulkQueries`] | [`BulkMember`], [`BulkOutcome`] |
//! | `GET /api/responses` | [`ApiQueries`] | [`ApiResponse`] |
//! | `export` | [`ExportQueries`] | [`ExportSnapshot`] |
//! | `stats` | [`StatsQueries`] | [`FunnelReport`] |
//! | Flow media downloads | [`MediaQueries`] | [`MediaJob`], [`MediaRecord`] |
//! | who asked not to be messaged | [`SuppressionQueries`] | [`Suppression`] |
//! | Flow alerts `bulk` watches while it runs | [`FlowAlertQueries`] | [`FlowAlert`] |
//!
//! [`copy`] moves a SQLite database into PostgreSQL, row for row (`flowctl db migrate-to`).
//!
//! Methods that read take `&self`, methods that write take `&mut self`: a handle opened read
//! only ([`Store::open_read_only`]) or lent by [`SharedStore::read`] cannot be asked to write.
//! Values keep their domain types across the seam ([`FlowToken`](crate::token::FlowToken),
//! [`Phone`](crate::phone::Phone), [`SendState`], [`Origin`],
//! [`Timestamp`](crate::time::Timestamp)); a stored value that is not one of them is an error
//! naming the value, never a silent default.

mod api;
mod bulk;
pub mod copy;
mod export;
mod flow;
mod flow_alerts;
mod media;
mod postgres;
mod shared;
mod sqlite;
mod stats;
mod suppressions;
mod target;
mod tokens;
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use api::{ApiQueries, ApiResponse, ResponsesPage, ResponsesQuery};
pub use bulk::{
    BulkMember, BulkOutcome, BulkQueries, Issued, Permits, RATE_LIMIT_PAUSE, RATE_QUIET,
    RATE_RECOVERY, RATE_SAME_EPISODE,
};
pub use export::{ExportFilter, ExportQueries, ExportSnapshot, FailedSend, SnapshotReader};
pub use flow::{Completion, CompletionInput, FlowQueries, StoredResponse};
pub use flow_alerts::{FlowAlert, FlowAlertQueries};
pub use media::{MediaJob, MediaQueries, MediaRecord, MediaState};
pub use shared::SharedStore;
pub use sqlite::{BUSY_TIMEOUT, WAL_LIMIT};
pub use stats::{Funnel, FunnelReport, StatsQueries};
pub use suppressions::{source, suppression_key, Suppression, SuppressionQueries};
pub use target::{DbTarget, PgUrl};
pub use tokens::{Failure, NewToken, Origin, SendState, TokenQueries, TokenRecord, UnknownValue};
pub use webhook::{
    delivery_rank, Delivery, InboxRow, Settlement, StatusInput, StatusOutcome, StatusRecord,
    WebhookCompletion, WebhookCompletionOutcome, WebhookQueries,
};

/// A store failure, with the database for the user.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {}", sqlite::describe(.source))]
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
    /// Read-only commands never migrate (that is a writer's job, under its write lock).
    #[error(
        "database {path} has schema {found}, older than this build's {known}: \
         run a command that writes to it (send, bulk or serve) to bring it up to date"
    )]
    TooOld {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path}: {}", sqlite::describe(.source))]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot connect to database {url}: {message}")]
    PgOpen { url: PgUrl, message: String },
    #[error("database {url}: {message}")]
    Pg {
        url: PgUrl,
        message: String,
        /// The SQLSTATE, when the server sent one.
        code: Option<String>,
        /// True when the connection was lost (the server restarted or went away).
        closed: bool,
    },
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when the failure is the database being busy (worth retrying later).
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Sql { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
            ),
            // A serialization failure or a deadlock: the transaction may be retried.
            StoreError::Pg { code: Some(c), .. } => c == "40001" || c == "40P01",
            _ => false,
        }
    }

    /// True when the database could not be reached (PostgreSQL down, restarting or
    /// unreachable): worth waiting for rather than a reason to give up.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::PgOpen { .. } => true,
            StoreError::Pg { closed, code, .. } => {
                // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
                // class 08 connection exceptions.
                *closed
                    || code.as_deref().is_some_and(|c| {
                        c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"
                    })
            }
            _ => false,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// Opens further read-only handles on the database a [`Database`] is connected to.
pub type OpenReader = Arc<dyn Fn() -> Result<Store> + Send + Sync>;

/// Every operation flowctl asks of a database: what a backend implements.
pub trait Database:
    TokenQueries
    + FlowQueries
    + WebhookQueries
    + BulkQueries
    + ApiQueries
    + ExportQueries
    + StatsQueries
    + MediaQueries
    + SuppressionQueries
    + FlowAlertQueries
    + Send
    + std::fmt::Debug
{
    /// The schema version in force.
    fn schema_version(&self) -> Result<i64>;

    /// A cheap query that proves the database answers (`/healthz`).
    fn ping(&self) -> Result<()>;

    /// Upkeep that the long-running writers (`serve`'s inbox worker, `bulk`'s bookkeeping
    /// thread) call now and then, waiting at most `wait` for readers to let go. For SQLite:
    /// checkpoint and truncate the write-ahead log once it is over [`WAL_LIMIT`]. `None`:
    /// nothing to do, `Some(true)`: done, `Some(false)`: readers were busy (try again later).
    fn maintain_wal(&mut self, wait: Duration) -> Result<Option<bool>>;

    /// How long a write waits for another process's lock on the database before it fails
    /// busy (`None`: the backend's default). For SQLite: its busy timeout, [`BUSY_TIMEOUT`]
    /// by default; `Some(Duration::ZERO)` is how [`SharedStore::write_inline`] writes without
    /// ever waiting on the thread it runs on. PostgreSQL: nothing to do (its writes never run
    /// on such a thread; a row lock is waited for on the blocking pool).
    fn set_lock_wait(&mut self, wait: Option<Duration>) -> Result<()>;

    /// How to open more read-only handles on this same database (`serve` reads through them
    /// beside its one writer).
    fn reader(&self) -> OpenReader;
}

/// A handle on one flowctl database: what commands and the server hold. Every operation of
/// [`Database`] is called on it directly (`store.find_token(…)`).
pub struct Store(Box<dyn Database>);

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date: a SQLite
    /// file, or a PostgreSQL database (whose tables are created on first use).
    pub fn open(db: impl Into<DbTarget>) -> Result<Store> {
        Ok(match &db.into() {
            DbTarget::Sqlite(path) => Store(Box::new(sqlite::SqliteStore::open(path)?)),
            DbTarget::Postgres(url) => Store(Box::new(postgres::PgStore::open(url)?)),
        })
    }

    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open_sqlite(path: &Path) -> Result<Store> {
        Ok(Store(Box::new(sqlite::SqliteStore::open(path)?)))
    }

    /// Opens the database for reading only: nothing is created, migrated or
    /// written. `Ok(None)` when there is no database there (a read-only command reports
    /// that; `bulk --dry-run` takes it as "nothing sent yet"). A database whose schema is
    /// older than this build's is [`StoreError::TooOld`], a newer one [`StoreError::TooNew`].
    pub fn open_read_only(db: impl Into<DbTarget>) -> Result<Option<Store>> {
        Ok(match &db.into() {
            DbTarget::Sqlite(path) => {
                sqlite::SqliteStore::open_read_only(path)?.map(|s| Store(Box::new(s)))
            }
            DbTarget::Postgres(url) => {
                postgres::PgStore::open_read_only(url)?.map(|s| Store(Box::new(s)))
            }
        })
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Database;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.0
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Store tests that run on every backend available here.

    use super::Store;

    /// Runs `f` on a fresh, migrated store of each backend: SQLite always, PostgreSQL when
    /// `FLOWCTL_TEST_POSTGRES` names a server (otherwise the test says it skipped it).
    #[allow(dead_code)] // until the area tests use it
    pub fn each_backend(test: &str, mut f: impl FnMut(&mut Store)) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut sqlite = Store::open(dir.path().join("t.db")).expect("open SQLite");
        f(&mut sqlite);
        if let Some(url) = super::postgres::test_util::temp_database(test) {
            let mut pg = Store::open(super::DbTarget::Postgres(url)).expect("open PostgreSQL");
            f(&mut pg);
        }
    }
}
