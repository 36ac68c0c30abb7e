//! The shared pacer of a bulk run: `governor` at the allowed rate, slowed down for the WHOLE
//! run when the API answers with a rate limit, and brought back up after a quiet period; and
//! held for as long as Meta says when the app or account is throttled.
//!
//! governor's quota cannot be changed in place, so a rate change swaps in a new limiter.
//! The arithmetic lives in [`AdaptiveRate`], a pure state machine over `Instant`s, so that it
//! is tested without sleeping.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

// The figures are the shared budget's too (several workers on PostgreSQL), hence defined once,
// with it, in the store.
/// Pause of the whole run after a rate-limit answer (Meta: retry 130429 after about 1 s).
pub const PAUSE: Duration = crate::store::RATE_LIMIT_PAUSE;
/// Rate-limit answers within this window of a cut are the same episode: one cut, not many
/// (every request in flight when the limit hit comes back with the same answer).
pub const SAME_EPISODE: Duration = crate::store::RATE_SAME_EPISODE;
/// Time without a rate-limit answer before the rate steps back up.
pub const QUIET: Duration = crate::store::RATE_QUIET;
/// Multiplicative recovery step (×1.25 per quiet period: 40 → 80 msg/s in about 8 s).
pub const RECOVERY: f64 = crate::store::RATE_RECOVERY;

/// The burst governor allows at `rate` messages per second: `clamp(rate / 100, 2, 10)`.
///
/// Measured with governor 0.10 at 1,000/s: with a burst of 1 each late timer wake-up (tokio's
/// timer has 1 ms granularity) is time lost for good and the run falls about 10% short; the
/// default burst (= the rate) lets a whole second's worth out at once, which is what trips
/// Meta's per-second throughput check; a burst of about 10 (10 ms of sends at 1,000/s) absorbs
/// the wake-up lateness and holds the rate. The same loss shows at 80/s (a burst of 1 gave
/// 0.95 of the rate in `bench_bulk`: ~0.6 ms late on a 12.5 ms period), hence at least 2:
/// two messages back to back are still far below any per-second limit.
pub fn burst_for(rate: f64) -> u32 {
    (rate / 100.0).floor().clamp(2.0, 10.0) as u32
}

/// Default bound on requests in flight: enough to sustain `rate` with an assumed 0.5 s
/// Graph API latency (Little's law), within [4, 512].
pub fn default_concurrency(rate: f64) -> usize {
    (rate * 0.5).ceil().clamp(4.0, 512.0) as usize
}

/// What an answer of Meta's throttle changed in the run's pause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttle {
    /// A new pause (none was in force).
    pub started: bool,
    /// How much later the pause now ends (zero: the answer changed nothing).
    pub added: Duration,
}

/// The adaptive rate: halves on a rate-limit episode, recovers multiplicatively after
/// [`QUIET`], never above the configured maximum nor below `min`.
#[derive(Clone, Debug)]
pub struct AdaptiveRate {
    max: f64,
    min: f64,
    current: f64,
    last_cut: Option<Instant>,
    last_step: Instant,
    paused_until: Option<Instant>,
    /// End of the pause Meta asked for (`X-Business-Use-Case-Usage`), shown to the user.
    throttled_until: Option<Instant>,
}

impl AdaptiveRate {
    pub fn new(max: f64, now: Instant) -> AdaptiveRate {
        AdaptiveRate {
            max,
            // A floor keeps a run moving; below 1/s (or the max, if lower) waiting is better
            // done by the pause and the per-request retries.
            min: max.min(1.0),
            current: max,
            last_cut: None,
            last_step: now,
            paused_until: None,
            throttled_until: None,
        }
    }

    /// The rate in force, messages per second.
    pub fn current(&self) -> f64 {
        self.current
    }

