//! `flowctl serve`: the only inbound HTTP. A hyper 1.x server whose router is a `match` on
//! (method, path); each route's handler lives in its own module.

pub mod api;
pub mod chatwoot;
mod flow_endpoint;
pub mod forward;
pub mod health;
pub mod http;
pub mod inbox;
pub mod io;
pub mod media;
pub mod metrics;
pub mod rsa_pool;
mod signed;
pub mod ui;
pub mod webhook;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::crypto::PrivateKey;
use crate::flow_json::FlowJson;
use crate::secret::Secret;
use crate::store::SharedStore;
pub use api::Sender;
use http::Resp;
pub use metrics::Metrics;

/// Limits that protect the server from slow or abusive clients.
///
/// [`Limits::BUILTIN`] are the values used when nothing overrides them; `serve`'s settings
/// (`crate::config::ServeSettings`) apply `--max-body` and the environment's overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Time allowed to receive a request's headers, also the longest a kept-alive
    /// connection may stay idle.
    pub header_timeout: Duration,
    /// Time allowed to receive a request's body.
    pub body_timeout: Duration,
    /// Time an answer may wait for its client to read (a write making no progress); the
    /// connection is closed after it.
    pub write_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Memory for request bodies being read, shared by all connections (the part of each
    /// body past [`http::UNCOUNTED_BODY`]); a body that does not fit is refused with 503.
    pub body_memory: usize,
}

impl Limits {
    /// The values used when nothing overrides them.
    pub const BUILTIN: Limits = Limits {
        max_body: 1 << 20,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(10),
        max_connections: 1024,
        body_memory: 64 << 20,
    };
}

/// Everything the handlers share.
pub struct AppState {
    pub store: SharedStore,
    /// The data endpoint's private key (`None`: `/api/flow` answers 421 to everything).
    pub key: Option<Arc<PrivateKey>>,
    /// App secrets accepted for `X-Hub-Signature-256` (several during a rotation). Empty
    /// only with `--allow-unsigned`.
    pub app_secrets: Vec<Secret>,
    /// The Flow JSON driving screen routing, if given.
    pub flow: Option<Arc<FlowJson>>,
    /// First screen when there is no Flow JSON (`FLOW_SCREEN`).
    pub first_screen: Option<String>,
    pub limits: Limits,
    pub metrics: Metrics,
    /// The data endpoint's RSA work, off the main runtime: the RSA lane (a runtime whose
    /// threads serve the data endpoint's connections, RSA included) and, for a data endpoint
    /// request on any other connection, dedicated threads fed by a queue (see `rsa_pool`).
    pub rsa: rsa_pool::RsaPool,
    /// `WEBHOOK_VERIFY_TOKEN` (`None`: the verification GET always answers 403).
    pub verify_token: Option<Secret>,
    /// `FLOWCTL_API_KEY` (`None`: the CRM routes answer 404).
    pub api_key: Option<Secret>,
    /// What `/api/send-flow` sends with, or why sending is not configured (503).
    pub sender: Result<Arc<Sender>, String>,
    /// Wakes the inbox worker when the webhook stored a body.
    pub inbox: Notify,
    /// Whether the `SUCCESS` params carry the answers besides the `flow_token`.
    pub success_answers: bool,
    /// `--forward`: the business's handler decides the screens (`None`: built-in routing).
    pub forward: Option<forward::Forwarder>,
    /// `CHATWOOT_WEBHOOK_SECRET`: the secret path of `/api/chatwoot-webhook/<secret>`
    /// (`None`: the route answers 404).
    pub chatwoot_secret: Option<Secret>,
    /// `CHATWOOT_SIGNING_SECRET`: when set, Chatwoot's `X-Chatwoot-Signature` is required.
    pub chatwoot_signing_secret: Option<Secret>,
    /// Flow media: where files go, and the download worker's queue.
    pub media: media::MediaQueue,
    /// The database file, checked by `/healthz` (`None`: only the query is checked).
    pub db_file: Option<health::DbFile>,
    /// The keywords that put a sender on the suppression list, or take them off it.
    pub optout: crate::optout::Keywords,
    /// The questions of `--flow-json` for the `/ui` pages' labels and option titles.
    pub ui_questions: Option<Arc<crate::report::Questions>>,
}

impl AppState {
    /// The secrets as byte slices, for signature checks.
    pub fn secret_bytes(&self) -> Vec<&[u8]> {
        self.app_secrets
            .iter()
            .map(|s| s.expose().as_bytes())
            .collect()
    }
}

