//! `flowctl keygen`: creates the data endpoint's RSA-2048 key pair on disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::atomic_file::{AtomicFile, AtomicFileError, Mode};
use crate::crypto::PrivateKey;

/// Mode of the private key file: owner read/write only, from the moment it exists.
const PRIVATE_MODE: u32 = 0o600;
/// Mode of the public key file.
const PUBLIC_MODE: u32 = 0o644;

/// Generates an RSA-2048 key pair, writes the private key to `out` (unencrypted PKCS#8 PEM,
/// mode 0600) and the public key to `<out>.pub` (SubjectPublicKeyInfo PEM, mode 0644), and
/// returns the public PEM for the caller to print or upload.
///
/// Each file is written to a temporary file in the same directory, synced, then renamed, so a
/// crash never leaves a partial key. Existing files are kept unless `force` is set.
pub fn keygen(out: &Path, force: bool) -> anyhow::Result<String> {
    let pub_path = public_path(out);
    if !force {
        for path in [out, pub_path.as_path()] {
            if path.exists() {
                bail!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                );
            }
        }
    }
    let (key, private_pem) = PrivateKey::generate().context("generating the RSA-2048 key")?;
    let public_pem = key.public_key_pem();
    write_atomic(out, private_pem.as_bytes(), PRIVATE_MODE, force)?;
    write_atomic(&pub_path, public_pem.as_bytes(), PUBLIC_MODE, force)?;
    Ok(public_pem)
}

/// `<out>.pub`, next to the private key.
pub fn public_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes a private key file atomically with owner-only permissions, replacing any old one.
pub fn write_private_key(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, pem, PRIVATE_MODE, true)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> anyhow::Result<()> {
    let mut file = AtomicFile::create(path, ".flowctl-key-", Mode::Exactly(mode))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    if overwrite {
        return Ok(file.commit()?);
    }
    // No-clobber rename: a file created meanwhile by someone else is not replaced.
    file.commit_new().map_err(|e| match e {
        AtomicFileError::AlreadyExists { .. } => anyhow::anyhow!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        ),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn keygen_writes_owner_only_private_key_and_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("private.pem");
        let public = keygen(&out, false).unwrap();
        assert_eq!(mode(&out), 0o600);
        assert_eq!(mode(&public_path(&out)), 0o644);
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(std::fs::read_to_string(public_path(&out)).unwrap(), public);

        let key = PrivateKey::from_pem(&std::fs::read_to_string(&out).unwrap(), None).unwrap();
        assert_eq!(key.modulus_bits(), 2048);
        assert!(key.matches_public_pem(&public));
        // Only the two key files remain (no temporary leftovers).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn keygen_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("private.pem");
        std::fs::write(&out, "keep me").unwrap();
        let err = keygen(&out, false).unwrap_err().to_string();
        assert!(
            err.contains("private.pem") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
        assert!(!public_path(&out).exists());

        // An existing public key alone is protected too.
        let out2 = dir.path().join("other.pem");
        std::fs::write(public_path(&out2), "keep").unwrap();
        let err = keygen(&out2, false).unwrap_err().to_string();
        assert!(
            err.contains("other.pem.pub") && err.contains("--force"),
            "{err}"
        );
        assert!(!out2.exists());
    }

    #[test]
    fn keygen_force_replaces_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("private.pem");
        let first = keygen(&out, false).unwrap();
        std::fs::set_permissions(&out, Permissions::from_mode(0o644)).unwrap();
        let second = keygen(&out, true).unwrap();
        assert_ne!(first, second);
        assert_eq!(mode(&out), 0o600);
        let key = PrivateKey::from_pem(&std::fs::read_to_string(&out).unwrap(), None).unwrap();
        assert!(key.matches_public_pem(&second));
        assert_eq!(std::fs::read_to_string(public_path(&out)).unwrap(), second);
    }

    #[test]
    fn keygen_names_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("no-such-dir/private.pem");
        let err = format!("{:#}", keygen(&out, false).unwrap_err());
        assert!(err.contains("no-such-dir"), "{err}");
    }
}
