//! `SharedStore`: the store for async code. Every call runs on tokio's blocking pool, so the
//! database never stalls the reactor.
//!
//! Writes go through ONE handle ([`SharedStore::call`]): the database serialises writers
//! anyway, and one writer keeps their order. Pure reads go through a small pool of read-only
//! handles ([`SharedStore::read`]), so that `/api/responses` or `/healthz` do not queue behind
//! the inbox worker's writes (SQLite's WAL lets readers run beside the writer).
//!
//! On a local database (a SQLite file) a lookup takes microseconds, less than the hand-off to
//! the blocking pool and back: [`SharedStore::read_inline`] runs it on the calling thread (the
//! data endpoint's RSA threads, right after decryption). On a network database it does not,
//! so that no such thread ever waits on the network.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{OpenReader, Result, Store, StoreError};

/// Read handles open at most at once; a read beyond them waits for one to be free.
pub const MAX_READERS: usize = 4;

/// A `Store` shared between tasks: one writer, and read-only handles opened on demand.
#[derive(Clone)]
pub struct SharedStore(Arc<Inner>);

struct Inner {
    writer: Mutex<Store>,
    readers: Readers,
    /// Whether reads may run on the caller's thread ([`SharedStore::read_inline`]).
    inline: bool,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedStore")
            .field(&*lock(&self.0.writer))
            .finish()
    }
}

/// A panic while holding a lock cannot leave the database half-written (transactions roll
/// back), so a poisoned lock is safe to reuse.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedStore {
    /// Shares `store` as the writer; read handles on the same database are opened when the
    /// first reads come.
    pub fn new(store: Store) -> SharedStore {
        SharedStore::with_inline_reads(store, None)
    }

    /// Shares `store` as [`SharedStore::new`] does; with `Some(threads)` the database is local
    /// (a SQLite file) and up to `threads` threads may read on their own thread with
    /// [`SharedStore::read_inline`]: the pool gets that many more read handles, so those
    /// threads find one free instead of taking one from `/healthz` or the CRM API. `None`: a
    /// network database, every read goes to the blocking pool.
    pub fn with_inline_reads(store: Store, threads: Option<usize>) -> SharedStore {
        let readers = Readers::new(store.reader(), MAX_READERS + threads.unwrap_or(0));
        SharedStore(Arc::new(Inner {
            writer: Mutex::new(store),
            readers,
            inline: threads.is_some(),
        }))
    }

    /// Runs `f` with the writer on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T> + Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.writer)))
            .await
            .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
    }

    /// Runs a pure read `f` on the blocking pool with a read-only handle, beside the writer.
    /// When no read handle can be opened, `f` runs with the writer (as before there were
    /// read handles), so a read never fails for want of one.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || match inner.readers.lease() {
            Ok(reader) => f(&reader),
            Err(e) => {
                tracing::warn!(error = %e, "no read-only database handle; reading through the writer");
                f(&lock(&inner.writer))
            }
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
    }
}

impl SharedStore {
    /// Runs a pure read `f` right here, on the calling thread, with a read-only handle: for a
    /// thread that is not the reactor and has the read's result as its next step (the data
    /// endpoint's token lookup after decryption), one hand-off less than [`SharedStore::read`].
    /// `None` when the read should go through [`SharedStore::read`] instead: the database is
    /// not local (a read may block on the network), or no read handle is free right now
    /// (waiting for one would idle this thread).
    pub fn read_inline<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Option<Result<T>> {
        if !self.0.inline {
            return None;
        }
        match self.0.readers.try_lease() {
            Ok(Some(reader)) => Some(f(&reader)),
            Ok(None) => None,
            // The blocking path knows what to do without a read handle (the writer).
            Err(_) => None,
        }
    }
}

