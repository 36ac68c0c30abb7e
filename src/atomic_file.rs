//! Files replaced atomically: the new content is written under a hidden temporary name in
//! the destination's directory, synced, then renamed over the destination. Readers see the
//! old file or the complete new one, never a partial one, and a crash never leaves a
//! half-written key or export behind. Used by `keygen` (key files) and `export --out`.

use std::fs::{File, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// The permissions the new file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exactly this mode (such as `0o600`), from the moment the temporary file exists: a
    /// private key is never readable by others, not even between create and chmod.
    Exactly(u32),
    /// The permissions of the file being replaced; owner-only (`0o600`) when there is none.
    KeepExisting,
}

/// Why an atomic write failed; each case names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum AtomicFileError {
    /// The temporary file cannot be created (missing directory, no permission…).
    #[error("creating a temporary file in {}", dir.display())]
    Create {
        /// The destination's directory.
        dir: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The temporary file's permissions cannot be set.
    #[error("setting permissions on {}", path.display())]
    Permissions {
        /// The temporary file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Writing, syncing or renaming into place failed.
    #[error("writing {}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// [`AtomicFile::commit_new`] found the destination there (created meanwhile): it is
    /// kept, and the new content dropped.
    #[error("{} already exists", path.display())]
    AlreadyExists {
        /// The destination.
        path: PathBuf,
    },
}

impl AtomicFileError {
    /// The operating system's error, for messages that show only it.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            AtomicFileError::Create { source, .. }
            | AtomicFileError::Permissions { source, .. }
            | AtomicFileError::Write { source, .. } => Some(source),
            AtomicFileError::AlreadyExists { .. } => None,
        }
    }
}

/// A file being written that replaces its destination only on [`AtomicFile::commit`] (or
/// [`AtomicFile::commit_new`]). Writes are buffered. Dropped without a commit, the
/// temporary file is removed and the destination left as it was.
#[derive(Debug)]
pub struct AtomicFile {
    out: BufWriter<NamedTempFile>,
    path: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file next to `path`, its name starting with `prefix` (so that
    /// a leftover says what wrote it), with the permissions `mode` asks for.
    pub fn create(path: &Path, prefix: &str, mode: Mode) -> Result<AtomicFile, AtomicFileError> {
        let dir = dir_of(path);
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        if let Mode::Exactly(mode) = mode {
            // tempfile passes the mode to open(2): never wider, even for an instant.
            builder.permissions(Permissions::from_mode(mode));
        }
        let tmp = builder
            .tempfile_in(dir)
            .map_err(|source| AtomicFileError::Create {
                dir: dir.to_path_buf(),
                source,
            })?;
        let wanted = match mode {
            // The umask may have narrowed the mode at creation; set it exactly (never wider
            // than `mode`, so this cannot expose a private key).
            Mode::Exactly(mode) => Some(Permissions::from_mode(mode)),
            Mode::KeepExisting => std::fs::metadata(path).ok().map(|m| m.permissions()),
        };
        if let Some(permissions) = wanted {
            tmp.as_file()
                .set_permissions(permissions)
                .map_err(|source| AtomicFileError::Permissions {
                    path: tmp.path().to_path_buf(),
                    source,
                })?;
        }
        Ok(AtomicFile {
            out: BufWriter::with_capacity(1 << 16, tmp),
            path: path.to_path_buf(),
        })
    }

    /// Syncs the content and renames it over the destination, replacing any file there.
    pub fn commit(self) -> Result<(), AtomicFileError> {
        self.finish(true)
    }

    /// Like [`AtomicFile::commit`], but never replaces a file: one that appeared at the
    /// destination meanwhile is kept ([`AtomicFileError::AlreadyExists`]).
    pub fn commit_new(self) -> Result<(), AtomicFileError> {
        self.finish(false)
    }

    fn finish(self, replace: bool) -> Result<(), AtomicFileError> {
        let path = self.path;
        let failed = |source| AtomicFileError::Write {
            path: path.clone(),
            source,
        };
        let tmp = self.out.into_inner().map_err(|e| failed(e.into_error()))?;
        tmp.as_file().sync_all().map_err(failed)?;
        let renamed = if replace {
            tmp.persist(&path)
        } else {
            tmp.persist_noclobber(&path)
        };
        match renamed {
            Ok(file) => drop(file),
            Err(e) if !replace && e.error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(AtomicFileError::AlreadyExists { path });
            }
            Err(e) => return Err(failed(e.error)),
        }
        // Make the rename itself durable; the data is already safe if this fails.
        if let Ok(d) = File::open(dir_of(&path)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The destination's directory: the working directory for a bare file name.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_file_has_its_mode_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("k.pem");
        let mut f = AtomicFile::create(&dest, ".t-", Mode::Exactly(0o640)).unwrap();
        f.write_all(b"key").unwrap();
        f.commit_new().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"key");
        assert_eq!(mode(&dest), 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn commit_new_keeps_a_file_that_appeared_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("k.pem");
        let mut f = AtomicFile::create(&dest, ".t-", Mode::Exactly(0o600)).unwrap();
        std::fs::write(&dest, "theirs").unwrap();
        f.write_all(b"ours").unwrap();
        assert!(matches!(
            f.commit_new(),
            Err(AtomicFileError::AlreadyExists { .. })
        ));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_replacement_keeps_the_old_files_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        std::fs::write(&dest, "old").unwrap();
        std::fs::set_permissions(&dest, Permissions::from_mode(0o644)).unwrap();
        let mut f = AtomicFile::create(&dest, ".t-", Mode::KeepExisting).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(mode(&dest), 0o644);
        let fresh = dir.path().join("fresh.csv");
        AtomicFile::create(&fresh, ".t-", Mode::KeepExisting)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(mode(&fresh), 0o600, "a new file is owner-only");
    }
}
