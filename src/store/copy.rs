//! Copies a SQLite database into PostgreSQL (`flowctl db migrate-to`), table by table.
//!
//! Both schemas have the same tables and columns (compare `sqlite/migrations/*.sql` with
//! `postgres/migrations/0001_initial.sql`), so rows are copied column for column, ids kept.
//! The copy reads one consistent snapshot of the SQLite file (one read transaction), writes
//! in batches with `INSERT … ON CONFLICT DO NOTHING` (so a second run, or a run after an
//! interruption, adds only the rows still missing), moves each identity sequence past the
//! copied ids, and counts the rows on both sides at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use postgres::types::ToSql;
use rusqlite::types::ValueRef;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::target::PgUrl;
use super::StoreError;

/// The tables copied, in an order that keeps every reference valid (`responses.duplicate_of`
/// points at an earlier row of its own table, copied in id order).
pub const TABLES: [&str; 7] = [
    "tokens",
    "responses",
    "message_statuses",
    "events",
    "webhook_inbox",
    "media",
    "suppressions",
];

/// The most parameters one PostgreSQL statement takes.
const MAX_PARAMS: usize = 65_535;

/// Why a copy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database {0} does not exist")]
    Missing(PathBuf),
    #[error("{table}.{column} is not in the PostgreSQL database {url}: its schema does not match this build's")]
    MissingColumn {
        table: &'static str,
        column: String,
        url: PgUrl,
    },
    #[error("{table}.{column}: the value {value} cannot be stored as PostgreSQL {pg_type}")]
    Value {
        table: &'static str,
        column: String,
        value: String,
        pg_type: String,
    },
}

/// What the copy did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    /// Rows in the SQLite database.
    pub source: u64,
    /// Rows this run added to PostgreSQL (0 on a rerun).
    pub copied: u64,
    /// Rows in PostgreSQL after the copy.
    pub target: u64,
}

impl TableCopy {
    /// Whether both sides hold as many rows.
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// Where the copy is, for a progress display: `done` of `total` rows read from `table`.
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress<'a> {
    pub table: &'a str,
    pub done: u64,
    pub total: u64,
}

