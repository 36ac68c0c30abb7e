//! `flowctl serve`: the only inbound HTTP. A hyper 1.x server whose router is a `match` on
//! (method, path); each route's handler lives in its own module.

mod flow_endpoint;
pub mod http;
pub mod metrics;

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
use tokio::sync::Semaphore;

use crate::config::Secret;
use crate::crypto::PrivateKey;
use crate::flow_json::FlowJson;
use crate::store::SharedStore;
use http::Resp;
pub use metrics::Metrics;

/// Limits that protect the server from slow or abusive clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Time allowed to receive a request's headers.
    pub header_timeout: Duration,
    /// Time allowed to receive a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
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
    /// Bounds concurrent RSA private-key operations to the number of cores, so that a flood
    /// of encrypted requests queues instead of starving everything else.
    pub rsa_slots: Semaphore,
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
/// `drain` long).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let conn_slots = Arc::new(Semaphore::new(state.limits.max_connections));
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
        let header_timeout = state.limits.header_timeout;
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(state, peer, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => tracing::warn!("shutdown: gave up waiting for open connections"),
    }
    Ok(())
}

/// Routes one request and writes its one log line.
async fn route(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (label, resp) = match (&method, path.as_str()) {
        (&Method::POST, "/api/flow") => ("/api/flow", flow_endpoint::handle(&state, req).await),
        (&Method::GET, "/healthz") => ("/healthz", health(&state).await),
        (&Method::GET, "/metrics") => (
            "/metrics",
            http::text(StatusCode::OK, state.metrics.render()),
        ),
        (_, "/api/flow" | "/healthz" | "/metrics") => {
            ("other", http::empty(StatusCode::METHOD_NOT_ALLOWED))
        }
        _ => (
            "other",
            http::json_error(StatusCode::NOT_FOUND, "no such route"),
        ),
    };
    let status = resp.status().as_u16();
    state.metrics.request(label, status);
    tracing::info!(
        method = %method,
        path = label,
        status,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        peer = %peer.ip(),
        "request"
    );
    resp
}

async fn health(state: &AppState) -> Resp {
    match state.store.call(|s| s.ping()).await {
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
