//! Queries of the media queue (`crate::store::MediaQueries`).

use rusqlite::params;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};

use super::SqliteStore;
use crate::media::{Descriptor, EncryptionMetadata, GraphMedia, MediaSource};
use crate::store::{MediaJob, MediaQueries, MediaRecord, MediaState, Result};
use crate::time::Timestamp;

impl FromSql for MediaState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// Reads the stored encryption metadata; a damaged value is a conversion error.
fn metadata(text: &str) -> rusqlite::Result<EncryptionMetadata> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl MediaQueries for SqliteStore {
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
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO media
                   (token, field, media_id, file_name, kind, cdn_url, encryption, sha256,
                    mime_type, state, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10)",
            )?;
            let mut added = 0;
            for ((field, f), encryption) in files.iter().zip(&encoded) {
                let (kind, cdn_url, sha256, mime_type) = match f {
                    MediaSource::Cdn(d) => ("cdn", Some(d.cdn_url.as_str()), None, None),
                    MediaSource::Graph(g) => {
                        ("graph", None, g.sha256.as_deref(), g.mime_type.as_deref())
                    }
                };
                added += stmt.execute(params![
                    token,
                    field,
                    f.media_id(),
                    f.file_name(),
                    kind,
                    cdn_url,
                    encryption,
                    sha256,
                    mime_type,
                    now
                ])?;
            }
            Ok(added)
        })
    }

    /// One writer: nobody else downloads, so the claim is the read of the due jobs (a job
    /// stays due until its outcome is recorded, as before there were replicas).
    fn claim_media(
        &mut self,
        now: &Timestamp,
        limit: usize,
        _lease: std::time::Duration,
    ) -> Result<Vec<MediaJob>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "SELECT id, token, field, kind, media_id, file_name, cdn_url, encryption, sha256,
                    mime_type, attempts
             FROM media
             WHERE state = 'pending' AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id
             LIMIT ?2",
            params![now, limit],
            |r| {
                let kind: String = r.get("kind")?;
                let source = if kind == "graph" {
                    MediaSource::Graph(GraphMedia {
                        id: r.get("media_id")?,
                        sha256: r.get("sha256")?,
                        mime_type: r.get("mime_type")?,
                        file_name: r.get("file_name")?,
                    })
                } else {
                    let encryption: String = r.get("encryption")?;
                    MediaSource::Cdn(Descriptor {
                        media_id: r.get("media_id")?,
                        cdn_url: r.get("cdn_url")?,
                        file_name: r.get("file_name")?,
                        encryption_metadata: metadata(&encryption)?,
                    })
                };
                Ok(MediaJob {
                    id: r.get("id")?,
                    token: r.get("token")?,
                    field: r.get("field")?,
                    source,
                    attempts: r.get("attempts")?,
                })
            },
        )
    }

    fn media_retry(&mut self, id: i64, error: &str, next: &Timestamp) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE media SET attempts = attempts + 1, error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 AND state = 'pending'",
                params![id, error, next],
            )
            .map(drop)
        })
    }

    fn media_done(&mut self, id: i64, path: &str, size: u64, at: &Timestamp) -> Result<()> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.write(|tx| {
            tx.execute(
                "UPDATE media SET state = 'done', attempts = attempts + 1, path = ?2, size = ?3,
                        error = NULL, finished_at = ?4, cdn_url = NULL, encryption = NULL
                 WHERE id = ?1",
                params![id, path, size, at],
            )
            .map(drop)
        })
    }

    fn media_failed(&mut self, id: i64, error: &str, at: &Timestamp) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE media SET state = 'failed', attempts = attempts + 1, error = ?2,
                        finished_at = ?3, cdn_url = NULL, encryption = NULL
                 WHERE id = ?1",
                params![id, error, at],
            )
            .map(drop)
        })
    }

    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>> {
        self.rows(
            "SELECT field, media_id, file_name, state, path, size, error, attempts
             FROM media WHERE token = ?1 ORDER BY id",
            params![token],
            |r| {
                let size: Option<i64> = r.get("size")?;
                Ok(MediaRecord {
                    field: r.get("field")?,
                    media_id: r.get("media_id")?,
                    file_name: r.get("file_name")?,
                    state: r.get("state")?,
                    path: r.get("path")?,
                    size: size.and_then(|s| u64::try_from(s).ok()),
                    error: r.get("error")?,
                    attempts: r.get("attempts")?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::media::tests::{at, descriptor};

    #[test]
    fn a_finished_file_forgets_its_keys_and_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let now = at("2026-03-01T10:00:00.000Z");
        let files = vec![("photo".to_string(), MediaSource::Cdn(descriptor("m1")))];
        s.enqueue_media("tok", &files, &now).unwrap();
        let job = &s.claim_media(&now, 1, std::time::Duration::ZERO).unwrap()[0];
        s.media_done(job.id, "/m/tok-m1.jpg", 36, &now).unwrap();
        let left: (Option<String>, Option<String>) = s
            .row(
                "SELECT encryption, cdn_url FROM media WHERE media_id = 'm1'",
                [],
                |r| Ok((r.get("encryption")?, r.get("cdn_url")?)),
            )
            .unwrap()
            .unwrap();
        assert_eq!(left, (None, None));
    }
}
