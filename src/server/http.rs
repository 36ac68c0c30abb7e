//! Small HTTP helpers shared by the handlers: bounded body reading and response builders.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// The first bytes of every body are not counted against the [`BodyBudget`]: ordinary
/// requests (a Flow request, a webhook notification) are far smaller, so they never wait on
/// the budget, and connections × this is bounded by the connection limit.
pub const UNCOUNTED_BODY: usize = 64 << 10;

/// Memory shared by the request bodies being read: the part of each body past
/// [`UNCOUNTED_BODY`] must fit in it, else the request is refused (503) instead of letting
/// a flood of large bodies (which are read in full before the signature can be checked)
/// grow the process without bound. Counted in KiB.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    kib: Arc<Semaphore>,
}

impl BodyBudget {
    /// A budget of `bytes` (at least one KiB).
    pub fn new(bytes: usize) -> BodyBudget {
        let kib = (bytes / 1024).clamp(1, u32::MAX as usize);
        BodyBudget {
            kib: Arc::new(Semaphore::new(kib)),
        }
    }

    /// KiB not in use (tests, metrics).
    pub fn available_kib(&self) -> usize {
        self.kib.available_permits()
    }
}

/// The part of the budget one body holds; given back when the body is dropped.
struct Reservation {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    fn held_kib(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Makes the reservation cover a body of `len` bytes, or refuses.
    fn cover(&mut self, len: usize) -> Result<(), BodyError> {
        let needed = len.saturating_sub(UNCOUNTED_BODY).div_ceil(1024);
        let more = needed.saturating_sub(self.held_kib());
        if more == 0 {
            return Ok(());
        }
        let more = u32::try_from(more).map_err(|_| BodyError::Busy)?;
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| BodyError::Busy)?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

/// A request body read in full, holding its share of the [`BodyBudget`] while it lives.
pub struct Body {
    bytes: Bytes,
    _reservation: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl std::ops::Deref for Body {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.bytes
    }
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over the configured limit (answer 413).
    TooLarge,
    /// The connection failed while reading (answer 400).
    Read(String),
    /// Not received within the body timeout (answer 400).
    TimedOut,
    /// The memory for bodies is in use by other requests (answer 503, retry later).
    Busy,
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) | BodyError::TimedOut => StatusCode::BAD_REQUEST,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            BodyError::TooLarge => "request body too large",
            BodyError::Read(_) | BodyError::TimedOut => "incomplete request body",
            BodyError::Busy => "server busy, retry later",
        }
    }

    /// The answer, plain text or `{"error": …}`; a 503 says when to retry.
    pub fn response(&self, as_json: bool) -> Resp {
        let mut r = if as_json {
            json_error(self.status(), self.message())
        } else {
            text(self.status(), self.message())
        };
        if matches!(self, BodyError::Busy) {
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Reads the whole body within `timeout`, refusing more than `limit` bytes without buffering
/// past it, and holding the part past [`UNCOUNTED_BODY`] in `budget` (refused when it does
/// not fit: a declared length is checked before anything is read).
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<Body, BodyError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut reservation = Reservation {
        budget: budget.kib.clone(),
        held: None,
    };
    let declared = declared.map(|len| len as usize);
    if let Some(len) = declared {
        reservation.cover(len)?;
    }
    let read = async move {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                let len = buf.len() + data.len();
                if len > limit {
                    return Err(BodyError::TooLarge);
                }
                reservation.cover(len)?;
                buf.extend_from_slice(&data);
            }
        }
        Ok(Body {
            bytes: buf.freeze(),
            _reservation: reservation.held,
        })
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

/// A response with a body and content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    with_body(status, "text/plain; charset=utf-8", body)
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    with_body(status, "application/json", value.to_string())
}

/// A JSON error `{"error": message}`.
pub fn json_error(status: StatusCode, message: &str) -> Resp {
    json(status, &serde_json::json!({ "error": message }))
}

/// A status with an empty body.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// The query string's value for `key` (percent-decoded), if present.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_budget_past_their_uncounted_part() {
        let budget = BodyBudget::new(1 << 20);
        let reservation = || Reservation {
            budget: budget.kib.clone(),
            held: None,
        };
        let mut a = reservation();
        a.cover(UNCOUNTED_BODY).unwrap();
        assert_eq!(budget.available_kib(), 1024);
        a.cover(UNCOUNTED_BODY + 512 * 1024).unwrap();
        a.cover(UNCOUNTED_BODY + 600 * 1024 - 1).unwrap();
        assert_eq!(budget.available_kib(), 424);
        let mut b = reservation();
        assert_eq!(b.cover(UNCOUNTED_BODY + 500 * 1024), Err(BodyError::Busy));
        assert_eq!(budget.available_kib(), 424, "a refusal holds nothing");
        b.cover(UNCOUNTED_BODY + 424 * 1024).unwrap();
        assert_eq!(budget.available_kib(), 0);
        drop(a);
        drop(b);
        assert_eq!(
            budget.available_kib(),
            1024,
            "dropped bodies give their share back"
        );
    }

    #[test]
    fn body_errors_answer_their_status() {
        assert_eq!(BodyError::TooLarge.response(false).status(), 413);
        assert_eq!(BodyError::TimedOut.response(true).status(), 400);
        let busy = BodyError::Busy.response(true);
        assert_eq!(busy.status(), 503);
        assert_eq!(busy.headers()[RETRY_AFTER], "1");
    }
}
