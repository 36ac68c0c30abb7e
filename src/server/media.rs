//! Flow media off the request path: the data endpoint queues the files people attached
//! ([`take_files`]), and one worker task downloads, verifies, decrypts and stores them.
//!
//! The endpoint never waits for a download: it records each descriptor (with its keys) as a
//! pending job in the same answer path, stores the answers with the descriptors reduced to
//! `{media_id, file_name}`, and answers. The worker then fetches each file from its `cdn_url`
//! (at most [`MediaSettings::max_bytes`], within [`DOWNLOAD_TIMEOUT`]), checks and decrypts it
//! as Meta documents (`crate::media`), and writes it owner-only under the media folder as
//! `<token>-<media id>.<ext>`. A network error, a timeout or a 5xx/429 answer is retried with
//! a doubling delay ([`FIRST_RETRY`] … [`LAST_RETRY`]) up to [`MAX_ATTEMPTS`] tries; a
//! 4xx answer, a file over the limit or a failed check is recorded as failed at once, with
//! the reason. Nothing here can fail the endpoint's answer or stop the server.
//!
//! A completion message (`nfm_reply`) carries its files as Graph media ids instead
//! ([`take_completion_files`], called by the inbox worker once the completion is stored):
//! the worker asks the Graph API for the file's URL, downloads it with the access token
//! (same limits, same retries) and checks it against the message's `sha256`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};

use super::AppState;
use crate::graph::{DownloadError, GraphError};
use crate::media::{self, Descriptor, GraphMedia, MediaError, MediaSource};
use crate::store::{MediaJob, StoreError};
use crate::time::Timestamp;

/// Longest a whole download may take.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the CDN's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries of one file before it is recorded as failed (retryable errors only).
pub const MAX_ATTEMPTS: u32 = 8;
/// Delay before the first retry; doubled at each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest delay between two tries.
pub const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often the worker looks at the queue when nothing woke it (retries fall due).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Jobs claimed per query: one, so that a claim's lease covers one download only.
const BATCH: usize = 1;
/// How long a claimed job is left to this worker by the other replicas: its Graph lookup and
/// its download, each within [`DOWNLOAD_TIMEOUT`], and a margin. A worker that died leaves
/// the file to the others after it.
pub const CLAIM_LEASE: Duration = Duration::from_secs(2 * DOWNLOAD_TIMEOUT.as_secs() + 60);
/// Default of `--media-max-bytes`: 25 MiB, the largest file a picker accepts
/// (`max-file-size-kb` at most 25600, Meta's media upload reference).
pub const DEFAULT_MAX_BYTES: u64 = 25 << 20;

/// `serve`'s media settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// Where decrypted files are written (`--media-dir`, or `media/` beside the database).
    pub dir: PathBuf,
    /// Largest decrypted file accepted (`--media-max-bytes`); the download may exceed it by
    /// the encryption's overhead (one block of padding and the 10-byte HMAC) only.
    pub max_bytes: u64,
}

/// The queue's handle in the server state: the settings, the HTTP client, the wake-up.
pub struct MediaQueue {
    settings: MediaSettings,
    client: reqwest::Client,
    wake: Notify,
}

impl MediaQueue {
    /// A queue writing under `settings.dir`.
    pub fn new(settings: MediaSettings) -> Result<MediaQueue, String> {
        let client = reqwest::Client::builder()
            .timeout(DOWNLOAD_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect is followed only to an address a cdn_url may have.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() < 3 && allowed(attempt.url()).is_ok() {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| format!("cannot build the media download client: {e}"))?;
        Ok(MediaQueue {
            settings,
            client,
            wake: Notify::new(),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }
}

/// Queues the files among one screen's answers for `token` and returns the answers to store:
/// each descriptor reduced to `{media_id, file_name}`. Answers without files come back as
/// they are, without touching the database. A database failure is returned (the endpoint
/// answers 500 and the client sends the screen again; queuing twice is harmless).
pub async fn take_files(
    state: &AppState,
    token: &str,
    answers: Map<String, Value>,
) -> Result<Map<String, Value>, StoreError> {
    let found = media::find(&answers);
    if found.is_empty() {
        return Ok(answers);
    }
    let files: Vec<_> = found
        .into_iter()
        .map(|f| (f.field, MediaSource::Cdn(f.descriptor)))
        .collect();
    let token = token.to_string();
    let added = state
        .store
        .call(move |s| s.enqueue_media(&token, &files, &Timestamp::now()))
        .await?;
    if added > 0 {
        state.media.wake.notify_one();
    }
    Ok(media::without_keys(answers))
}

/// Queues the Graph media files of a completion message joined to `token` (found with
/// [`media::find_graph`]); their answers carry no keys and are stored as they came. A
/// database failure is logged: the completion itself is stored already.
pub async fn take_completion_files(
    state: &AppState,
    token: &str,
    files: Vec<(String, GraphMedia)>,
) {
    let files: Vec<_> = files
        .into_iter()
        .map(|(field, g)| (field, MediaSource::Graph(g)))
        .collect();
    if files.is_empty() {
        return;
    }
    let token = token.to_string();
    match state
        .store
        .call(move |s| s.enqueue_media(&token, &files, &Timestamp::now()))
        .await
    {
        Ok(added) if added > 0 => state.media.wake.notify_one(),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "media: cannot queue a completion message's files"),
    }
}

/// Runs the worker until `stop` turns true; the file in progress is finished first.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let jobs = match state
            .store
            .call(|s| s.claim_media(&Timestamp::now(), BATCH, CLAIM_LEASE))
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "media: cannot read the queue, will retry");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            tokio::select! {
                _ = state.media.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for job in jobs {
            if *stop.borrow() {
                return;
            }
            process(&state, job).await;
        }
    }
}