/// Copies every table of the SQLite database at `source` into the PostgreSQL database at
/// `target` (whose tables are created first, by its migrations), `batch` rows a statement at
/// most. `progress` is called after each batch. Returns the counts per table, in
/// [`TABLES`] order.
pub fn sqlite_to_postgres(
    source: &Path,
    target: &PgUrl,
    batch: usize,
    progress: &mut dyn FnMut(CopyProgress<'_>),
) -> Result<Vec<TableCopy>, CopyError> {
    // The read-only open checks the file is a flowctl database of this build's schema.
    drop(SqliteStore::open_read_only(source)?.ok_or_else(|| CopyError::Missing(source.into()))?);
    let sqlite_err = |e| StoreError::Sql {
        path: source.to_path_buf(),
        source: e,
    };
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(super::BUSY_TIMEOUT).map_err(sqlite_err)?;
    // One snapshot for the whole copy: a writer still running does not make counts drift.
    conn.execute_batch("BEGIN").map_err(sqlite_err)?;
    let pg = PgStore::open(target)?;
    let mut out = Vec::new();
    for table in TABLES {
        out.push(copy_table(&conn, &pg, source, table, batch, progress)?);
    }
    conn.execute_batch("COMMIT").map_err(sqlite_err)?;
    Ok(out)
}

/// A column of a table: its name and its PostgreSQL type (`bigint`, `text`, `bytea`, …).
struct Column {
    name: String,
    pg_type: String,
}

fn copy_table(
    conn: &rusqlite::Connection,
    pg: &PgStore,
    source: &Path,
    table: &'static str,
    batch: usize,
    progress: &mut dyn FnMut(CopyProgress<'_>),
) -> Result<TableCopy, CopyError> {
    let sqlite_err = |e| StoreError::Sql {
        path: source.to_path_buf(),
        source: e,
    };
    let columns = columns(conn, pg, table).map_err(|e| match e {
        CopyError::Store(StoreError::Sql { source, .. }) => sqlite_err(source).into(),
        other => other,
    })?;
    let total: u64 = conn
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .map_err(sqlite_err)?;
    let per_statement = batch.clamp(1, MAX_PARAMS / columns.len());
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    // Keyset pages by rowid: every table here has one (for the id tables it is the id), so
    // each page is one index range whatever the table's size.
    let select = format!(
        "SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        names.join(", ")
    );
    let mut stmt = conn.prepare(&select).map_err(sqlite_err)?;
    let (mut after, mut done, mut copied) = (i64::MIN, 0u64, 0u64);
    progress(CopyProgress { table, done, total });
    loop {
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut rows = stmt
            .query(rusqlite::params![after, per_statement as i64])
            .map_err(sqlite_err)?;
        let mut n = 0usize;
        while let Some(row) = rows.next().map_err(sqlite_err)? {
            after = row.get(0).map_err(sqlite_err)?;
            for (i, column) in columns.iter().enumerate() {
                let value = row.get_ref(i + 1).map_err(sqlite_err)?;
                values.push(pg_value(table, column, value)?);
            }
            n += 1;
        }
        if n == 0 {
            break;
        }
        copied += insert(pg, table, &names, n, &values)?;
        done += n as u64;
        progress(CopyProgress { table, done, total });
    }
    if columns.iter().any(|c| c.name == "id") {
        move_sequence_past_ids(pg, table)?;
    }
    let target: i64 = pg.value(&format!("SELECT COUNT(*) FROM {table}"), &[])?;
    Ok(TableCopy {
        table,
        source: total,
        copied,
        target: target as u64,
    })
}

/// The SQLite table's columns, each with its type in PostgreSQL (where each must exist).
fn columns(
    conn: &rusqlite::Connection,
    pg: &PgStore,
    table: &'static str,
) -> Result<Vec<Column>, CopyError> {
    let sqlite_err = |e| StoreError::Sql {
        path: PathBuf::new(),
        source: e,
    };
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(sqlite_err)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>("name"))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(sqlite_err)?;
    let pg_types: HashMap<String, String> = pg
        .rows(
            "SELECT column_name::text AS name, data_type::text AS type
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )?
        .iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("type")?)))
        .collect::<Result<_, postgres::Error>>()
        .map_err(|e| pg.err(e))?;
    names
        .into_iter()
        .map(|name| match pg_types.get(&name) {
            Some(t) => Ok(Column {
                pg_type: t.clone(),
                name,
            }),
            None => Err(CopyError::MissingColumn {
                table,
                column: name,
                url: pg.url().clone(),
            }),
        })
        .collect()
}

/// A SQLite value as the Rust type the PostgreSQL column takes. SQLite stores what it is
/// given: a text column holding a number is copied as its text, an integer column holding
/// text is an error naming the value.
fn pg_value(
    table: &'static str,
    column: &Column,
    value: ValueRef<'_>,
) -> Result<Box<dyn ToSql + Sync + Send>, CopyError> {
    let bad = || CopyError::Value {
        table,
        column: column.name.clone(),
        value: match value {
            ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => format!("({} bytes)", b.len()),
            other => format!("{other:?}"),
        },
        pg_type: column.pg_type.clone(),
    };
    Ok(match column.pg_type.as_str() {
        "bigint" | "integer" | "smallint" => {
            let v: Option<i64> = match value {
                ValueRef::Null => None,
                ValueRef::Integer(i) => Some(i),
                _ => return Err(bad()),
            };
            match column.pg_type.as_str() {
                "bigint" => Box::new(v),
                "integer" => Box::new(v.map(i32::try_from).transpose().map_err(|_| bad())?),
                _ => Box::new(v.map(i16::try_from).transpose().map_err(|_| bad())?),
            }
        }
        "boolean" => Box::new(match value {
            ValueRef::Null => None,
            ValueRef::Integer(i) => Some(i != 0),
            _ => return Err(bad()),
        }),
        "double precision" => Box::new(match value {
            ValueRef::Null => None,
            ValueRef::Integer(i) => Some(i as f64),
            ValueRef::Real(f) => Some(f),
            _ => return Err(bad()),
        }),
        "bytea" => Box::new(match value {
            ValueRef::Null => None,
            ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
            _ => return Err(bad()),
        }),
        "text" | "character varying" => Box::new(match value {
            ValueRef::Null => None,
            ValueRef::Text(t) => Some(String::from_utf8(t.to_vec()).map_err(|_| bad())?),
            ValueRef::Integer(i) => Some(i.to_string()),
            ValueRef::Real(f) => Some(f.to_string()),
            ValueRef::Blob(_) => return Err(bad()),
        }),
        _ => return Err(bad()),
    })
}

