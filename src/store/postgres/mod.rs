//! The PostgreSQL backend: the same seam as `sqlite/`, for several `serve` replicas and
//! several `bulk` workers on one database.
//!
//! The client is `postgres` (the blocking wrapper of `tokio-postgres`), called where SQLite is
//! called today: on tokio's blocking pool through [`SharedStore`](crate::store::SharedStore),
//! on `bulk`'s bookkeeping thread, or directly by the synchronous commands. The seam is
//! synchronous, so an async client would only add a second hand-off per query. A call made
//! from a runtime thread moves off it first ([`blocking`]), so the reactor is never blocked
//! by a call that forgot to.
//!
//! Migrations (`migrations/*.sql`) are versioned like SQLite's and applied under a
//! session-level advisory lock, so two processes starting at once apply each one once. A
//! lost connection (a server restart) is reopened on the next call: the call that saw it
//! fails, the next one works.

mod api;
mod bulk;
mod export;
mod flow;
mod flow_alerts;
mod media;
#[cfg(test)]
mod parity;
mod schema;
mod stats;
mod statuses;
mod suppressions;
mod tokens;
#[allow(dead_code)] // until every area is ported
pub(crate) mod types;
mod webhook;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, Row, Statement};

use super::target::PgUrl;
use super::{Database, OpenReader, Result, Store, StoreError};

/// The advisory lock key migrations run under (any constant shared by every flowctl).
const MIGRATION_LOCK: i64 = 0x666c_6f77_6374_6c00; // "flowctl\0"

/// How long a connection attempt waits for the server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parameters of a query.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// One connection to a flowctl PostgreSQL database.
pub struct PgStore {
    conn: RefCell<Conn>,
    url: PgUrl,
    read_only: bool,
    /// The `bulk` worker this handle claims rows for, once it joined a campaign.
    bulk_worker: Option<bulk::BulkWorker>,
}

struct Conn {
    /// Always `Some` but while being dropped (see `Drop`).
    client: Option<Client>,
    /// Prepared statements by their SQL text, for this connection.
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn client(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a connection holds its client until dropped")
    }
}

/// Closing the blocking client blocks on its runtime, which tokio refuses on a runtime's
/// worker: a store dropped there (at the end of a command) is closed through [`blocking`].
impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            blocking(move || drop(client));
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// Runs blocking database work: directly on a plain thread (the blocking pool, `bulk`'s
/// bookkeeping thread, a synchronous command), through `block_in_place` on a multi-threaded
/// runtime's worker, on a scoped thread on a single-threaded runtime. (The blocking client
/// drives its own small runtime, which tokio refuses to start on a runtime's worker.)
pub(crate) fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => f(),
    }
}

/// The TLS connector: the system-independent web PKI roots, plus the certificate file named
/// by `PGSSLROOTCERT` (a private CA) when set. Used when the URL asks for `sslmode=prefer`
/// (the default) or `require`; `sslmode=disable` connects in clear.
fn tls() -> std::result::Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = std::env::var_os("PGSSLROOTCERT") {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&file)
            .map_err(|e| format!("PGSSLROOTCERT {}: {e}", file.to_string_lossy()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("PGSSLROOTCERT {}: {e}", file.to_string_lossy()))?;
            roots
                .add(cert)
                .map_err(|e| format!("PGSSLROOTCERT {}: {e}", file.to_string_lossy()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn connect(url: &PgUrl) -> Result<Client> {
    let open_err = |message: String| StoreError::PgOpen {
        url: url.clone(),
        message,
    };
    let mut config: postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: postgres::Error| open_err(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("flowctl");
    }
    let tls = tls().map_err(&open_err)?;
    blocking(move || config.connect(tls)).map_err(|e| open_err(describe(&e)))
}

/// The text of a PostgreSQL error, with its SQLSTATE and detail when the server sent them.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cause = c.source();
            }
            s
        }
    }
}

