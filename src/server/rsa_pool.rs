//! The data endpoint's RSA work, on a fixed set of dedicated threads (one per core) fed by a
//! queue.
//!
//! Why not `spawn_blocking` under a one-per-core semaphore, as before: the permit was only given
//! back once the awaiting task had been woken and polled again on a reactor thread, so between
//! the end of one RSA operation and the start of the next a core sat idle, waiting for a wake-up,
//! a poll, a permit hand-over and a new blocking task. Measured with
//! `../shared/bench/endpoint/run.sh`, that left the cores idle part of the time (README,
//! "Performance"). A dedicated thread takes the next job the moment it finishes one.
//!
//! The queue needs no bound of its own: every job is one request on one open connection, and
//! connections are bounded (`Limits::max_connections`); each job is a few hundred bytes.
//! The reactor threads only parse HTTP, check signatures and answer, so `/healthz` and the
//! webhook stay responsive while the RSA threads are saturated.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of threads for CPU-bound work on the request path.
pub struct RsaPool {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    threads: usize,
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
        })
    }

    /// How many worker threads run.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` on a pool thread and waits for its result without blocking the reactor.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolStopped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
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