impl SharedStore {
    /// Whether the database answers, checked right here on the calling thread when that
    /// costs no wait and no I/O: the database is local and a read handle is open and idle.
    /// For SQLite, `SELECT 1` on an open handle touches neither the file nor a lock, so this
    /// takes microseconds and may run on a reactor thread: `/healthz` answers without two
    /// hand-offs to the blocking pool, which under saturation (the RSA threads busy) are
    /// what its latency is made of. `None`: ask [`SharedStore::read`] instead (a network
    /// database, or no idle handle: opening one is file I/O).
    pub fn ping_inline(&self) -> Option<Result<()>> {
        if !self.0.inline {
            return None;
        }
        let reader = self.0.readers.try_idle()?;
        Some(reader.ping())
    }
}

impl SharedStore {
    /// Runs a write `f` right here, on the calling thread, with the writer: like
    /// [`SharedStore::read_inline`], one hand-off less than [`SharedStore::call`]. `None` when
    /// the write should go through [`SharedStore::call`]: the database is not local, the
    /// writer is busy right now (with the inbox worker's batch, a WAL checkpoint, another
    /// request's write), or another process holds the database's write lock (a `bulk` run on
    /// the same file): this never waits, neither for the writer nor for SQLite's lock, so the
    /// thread it runs on (an RSA thread, serving other connections too) never stalls. `f`
    /// must be one transaction: when it fails busy it was rolled back whole, and the caller
    /// runs it again through [`SharedStore::call`], which waits for the lock as usual.
    pub fn write_inline<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Option<Result<T>> {
        if !self.0.inline {
            return None;
        }
        let mut writer = match self.0.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        writer.set_lock_wait(Some(std::time::Duration::ZERO)).ok()?;
        let out = f(&mut writer);
        if let Err(e) = writer.set_lock_wait(None) {
            // Cannot happen with SQLite (setting a busy timeout does not fail); were it to,
            // the writer's next writes would fail busy at once instead of waiting.
            tracing::error!(error = %e, "database: cannot restore the writer's lock wait");
        }
        match out {
            Err(e) if e.is_busy() => None,
            out => Some(out),
        }
    }
}

/// The read-only handles: idle ones are reused, new ones opened up to a bound.
struct Readers {
    open: OpenReader,
    max: usize,
    state: Mutex<Pool>,
    freed: Condvar,
}

struct Pool {
    idle: Vec<Store>,
    /// Handles in existence (idle or lent).
    count: usize,
}

/// A read handle lent to one read; it goes back to the pool when dropped, even when the read
/// panicked.
struct Lease<'a> {
    readers: &'a Readers,
    store: Option<Store>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store
            .as_ref()
            .expect("a lease holds its store until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            lock(&self.readers.state).idle.push(store);
            self.readers.freed.notify_one();
        }
    }
}