#[allow(dead_code)] // until every area is ported
impl PgStore {
    /// Connects and brings the schema up to date (under the migration lock).
    pub fn open(url: &PgUrl) -> Result<PgStore> {
        let store = PgStore::connect(url, false)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects for reading only: nothing is created, migrated or written (the session is
    /// read-only, so a write is refused by the server). `Ok(None)` when no flowctl has
    /// created its tables in that database yet.
    pub fn open_read_only(url: &PgUrl) -> Result<Option<PgStore>> {
        let store = PgStore::connect(url, true)?;
        let (found, known) = (store.schema_version()?, schema::latest());
        if found == 0 {
            return Ok(None);
        }
        let path = url.to_string().into();
        match found.cmp(&known) {
            std::cmp::Ordering::Equal => Ok(Some(store)),
            std::cmp::Ordering::Less => Err(StoreError::TooOld { path, found, known }),
            std::cmp::Ordering::Greater => Err(StoreError::TooNew { path, found, known }),
        }
    }

    fn connect(url: &PgUrl, read_only: bool) -> Result<PgStore> {
        let store = PgStore {
            conn: RefCell::new(Conn {
                client: Some(connect(url)?),
                statements: HashMap::new(),
            }),
            url: url.clone(),
            read_only,
            bulk_worker: None,
        };
        if read_only {
            store.batch("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
        }
        Ok(store)
    }

    /// The connection URL (password masked when shown).
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    fn migrate(&self) -> Result<()> {
        let known = schema::latest();
        self.with(|c| {
            c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
            let out = (|| {
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                        version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
                )?;
                let current: i64 = c
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                        &[],
                    )?
                    .get(0);
                if current > known {
                    return Ok(Err(current));
                }
                for (version, body) in schema::MIGRATIONS.iter().filter(|m| m.0 > current) {
                    let mut tx = c.transaction()?;
                    tx.batch_execute(body)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                        &[version, &crate::time::Timestamp::now()],
                    )?;
                    tx.commit()?;
                }
                Ok(Ok(()))
            })();
            // Unlocked whatever happened (the lock is the session's: a dead process drops it).
            let unlock = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
            let out = out?;
            unlock?;
            Ok(out)
        })?
        .map_err(|found| StoreError::TooNew {
            path: self.url.to_string().into(),
            found,
            known,
        })
    }

    pub(crate) fn err(&self, source: postgres::Error) -> StoreError {
        StoreError::Pg {
            url: self.url.clone(),
            message: describe(&source),
            code: source.code().map(|c| c.code().to_string()),
            closed: source.is_closed(),
        }
    }

