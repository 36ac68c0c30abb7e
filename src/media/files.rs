//! Where a decrypted file is kept: a name built from what flowctl trusts, written privately.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::atomic_file::{AtomicFile, AtomicFileError, Mode};

/// Longest piece of an untrusted value kept in a file name.
const MAX_PART: usize = 64;
/// Longest extension kept from the person's file name.
const MAX_EXT: usize = 8;

/// The stored file's name: `<token>-<media id>[.<ext>]`. The token and Meta's media id are
/// reduced to `[A-Za-z0-9_-]` and the extension of the person's `file_name` to ASCII letters
/// and digits: no separator, dot-dot or control character from the network reaches a path.
pub fn file_name_for(token: &str, media_id: &str, file_name: Option<&str>) -> String {
    let mut name = format!("{}-{}", safe(token), safe(media_id));
    let ext = file_name
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| {
            e.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(MAX_EXT)
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .filter(|e| !e.is_empty());
    if let Some(ext) = ext {
        name.push('.');
        name.push_str(&ext);
    }
    name
}

fn safe(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(MAX_PART)
        .collect();
    if kept.is_empty() {
        "media".into()
    } else {
        kept
    }
}

/// Writes `bytes` to `dir/name` (creating `dir`, owner-only, when missing) atomically with
/// mode 0600: a person's photo is readable by its owner only, and a crash never leaves half
/// a file under the final name. Returns the path written.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, AtomicFileError> {
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(|source| AtomicFileError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let path = dir.join(name);
    let mut file = AtomicFile::create(&path, ".flowctl-media-", Mode::Exactly(0o600))?;
    file.write_all(bytes)
        .map_err(|source| AtomicFileError::Write {
            path: path.clone(),
            source,
        })?;
    file.commit()?;
    Ok(path)
}
