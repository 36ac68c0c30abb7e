//! The database of one test: a SQLite file in the test's directory, or, when
//! `FLOWCTL_TEST_POSTGRES` names a PostgreSQL server, a fresh database of its own on that
//! server (created here, dropped when the test ends), so that the end-to-end suite runs
//! unchanged on both backends. [`Sql`] reads and writes it with plain SQL on either.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flowctl::store::DbTarget;

/// The variable naming the PostgreSQL server the suite runs against (a URL to a database
/// from which the tests may create others).
pub const TEST_POSTGRES: &str = "FLOWCTL_TEST_POSTGRES";

/// The server URL when the suite runs on PostgreSQL.
pub fn postgres_server() -> Option<String> {
    std::env::var(TEST_POSTGRES).ok().filter(|u| !u.is_empty())
}

/// True when the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    postgres_server().is_some()
}

/// For the tests about the SQLite file itself (deleting it, its WAL, its permissions, the
/// campaign lock file): true, after saying why, when the suite runs on PostgreSQL.
pub fn skip_on_postgres(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
        true
    } else {
        false
    }
}

/// A test's database: `dir/file` on SQLite, else a new database on the PostgreSQL server,
/// dropped with this value.
pub struct TestDb {
    target: DbTarget,
    /// The server and database name to drop, on PostgreSQL.
    drop: Option<(String, String)>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// The database for a test working in `dir`.
    pub fn new(dir: &Path, file: &str) -> TestDb {
        match postgres_server() {
            None => TestDb {
                target: DbTarget::Sqlite(dir.join(file)),
                drop: None,
            },
            Some(server) => {
                let name = format!(
                    "flowctl_test_{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0)
                );
                admin(&server, &format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
                let DbTarget::Postgres(url) = server.parse().expect(TEST_POSTGRES) else {
                    panic!("{TEST_POSTGRES} is not a postgres:// URL");
                };
                TestDb {
                    target: DbTarget::Postgres(url.with_database(&name)),
                    drop: Some((server, name)),
                }
            }
        }
    }

    /// Where the database is (for `Store::open`, `issue_token`, …).
    pub fn target(&self) -> DbTarget {
        self.target.clone()
    }

    /// The value of `FLOWCTL_DB` / `--db` for the binary.
    pub fn arg(&self) -> OsString {
        arg(&self.target)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = self.drop.take() {
            // FORCE: a server process the test left running must not keep the database.
            let _ = admin(
                &server,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Runs `sql` on the test server's own database.
fn admin(server: &str, sql: &str) -> Result<(), postgres::Error> {
    off_runtime(|| {
        let mut c = postgres::Client::connect(server, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL server: {e}"));
        c.batch_execute(sql)
    })
}

/// Runs `f` off any tokio runtime: the blocking PostgreSQL client drives a runtime of its own,
/// which tokio refuses to start on a thread of another (the `#[tokio::test]`s).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A PostgreSQL connection, closed off any runtime too.
pub struct PgConn(Option<postgres::Client>);

/// A statement's parameters as the client takes them.
type PgParams<'a> = [&'a (dyn postgres::types::ToSql + Sync)];

impl PgConn {
    fn client(&mut self) -> &mut postgres::Client {
        self.0
            .as_mut()
            .expect("a connection holds its client until dropped")
    }

    /// Prepares `sql` (`?N` placeholders), binds `params` and runs `f` with them, off any
    /// runtime; panics with the statement on error.
    fn run<T: Send>(
        &mut self,
        sql: &str,
        params: &[Val],
        f: impl FnOnce(
                &mut postgres::Client,
                &postgres::Statement,
                &PgParams<'_>,
            ) -> Result<T, postgres::Error>
            + Send,
    ) -> T {
        let (sql, client) = (dollars(sql), self.client());
        off_runtime(|| {
            let stmt = client
                .prepare(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            let bound = bind(&stmt, params);
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                bound.iter().map(|b| &**b as _).collect();
            f(client, &stmt, &refs).unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        })
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            off_runtime(move || drop(c));
        }
    }
}

/// The value of `FLOWCTL_DB` / `--db` naming `target`.
pub fn arg(target: &DbTarget) -> OsString {
    match target {
        DbTarget::Sqlite(p) => p.clone().into_os_string(),
        DbTarget::Postgres(u) => u.expose().into(),
    }
}

/// Whether a flowctl database is there: the file exists on SQLite, flowctl's tables do on
/// PostgreSQL (the test's database itself always exists there).
pub fn exists(target: &DbTarget) -> bool {
    match target {
        DbTarget::Sqlite(p) => p.exists(),
        DbTarget::Postgres(_) => {
            Sql::open(target).int(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'schema_migrations'",
                &[],
            ) > 0
        }
    }
}

/// One value read or bound by [`Sql`].
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Val {
    /// The integer (panics on anything else: the test's query is wrong).
    pub fn int(&self) -> i64 {
        match self {
            Val::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    /// The integer, or `None` for NULL.
    pub fn opt_int(&self) -> Option<i64> {
        match self {
            Val::Null => None,
            other => Some(other.int()),
        }
    }

    /// The text (panics on anything else).
    pub fn text(&self) -> String {
        match self {
            Val::Text(t) => t.clone(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// The text, or `None` for NULL.
    pub fn opt_text(&self) -> Option<String> {
        match self {
            Val::Null => None,
            other => Some(other.text()),
        }
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// A plain SQL connection on either backend, for tests that read or set what no command
/// shows. Write the SQL both dialects accept; `?1` / `?` placeholders are turned into
/// PostgreSQL's `$1`. Integers are BIGINT on PostgreSQL: cast computed values
/// (`SUM(x)::BIGINT` is not SQLite, so prefer `COUNT(*)` and plain columns).
pub enum Sql {
    Sqlite(rusqlite::Connection),
    Pg(PgConn),
}

impl Sql {
    /// Connects to `target`.
    pub fn open(target: &DbTarget) -> Sql {
        match target {
            DbTarget::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).expect("open the SQLite database");
                c.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                Sql::Sqlite(c)
            }
            DbTarget::Postgres(u) => Sql::Pg(PgConn(Some(
                off_runtime(|| postgres::Client::connect(u.expose(), postgres::NoTls))
                    .expect("connect to the test database"),
            ))),
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Val]) -> u64 {
        match self {
            Sql::Sqlite(c) => c
                .execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(to_sqlite)),
                )
                .unwrap_or_else(|e| panic!("{sql}: {e:?}")) as u64,
            Sql::Pg(c) => c.run(sql, params, |client, stmt, refs| client.execute(stmt, refs)),
        }
    }

    /// Every row of a query.
    pub fn rows(&mut self, sql: &str, params: &[Val]) -> Vec<Vec<Val>> {
        match self {
            Sql::Sqlite(c) => {
                let mut q = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                let n = q.column_count();
                q.query_map(
                    rusqlite::params_from_iter(params.iter().map(to_sqlite)),
                    |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => Val::Null,
                                    rusqlite::types::ValueRef::Integer(i) => Val::Int(i),
                                    rusqlite::types::ValueRef::Real(f) => Val::Real(f),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Val::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                                })
                            })
                            .collect()
                    },
                )
                .and_then(|rows| rows.collect())
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            }
            Sql::Pg(c) => c
                .run(sql, params, |client, stmt, refs| client.query(stmt, refs))
                .iter()
                .map(from_pg)
                .collect(),
        }
    }

    /// The first row of a query, if any.
    pub fn row(&mut self, sql: &str, params: &[Val]) -> Option<Vec<Val>> {
        self.rows(sql, params).into_iter().next()
    }

    /// The first value of the first row (panics when there is no row).
    pub fn value(&mut self, sql: &str, params: &[Val]) -> Val {
        self.row(sql, params)
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// An integer query (`COUNT(*)`).
    pub fn int(&mut self, sql: &str, params: &[Val]) -> i64 {
        self.value(sql, params).int()
    }
}

fn to_sqlite(v: &Val) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        Val::Null => Value::Null,
        Val::Int(i) => Value::Integer(*i),
        Val::Real(f) => Value::Real(*f),
        Val::Text(t) => Value::Text(t.clone()),
        Val::Blob(b) => Value::Blob(b.clone()),
    }
}

/// `?1` and `?` placeholders as PostgreSQL's `$1` (outside quoted text).
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let (mut quoted, mut next) = (false, 1);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted {
            out.push('$');
            if chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                continue;
            }
            out.push_str(&next.to_string());
            next += 1;
            continue;
        }
        out.push(c);
    }
    out
}