/// Why one attempt did not give a file.
#[derive(Debug)]
enum Attempt {
    /// May work later (network, timeout, 5xx, 429, the disk).
    Retry(String),
    /// Will not work: recorded as failed now.
    Fail(String),
}

async fn process(state: &AppState, job: MediaJob) {
    let (id, attempts) = (job.id, job.attempts);
    let outcome = fetch_and_store(state, &job).await;
    let now = Timestamp::now();
    let recorded = match outcome {
        Ok((path, size)) => {
            state
                .metrics
                .inc("flowctl_media_total", "outcome=\"done\"".into());
            tracing::info!(media_id = %job.source.media_id(), size, "media: stored");
            let path = path.to_string_lossy().into_owned();
            state
                .store
                .call(move |s| s.media_done(id, &path, size, &now))
                .await
        }
        Err(failure) => match after_failure(attempts, failure) {
            Next::RetryIn(delay, reason) => {
                state
                    .metrics
                    .inc("flowctl_media_retries_total", String::new());
                tracing::warn!(media_id = %job.source.media_id(), %reason, ?delay, "media: download failed, will retry");
                let next = now.saturating_add(delay);
                state
                    .store
                    .call(move |s| s.media_retry(id, &reason, &next))
                    .await
            }
            Next::GiveUp(reason) => failed(state, id, reason, now).await,
        },
    };
    if let Err(e) = recorded {
        // The job stays pending and is tried again.
        tracing::error!(error = %e, "media: cannot record the outcome of a download");
    }
}

async fn failed(
    state: &AppState,
    id: i64,
    reason: String,
    at: Timestamp,
) -> Result<(), StoreError> {
    state
        .metrics
        .inc("flowctl_media_total", "outcome=\"failed\"".into());
    tracing::warn!(%reason, "media: failed");
    state
        .store
        .call(move |s| s.media_failed(id, &reason, &at))
        .await
}

/// What follows a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Try again after this delay; the reason is recorded meanwhile.
    RetryIn(Duration, String),
    /// Record the file as failed with this reason.
    GiveUp(String),
}

/// The policy: a retryable failure is tried again until [`MAX_ATTEMPTS`] tries in all, with a
/// growing delay; any other failure, or the last try, is final.
fn after_failure(attempts_before: u32, failure: Attempt) -> Next {
    match failure {
        Attempt::Retry(reason) if attempts_before + 1 < MAX_ATTEMPTS => {
            Next::RetryIn(retry_delay(attempts_before), reason)
        }
        Attempt::Retry(reason) => {
            Next::GiveUp(format!("gave up after {MAX_ATTEMPTS} attempts: {reason}"))
        }
        Attempt::Fail(reason) => Next::GiveUp(reason),
    }
}

/// The delay before try `attempts + 2`: doubling from [`FIRST_RETRY`], at most [`LAST_RETRY`].
fn retry_delay(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << attempts.min(16))
        .min(LAST_RETRY)
}

async fn fetch_and_store(state: &AppState, job: &MediaJob) -> Result<(PathBuf, u64), Attempt> {
    let settings = &state.media.settings;
    let plain = match &job.source {
        MediaSource::Cdn(d) => fetch_cdn(&state.media, d).await?,
        MediaSource::Graph(g) => fetch_graph(state, g).await?,
    };
    if plain.len() as u64 > settings.max_bytes {
        return Err(Attempt::Fail(format!(
            "too_big: {} bytes, over the limit of {}",
            plain.len(),
            settings.max_bytes
        )));
    }
    let size = plain.len() as u64;
    let dir = settings.dir.clone();
    let name = media::file_name_for(&job.token, job.source.media_id(), job.source.file_name());
    let path = tokio::task::spawn_blocking(move || media::write_private(&dir, &name, &plain))
        .await
        .map_err(|e| Attempt::Retry(format!("write task: {e}")))?
        .map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            Attempt::Retry(format!("{e}{cause}"))
        })?;
    Ok((path, size))
}

/// The data endpoint's file: download from the CDN, verify, decrypt.
async fn fetch_cdn(queue: &MediaQueue, d: &Descriptor) -> Result<Vec<u8>, Attempt> {
    let url = url::Url::parse(&d.cdn_url).map_err(|e| Attempt::Fail(format!("cdn_url: {e}")))?;
    allowed(&url).map_err(Attempt::Fail)?;
    // The encrypted file is the padded plaintext plus the HMAC.
    let limit = queue.settings.max_bytes + 16 + media::HMAC_LEN as u64;
    let file = download(&queue.client, url, limit).await?;
    let meta = d.encryption_metadata.clone();
    tokio::task::spawn_blocking(move || media::decrypt(&meta, &file))
        .await
        .map_err(|e| Attempt::Retry(format!("decryption task: {e}")))?
        .map_err(|e: MediaError| Attempt::Fail(format!("{}: {e}", e.check())))
}

