//! The media queue on PostgreSQL: the behaviour of `sqlite/media.rs`, for several `serve`
//! replicas. A file is queued once per (token, media id) whoever queues it (`ON CONFLICT`),
//! and a download is claimed before it starts: the claim moves the job's next try past its
//! lease (`FOR UPDATE SKIP LOCKED` against a replica claiming at the same instant), so no
//! other replica downloads the same file meanwhile. A claim records the claimant's database
//! session (`pg_backend_pid()`): when that session is gone (the replica was killed), the
//! file is claimable at once; a claimant alive but stuck leaves it due again once the lease
//! is over.

use std::time::Duration;

use postgres::types::{accepts, FromSql, Type};
use postgres::Row;

use super::PgStore;
use crate::media::{Descriptor, EncryptionMetadata, GraphMedia, MediaSource};
use crate::store::{MediaJob, MediaQueries, MediaRecord, MediaState, Result};
use crate::time::Timestamp;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl<'a> FromSql<'a> for MediaState {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
    }
    accepts!(TEXT, VARCHAR);
}

/// The stored encryption metadata (JSON text); a damaged value is a conversion error.
struct StoredMetadata(EncryptionMetadata);

impl<'a> FromSql<'a> for StoredMetadata {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(StoredMetadata(serde_json::from_str(
            <&str as FromSql>::from_sql(ty, raw)?,
        )?))
    }
    accepts!(TEXT, VARCHAR);
}

