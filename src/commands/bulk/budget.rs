//! The send rate shared by every worker of a campaign on PostgreSQL.
//!
//! Design: a token bucket per sending number (`PHONE_NUMBER_ID`) in the database, refilled at
//! `--rate` on the database's clock and taken from atomically under its row lock
//! ([`crate::store::BulkQueries::bulk_take_permits`]). Each worker takes a few permits per
//! round trip (about 100 ms of sends) into a local stock, and asks again when the stock is
//! spent; when the bucket is empty the answer says when the next permit is due, and the
//! worker sleeps until then. Chosen over an elected pacer because nothing has to be handed
//! over when a worker dies: the bucket is just a row, and whoever is alive keeps taking from
//! it. The run's own pacer ([`super::Pacer`]) still runs in each worker (its cuts after a
//! rate-limit answer, Meta's throttle pauses); the budget adds the cross-worker bound, and
//! shares a rate-limit answer (130429, the number's throughput exceeded): the worker that
//! meets it cuts the number's rate in the database, so every worker pauses and slows down
//! ([`crate::store::BulkQueries::bulk_rate_limited`]), not just the one that was told.
//! Meta's throughput page
//! (<https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput>):
//! the limit is the registered number's, and 130429 comes back until the number is within it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Store, RATE_SAME_EPISODE};

/// Longest pause between two asks while the bucket is empty (a worker whose rate was changed
/// by another still looks again soon).
const MAX_WAIT: Duration = Duration::from_millis(250);

/// A worker's handle on the shared budget of its sending number.
pub struct SharedBudget {
    store: Arc<Mutex<Store>>,
    key: String,
    rate: f64,
    burst: f64,
    want: u32,
    /// Permits taken from the database and not used yet.
    stock: tokio::sync::Mutex<u32>,
    /// When this worker last cut the shared rate (answers of one episode cut it once).
    last_cut: Mutex<Option<Instant>>,
}

impl SharedBudget {
    /// The budget of sending number `key` at `rate` messages per second for all workers,
    /// through `store` (its own connection: the bookkeeping thread's commits do not delay it).
    pub fn new(store: Store, key: &str, rate: f64, burst: u32) -> SharedBudget {
        // About 100 ms of sends per round trip: the round trip is on the send path, and a
        // worker's unspent stock is at most this much ahead of the shared rate.
        let want = (rate * 0.1).ceil().clamp(1.0, 64.0) as u32;
        SharedBudget {
            store: Arc::new(Mutex::new(store)),
            key: key.to_string(),
            rate,
            burst: f64::from(burst.max(want)),
            want,
            stock: tokio::sync::Mutex::new(0),
            last_cut: Mutex::new(None),
        }
    }

    /// A rate-limit answer: the permits in stock are dropped, and the number's rate is cut
    /// for every worker (in the background: this is called on the send path). A cut that
    /// cannot be recorded (the database restarting) leaves this worker's own pacer to slow
    /// it down.
    pub fn on_rate_limit(&self) {
        if let Ok(mut stock) = self.stock.try_lock() {
            *stock = 0;
        }
        {
            let mut last = self.last_cut.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < RATE_SAME_EPISODE) {
                return;
            }
            *last = Some(now);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, rate) = (self.store.clone(), self.key.clone(), self.rate);
        runtime.spawn_blocking(move || {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = s.bulk_rate_limited(&key, rate) {
                tracing::warn!(error = %e, "cannot share the rate-limit answer with the other workers");
            }
        });
    }

    /// Waits for one permit of the shared budget. A database that does not answer is waited
    /// for (a restart): sends simply pause, the bookkeeping's own errors stop the run.
    pub async fn acquire(&self) {
        let mut stock = self.stock.lock().await;
        loop {
            if *stock > 0 {
                *stock -= 1;
                return;
            }
            let (store, key) = (self.store.clone(), self.key.clone());
            let (rate, burst, want) = (self.rate, self.burst, self.want);
            let taken = tokio::task::spawn_blocking(move || {
                let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
                s.bulk_take_permits(&key, rate, burst, want)
            })
            .await;
            match taken {
                Ok(Ok(p)) if p.granted > 0 => *stock = p.granted,
                Ok(Ok(p)) => tokio::time::sleep(p.wait.min(MAX_WAIT)).await,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot take from the shared send rate; waiting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// One permit from the local stock, without asking the database (to grow a batch).
    pub fn try_acquire(&self) -> bool {
        match self.stock.try_lock() {
            Ok(mut stock) if *stock > 0 => {
                *stock -= 1;
                true
            }
            _ => false,
        }
    }
}