/// A completion message's file: its URL from the Graph API, then the file with the access
/// token, checked against the SHA-256 Meta gave.
async fn fetch_graph(state: &AppState, g: &GraphMedia) -> Result<Vec<u8>, Attempt> {
    let graph = match &state.sender {
        Ok(sender) => &sender.graph,
        Err(why) => {
            return Err(Attempt::Fail(format!(
                "no Graph API settings to download a completion message's file: {why}"
            )))
        }
    };
    let found = graph.media_url(&g.id).await.map_err(graph_attempt)?;
    let url = url::Url::parse(&found.url)
        .map_err(|e| Attempt::Fail(format!("the Graph API's media url: {e}")))?;
    // The access token goes with the download: only to an address a media URL may have.
    allowed(&url).map_err(Attempt::Fail)?;
    let file = graph
        .download_media(url.as_str(), state.media.settings.max_bytes)
        .await
        .map_err(|e| match e {
            DownloadError::TooBig(limit) => {
                Attempt::Fail(format!("too_big: the download is over {limit} bytes"))
            }
            DownloadError::Graph(e) => graph_attempt(e),
        })?;
    if let Some(expected) = g.sha256.as_deref().or(found.sha256.as_deref()) {
        media::check_sha256(expected, &file).map_err(|_| {
            Attempt::Fail("sha256: SHA-256 of the downloaded file does not match".into())
        })?;
    }
    Ok(file)
}

/// A Graph API failure: retried when the API says so or did not answer.
fn graph_attempt(e: GraphError) -> Attempt {
    let retry = e.is_retryable()
        || e.is_outage()
        || matches!(e, GraphError::Timeout(_) | GraphError::Network(_));
    let reason = format!("Graph API: {e}");
    if retry {
        Attempt::Retry(reason)
    } else {
        Attempt::Fail(reason)
    }
}

/// A CDN address a download may go to: HTTPS anywhere, plain HTTP only on the loopback (the
/// local sandbox). Anything else (`file:`, a LAN address over HTTP) is refused. Errors never
/// quote the URL, whose query is a credential of sorts.
fn allowed(url: &url::Url) -> Result<(), String> {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        scheme => Err(format!(
            "cdn_url: {scheme}:// to {} is not allowed (https only)",
            url.host_str().unwrap_or("no host")
        )),
    }
}

/// GETs `url`, reading at most `limit` bytes.
async fn download(client: &reqwest::Client, url: url::Url, limit: u64) -> Result<Vec<u8>, Attempt> {
    let mut answer = client.get(url).send().await.map_err(network)?;
    let status = answer.status();
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        return Err(Attempt::Retry(format!(
            "CDN answered HTTP {}",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(Attempt::Fail(format!(
            "CDN answered HTTP {}",
            status.as_u16()
        )));
    }
    let too_big = || Attempt::Fail(format!("too_big: the download is over {limit} bytes"));
    if answer.content_length().is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(network)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn network(e: reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transfer failed"
    };
    // Without the URL (reqwest's Display quotes it).
    Attempt::Retry(format!("CDN {kind}: {}", e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_then_stay_at_the_last_delay() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(6), LAST_RETRY);
        assert_eq!(retry_delay(40), LAST_RETRY);
    }

    #[test]
    fn retryable_failures_are_retried_until_the_last_attempt_others_fail_at_once() {
        let retry = || Attempt::Retry("CDN answered HTTP 500".into());
        assert_eq!(
            after_failure(0, retry()),
            Next::RetryIn(FIRST_RETRY, "CDN answered HTTP 500".into())
        );
        assert!(matches!(
            after_failure(MAX_ATTEMPTS - 2, retry()),
            Next::RetryIn(..)
        ));
        assert_eq!(
            after_failure(MAX_ATTEMPTS - 1, retry()),
            Next::GiveUp(format!(
                "gave up after {MAX_ATTEMPTS} attempts: CDN answered HTTP 500"
            ))
        );
        assert_eq!(
            after_failure(0, Attempt::Fail("hmac: mismatch".into())),
            Next::GiveUp("hmac: mismatch".into())
        );
    }

    #[test]
    fn only_https_or_loopback_http_is_downloaded() {
        let ok = |u: &str| allowed(&url::Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://mmg.whatsapp.net/v/t62/abc?ccb=1"));
        assert!(ok("http://127.0.0.1:9090/_sandbox/cdn/x"));
        assert!(ok("http://localhost/x"));
        assert!(!ok("http://10.0.0.5/x"));
        assert!(!ok("http://169.254.169.254/latest/meta-data"));
        assert!(!ok("file:///etc/passwd"));
        assert!(!ok("ftp://example.com/x"));
    }
}