impl Readers {
    fn new(open: OpenReader, max: usize) -> Readers {
        Readers {
            open,
            max,
            state: Mutex::new(Pool {
                idle: Vec::new(),
                count: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// An idle handle, a new one while under the bound, else the next one freed.
    fn lease(&self) -> Result<Lease<'_>> {
        let mut pool = lock(&self.state);
        loop {
            if let Some(store) = pool.idle.pop() {
                return Ok(self.lent(store));
            }
            if pool.count < self.max {
                pool.count += 1;
                drop(pool);
                return self.open_counted();
            }
            pool = self.freed.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// An idle handle, or a new one while under the bound; `Ok(None)` when all are lent.
    fn try_lease(&self) -> Result<Option<Lease<'_>>> {
        let mut pool = lock(&self.state);
        if let Some(store) = pool.idle.pop() {
            return Ok(Some(self.lent(store)));
        }
        if pool.count >= self.max {
            return Ok(None);
        }
        pool.count += 1;
        drop(pool);
        self.open_counted().map(Some)
    }

    /// An idle handle, never a new one (opening one is file or network I/O).
    fn try_idle(&self) -> Option<Lease<'_>> {
        let store = lock(&self.state).idle.pop()?;
        Some(self.lent(store))
    }

    /// Opens the handle already counted in `count`; on failure gives its place back.
    fn open_counted(&self) -> Result<Lease<'_>> {
        match (self.open)() {
            Ok(store) => Ok(self.lent(store)),
            Err(e) => {
                lock(&self.state).count -= 1;
                self.freed.notify_one();
                Err(e)
            }
        }
    }

    fn lent(&self, store: Store) -> Lease<'_> {
        Lease {
            readers: self,
            store: Some(store),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn shared() -> (tempfile::TempDir, SharedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        (dir, SharedStore::new(store))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_queue_behind_the_writer() {
        let (_d, s) = shared();
        s.read(|r| r.ping()).await.unwrap();
        let (held, release) = std::sync::mpsc::channel::<()>();
        let (started, writer_busy) = tokio::sync::oneshot::channel();
        let busy = s.clone();
        let writer = tokio::spawn(async move {
            busy.call(move |_| {
                let _ = started.send(());
                let _ = release.recv_timeout(Duration::from_secs(10));
                Ok(())
            })
            .await
        });
        writer_busy.await.unwrap();
        let t = Instant::now();
        let page = s
            .read(|r| r.api_responses(&crate::store::ResponsesQuery::default()))
            .await
            .unwrap();
        assert!(page.responses.is_empty());
        assert!(t.elapsed() < Duration::from_secs(5), "the read waited");
        held.send(()).unwrap();
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_handle_cannot_write_and_sees_committed_writes() {
        let (_d, s) = shared();
        let token = s
            .call(|w| {
                Ok(crate::store::sqlite::test_util::issue(
                    &mut **w,
                    crate::store::SendState::Pending,
                ))
            })
            .await
            .unwrap();
        let lookup = token.clone();
        let found = s.read(move |r| r.find_token(&lookup)).await.unwrap();
        assert_eq!(found.unwrap().token.as_str(), token);
        // Reads get `&Store`: a write does not compile there; the handle refuses one too.
        let inner = s.0.clone();
        let err = tokio::task::spawn_blocking(move || {
            let mut reader = (inner.readers.open)().unwrap();
            reader.insert_inbox(b"{}")
        })
        .await
        .unwrap()
        .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    #[test]
    fn reads_beyond_the_bound_wait_for_a_free_handle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let readers = Readers::new(store.reader(), 2);
        let a = readers.lease().unwrap();
        let b = readers.lease().unwrap();
        assert_eq!(lock(&readers.state).count, 2);
        std::thread::scope(|scope| {
            let third = scope.spawn(|| readers.lease().map(|l| l.ping()).is_ok());
            std::thread::sleep(Duration::from_millis(50));
            drop(a);
            assert!(third.join().unwrap());
        });
        drop(b);
        let pool = lock(&readers.state);
        assert_eq!((pool.count, pool.idle.len()), (2, 2));
    }

    #[test]
    fn inline_reads_run_here_on_a_local_database_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("s.db")).unwrap();
        let token =
            crate::store::sqlite::test_util::issue(&mut *store, crate::store::SendState::Sent);
        let local = SharedStore::with_inline_reads(store, Some(2));
        let here = std::thread::current().id();
        let (found, ran_on) = local
            .read_inline(|r| Ok((r.find_token(&token)?, std::thread::current().id())))
            .expect("a local database reads inline")
            .unwrap();
        assert_eq!(found.unwrap().token.as_str(), token);
        assert_eq!(ran_on, here);
        // The extra handles for the inline readers come on top of the shared ones.
        assert_eq!(local.0.readers.max, MAX_READERS + 2);

        // A network database (or one shared without inline reads): the caller must go through
        // the blocking pool, so `f` does not even run.
        let remote = SharedStore::new(Store::open(dir.path().join("r.db")).unwrap());
        let mut ran = false;
        assert!(remote
            .read_inline(|r| {
                ran = true;
                r.ping()
            })
            .is_none());
        assert!(!ran);
        assert_eq!(remote.0.readers.max, MAX_READERS);
    }

    #[test]
    fn an_inline_read_never_waits_for_a_handle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let shared = SharedStore::with_inline_reads(store, Some(0));
        let held: Vec<_> = (0..MAX_READERS)
            .map(|_| shared.0.readers.lease().unwrap())
            .collect();
        let t = Instant::now();
        assert!(shared.read_inline(|r| r.ping()).is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(held);
        assert!(shared
            .read_inline(|r| r.ping())
            .expect("a free handle")
            .is_ok());
        let pool = lock(&shared.0.readers.state);
        assert_eq!((pool.count, pool.idle.len()), (MAX_READERS, MAX_READERS));
    }

    #[test]
    fn an_inline_ping_uses_an_idle_handle_and_never_opens_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let local = SharedStore::with_inline_reads(store, Some(1));
        // No handle open yet: opening one is file I/O, so the caller goes the blocking way.
        assert!(local.ping_inline().is_none());
        assert_eq!(lock(&local.0.readers.state).count, 0);
        local.read_inline(|r| r.ping()).unwrap().unwrap();
        assert!(matches!(local.ping_inline(), Some(Ok(()))));
        // Every handle lent: none idle, so no answer here (and no wait).
        let held = local.0.readers.lease().unwrap();
        assert!(local.ping_inline().is_none());
        drop(held);
        assert!(matches!(local.ping_inline(), Some(Ok(()))));
        let pool = lock(&local.0.readers.state);
        assert_eq!((pool.count, pool.idle.len()), (1, 1));
        drop(pool);
        // A network database: never on the caller's thread.
        let remote = SharedStore::new(Store::open(dir.path().join("r.db")).unwrap());
        open_idle_handle(&remote);
        assert!(remote.ping_inline().is_none());
    }

    /// Opens a handle in `remote`'s pool, as a read through the blocking pool would.
    fn open_idle_handle(remote: &SharedStore) {
        drop(remote.0.readers.lease().unwrap());
        assert_eq!(lock(&remote.0.readers.state).idle.len(), 1);
    }

    #[test]
    fn an_inline_write_never_waits_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let local = SharedStore::with_inline_reads(store, Some(1));
        let token = local
            .write_inline(|w| {
                Ok(crate::store::sqlite::test_util::issue(
                    &mut **w,
                    crate::store::SendState::Sent,
                ))
            })
            .expect("the writer is free")
            .unwrap();
        assert!(local
            .read_inline(|r| r.find_token(&token))
            .unwrap()
            .unwrap()
            .is_some());
        {
            let _busy = lock(&local.0.writer);
            let t = Instant::now();
            assert!(local.write_inline(|w| w.insert_inbox(b"{}")).is_none());
            assert!(t.elapsed() < Duration::from_secs(1));
        }
        let remote = SharedStore::new(Store::open(dir.path().join("r.db")).unwrap());
        assert!(remote.write_inline(|w| w.insert_inbox(b"{}")).is_none());
    }

    /// Another process holding SQLite's write lock (a `bulk` run on the same file): the inline
    /// write gives up at once, rolled back, instead of holding its thread for the busy
    /// timeout ([`crate::store::BUSY_TIMEOUT`], 10 s); the writer then waits for the lock
    /// as usual on the general path.
    #[test]
    fn an_inline_write_never_waits_for_another_process_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        let token =
            crate::store::sqlite::test_util::issue(&mut *store, crate::store::SendState::Sent);
        let local = SharedStore::with_inline_reads(store, Some(1));
        let answers: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"q1": "yes"}"#).unwrap();

        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let t = Instant::now();
        assert!(local
            .write_inline(|w| w.merge_screen_answers(&token, Some("S1"), &answers))
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let stored = local
            .read_inline(|r| r.find_token(&token))
            .unwrap()
            .unwrap();
        assert_eq!(stored.unwrap().flow_screen, None, "nothing was written");

        // The writer's usual wait is back: released 200 ms later, the lock is waited for.
        std::thread::scope(|scope| {
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                other.execute_batch("COMMIT").unwrap();
            });
            let merged = lock(&local.0.writer)
                .merge_screen_answers(&token, Some("S1"), &answers)
                .expect("waited for the lock");
            assert_eq!(merged["q1"], "yes");
        });
        // And with the lock free, the inline write goes through.
        let merged = local
            .write_inline(|w| w.merge_screen_answers(&token, Some("S2"), &answers))
            .expect("the writer and the lock are free")
            .unwrap();
        assert_eq!(merged["q1"], "yes");
    }
}
