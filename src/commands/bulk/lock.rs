//! One `bulk` run per campaign and database at a time.
//!
//! Two runs of one campaign at once would both find its rows `pending` and both send them. A
//! run therefore holds an exclusive lock on `<db>.bulk-<campaign digest>.lock` for its whole
//! life. It is an advisory `flock`: the kernel releases it when the process ends, however it
//! ends (SIGKILL included), so a crashed run never blocks the next one.
//!
//! A run that ends (cleanly or not, short of a kill) removes its lock file, so none are left
//! lying beside the database. Removing a lock file is safe only because taking the lock checks
//! that the path still names the file locked: a run that locked a file another run has just
//! removed starts over on the path's new file instead of holding a lock nobody else sees.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct CampaignLock {
    path: PathBuf,
    _file: File,
}

impl Drop for CampaignLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this), see the module's note.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `file` (open) is the file `path` names now.
fn still_named(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Why a run could not take its campaign's lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("campaign {campaign:?} is already being sent to from this database by another `flowctl bulk`{holder}; wait for it to finish (or stop it), or pick another --campaign")]
    Busy { campaign: String, holder: String },
    #[error("cannot lock campaign {campaign:?} ({path}): {source}")]
    Io {
        campaign: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file of `campaign` beside the database `db`.
pub fn lock_path(db: &Path, campaign: &str) -> PathBuf {
    let digest = Sha256::digest(campaign.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut name = db.as_os_str().to_owned();
    name.push(format!(".bulk-{hex}.lock"));
    PathBuf::from(name)
}

impl CampaignLock {
    /// Takes the lock without waiting.
    pub fn acquire(db: &Path, campaign: &str) -> Result<CampaignLock, LockError> {
        let path = lock_path(db, campaign);
        let io = |source| LockError::Io {
            campaign: campaign.to_string(),
            path: path.clone(),
            source,
        };
        let mut attempts = 0;
        let mut file = loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) if still_named(&file, &path) => break file,
                // Locked a file its holder removed on its way out: open the path again.
                Ok(()) if attempts < 20 => attempts += 1,
                Ok(()) => {
                    return Err(io(std::io::Error::other(
                        "the lock file keeps being replaced",
                    )))
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(LockError::Busy {
                        campaign: campaign.to_string(),
                        holder: if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" ({holder})")
                        },
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        };
        // Who holds it, for the message of a run that finds it taken.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "pid {}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(CampaignLock { path, _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_campaign_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("flowctl.db");
        let a = CampaignLock::acquire(&db, "spring").unwrap();
        let busy = CampaignLock::acquire(&db, "spring").unwrap_err();
        let msg = busy.to_string();
        assert!(matches!(busy, LockError::Busy { .. }), "{msg}");
        assert!(
            msg.contains("\"spring\"") && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Another campaign of the same database is independent.
        let _b = CampaignLock::acquire(&db, "autumn").unwrap();
        let path = lock_path(&db, "spring");
        assert!(path.exists());
        drop(a);
        assert!(!path.exists(), "the lock file is removed with the lock");
        CampaignLock::acquire(&db, "spring").unwrap();
    }

    #[test]
    fn lock_files_sit_beside_the_database_and_differ_per_campaign() {
        let db = Path::new("/data/flowctl.db");
        let a = lock_path(db, "spring");
        assert!(a.to_string_lossy().starts_with("/data/flowctl.db.bulk-"));
        assert!(a.to_string_lossy().ends_with(".lock"));
        assert_ne!(a, lock_path(db, "autumn"));
        assert_eq!(a, lock_path(db, "spring"));
    }
}