/// A stored count of attempts (never negative nor past `u32` in practice: it is bounded by
/// the worker's policy).
fn attempts_of(r: &Row) -> std::result::Result<u32, postgres::Error> {
    let n: i64 = r.try_get("attempts")?;
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// Reads a [`MediaJob`] by column name.
fn media_job(r: &Row) -> std::result::Result<MediaJob, postgres::Error> {
    let kind: String = r.try_get("kind")?;
    let source = if kind == "graph" {
        MediaSource::Graph(GraphMedia {
            id: r.try_get("media_id")?,
            sha256: r.try_get("sha256")?,
            mime_type: r.try_get("mime_type")?,
            file_name: r.try_get("file_name")?,
        })
    } else {
        let encryption: StoredMetadata = r.try_get("encryption")?;
        MediaSource::Cdn(Descriptor {
            media_id: r.try_get("media_id")?,
            cdn_url: r.try_get("cdn_url")?,
            file_name: r.try_get("file_name")?,
            encryption_metadata: encryption.0,
        })
    };
    Ok(MediaJob {
        id: r.try_get("id")?,
        token: r.try_get("token")?,
        field: r.try_get("field")?,
        source,
        attempts: attempts_of(r)?,
    })
}

/// Reads a [`MediaRecord`] by column name.
fn media_record(r: &Row) -> std::result::Result<MediaRecord, postgres::Error> {
    let size: Option<i64> = r.try_get("size")?;
    Ok(MediaRecord {
        field: r.try_get("field")?,
        media_id: r.try_get("media_id")?,
        file_name: r.try_get("file_name")?,
        state: r.try_get("state")?,
        path: r.try_get("path")?,
        size: size.and_then(|s| u64::try_from(s).ok()),
        error: r.try_get("error")?,
        attempts: attempts_of(r)?,
    })
}

impl MediaQueries for PgStore {
    fn enqueue_media(
        &mut self,
        token: &str,
        files: &[(String, MediaSource)],
        now: &Timestamp,
    ) -> Result<usize> {
        let encoded: Vec<Option<String>> = files
            .iter()
            .map(|(_, f)| match f {
                MediaSource::Cdn(d) => serde_json::to_string(&d.encryption_metadata).map(Some),
                MediaSource::Graph(_) => Ok(None),
            })
            .collect::<std::result::Result<_, _>>()?;
        self.write(|tx| {
            let insert = tx.prepare(
                "INSERT INTO media
                   (token, field, media_id, file_name, kind, cdn_url, encryption, sha256,
                    mime_type, state, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10)
                 ON CONFLICT (token, media_id) DO NOTHING",
            )?;
            let mut added = 0;
            for ((field, f), encryption) in files.iter().zip(&encoded) {
                let (kind, cdn_url, sha256, mime_type) = match f {
                    MediaSource::Cdn(d) => ("cdn", Some(d.cdn_url.as_str()), None, None),
                    MediaSource::Graph(g) => {
                        ("graph", None, g.sha256.as_deref(), g.mime_type.as_deref())
                    }
                };
                added += tx.execute(
                    &insert,
                    &[
                        &token,
                        field,
                        &f.media_id(),
                        &f.file_name(),
                        &kind,
                        &cdn_url,
                        encryption,
                        &sha256,
                        &mime_type,
                        now,
                    ],
                )?;
            }
            Ok(usize::try_from(added).unwrap_or(usize::MAX))
        })
    }

    fn claim_media(
        &mut self,
        now: &Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<MediaJob>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let until = now.saturating_add(lease);
        let rows = self.rows(
            "WITH due AS (
                SELECT id, next_attempt_at AS due_at FROM media
                WHERE state = 'pending'
                  AND (next_attempt_at <= $1
                       -- Claimed by a session that is gone (its process died): no need to
                       -- wait for the lease.
                       OR (claimed_pid IS NOT NULL
                           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                           WHERE a.pid = media.claimed_pid)))
                ORDER BY next_attempt_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED)
             UPDATE media m SET next_attempt_at = $3, claimed_pid = pg_backend_pid()
             FROM due WHERE m.id = due.id
             RETURNING m.id, m.token, m.field, m.kind, m.media_id, m.file_name, m.cdn_url,
                       m.encryption, m.sha256, m.mime_type, m.attempts, due.due_at",
            &[now, &limit, &until],
        )?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                let due: String = r.try_get("due_at")?;
                Ok((due, media_job(r)?))
            })
            .collect::<std::result::Result<Vec<_>, postgres::Error>>()
            .map_err(|e| self.err(e))?;
        // RETURNING keeps no order: oldest due first, as they were chosen.
        jobs.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    fn media_retry(&mut self, id: i64, error: &str, next: &Timestamp) -> Result<()> {
        self.execute(
            "UPDATE media SET attempts = attempts + 1, error = $2, next_attempt_at = $3,
                    claimed_pid = NULL
             WHERE id = $1 AND state = 'pending'",
            &[&id, &error, next],
        )
        .map(drop)
    }

    fn media_done(&mut self, id: i64, path: &str, size: u64, at: &Timestamp) -> Result<()> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.execute(
            "UPDATE media SET state = 'done', attempts = attempts + 1, path = $2, size = $3,
                    error = NULL, finished_at = $4, cdn_url = NULL, encryption = NULL,
                    claimed_pid = NULL
             WHERE id = $1",
            &[&id, &path, &size, at],
        )
        .map(drop)
    }

    fn media_failed(&mut self, id: i64, error: &str, at: &Timestamp) -> Result<()> {
        self.execute(
            "UPDATE media SET state = 'failed', attempts = attempts + 1, error = $2,
                    finished_at = $3, cdn_url = NULL, encryption = NULL, claimed_pid = NULL
             WHERE id = $1",
            &[&id, &error, at],
        )
        .map(drop)
    }

    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>> {
        self.rows(
            "SELECT field, media_id, file_name, state, path, size, error, attempts
             FROM media WHERE token = $1 ORDER BY id",
            &[&token],
        )?
        .iter()
        .map(|r| media_record(r).map_err(|e| self.err(e)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::media::tests::{at, descriptor};
    use crate::store::postgres::flow::tests::race;
    use crate::store::postgres::test_util::temp_database;

    #[test]
    fn two_replicas_claiming_at_once_never_download_one_file_twice() {
        let Some(url) = temp_database("media race") else {
            return;
        };
        let mut setup = PgStore::open(&url).unwrap();
        let now = at("2026-03-01T10:00:00.000Z");
        let files: Vec<_> = (0..120)
            .map(|i| {
                (
                    format!("f{i}"),
                    MediaSource::Cdn(descriptor(&format!("m{i}"))),
                )
            })
            .collect();
        assert_eq!(setup.enqueue_media("tok", &files, &now).unwrap(), 120);
        let lease = Duration::from_secs(300);
        let claim_all = move |s: &mut PgStore, _| {
            let mut got = Vec::new();
            loop {
                let jobs = s.claim_media(&now, 1, lease).unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.id));
            }
        };
        let (a, b) = race(&url, 1, claim_all, claim_all).pop().unwrap();
        let (sa, sb): (BTreeSet<i64>, BTreeSet<i64>) =
            (a.iter().copied().collect(), b.iter().copied().collect());
        assert_eq!(a.len() + b.len(), 120, "no file claimed twice");
        assert!(sa.is_disjoint(&sb));
        assert!(!a.is_empty() && !b.is_empty(), "both replicas took part");
        // A worker that died: its files are due again once the lease is over.
        let after = now.saturating_add(lease);
        assert_eq!(setup.claim_media(&after, 1000, lease).unwrap().len(), 120);
    }

    /// A replica killed while downloading (its database session gone): another replica takes
    /// the file at once instead of after the claim's lease; a live claimant keeps it.
    #[test]
    fn a_file_claimed_by_a_session_that_is_gone_is_claimable_at_once() {
        let Some(url) = temp_database("media claimant") else {
            return;
        };
        let mut survivor = PgStore::open(&url).unwrap();
        let now = at("2026-03-01T10:00:00.000Z");
        let files: Vec<_> = ["a", "b"]
            .iter()
            .map(|f| (f.to_string(), MediaSource::Cdn(descriptor(f))))
            .collect();
        survivor.enqueue_media("tok", &files, &now).unwrap();
        let lease = Duration::from_secs(300);
        let mut killed = PgStore::open(&url).unwrap();
        let taken = killed.claim_media(&now, 1, lease).unwrap();
        assert_eq!(taken.len(), 1);
        let mine = survivor.claim_media(&now, 10, lease).unwrap();
        assert_eq!(
            mine.len(),
            1,
            "the other file only: the first is claimed by a live session"
        );
        assert_ne!(mine[0].id, taken[0].id);
        assert!(survivor.claim_media(&now, 10, lease).unwrap().is_empty());

        drop(killed);
        let start = std::time::Instant::now();
        let orphan = loop {
            let jobs = survivor.claim_media(&now, 10, lease).unwrap();
            if !jobs.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break jobs;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            orphan.iter().map(|j| j.id).collect::<Vec<_>>(),
            [taken[0].id]
        );
        // The survivor's own claims (alive) stay its own until done, retried or the lease.
        assert!(survivor.claim_media(&now, 10, lease).unwrap().is_empty());
        // A retry clears the claim: the file waits for its next try, not for a session check.
        let retry_at = now.saturating_add(Duration::from_secs(60));
        survivor
            .media_retry(orphan[0].id, "timeout", &retry_at)
            .unwrap();
        let pid: Option<i32> = survivor
            .value(
                "SELECT claimed_pid FROM media WHERE id = $1",
                &[&orphan[0].id],
            )
            .unwrap();
        assert_eq!(pid, None);
        assert!(survivor.claim_media(&now, 10, lease).unwrap().is_empty());
        assert_eq!(survivor.claim_media(&retry_at, 10, lease).unwrap().len(), 1);
    }

    #[test]
    fn a_finished_file_forgets_its_keys_and_its_address() {
        let Some(url) = temp_database("media keys") else {
            return;
        };
        let mut s = PgStore::open(&url).unwrap();
        let now = at("2026-03-01T10:00:00.000Z");
        let files = vec![("photo".to_string(), MediaSource::Cdn(descriptor("m1")))];
        s.enqueue_media("tok", &files, &now).unwrap();
        let job = &s.claim_media(&now, 1, Duration::ZERO).unwrap()[0];
        s.media_done(job.id, "/m/tok-m1.jpg", 36, &now).unwrap();
        let row = s
            .row(
                "SELECT encryption, cdn_url FROM media WHERE media_id = 'm1'",
                &[],
            )
            .unwrap()
            .unwrap();
        let left: (Option<String>, Option<String>) = (
            row.try_get("encryption").unwrap(),
            row.try_get("cdn_url").unwrap(),
        );
        assert_eq!(left, (None, None));
    }
}
