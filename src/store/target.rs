//! Where the database is: a SQLite file (the default) or a PostgreSQL server.
//!
//! `--db` / `FLOWCTL_DB` (else `DATABASE_URL`) takes either; `postgres://` or `postgresql://`
//! means PostgreSQL, anything else is a SQLite file path. The URL's password is never shown:
//! every message names the database through [`DbTarget`]'s `Display`, which masks it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A database flowctl can open.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL server, by its connection URL.
    Postgres(PgUrl),
}

/// A PostgreSQL connection URL (`postgres://user:password@host:port/db?sslmode=require`).
/// Its `Display` and `Debug` mask the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// The URL as given, password included: for the database client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the URL carries a password (in its user part or as a `password` parameter).
    pub fn has_password(&self) -> bool {
        url::Url::parse(&self.0).is_ok_and(|u| {
            u.password().is_some()
                || u.query_pairs()
                    .any(|(k, _)| k.eq_ignore_ascii_case("password"))
        })
    }

    /// This URL with another database name (the same server and credentials).
    pub fn with_database(&self, name: &str) -> PgUrl {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                u.set_path(&format!("/{name}"));
                PgUrl(u.to_string())
            }
            Err(_) => self.clone(),
        }
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                // A password given as a query parameter is masked too.
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.eq_ignore_ascii_case("password") {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                if !pairs.is_empty() {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                f.write_str(u.as_str())
            }
            Err(_) => f.write_str("postgres://(unreadable URL)"),
        }
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

impl DbTarget {
    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DbTarget::Sqlite(p) => Some(p),
            DbTarget::Postgres(_) => None,
        }
    }

    /// True for a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self, DbTarget::Postgres(_))
    }
}

impl FromStr for DbTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<DbTarget, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<postgres::Config>()
                .map_err(|e| format!("invalid PostgreSQL URL {}: {e}", PgUrl(s.to_string())))?;
            Ok(DbTarget::Postgres(PgUrl(s.to_string())))
        } else if s.is_empty() {
            Err("the database is empty: give a SQLite file path or a postgres:// URL".into())
        } else {
            Ok(DbTarget::Sqlite(PathBuf::from(s)))
        }
    }
}

impl From<PathBuf> for DbTarget {
    fn from(p: PathBuf) -> DbTarget {
        DbTarget::Sqlite(p)
    }
}

impl From<&PathBuf> for DbTarget {
    fn from(p: &PathBuf) -> DbTarget {
        DbTarget::Sqlite(p.clone())
    }
}

impl From<&DbTarget> for DbTarget {
    fn from(d: &DbTarget) -> DbTarget {
        d.clone()
    }
}

impl From<&Path> for DbTarget {
    fn from(p: &Path) -> DbTarget {
        DbTarget::Sqlite(p.to_path_buf())
    }
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "{}", p.display()),
            DbTarget::Postgres(u) => u.fmt(f),
        }
    }
}

impl fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            DbTarget::Postgres(u) => write!(f, "Postgres({u})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_postgres_and_anything_else_a_file() {
        let t: DbTarget = "postgres://u:secret@db.example:5432/flowctl"
            .parse()
            .unwrap();
        assert!(t.is_postgres());
        let t: DbTarget = "postgresql://db.example/flowctl".parse().unwrap();
        assert!(t.is_postgres());
        let t: DbTarget = "data/flowctl.db".parse().unwrap();
        assert_eq!(t.sqlite_path(), Some(Path::new("data/flowctl.db")));
        assert!("".parse::<DbTarget>().is_err());
    }

    #[test]
    fn the_password_is_never_shown() {
        let t: DbTarget = "postgres://u:s3cr3t@db.example:5432/flowctl?sslmode=require"
            .parse()
            .unwrap();
        let shown = format!("{t} {t:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("postgres://u:***@db.example:5432/flowctl"),
            "{shown}"
        );
        let t: DbTarget = "postgres://db.example/f?user=u&password=s3cr3t"
            .parse()
            .unwrap();
        assert!(!t.to_string().contains("s3cr3t"), "{t}");
        let DbTarget::Postgres(u) = t else {
            unreachable!()
        };
        assert!(u.has_password());
        let DbTarget::Postgres(u) = "postgres://u@h/d".parse::<DbTarget>().unwrap() else {
            unreachable!()
        };
        assert!(!u.has_password());
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let err = "postgres://u:s3cr3t@db.example:notaport/f"
            .parse::<DbTarget>()
            .unwrap_err();
        assert!(err.contains("invalid PostgreSQL URL"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn another_database_on_the_same_server() {
        let u = match "postgres://u:p@h:1/a?sslmode=disable"
            .parse::<DbTarget>()
            .unwrap()
        {
            DbTarget::Postgres(u) => u,
            DbTarget::Sqlite(_) => unreachable!(),
        };
        assert_eq!(
            u.with_database("b").expose(),
            "postgres://u:p@h:1/b?sslmode=disable"
        );
    }
}
