//! SIGINT and SIGTERM: the two ways a user (Ctrl-C) or a supervisor (systemd, Docker, `kill`)
//! asks flowctl to stop. Every command that stops gracefully watches both through this
//! module, so they all treat the two alike.
//!
//! - Stop at the first signal (`serve`, `sandbox`): `signals::first().await?`.
//! - Finish cleanly at the first, quit at once at the second (`bulk`): install once, then
//!   count what [`Signals::recv`] returns:
//!
//! ```no_run
//! # async fn watch() {
//! let Ok(mut signals) = flowctl::signals::Signals::install() else { return };
//! if signals.recv().await.is_none() { return }
//! // first signal: stop taking work, let what is in flight finish…
//! if signals.recv().await.is_some() {
//!     // second signal: quit at once.
//! }
//! # }
//! ```
//!
//! Unix only, like the rest of flowctl. Once installed, the handlers stay for the life of
//! the process: the signals no longer kill it, they are only reported here.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Neither handler could be installed, so no stop request can be seen.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the SIGINT and SIGTERM handlers")]
pub struct InstallError(#[source] pub std::io::Error);

/// Handlers for SIGINT and SIGTERM, installed together; each [`Signals::recv`] waits for
/// one more signal of either kind.
#[derive(Debug)]
pub struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    /// Installs both handlers (needs a Tokio runtime). One that cannot be installed is
    /// left out and the other still works; `Err` only when neither can be.
    pub fn install() -> Result<Signals, InstallError> {
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        match (interrupt, terminate) {
            (Err(e), Err(_)) => Err(InstallError(e)),
            (interrupt, terminate) => Ok(Signals {
                interrupt: interrupt.ok(),
                terminate: terminate.ok(),
            }),
        }
    }

    /// Resolves at the next SIGINT or SIGTERM, saying which; `None` as for [`Signals::recv`].
    pub async fn recv_which(&mut self) -> Option<Received> {
        let (interrupt, terminate) = (&mut self.interrupt, &mut self.terminate);
        tokio::select! {
            Some(()) = async { interrupt.as_mut()?.recv().await } => Some(Received::Interrupt),
            Some(()) = async { terminate.as_mut()?.recv().await } => Some(Received::Terminate),
            else => None,
        }
    }

    /// Resolves at the next SIGINT or SIGTERM (`Some`). Signals that arrived since the
    /// previous call count (several at once may count as one). `None`: no signal can be
    /// received any more (the runtime is shutting down).
    pub async fn recv(&mut self) -> Option<()> {
        let (interrupt, terminate) = (&mut self.interrupt, &mut self.terminate);
        tokio::select! {
            Some(()) = async { interrupt.as_mut()?.recv().await } => Some(()),
            Some(()) = async { terminate.as_mut()?.recv().await } => Some(()),
            else => None,
        }
    }
}

/// Which of the two signals arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// SIGINT: Ctrl-C at a terminal. A server stopped this way exits 130 (interrupted).
    Interrupt,
    /// SIGTERM: a supervisor's (systemd, Docker, `kill`) normal request to stop.
    Terminate,
}

/// Resolves at the first SIGINT or SIGTERM received from now on (or when no signal can be
/// received any more, see [`Signals::recv`]).
pub async fn first() -> Result<(), InstallError> {
    Signals::install()?.recv().await;
    Ok(())
}