/// Serves `listener` until `shutdown` resolves, then drains in-flight requests (at most
/// `drain` long). The webhook inbox worker runs beside the listener (it first processes
/// what a previous run left) and stops after the connections, finishing its current row.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let (stop_worker, worker_stop) = tokio::sync::watch::channel(false);
    let media_worker = tokio::spawn(media::run(state.clone(), worker_stop.clone()));
    let worker = tokio::spawn(inbox::run(state.clone(), worker_stop));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let conn_slots = Arc::new(Semaphore::new(state.limits.max_connections));
    let budget = http::BodyBudget::new(state.limits.body_memory);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = conn_slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            peer,
            state: state.clone(),
            budget: budget.clone(),
            watcher: graceful.watcher(),
            permit,
        };
        let lane = state.rsa.lane();
        tokio::spawn(async move {
            let lane = lane_for(&stream, lane, conn.state.limits.header_timeout).await;
            let label = if lane.is_some() { "rsa" } else { "main" };
            conn.state
                .metrics
                .inc("flowctl_connections_total", format!("lane=\"{label}\""));
            match lane {
                Some(lane) => conn.serve_on(lane, stream),
                None => conn.serve(stream).await,
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => tracing::warn!("shutdown: gave up waiting for open connections"),
    }
    let _ = stop_worker.send(true);
    if tokio::time::timeout(drain, worker).await.is_err() {
        // Rows not finished stay in the inbox and are processed at the next start.
        tracing::warn!("shutdown: the webhook inbox worker did not stop in time");
    }
    if tokio::time::timeout(drain, media_worker).await.is_err() {
        // Pending downloads stay queued and are tried at the next start.
        tracing::warn!("shutdown: the media worker did not stop in time");
    }
    Ok(())
}

/// One accepted connection, before it is served.
struct Connection {
    peer: SocketAddr,
    state: Arc<AppState>,
    budget: http::BodyBudget,
    watcher: hyper_util::server::graceful::Watcher,
    /// Its place among `Limits::max_connections`, given back when it closes.
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection's requests on the current runtime until it closes.
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Connection {
            peer,
            state,
            budget,
            watcher,
            permit,
        } = self;
        let header_timeout = state.limits.header_timeout;
        let stream = io::WriteDeadline::new(stream, state.limits.write_timeout);
        let service = service_fn(move |req| {
            let (state, budget) = (state.clone(), budget.clone());
            async move { Ok::<_, Infallible>(route(state, &budget, peer, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let _ = watcher.watch(conn).await;
        drop(permit);
    }

    /// Moves the connection to the RSA lane's runtime and serves it there.
    fn serve_on(self, lane: tokio::runtime::Handle, stream: tokio::net::TcpStream) {
        // The socket leaves this runtime's reactor and joins the lane's.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot move a connection to the RSA lane");
                return;
            }
        };
        lane.spawn(async move {
            match tokio::net::TcpStream::from_std(std_stream) {
                Ok(stream) => self.serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot move a connection to the RSA lane"),
            }
        });
    }
}

/// How long a new connection's first bytes are awaited to choose where it is served. A client
/// (or proxy) sends its request right after connecting; one that is slower is served by the
/// main runtime, where hyper's header timeout applies to it as to any other.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(200);

/// The RSA lane when `stream`'s first request is a data endpoint `POST` (and there is a
/// lane): that connection is served on the lane's threads, RSA included (see `rsa_pool`).
/// Anything else stays on the main runtime, where `/healthz` and the webhook never wait
/// behind an RSA operation. Only peeks: the bytes stay for hyper to read.
async fn lane_for(
    stream: &tokio::net::TcpStream,
    lane: Option<tokio::runtime::Handle>,
    header_timeout: Duration,
) -> Option<tokio::runtime::Handle> {
    let lane = lane?;
    let mut first = [0u8; FLOW_REQUEST_LINE.len()];
    let wait = FIRST_BYTES_WAIT.min(header_timeout);
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(n)) if is_flow_request(&first[..n]) => Some(lane),
        _ => None,
    }
}

/// What a data endpoint request starts with (its path may go on with `?…`).
const FLOW_REQUEST_LINE: &[u8] = b"POST /api/flow ";

fn is_flow_request(first: &[u8]) -> bool {
    first == FLOW_REQUEST_LINE
        || (first.len() == FLOW_REQUEST_LINE.len()
            && first.starts_with(&FLOW_REQUEST_LINE[..FLOW_REQUEST_LINE.len() - 1])
            && first[FLOW_REQUEST_LINE.len() - 1] == b'?')
}

/// Routes one request and writes its one log line.
async fn route(
    state: Arc<AppState>,
    budget: &http::BodyBudget,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (label, resp) = match (&method, path.as_str()) {
        (&Method::POST, "/api/flow") => (
            "/api/flow",
            flow_endpoint::handle(&state, budget, req).await,
        ),
        (&Method::GET, "/api/message-webhook") => (
            "/api/message-webhook",
            webhook::verify(&state, req.uri().query()),
        ),
        (&Method::POST, "/api/message-webhook") => (
            "/api/message-webhook",
            webhook::receive(&state, budget, req).await,
        ),
        (&Method::POST, "/api/send-flow") => {
            ("/api/send-flow", api::send_flow(&state, budget, req).await)
        }
        (&Method::GET, "/api/responses") => ("/api/responses", api::responses(&state, req).await),
        (&Method::GET, "/healthz") => ("/healthz", health(&state).await),
        (&Method::GET, "/metrics") => (
            "/metrics",
            http::text(StatusCode::OK, state.metrics.render()),
        ),
        (_, p) if p == ui::PREFIX || p.starts_with("/ui/") => {
            (ui::PREFIX, ui::handle(&state, budget, req).await)
        }
        (&Method::POST, p) if p.starts_with(chatwoot::PREFIX) => {
            let given = p
                .strip_prefix(chatwoot::PREFIX)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or("");
            // The label never carries the secret.
            (
                chatwoot::PREFIX,
                chatwoot::receive(&state, budget, req, given).await,
            )
        }
        (
            _,
            "/api/flow"
            | "/api/message-webhook"
            | "/api/send-flow"
            | "/api/responses"
            | "/healthz"
            | "/metrics",
        ) => ("other", http::empty(StatusCode::METHOD_NOT_ALLOWED)),
        _ => (
            "other",
            http::json_error(StatusCode::NOT_FOUND, "no such route"),
        ),
    };
    let status = resp.status().as_u16();
    state.metrics.request(label, status);
    // The metric keeps one label for unknown routes; the log line shows what was asked for
    // (cut short: a path is the client's to choose).
    let shown: String = if label == "other" {
        path.chars().take(200).collect()
    } else {
        label.to_string()
    };
    // Tenths of a millisecond: finer digits are noise, and long ones hide the figure.
    let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    tracing::info!(
        method = %method,
        path = %shown,
        status,
        ms,
        peer = %peer.ip(),
        "request"
    );
    if label == "/api/flow" && status == StatusCode::MISDIRECTED_REQUEST.as_u16() {
        // 421 is what Meta's client gets when the request cannot be decrypted; a steady
        // stream of them usually means the public key registered with Meta is not the pair of
        // ours (Meta: the client re-fetches the public key and retries once on 421):
        // https://developers.facebook.com/documentation/business-messaging/whatsapp/flows/guides/implementingyourflowendpoint
        tracing::warn!(
            "data endpoint: a request could not be decrypted (421); if every request gets it, run `flowctl keys check` (the registered public key may not match PRIVATE_KEY)"
        );
    }
    resp
}

async fn health(state: &AppState) -> Resp {
    if let Some(file) = &state.db_file {
        // The reason (it names the file's path) goes to the log, not to whoever asks.
        if file.check().is_err() {
            return http::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "database unavailable" }),
            );
        }
    }
    // On a local database, on this thread when a read handle is idle (see `ping_inline`).
    let answered = match state.store.ping_inline() {
        Some(answered) => answered,
        None => state.store.read(|s| s.ping()).await,
    };
    match answered {
        Ok(()) => http::json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        Err(e) => {
            tracing::error!(error = %e, "health check: database does not answer");
            http::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "database unavailable" }),
            )
        }
    }
}

#[cfg(test)]
mod lane_tests {
    use super::is_flow_request;

    #[test]
    fn only_a_data_endpoint_post_goes_to_the_rsa_lane() {
        assert!(is_flow_request(
            b"POST /api/flow HTTP/1.1\r\n"[..15].as_ref()
        ));
        assert!(is_flow_request(
            b"POST /api/flow?x=1 HTTP/1.1"[..15].as_ref()
        ));
        for other in [
            &b"POST /api/flowx"[..],
            b"POST /api/message-webhook",
            b"GET /api/flow HTTP/1.1"[..15].as_ref(),
            b"GET /healthz HTTP/1.1",
            b"POST /api/flo",
            b"",
        ] {
            let first = &other[..other.len().min(15)];
            assert!(
                !is_flow_request(first),
                "{}",
                String::from_utf8_lossy(first)
            );
        }
    }
}
