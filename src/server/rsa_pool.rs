//! The data endpoint's RSA work, off the reactor threads that answer everything else.
//!
//! Two ways, both one thread per core at a lower priority than the reactor (nice 10):
//!
//! - **The RSA lane**: a second tokio runtime whose worker threads serve whole connections and
//!   run the RSA operation right in the request's task. `serve` moves a connection there when
//!   its first request is a data endpoint `POST` (see `server::lane_for`): the data endpoint's
//!   traffic (Meta's servers, or a proxy's connections carrying it) never hands a request to
//!   another thread, so a core does RSA, HTTP and the token lookup without a context switch
//!   between them. Measured (`examples/bench_serve.rs`, README "The data endpoint"): the
//!   hand-off to a dedicated thread and back cost about 15 % of the throughput, in the
//!   kernel's wake-ups and context switches, not in user code.
//! - **The queue**: a fixed set of dedicated threads fed by a queue, for a data endpoint
//!   request that arrives on a connection the main runtime serves (one whose first request was
//!   a webhook, say). A dedicated thread takes the next job the moment it finishes one.
//!
//! Why not RSA on the main runtime's threads: `/healthz` and the webhook would then wait
//! behind queued RSA operations (measured: `/healthz` p99 17 ms under saturation, against a
//! target of 5 ms). Why not `spawn_blocking` under a one-per-core semaphore, as at first: the
//! permit was only given back once the awaiting task had been woken and polled again, so a
//! core sat idle between two operations.
//!
//! The queue needs no bound of its own: every job is one request on one open connection, and
//! connections are bounded (`Limits::max_connections`); each job is a few hundred bytes.
//! The lane runs at most one RSA operation per worker thread at once, as the queue does.

use std::cell::Cell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

thread_local! {
    /// Whether this thread belongs to the RSA lane's runtime.
    static ON_LANE: Cell<bool> = const { Cell::new(false) };
}

/// A fixed pool of threads for CPU-bound work on the request path, and the RSA lane.
pub struct RsaPool {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    threads: usize,
    /// The RSA lane's runtime (`None`: every job goes through the queue).
    lane: Option<tokio::runtime::Runtime>,
}

/// The pool is shutting down (or a job panicked): the request gets a 500-class answer.
#[derive(Debug, thiserror::Error)]
#[error("the RSA worker pool is not running")]
pub struct PoolStopped;

impl RsaPool {
    /// Starts `threads` worker threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<RsaPool> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("flowctl-rsa-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for the next job, never while
                        // running one.
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match next {
                            // A panicking job must not take its thread with it: the caller sees
                            // its result channel dropped (an error), and the thread goes on.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(RsaPool {
            queue: Mutex::new(Some(tx)),
            threads,
            lane: None,
        })
    }

    /// [`RsaPool::new`], plus the RSA lane: a runtime of `threads` worker threads (its own
    /// blocking pool for the database calls of the connections it serves).
    pub fn with_lane(threads: usize) -> std::io::Result<RsaPool> {
        let mut pool = RsaPool::new(threads)?;
        let lane = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(pool.threads)
            .thread_name("flowctl-rsa-lane")
            .on_thread_start(|| {
                ON_LANE.with(|on| on.set(true));
                lower_priority();
            })
            .enable_all()
            .build()?;
        pool.lane = Some(lane);
        Ok(pool)
    }

    /// Where a connection goes to be served on the RSA lane (`None`: no lane).
    pub fn lane(&self) -> Option<tokio::runtime::Handle> {
        self.lane.as_ref().map(|rt| rt.handle().clone())
    }

    /// How many worker threads run.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` on a pool thread and waits for its result without blocking the reactor;
    /// on a thread of the RSA lane, right here (that thread is there for it).
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolStopped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if ON_LANE.with(Cell::get) {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .map_err(|_| PoolStopped);
        }
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver is gone when the client hung up: nothing to answer.
            let _ = done.send(work());
        });
        {
            let queue = self.queue.lock().map_err(|_| PoolStopped)?;
            let tx = queue.as_ref().ok_or(PoolStopped)?;
            tx.send(job).map_err(|_| PoolStopped)?;
        }
        result.await.map_err(|_| PoolStopped)
    }

    /// Stops taking work; the threads end once the queue is empty.
    pub fn shut_down(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
    }
}

/// How much lower than the reactor the RSA threads run (a nice value). They are always busy
/// under load, so they never lack CPU time: the kernel only lets the reactor threads, and the
/// blocking threads answering `/healthz` and the database, go first when those wake up, which
/// keeps their latency low while the cores are saturated.
const RSA_NICE: i32 = 10;

fn lower_priority() {
    // On Linux, "process" priority set from a thread applies to that thread only (setpriority(2),
    // NOTES). Failing is harmless: the pool then runs at the reactor's priority.
    if let Err(e) = rustix::process::setpriority_process(None, RSA_NICE) {
        tracing::debug!(error = %e, "RSA threads: cannot lower their priority");
    }
}

impl Drop for RsaPool {
    fn drop(&mut self) {
        self.shut_down();
        // Dropped from async code at the end of `serve`: a runtime must not block there.
        if let Some(lane) = self.lane.take() {
            lane.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_and_returns_their_results() {
        let pool = RsaPool::new(2).expect("pool");
        let answers: Vec<u64> = futures_join(&pool, 50).await;
        assert_eq!(answers, (0..50).map(|i| i * i).collect::<Vec<_>>());
    }

    async fn futures_join(pool: &RsaPool, n: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(pool.run(move || i * i).await.expect("job"));
        }
        out
    }

    #[tokio::test]
    async fn at_most_one_job_per_thread_runs_at_once() {
        let pool = Arc::new(RsaPool::new(2).expect("pool"));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("job");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn on_the_rsa_lane_a_job_runs_in_its_task_and_elsewhere_on_a_pool_thread() {
        let pool = Arc::new(RsaPool::with_lane(1).expect("pool"));
        let name = || std::thread::current().name().map(String::from);
        let (tx, rx) = std::sync::mpsc::channel();
        let on_lane = pool.clone();
        pool.lane().expect("a lane").spawn(async move {
            let _ = tx.send(on_lane.run(name).await);
        });
        let ran_on = rx.recv_timeout(Duration::from_secs(10)).expect("lane task");
        assert_eq!(ran_on.expect("job"), Some("flowctl-rsa-lane".to_string()));
        // A panic on the lane is the job's error, and the lane's thread goes on.
        let (tx, rx) = std::sync::mpsc::channel();
        let on_lane = pool.clone();
        pool.lane().expect("a lane").spawn(async move {
            let failed = on_lane.run(|| -> u32 { panic!("boom") }).await.is_err();
            let _ = tx.send((failed, on_lane.run(|| 7).await.ok()));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("lane task"),
            (true, Some(7))
        );
        let elsewhere = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(pool.run(name));
        assert_eq!(elsewhere.expect("job"), Some("flowctl-rsa-0".to_string()));
        assert!(RsaPool::new(1).expect("pool").lane().is_none());
    }

    #[tokio::test]
    async fn a_stopped_pool_refuses_work() {
        let pool = RsaPool::new(1).expect("pool");
        pool.shut_down();
        assert!(pool.run(|| 1).await.is_err());
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_hang() {
        let pool = RsaPool::new(1).expect("pool");
        let r = pool.run(|| -> u32 { panic!("boom") }).await;
        assert!(r.is_err());
        // The only thread survived and takes the next job.
        assert_eq!(pool.run(|| 7).await.expect("next job"), 7);
    }
}
