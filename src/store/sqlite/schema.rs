//! The versioned migrations, one SQL file each in `migrations/`. Append new ones; never edit
//! one that has shipped (a database records the versions it has applied, not their text).

/// `(version, SQL)` in order. Each runs in its own transaction, once.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_later_failures.sql")),
    (3, include_str!("migrations/0003_media.sql")),
    (4, include_str!("migrations/0004_suppressions.sql")),
];

/// The version this build brings a database to.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}
