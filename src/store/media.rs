//! Flow media: the download jobs of the files people attached (PhotoPicker, DocumentPicker),
//! and what became of each (see `crate::media` for the format, `serve`'s media worker for the
//! downloads).

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

    /// Up to `limit` pending downloads due at `now`, oldest due first.
    fn due_media(&self, now: &Timestamp, limit: usize) -> Result<Vec<MediaJob>>;

    /// An attempt failed but the download may work later: counts it and sets the next try.
    fn media_retry(&mut self, id: i64, error: &str, next: &Timestamp) -> Result<()>;

    /// The file is stored at `path`; the keys and CDN address are forgotten.
    fn media_done(&mut self, id: i64, path: &str, size: u64, at: &Timestamp) -> Result<()>;

    /// The file cannot be had: recorded with `error`; the keys and CDN address are forgotten.
    fn media_failed(&mut self, id: i64, error: &str, at: &Timestamp) -> Result<()>;

    /// The files of one token, in the order they were queued.
    fn media_of(&self, token: &str) -> Result<Vec<MediaRecord>>;
}