type Bound = Box<dyn postgres::types::ToSql + Sync>;

/// Each parameter as the Rust type the statement's parameter type takes.
fn bind(stmt: &postgres::Statement, params: &[Val]) -> Vec<Bound> {
    use postgres::types::Type;
    assert_eq!(stmt.params().len(), params.len(), "parameter count");
    stmt.params()
        .iter()
        .zip(params)
        .map(|(ty, v)| -> Bound {
            let int = || v.opt_int();
            match *ty {
                Type::INT8 => Box::new(int()),
                Type::INT4 => Box::new(int().map(|i| i as i32)),
                Type::INT2 => Box::new(int().map(|i| i as i16)),
                Type::BOOL => Box::new(int().map(|i| i != 0)),
                Type::FLOAT8 => Box::new(match v {
                    Val::Real(f) => Some(*f),
                    Val::Int(i) => Some(*i as f64),
                    _ => None,
                }),
                Type::BYTEA => Box::new(match v {
                    Val::Blob(b) => Some(b.clone()),
                    Val::Text(t) => Some(t.clone().into_bytes()),
                    _ => None,
                }),
                _ => Box::new(match v {
                    Val::Null => None,
                    Val::Int(i) => Some(i.to_string()),
                    Val::Real(f) => Some(f.to_string()),
                    Val::Text(t) => Some(t.clone()),
                    Val::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
                }),
            }
        })
        .collect()
}

fn from_pg(row: &postgres::Row) -> Vec<Val> {
    use postgres::types::Type;
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::INT8 => get::<i64>(row, i).into(),
            Type::INT4 => get::<i32>(row, i).map(i64::from).into(),
            Type::INT2 => get::<i16>(row, i).map(i64::from).into(),
            Type::BOOL => get::<bool>(row, i).map(i64::from).into(),
            Type::FLOAT8 => get::<f64>(row, i).map_or(Val::Null, Val::Real),
            Type::BYTEA => get::<Vec<u8>>(row, i).map_or(Val::Null, Val::Blob),
            _ => get::<String>(row, i).into(),
        })
        .collect()
}

/// Column `i` of `row` (panics naming the column when it is not a `T`).
fn get<T: for<'a> postgres::types::FromSql<'a>>(row: &postgres::Row, i: usize) -> Option<T> {
    row.try_get::<_, Option<T>>(i).unwrap_or_else(|e| {
        panic!(
            "column {} ({}): {e}",
            row.columns()[i].name(),
            row.columns()[i].type_()
        )
    })
}