    /// Until when nothing may be sent.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|t| *t > now)
    }

    /// Until when Meta said the app or account is throttled.
    pub fn throttled_until(&self, now: Instant) -> Option<Instant> {
        self.throttled_until.filter(|t| *t > now)
    }

    /// Meta said, at `now`, that the app or account is throttled until `until`: nothing is
    /// sent before then, and the rate is left alone (the limit is lifted, not lowered).
    pub fn on_throttle(&mut self, now: Instant, until: Instant) -> Throttle {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        let current = self.throttled_until(now);
        let end = current.unwrap_or(now);
        if until <= end {
            return Throttle::default();
        }
        self.throttled_until = Some(until);
        Throttle {
            started: current.is_none(),
            added: until - end,
        }
    }

    /// A rate-limit answer arrived. Returns true when the rate changed.
    pub fn on_rate_limit(&mut self, now: Instant) -> bool {
        let until = now + PAUSE;
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        if self
            .last_cut
            .is_some_and(|t| now.duration_since(t) < SAME_EPISODE)
        {
            return false;
        }
        self.last_cut = Some(now);
        self.last_step = now;
        let next = (self.current / 2.0).max(self.min);
        let changed = next != self.current;
        self.current = next;
        changed
    }

    /// Time passes. Returns true when the rate stepped back up.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        if self.current >= self.max || now.duration_since(self.last_step) < QUIET {
            return false;
        }
        self.last_step = now;
        self.current = (self.current * RECOVERY).min(self.max);
        true
    }
}

fn limiter(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let burst = NonZeroU32::new(burst_for(rate)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst);
    Arc::new(RateLimiter::direct(quota))
}

