//! Waiting out a Graph API outage.
//!
//! When the API answers 5xx without an error envelope, refuses connections or breaks them, a
//! bulk run closes this gate: the dispatcher sends nothing new, the rows that met the outage
//! wait here (their requests were refused before the API took them, so they are retried
//! without any risk of a duplicate), and one prober polls a harmless read until the API
//! answers again. Resets and timeouts close the gate too, so that a broken API costs at most
//! the requests already in flight, which are recorded as outcome-unknown and never resent.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// First wait between two probes; doubled after each failed probe up to [`MAX_PROBE_WAIT`].
pub const FIRST_PROBE_WAIT: Duration = Duration::from_millis(500);
/// Longest wait between two probes.
pub const MAX_PROBE_WAIT: Duration = Duration::from_secs(10);

/// The wait before probe number `n` (0-based) of an outage.
pub fn probe_wait(n: u32) -> Duration {
    FIRST_PROBE_WAIT
        .saturating_mul(1u32 << n.min(16))
        .min(MAX_PROBE_WAIT)
}

/// Open while the API answers; closed (with the time it closed) during an outage.
pub struct OutageGate {
    down: watch::Sender<Option<Instant>>,
}

impl Default for OutageGate {
    fn default() -> Self {
        OutageGate {
            down: watch::channel(None).0,
        }
    }
}

impl OutageGate {
    /// Closes the gate. True when this call closed it, i.e. the caller must start the prober.
    pub fn close(&self) -> bool {
        self.down.send_if_modified(|down| {
            let opened = down.is_none();
            if opened {
                *down = Some(Instant::now());
            }
            opened
        })
    }

    /// Opens the gate; returns how long it was closed (`None` if it was open).
    pub fn open(&self) -> Option<Duration> {
        let mut closed_for = None;
        self.down.send_if_modified(|down| {
            closed_for = down.take().map(|since| since.elapsed());
            closed_for.is_some()
        });
        closed_for
    }

    /// Since when the gate is closed.
    pub fn closed_since(&self) -> Option<Instant> {
        *self.down.borrow()
    }

    /// Waits until the gate is open. False when `stop` becomes `Some` first (the run is
    /// stopping), or was already.
    pub async fn wait_open<S>(&self, stop: &mut watch::Receiver<Option<S>>) -> bool {
        let mut down = self.down.subscribe();
        tokio::select! {
            biased;
            _ = stop.wait_for(Option::is_some) => false,
            r = down.wait_for(Option::is_none) => r.is_ok(),
        }
    }
}

/// Sleeps `wait` (then waits for nothing more); false when the run is stopping, i.e. when
/// `stop` holds a reason or receives one meanwhile.
pub async fn wait_unless_stopped<S>(stop: &watch::Sender<Option<S>>, wait: Duration) -> bool {
    let mut stopping = stop.subscribe();
    let stopped = tokio::select! {
        _ = stopping.wait_for(Option::is_some) => true,
        _ = tokio::time::sleep(wait) => false,
    };
    !stopped && stop.borrow().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_to_a_ceiling() {
        assert_eq!(probe_wait(0), Duration::from_millis(500));
        assert_eq!(probe_wait(1), Duration::from_secs(1));
        assert_eq!(probe_wait(3), Duration::from_secs(4));
        assert_eq!(probe_wait(5), MAX_PROBE_WAIT);
        assert_eq!(probe_wait(40), MAX_PROBE_WAIT);
    }

    #[test]
    fn only_the_first_close_starts_a_prober() {
        let gate = OutageGate::default();
        assert!(gate.open().is_none());
        assert!(gate.close());
        assert!(!gate.close());
        assert!(gate.closed_since().is_some());
        assert!(gate.open().is_some());
        assert!(gate.closed_since().is_none());
        assert!(gate.close());
    }

    #[tokio::test]
    async fn waiters_pass_when_the_gate_opens_and_leave_when_the_run_stops() {
        let gate = std::sync::Arc::new(OutageGate::default());
        let (stop_tx, stop_rx) = watch::channel::<Option<()>>(None);
        // Open: passes at once.
        assert!(gate.wait_open(&mut stop_rx.clone()).await);

        gate.close();
        let waiter = {
            let gate = gate.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move { gate.wait_open(&mut stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a closed gate must hold its waiters");
        gate.open();
        assert!(waiter.await.unwrap());

        gate.close();
        let waiter = {
            let gate = gate.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move { gate.wait_open(&mut stop).await })
        };
        stop_tx.send(Some(())).unwrap();
        assert!(
            !waiter.await.unwrap(),
            "a stopping run releases the waiters"
        );
    }
}
