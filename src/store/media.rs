//! Flow media: the download jobs of the files people attached (PhotoPicker, DocumentPicker),
//! and what became of each (see `crate::media` for the format, `serve`'s media worker for the
//! downloads).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Result;
use crate::media::MediaSource;
use crate::time::Timestamp;

/// Where a file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaState {
    /// Waiting for its (next) download.
    Pending,
    /// Downloaded, verified, decrypted and stored.
    Done,
    /// Given up: the reason is in [`MediaRecord::error`].
    Failed,
}

impl MediaState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::Pending => "pending",
            MediaState::Done => "done",
            MediaState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for MediaState {
    type Err = super::UnknownValue;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pending" => Ok(MediaState::Pending),
            "done" => Ok(MediaState::Done),
            "failed" => Ok(MediaState::Failed),
            other => Err(super::UnknownValue {
                what: "media state",
                value: other.to_string(),
            }),
        }
    }
}

/// A download to do: what the worker needs, keys included.
#[derive(Clone, Debug)]
pub struct MediaJob {
    pub id: i64,
    pub token: String,
    pub field: String,
    pub source: MediaSource,
    /// Attempts made so far.
    pub attempts: u32,
}

/// One file as `export` and the tests see it (never the keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The answer key the file came under.
    pub field: String,
    pub media_id: String,
    /// The name on the person's device (untrusted).
    pub file_name: Option<String>,
    pub state: MediaState,
    /// The stored file (done).
    pub path: Option<String>,
    /// Its size in bytes (done).
    pub size: Option<u64>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub attempts: u32,
}

/// The media queue's operations.
pub trait MediaQueries {
    /// Queues the files of one token's answers for download, due now. A file already queued
    /// for that token (same media id: the client sent the screen again) is left as it is.
    /// Returns how many were new.
    fn enqueue_media(
        &mut self,
        token: &str,
        files: &[(String, MediaSource)],
        now: &Timestamp,
    ) -> Result<usize>;

    /// Claims up to `limit` pending downloads due at `now`, oldest due first, for `lease`:
    /// they are not due for anyone else (another `serve` replica) until the lease is over,
    /// unless their outcome is recorded before (a retry sets their next try, done and failed
    /// end them). A worker that dies mid-download leaves its files to the others after the
    /// lease. With one writer (SQLite) nothing else downloads, and the jobs stay due.
    fn claim_media(
        &mut self,
        now: &Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<MediaJob>>;

    /// An attempt failed but the download may work later: counts it and sets the next try.
    fn media_retry(&mut self, id: i64, error: &str, next: &Timestamp) -> Result<()>;

    /// The file is stored at `path`; the keys and CDN address are forgotten.
    fn media_done(&mut self, id: i64, path: &str, size: u64, at: &Timestamp) -> Result<()>;

    /// The file cannot be had: recorded with `error`; the keys and CDN address are forgotten.
    fn media_failed(&mut self, id: i64, error: &str, at: &Timestamp) -> Result<()>;

    /// The files of one token, in the order they were queued.
    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>>;
}

/// The media queue's operations, on every backend.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::{Descriptor, GraphMedia, Keys};
    use crate::store::test_util::each_backend;

    /// A file's descriptor as the data endpoint receives it, keys included.
    pub(crate) fn descriptor(id: &str) -> Descriptor {
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

    pub(crate) fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn a_queued_file_is_due_once_and_keeps_its_keys_until_finished() {
        each_backend("a_queued_file_is_due_once", |s| {
            let now = at("2026-03-01T10:00:00.000Z");
            let files = vec![("photo".to_string(), MediaSource::Cdn(descriptor("m1")))];
            assert_eq!(s.enqueue_media("tok", &files, &now).unwrap(), 1);
            // The same screen sent again queues nothing new.
            assert_eq!(s.enqueue_media("tok", &files, &now).unwrap(), 0);
            let due = s.claim_media(&now, 10, LEASE).unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].source, files[0].1);
            assert_eq!(
                (due[0].token.as_str(), due[0].field.as_str()),
                ("tok", "photo")
            );

            s.media_retry(due[0].id, "HTTP 500", &at("2026-03-01T10:00:05.000Z"))
                .unwrap();
            assert!(s.claim_media(&now, 10, LEASE).unwrap().is_empty());
            let later = s
                .claim_media(&at("2026-03-01T10:00:05.000Z"), 10, LEASE)
                .unwrap();
            assert_eq!(later[0].attempts, 1);
            assert_eq!(later[0].source, files[0].1, "the keys are still there");

            s.media_done(due[0].id, "/m/tok-m1.jpg", 36, &now).unwrap();
            let rec = &s.media_of("tok").unwrap()[0];
            assert_eq!(rec.state, MediaState::Done);
            assert_eq!(rec.path.as_deref(), Some("/m/tok-m1.jpg"));
            assert_eq!(
                (rec.size, rec.attempts, rec.error.clone()),
                (Some(36), 2, None)
            );
            assert!(s
                .claim_media(&at("2030-01-01T00:00:00.000Z"), 10, LEASE)
                .unwrap()
                .is_empty());
        });
    }

    #[test]
    fn a_failed_file_keeps_its_reason_and_is_never_due_again() {
        each_backend("a_failed_file_keeps_its_reason", |s| {
            let now = at("2026-03-01T10:00:00.000Z");
            let graph = MediaSource::Graph(GraphMedia {
                id: "1234".into(),
                sha256: Some("abc=".into()),
                mime_type: Some("application/pdf".into()),
                file_name: Some("a.pdf".into()),
            });
            s.enqueue_media("tok", &[("doc".into(), graph.clone())], &now)
                .unwrap();
            let due = s.claim_media(&now, 1, LEASE).unwrap();
            assert_eq!(due[0].source, graph);
            let id = due[0].id;
            s.media_failed(id, "hmac: tampered", &now).unwrap();
            assert!(s
                .claim_media(&at("2030-01-01T00:00:00.000Z"), 10, LEASE)
                .unwrap()
                .is_empty());
            let rec = &s.media_of("tok").unwrap()[0];
            assert_eq!(rec.state, MediaState::Failed);
            assert_eq!(rec.error.as_deref(), Some("hmac: tampered"));
            assert_eq!((rec.attempts, rec.path.clone()), (1, None));
        });
    }

    #[test]
    fn due_files_come_oldest_due_first_up_to_the_limit() {
        each_backend("due_files_come_oldest_due_first", |s| {
            let t0 = at("2026-03-01T10:00:00.000Z");
            let t1 = at("2026-03-01T10:00:01.000Z");
            s.enqueue_media(
                "b",
                &[("f".into(), MediaSource::Cdn(descriptor("late")))],
                &t1,
            )
            .unwrap();
            s.enqueue_media(
                "a",
                &[("f".into(), MediaSource::Cdn(descriptor("early")))],
                &t0,
            )
            .unwrap();
            s.enqueue_media(
                "c",
                &[("f".into(), MediaSource::Cdn(descriptor("later")))],
                &t1,
            )
            .unwrap();
            let due = s.claim_media(&t1, 2, LEASE).unwrap();
            let ids: Vec<_> = due
                .iter()
                .map(|j| j.source.media_id().to_string())
                .collect();
            assert_eq!(ids, ["early", "late"]);
        });
    }
}