/// Inserts `rows` rows of `names` (their values in row order); rows already there (by any
/// unique key) are left as they are. The number of rows added.
fn insert(
    pg: &PgStore,
    table: &str,
    names: &[&str],
    rows: usize,
    values: &[Box<dyn ToSql + Sync + Send>],
) -> Result<u64, StoreError> {
    let width = names.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {} ON CONFLICT DO NOTHING",
        names.join(", "),
        tuples.join(", ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
    pg.with(move |c| c.execute(sql.as_str(), &params))
}

/// Moves `table`'s identity sequence past the highest id, so that rows PostgreSQL numbers
/// next do not collide with copied ones. Never moves it back (ids a server already gave).
fn move_sequence_past_ids(pg: &PgStore, table: &str) -> Result<(), StoreError> {
    pg.rows(
        &format!(
            "SELECT setval(seq, top) FROM (
                SELECT pg_get_serial_sequence($1, 'id')::regclass AS seq,
                       (SELECT MAX(id) FROM {table}) AS top) s
             WHERE top IS NOT NULL AND top > COALESCE(pg_sequence_last_value(seq), 0)"
        ),
        &[&table],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewToken, Origin, SendState, Store};

    #[test]
    fn a_copy_keeps_ids_resumes_and_moves_the_sequences() {
        let Some(url) = super::super::postgres::test_util::temp_database("copy") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let mut s = Store::open(file.as_path()).unwrap();
        for i in 0..5 {
            let new = NewToken {
                token: crate::token::FlowToken::generate(),
                phone: crate::phone::Phone::parse(&format!("+2126100591{i:02}"), None).unwrap(),
                customer_name: None,
                campaign: "c".into(),
                origin: Origin::Send,
                initial_data: None,
                ttl: std::time::Duration::from_secs(60),
            };
            s.insert_token(&new, SendState::Sent).unwrap();
        }
        drop(s);
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute_batch(
            "INSERT INTO events (id, kind, detail, received_at) VALUES (7, 'k', 'd', 'r');
             INSERT INTO events (id, kind, detail, received_at) VALUES (40, 'k', 'd', 'r');",
        )
        .unwrap();
        let mut seen = Vec::new();
        let first = sqlite_to_postgres(&file, &url, 2, &mut |p| {
            seen.push((p.table.to_string(), p.done))
        })
        .unwrap();
        let tokens = first.iter().find(|t| t.table == "tokens").unwrap();
        assert_eq!((tokens.source, tokens.copied, tokens.target), (5, 5, 5));
        assert!(first.iter().all(TableCopy::matches), "{first:?}");
        assert!(
            seen.contains(&("tokens".into(), 4)),
            "batches of 2: {seen:?}"
        );
        let again = sqlite_to_postgres(&file, &url, 500, &mut |_| {}).unwrap();
        assert!(
            again.iter().all(|t| t.copied == 0 && t.matches()),
            "{again:?}"
        );
        let pg = PgStore::open(&url).unwrap();
        let next: i64 = pg
            .value(
                "INSERT INTO events (kind, detail, received_at) VALUES ('k', 'd', 'r') RETURNING id",
                &[],
            )
            .unwrap();
        assert_eq!(next, 41, "the sequence continues past the copied ids");
    }
}
