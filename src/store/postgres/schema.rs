//! The versioned PostgreSQL migrations, one SQL file each in `migrations/`. Append new ones;
//! never edit one that has shipped. PostgreSQL's versions count on their own: version 1 is
//! the schema of SQLite's versions 1 to 4.

/// `(version, SQL)` in order. Each runs in its own transaction, once, under the migration
/// lock.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_serve.sql")),
    (3, include_str!("migrations/0003_bulk.sql")),
    (4, include_str!("migrations/0004_inbox_claimant.sql")),
    (5, include_str!("migrations/0005_media_claimant.sql")),
    (6, include_str!("migrations/0006_bulk_rate_cut.sql")),
    (7, include_str!("migrations/0007_token_order.sql")),
];

/// The version this build brings a database to.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}
