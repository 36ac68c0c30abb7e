//! `flowctl sandbox`: a local stand-in for the WhatsApp Cloud (Graph) API.
//!
//! It validates `/messages` bodies strictly against the reference (interactive Flow messages and
//! templates with a Flow button), answers like Graph (wamids, error envelopes), stores uploaded
//! business public keys, injects failures on demand ([`FailRule`]), adds latency, and records
//! every Graph request in memory (`GET /_sandbox/requests`) and optionally as NDJSON.
//!
//! Routes (`{v}` is any `vNN.N`, `{id}` a numeric phone number id):
//! - `POST /{v}/{id}/messages`
//! - `POST|GET /{v}/{id}/whatsapp_business_encryption`
//! - `GET /{v}/{id}?fields=…` (a Flow or the phone number) and `GET /{v}/debug_token`
//!   (see `account`)
//! - `POST /_sandbox/inbound` (a person's text, e.g. "STOP"), `POST /_sandbox/user-preferences`
//!   (a marketing stop/resume), `POST /_sandbox/flow-status` (a Flow's status, with its
//!   webhook): see `inbound`
//! - `GET /_sandbox/requests`, `POST /_sandbox/key-status`, `POST /_sandbox/account`,
//!   `GET /healthz` (control plane: not delayed, not recorded)
//! - `GET /_sandbox/cdn/{name}`, `POST /_sandbox/cdn`: the CDN of the files people attach
//!   ([`media`]); `GET /{v}/{media-id}` and `GET /_sandbox/media/{id}` (bearer): those files
//!   as the Graph media of a completion message
//! - `GET|POST /{v}/{waba-id}/flows`, `POST|DELETE /{v}/{flow-id}`,
//!   `GET|POST /{v}/{flow-id}/assets`, `POST /{v}/{flow-id}/publish|deprecate`,
//!   `GET /{v}/{flow-id}?fields=preview.…|metric.…`: the Flows API (see `flows_api`), with
//!   `GET /_sandbox/flow-assets/{id}` as the CDN of the uploaded Flow JSON
//! - `GET|POST|DELETE /{v}/{waba-id}/message_templates` and `POST /_sandbox/templates`
//!   (statuses, strict mode): the template API (see `templates`)
//! - anything else: 404 with a Graph envelope, code 100.

mod account;
mod answer;
pub mod chatwoot;
mod errors;
mod flows_api;
mod inbound;
mod keys;
pub mod media;
mod messages;
pub mod notify;
mod record;
mod rules;
mod server;
mod state;
mod templates;
#[cfg(test)]
mod tests;
mod throughput;
pub mod user;
mod validate;

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use record::{RecordedRequest, MAX_IN_MEMORY};
pub use rules::{FailRule, FailRuleError, Fault, Hit, Recipient, When};

/// Callback run on each `/messages` body (accepted or rejected) before the answer is sent;
/// its result is stored in the request's record under `"probe"`. It runs on a blocking thread,
/// so it may query a database.
pub type Probe = Arc<dyn Fn(&serde_json::Value) -> serde_json::Value + Send + Sync>;

/// How long shutdown waits for in-flight requests before dropping their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a sandbox instance (the CLI flags of `flowctl sandbox`).
#[derive(Clone)]
pub struct SandboxOptions {
    /// Address to bind; port 0 picks a free port (see [`SandboxHandle::addr`]).
    pub listen: SocketAddr,
    /// Delay added to every Graph answer (`--latency-ms`), without blocking other requests.
    pub latency: Duration,
    /// Failure rules (`--fail PHONE=CODE[xN]`), checked in order for each valid message.
    pub failures: Vec<FailRule>,
    /// NDJSON file to append one line per Graph request to (`--record FILE`).
    pub record: Option<PathBuf>,
    /// Optional check run on each message body before answering; see [`Probe`].
    pub probe: Option<Probe>,
    /// When set, the sandbox plays the recipients of the Flows it accepts.
    pub users: Option<user::UserOptions>,
    /// The message webhook of the server under test (`--webhook`): statuses, completions and
    /// the failures that arrive after a send was accepted are posted there.
    pub webhook: Option<String>,
    /// Signs what the sandbox posts (`X-Hub-Signature-256`), as Meta does with the app secret.
    pub app_secret: Option<String>,
    /// How long after accepting a message a `@status` failure is posted.
    pub status_delay: Duration,
    /// `--chatwoot-webhook`: the sandbox plays a Chatwoot inbox that forwards the people's
    /// Flow submissions there (`--complete-via chatwoot`).
    pub chatwoot: Option<chatwoot::ChatwootTarget>,
    /// The Flows the simulated account owns, as `(id, status)` (`--flow ID[=STATUS]`).
    pub flows: Vec<(String, String)>,
    /// People whose attached files the CDN serves corrupted (`--tamper-media`).
    pub tamper_media: Vec<String>,
    /// Percent of the webhook notifications posted twice at once (`--duplicate-webhooks`).
    pub duplicate_webhooks: u8,
    /// The number's throughput, messages per second (`--throughput`): a message beyond it
    /// in any one-second window is refused with 130429, as Meta does. `None`: no limit.
    pub throughput: Option<u32>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            failures: Vec::new(),
            record: None,
            probe: None,
            users: None,
            webhook: None,
            app_secret: None,
            status_delay: Duration::from_millis(100),
            chatwoot: None,
            flows: Vec::new(),
            tamper_media: Vec::new(),
            duplicate_webhooks: 0,
            throughput: None,
        }
    }
}