struct State {
    rate: AdaptiveRate,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// The pacer every request of a run goes through, first attempts and retries alike.
pub struct Pacer {
    state: Mutex<State>,
    /// The rate shared with the campaign's other workers (PostgreSQL), if any.
    shared: Option<super::budget::SharedBudget>,
}

impl Pacer {
    /// A pacer at `rate` messages per second.
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            state: Mutex::new(State {
                rate: AdaptiveRate::new(rate, Instant::now()),
                limiter: limiter(rate),
            }),
            shared: None,
        }
    }

    /// The same pacer, also bound by the rate shared with other workers.
    pub(super) fn shared(mut self, budget: super::budget::SharedBudget) -> Pacer {
        self.shared = Some(budget);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Steps the rate back up when due; returns the limiter in force and any pause.
    fn current(&self) -> (Arc<DefaultDirectRateLimiter>, Option<Instant>) {
        let now = Instant::now();
        let mut s = self.lock();
        if s.rate.on_tick(now) {
            s.limiter = limiter(s.rate.current());
        }
        (s.limiter.clone(), s.rate.paused_until(now))
    }

    /// Waits until one request may leave.
    pub async fn acquire(&self) {
        loop {
            let (lim, pause) = self.current();
            if let Some(until) = pause {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            lim.until_ready().await;
            if let Some(budget) = &self.shared {
                budget.acquire().await;
            }
            // A rate-limit answer may have paused the run while this request waited.
            if self.current().1.is_none() {
                return;
            }
        }
    }

    /// One more request may leave right now (used to grow a batch without waiting).
    pub fn try_acquire(&self) -> bool {
        let (lim, pause) = self.current();
        pause.is_none()
            && lim.check().is_ok()
            && self.shared.as_ref().is_none_or(|b| b.try_acquire())
    }

    /// Reports a rate-limit answer: the whole run pauses and slows down, and with a shared
    /// budget, every other worker of the number too.
    pub fn on_rate_limit(&self) {
        {
            let mut s = self.lock();
            if s.rate.on_rate_limit(Instant::now()) {
                s.limiter = limiter(s.rate.current());
            }
        }
        if let Some(budget) = &self.shared {
            budget.on_rate_limit();
        }
    }

    /// Reports Meta's throttle of the app or account: nothing leaves for `regain`.
    pub fn on_throttle(&self, regain: Duration) -> Throttle {
        let now = Instant::now();
        self.lock().rate.on_throttle(now, now + regain)
    }

    /// The rate in force, messages per second.
    pub fn rate(&self) -> f64 {
        self.lock().rate.current()
    }

    /// Until when Meta's throttle holds the run, while it does.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.lock().rate.throttled_until(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_and_concurrency_follow_the_rate() {
        assert_eq!(burst_for(20.0), 2);
        assert_eq!(burst_for(80.0), 2);
        assert_eq!(burst_for(250.0), 2);
        assert_eq!(burst_for(1000.0), 10);
        assert_eq!(burst_for(5000.0), 10);
        assert_eq!(default_concurrency(1.0), 4);
        assert_eq!(default_concurrency(80.0), 40);
        assert_eq!(default_concurrency(5000.0), 512);
    }

    #[test]
    fn a_rate_limit_halves_once_per_episode_and_pauses() {
        let t0 = Instant::now();
        let mut r = AdaptiveRate::new(80.0, t0);
        assert!(r.on_rate_limit(t0));
        assert_eq!(r.current(), 40.0);
        // The other requests of the same burst answer 130429 too: still one cut.
        assert!(!r.on_rate_limit(t0 + Duration::from_millis(300)));
        assert_eq!(r.current(), 40.0);
        assert_eq!(
            r.paused_until(t0 + Duration::from_millis(400)),
            Some(t0 + Duration::from_millis(1300))
        );
        assert_eq!(r.paused_until(t0 + Duration::from_millis(1300)), None);
        // A new episode later cuts again.
        assert!(r.on_rate_limit(t0 + Duration::from_millis(1500)));
        assert_eq!(r.current(), 20.0);
    }

    #[test]
    fn the_rate_recovers_after_quiet_periods_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut r = AdaptiveRate::new(80.0, t0);
        assert!(!r.on_tick(t0 + Duration::from_secs(10)), "already at max");
        r.on_rate_limit(t0);
        assert!(!r.on_tick(t0 + Duration::from_secs(1)), "not quiet yet");
        let mut t = t0;
        let mut steps = 0;
        while r.current() < 80.0 {
            t += QUIET;
            assert!(r.on_tick(t));
            steps += 1;
        }
        assert_eq!(r.current(), 80.0);
        assert_eq!(steps, 4); // 40 → 50 → 62.5 → 78.1 → 80
    }

    #[test]
    fn the_rate_never_falls_below_the_floor() {
        let t0 = Instant::now();
        let mut r = AdaptiveRate::new(4.0, t0);
        for i in 0..10 {
            r.on_rate_limit(t0 + Duration::from_secs(2 * i));
        }
        assert_eq!(r.current(), 1.0);
    }

    #[test]
    fn a_throttle_pauses_until_the_time_meta_gave_without_cutting_the_rate() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = AdaptiveRate::new(80.0, t0);
        let until = t0 + s(60);
        assert_eq!(
            r.on_throttle(t0, until),
            Throttle {
                started: true,
                added: s(60)
            }
        );
        assert_eq!(r.current(), 80.0, "the rate is not the problem");
        assert_eq!(r.paused_until(t0 + s(59)), Some(until));
        assert_eq!(r.throttled_until(t0 + s(59)), Some(until));
        // The other answers of the same throttle say the same or less: one pause.
        assert_eq!(r.on_throttle(t0 + s(1), until), Throttle::default());
        assert_eq!(r.on_throttle(t0 + s(2), t0 + s(30)), Throttle::default());
        assert_eq!(
            r.on_throttle(t0 + s(10), until + s(60)),
            Throttle {
                started: false,
                added: s(60)
            },
            "a longer one"
        );
        let end = until + s(60);
        assert_eq!(r.paused_until(end), None);
        assert_eq!(r.throttled_until(end), None);
        assert!(r.on_throttle(end, end + s(1)).started, "a new one");
        // A plain rate limit during the throttle does not shorten it.
        let mut r = AdaptiveRate::new(80.0, t0);
        r.on_throttle(t0, until);
        r.on_rate_limit(t0);
        assert_eq!(r.paused_until(t0), Some(until));
    }

    #[tokio::test]
    async fn the_pacer_holds_the_rate() {
        let p = Pacer::new(200.0);
        let start = Instant::now();
        for _ in 0..100 {
            p.acquire().await;
        }
        let secs = start.elapsed().as_secs_f64();
        // 100 permits at 200/s, burst 2: about 0.5 s.
        assert!((0.4..0.7).contains(&secs), "{secs}");
    }
}
