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

    fn due_media(&self, now: &Timestamp, limit: usize) -> Result<Vec<MediaJob>> {
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
    use crate::media::Keys;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn descriptor(id: &str) -> Descriptor {
        let keys = Keys {
            encryption_key: [1; 32],
            hmac_key: [2; 32],
            iv: [3; 16],
        };
        Descriptor {
            media_id: id.into(),
            cdn_url: format!("http://cdn.test/{id}"),
            file_name: Some("a.jpg".into()),
            encryption_metadata: crate::media::encrypt(b"x", &keys).1,
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn a_queued_file_is_due_once_and_keeps_its_keys_until_finished() {
        let (_d, mut s) = store();
        let now = at("2026-03-01T10:00:00.000Z");
        let files = vec![("photo".to_string(), MediaSource::Cdn(descriptor("m1")))];
        assert_eq!(s.enqueue_media("tok", &files, &now).unwrap(), 1);
        // The same screen sent again queues nothing new.
        assert_eq!(s.enqueue_media("tok", &files, &now).unwrap(), 0);
        let due = s.due_media(&now, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].source, files[0].1);

        s.media_retry(due[0].id, "HTTP 500", &at("2026-03-01T10:00:05.000Z"))
            .unwrap();
        assert!(s.due_media(&now, 10).unwrap().is_empty());
        let later = s.due_media(&at("2026-03-01T10:00:05.000Z"), 10).unwrap();
        assert_eq!(later[0].attempts, 1);

        s.media_done(due[0].id, "/m/tok-m1.jpg", 36, &now).unwrap();
        let rec = &s.media_of("tok").unwrap()[0];
        assert_eq!(rec.state, MediaState::Done);
        assert_eq!(rec.path.as_deref(), Some("/m/tok-m1.jpg"));
        assert_eq!(
            (rec.size, rec.attempts, rec.error.clone()),
            (Some(36), 2, None)
        );
        let keys_left: Option<String> = s
            .value("SELECT encryption FROM media WHERE media_id = 'm1'", [])
            .unwrap();
        assert_eq!(keys_left, None);
    }

    #[test]
    fn a_failed_file_keeps_its_reason_and_is_never_due_again() {
        let (_d, mut s) = store();
        let now = at("2026-03-01T10:00:00.000Z");
        let graph = MediaSource::Graph(GraphMedia {
            id: "1234".into(),
            sha256: Some("abc=".into()),
            mime_type: Some("application/pdf".into()),
            file_name: Some("a.pdf".into()),
        });
        s.enqueue_media("tok", &[("doc".into(), graph.clone())], &now)
            .unwrap();
        let due = s.due_media(&now, 1).unwrap();
        assert_eq!(due[0].source, graph);
        let id = due[0].id;
        s.media_failed(id, "hmac: tampered", &now).unwrap();
        assert!(s
            .due_media(&at("2030-01-01T00:00:00.000Z"), 10)
            .unwrap()
            .is_empty());
        let rec = &s.media_of("tok").unwrap()[0];
        assert_eq!(rec.state, MediaState::Failed);
        assert_eq!(rec.error.as_deref(), Some("hmac: tampered"));
    }
}