impl fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("listen", &self.listen)
            .field("latency", &self.latency)
            .field("failures", &self.failures)
            .field("record", &self.record)
            .field("probe", &self.probe.as_ref().map(|_| "Fn(&Value) -> Value"))
            .field("webhook", &self.webhook)
            .field("status_delay", &self.status_delay)
            .field("tamper_media", &self.tamper_media)
            .field("duplicate_webhooks", &self.duplicate_webhooks)
            .finish()
    }
}

/// A running sandbox. Dropping it without [`SandboxHandle::shutdown`] stops it in the background.
pub struct SandboxHandle {
    addr: SocketAddr,
    state: Arc<server::State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl SandboxHandle {
    /// The bound address (with the real port when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-memory request log, oldest first (at most [`MAX_IN_MEMORY`] records).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.snapshot()
    }

    /// Starts (`Some`) or ends (`None`) an outage of the whole API, as
    /// `POST /_sandbox/outage` does: every Graph request gets `fault` until it is cleared.
    pub fn set_outage(&self, fault: Option<Fault>) {
        *self
            .state
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    /// Stops accepting, lets in-flight requests finish (hanging ones are dropped, the rest get
    /// up to 5 s), then flushes and closes the record file.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.context("sandbox server task failed")?,
            None => Ok(()),
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `opts.listen` and serves the sandbox in the background.
pub async fn start(opts: SandboxOptions) -> anyhow::Result<SandboxHandle> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let (recorder, writer) = record::Recorder::new(opts.record.as_deref())?;
    let (stop, stopped) = watch::channel(false);
    let endpoint = opts.users.as_ref().and_then(|u| u.endpoint.clone());
    let account = account::Account::new(&opts.flows, endpoint.as_deref());
    let notifier = Arc::new(
        notify::Notifier::new(opts.webhook, opts.app_secret)
            .with_chatwoot(opts.chatwoot)
            .with_duplicates(opts.duplicate_webhooks),
    );
    let cdn = Arc::new(media::Cdn::new(format!("http://{addr}/_sandbox/cdn/")));
    cdn.set_tampered(&opts.tamper_media);
    let state = Arc::new(server::State {
        latency: opts.latency,
        rules: rules::ActiveRules::new(opts.failures),
        probe: opts.probe,
        recorder,
        keys: Mutex::new(Default::default()),
        users: opts
            .users
            .map(|u| Arc::new(user::Users::new(u, Arc::clone(&notifier), Arc::clone(&cdn)))),
        notifier,
        status_delay: opts.status_delay,
        shutdown: stopped.clone(),
        outage: Mutex::new(None),
        account: Mutex::new(account),
        cdn,
        flow_assets: Mutex::new(Default::default()),
        templates: Mutex::new(Default::default()),
        base_url: format!("http://{addr}"),
        throughput: opts.throughput.map(throughput::Throughput::new),
    });
    let task = tokio::spawn(serve(listener, Arc::clone(&state), stopped, writer));
    Ok(SandboxHandle {
        addr,
        state,
        stop,
        task: Some(task),
    })
}

/// `flowctl sandbox`: starts, prints `sandbox listening on http://ADDR` on stdout, and runs
/// until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(opts: SandboxOptions) -> anyhow::Result<()> {
    let handle = start(opts).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sandbox listening on http://{}", handle.addr())
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }
    crate::signals::first().await?;
    handle.shutdown().await
}

/// Resolves once shutdown is requested (or the handle is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // Discard the `Ref` at once: it is not `Send` and must not live across an await.
    let _ = stopped.wait_for(|down| *down).await.map(|_| ());
}

async fn serve(
    listener: TcpListener,
    state: Arc<server::State>,
    mut stopped: watch::Receiver<bool>,
    writer: Option<record::WriterTask>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "sandbox: accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let svc = service_fn(move |req| server::handle(Arc::clone(&state), req));
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // Errors here are client disconnects or deliberate faults (hang/reset).
                    let _ = conn.await;
                });
            }
            () = until_stopped(&mut stopped) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "sandbox: in-flight requests still running after {DRAIN_TIMEOUT:?}; dropping them"
        );
    }
    state.recorder.close();
    if let Some(writer) = writer {
        writer
            .await
            .context("record writer task failed")?
            .context("cannot write the record file")?;
    }
    Ok(())
}
