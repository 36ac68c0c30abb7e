//! `/healthz`: the database answers, and its file is still the one `serve` opened and can be
//! written.
//!
//! SQLite keeps a deleted file open and goes on answering from it: a `SELECT 1` alone says
//! "ok" while every token issued lands in a file nobody will ever read again. So the check
//! also looks at the path: it must exist, be the same file (device and inode) as at start,
//! and open for writing. Those are a few system calls; they are still cached for
//! [`CACHE_FOR`], so a monitor polling hard does not turn into a stream of them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a file check's result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// The database file as `serve` opened it, and the last check of it.
pub struct DbFile {
    path: PathBuf,
    /// `(device, inode)` at start (`None`: not a file that could be identified).
    identity: Option<(u64, u64)>,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl DbFile {
    /// Remembers which file `path` is now.
    pub fn new(path: &Path) -> DbFile {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        DbFile {
            identity: identity(&path),
            path,
            last: Mutex::new(None),
        }
    }

    /// `Err(why)` when the file was deleted, replaced or cannot be written; cached for
    /// [`CACHE_FOR`]. A fresh failure is logged.
    pub fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, result)) = &*last {
            if at.elapsed() < CACHE_FOR {
                return result.clone();
            }
        }
        let result = self.check_now();
        if let Err(why) = &result {
            tracing::error!(%why, "health check: the database file is not usable");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }

    fn check_now(&self) -> Result<(), String> {
        let shown = self.path.display();
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "database file {shown} was deleted: restart serve (what is written now is lost)"
                ))
            }
            Err(e) => return Err(format!("database file {shown} cannot be read: {e}")),
            Ok(_) => {}
        }
        if self.identity.is_some() && identity(&self.path) != self.identity {
            return Err(format!(
                "database file {shown} was replaced by another file: restart serve"
            ));
        }
        // access(2), not an open: closing any descriptor of the database file would drop
        // the POSIX locks SQLite holds on it in this process
        // (https://www.sqlite.org/howtocorrupt.html, section 2.2). It fails on a read-only
        // file or file system.
        rustix::fs::access(&self.path, rustix::fs::Access::WRITE_OK)
            .map_err(|e| format!("database file {shown} cannot be written: {e}"))
    }
}

#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        std::fs::write(&path, b"a").unwrap();
        let f = DbFile::new(&path);
        assert_eq!(f.check_now(), Ok(()));
        // Made while the first exists, so that it cannot reuse its inode.
        let other = dir.path().join("y.db");
        std::fs::write(&other, b"b").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(f.check_now().unwrap_err().contains("replaced"));
        std::fs::remove_file(&path).unwrap();
        assert!(f.check_now().unwrap_err().contains("was deleted"));
    }
}