    /// Runs `f` with the connection, off any runtime worker ([`blocking`]). A connection the
    /// server closed (a restart) is reopened first.
    pub(crate) fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        let mut conn = self.conn.borrow_mut();
        self.reconnect_if_closed(&mut conn)?;
        let client = conn.client();
        blocking(move || f(client)).map_err(|e| self.err(e))
    }

    fn reconnect_if_closed(&self, conn: &mut Conn) -> Result<()> {
        if conn.client().is_closed() {
            tracing::warn!(database = %self.url, "the database connection was closed; reconnecting");
            let old = conn.client.replace(connect(&self.url)?);
            blocking(move || drop(old));
            conn.statements.clear();
            if self.read_only {
                let client = conn.client();
                blocking(move || {
                    client.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                })
                .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// The prepared statement for `sql` on this connection (prepared once, then reused).
    fn statement(&self, conn: &mut Conn, sql: &str) -> Result<Statement> {
        if let Some(s) = conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let client = conn.client();
        let stmt = blocking(move || client.prepare(sql)).map_err(|e| self.err(e))?;
        conn.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Runs `f` with the prepared statement of `sql`.
    fn prepared<T: Send>(
        &self,
        sql: &str,
        f: impl FnOnce(&mut Client, &Statement) -> std::result::Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        let mut conn = self.conn.borrow_mut();
        self.reconnect_if_closed(&mut conn)?;
        let stmt = self.statement(&mut conn, sql)?;
        let client = conn.client();
        let out = blocking(move || f(client, &stmt));
        if out.as_ref().is_err_and(|e| e.is_closed()) {
            conn.statements.clear();
        }
        out.map_err(|e| self.err(e))
    }

    /// Every row of a query (columns are read by name: `row.try_get("phone")`).
    pub(crate) fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        self.prepared(sql, |c, s| c.query(s, params))
    }

    /// The first row of a query, if any.
    pub(crate) fn row(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        self.prepared(sql, |c, s| {
            let mut rows = c.query(s, params)?;
            Ok(if rows.is_empty() {
                None
            } else {
                Some(rows.swap_remove(0))
            })
        })
    }

    /// The single value of a query that always returns one row (`COUNT(*)`, `EXISTS`).
    pub(crate) fn value<T>(&self, sql: &str, params: Params<'_>) -> Result<T>
    where
        T: for<'a> postgres::types::FromSql<'a> + Send,
    {
        self.prepared(sql, |c, s| c.query_one(s, params)?.try_get(0))
    }

    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64> {
        self.prepared(sql, |c, s| c.execute(s, params))
    }

    /// Runs statements without parameters (DDL, `SET`).
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        self.with(|c| c.batch_execute(sql))
    }

    /// Runs `f` inside one transaction, committed when `f` succeeds and rolled back otherwise.
    /// `f` runs off the runtime's workers like every other call.
    pub(crate) fn write<T: Send>(
        &mut self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> std::result::Result<T, postgres::Error> + Send,
    ) -> Result<T> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

impl Database for PgStore {
    fn schema_version(&self) -> Result<i64> {
        let exists: bool = self.value(
            "SELECT EXISTS(SELECT 1 FROM information_schema.tables
                WHERE table_schema = current_schema() AND table_name = 'schema_migrations')",
            &[],
        )?;
        if !exists {
            return Ok(0);
        }
        self.value(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
    }

    fn ping(&self) -> Result<()> {
        self.value::<i32>("SELECT 1", &[]).map(drop)
    }

    fn maintain_wal(&mut self, _wait: Duration) -> Result<Option<bool>> {
        // PostgreSQL manages its own write-ahead log.
        Ok(None)
    }

    fn set_lock_wait(&mut self, _wait: Option<Duration>) -> Result<()> {
        // Never asked of PostgreSQL: its writes run on the blocking pool (see the trait).
        Ok(())
    }

    fn reader(&self) -> OpenReader {
        let url = self.url.clone();
        Arc::new(move || Ok(Store(Box::new(PgStore::connect(&url, true)?))))
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! A fresh database per test on the server named by `FLOWCTL_TEST_POSTGRES` (a URL to a
    //! database the tests may create databases from). Without it the test says it is skipped.

    use super::PgStore;
    use crate::store::target::PgUrl;

    /// A new, empty database on the test server, or `None` (and a line saying why) when no
    /// server is configured.
    pub fn temp_database(test: &str) -> Option<PgUrl> {
        let Ok(admin) = std::env::var("FLOWCTL_TEST_POSTGRES") else {
            eprintln!("{test}: skipped: no PostgreSQL (set FLOWCTL_TEST_POSTGRES to a server URL; scripts/pg-cluster starts one)");
            return None;
        };
        let admin: crate::store::DbTarget = admin.parse().expect("FLOWCTL_TEST_POSTGRES");
        let crate::store::DbTarget::Postgres(admin) = admin else {
            panic!("FLOWCTL_TEST_POSTGRES is not a postgres:// URL");
        };
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            crate::token::FlowToken::generate().as_str()[..12].to_ascii_lowercase()
        )
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
        let admin_store = PgStore::connect(&admin, false).expect("connect to the test server");
        admin_store
            .batch(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        Some(admin.with_database(&name))
    }

    /// A migrated store on a fresh test database.
    #[allow(dead_code)]
    pub fn temp_store(test: &str) -> Option<PgStore> {
        temp_database(test).map(|url| PgStore::open(&url).expect("open the test database"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_even_when_two_processes_start_together() {
        let Some(url) = test_util::temp_database("migrations") else {
            return;
        };
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || PgStore::open(&url).map(|s| s.schema_version()))
            })
            .collect();
        for t in opened {
            assert_eq!(t.join().unwrap().unwrap().unwrap(), schema::latest());
        }
        let s = PgStore::open(&url).unwrap();
        let n: i64 = s
            .value("SELECT COUNT(*) FROM schema_migrations", &[])
            .unwrap();
        assert_eq!(n, schema::MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let Some(url) = test_util::temp_database("newer schema") else {
            return;
        };
        let s = PgStore::open(&url).unwrap();
        s.execute("INSERT INTO schema_migrations VALUES (999, 'x')", &[])
            .unwrap();
        let err = PgStore::open(&url).unwrap_err().to_string();
        assert!(err.contains("newer flowctl"), "{err}");
        let err = PgStore::open_read_only(&url).unwrap_err().to_string();
        assert!(err.contains("newer flowctl"), "{err}");
    }

    #[test]
    fn a_read_only_handle_refuses_writes_and_an_empty_database_is_none() {
        let Some(url) = test_util::temp_database("read only") else {
            return;
        };
        assert!(PgStore::open_read_only(&url).unwrap().is_none());
        let w = PgStore::open(&url).unwrap();
        w.execute(
            "INSERT INTO events (kind, detail, received_at) VALUES ('x', 'y', 'z')",
            &[],
        )
        .unwrap();
        let r = PgStore::open_read_only(&url).unwrap().unwrap();
        let err = r
            .execute(
                "INSERT INTO events (kind, detail, received_at) VALUES ('x', 'y', 'z')",
                &[],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("read-only"), "{err}");
    }

    #[test]
    fn a_connection_the_server_closed_is_reopened_on_the_next_call() {
        let Some(url) = test_util::temp_database("reconnect") else {
            return;
        };
        let s = PgStore::open(&url).unwrap();
        let killer = PgStore::open(&url).unwrap();
        let pid: i32 = s.value("SELECT pg_backend_pid()", &[]).unwrap();
        killer
            .value::<bool>("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // The call that finds the connection gone fails; the next one reconnects.
        let _ = s.ping();
        s.ping().unwrap();
        let again: i32 = s.value("SELECT pg_backend_pid()", &[]).unwrap();
        assert_ne!(again, pid);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_from_a_runtime_worker_and_the_blocking_pool_both_work() {
        let Some(url) = test_util::temp_database("runtime") else {
            return;
        };
        let s = PgStore::open(&url).unwrap();
        s.ping().unwrap();
        let s = tokio::task::spawn_blocking(move || {
            s.ping().unwrap();
            s
        })
        .await
        .unwrap();
        s.ping().unwrap();
    }

    #[tokio::test]
    async fn calls_from_a_single_threaded_runtime_work() {
        let Some(url) = test_util::temp_database("current thread") else {
            return;
        };
        let s = PgStore::open(&url).unwrap();
        s.ping().unwrap();
    }
}
