//! Flow media: the photos and documents a person attaches with a `PhotoPicker` or
//! `DocumentPicker` component, as they reach the data endpoint.
//!
//! Meta's reference, "Media upload components", section "Handling media"
//! (<https://developers.facebook.com/docs/whatsapp/flows/reference/media_upload>):
//! a `data_exchange` payload carries, under the picker's top-level key, a list of descriptors
//!
//! ```json
//! {"media_id": "790aba14-…", "cdn_url": "https://mmg.whatsapp.net/v/…", "file_name": "IMG_5237.jpg",
//!  "encryption_metadata": {"encrypted_hash": "…", "iv": "…", "encryption_key": "…",
//!                          "hmac_key": "…", "plaintext_hash": "…"}}
//! ```
//!
//! The file on the CDN is `ciphertext || hmac10`, where `hmac10` is the first 10 bytes of
//! HMAC-SHA256(`hmac_key`, `iv || ciphertext`) and the ciphertext is AES-256-CBC with PKCS#7
//! padding. Checks, in Meta's order: SHA-256(file) = `encrypted_hash`, the HMAC, decryption,
//! SHA-256(plaintext) = `plaintext_hash`.
//!
//! Where the reference is silent, and what this module assumes:
//! - the base64 alphabet: its example is standard base64 with padding; the URL-safe alphabet
//!   and unpadded text are accepted too, since nothing rules them out;
//! - key sizes: AES-256 fixes a 32-byte `encryption_key`, CBC a 16-byte `iv`; the example's
//!   `hmac_key` is 32 bytes, but HMAC takes any length, so any non-empty key is used;
//! - the completion message (`nfm_reply`) carries a different shape, `{file_name, mime_type,
//!   sha256, id}`: a Graph media id, downloaded like any message media ([`GraphMedia`],
//!   found by [`find_graph`]); its `sha256` is base64 in Meta's example, hex is accepted too.

mod files;
#[cfg(test)]
mod tests;

use aes::Aes256;
use base64::Engine as _;
use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use files::{file_name_for, write_private};

/// Length of the truncated HMAC-SHA256 at the end of a CDN file.
pub const HMAC_LEN: usize = 10;

/// AES block size (the IV's length, and the ciphertext's granularity).
const BLOCK: usize = 16;

/// How to check and decrypt one file, as Meta sends it (base64 text, see the module docs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionMetadata {
    /// SHA-256 of the whole CDN file (ciphertext and HMAC).
    pub encrypted_hash: String,
    /// The AES-CBC initialization vector (16 bytes).
    pub iv: String,
    /// The AES-256 key (32 bytes).
    pub encryption_key: String,
    /// The HMAC-SHA256 key.
    pub hmac_key: String,
    /// SHA-256 of the decrypted file.
    pub plaintext_hash: String,
}

impl std::fmt::Debug for EncryptionMetadata {
    // The keys decrypt a person's photo: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionMetadata")
            .field("encrypted_hash", &self.encrypted_hash)
            .field("plaintext_hash", &self.plaintext_hash)
            .finish_non_exhaustive()
    }
}

/// One uploaded file, as the data endpoint receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Meta's id of the upload (unique within the Flow's answers).
    pub media_id: String,
    /// Where the encrypted file is, for a limited time.
    pub cdn_url: String,
    /// The name on the person's device: untrusted, never used as a path.
    #[serde(default)]
    pub file_name: Option<String>,
    pub encryption_metadata: EncryptionMetadata,
}

/// A descriptor found in a screen's answers, with the answer key it came under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The payload key (the picker's value is a top-level property of the payload).
    pub field: String,
    pub descriptor: Descriptor,
}

/// Why a downloaded file was refused: each check has its own variant.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// A metadata value is not base64 or has the wrong length.
    #[error("encryption_metadata.{field} is unusable: {reason}")]
    BadMetadata { field: &'static str, reason: String },
    /// The file cannot even hold the HMAC and one block.
    #[error("the file is {len} bytes, too short for an encrypted file")]
    TooShort { len: usize },
    /// SHA-256 of the file is not `encrypted_hash`.
    #[error("SHA-256 of the downloaded file does not match encrypted_hash")]
    EncryptedHash,
    /// The truncated HMAC does not match.
    #[error("HMAC-SHA256 of iv and ciphertext does not match the file's last 10 bytes")]
    Hmac,
    /// The ciphertext does not decrypt to valid PKCS#7 padding.
    #[error("the ciphertext does not decrypt with valid PKCS#7 padding")]
    Padding,
    /// SHA-256 of the decrypted file is not `plaintext_hash`.
    #[error("SHA-256 of the decrypted file does not match plaintext_hash")]
    PlaintextHash,
}

impl MediaError {
    /// A short stable name for the failed check (stored, counted in metrics).
    pub fn check(&self) -> &'static str {
        match self {
            MediaError::BadMetadata { .. } => "bad_metadata",
            MediaError::TooShort { .. } => "too_short",
            MediaError::EncryptedHash => "encrypted_hash",
            MediaError::Hmac => "hmac",
            MediaError::Padding => "padding",
            MediaError::PlaintextHash => "plaintext_hash",
        }
    }
}

/// Decodes base64 in any of the common spellings (see the module docs).
fn decode(field: &'static str, text: &str) -> Result<Vec<u8>, MediaError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| MediaError::BadMetadata {
            field,
            reason: "not base64".into(),
        })
}

fn decode_len<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], MediaError> {
    let bytes = decode(field, text)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| MediaError::BadMetadata {
        field,
        reason: format!("{len} bytes, expected {N}"),
    })
}

/// Verifies a downloaded CDN file against its metadata and returns the decrypted file.
/// Checks in Meta's order; the first that fails is the error.
pub fn decrypt(meta: &EncryptionMetadata, cdn_file: &[u8]) -> Result<Vec<u8>, MediaError> {
    let encrypted_hash = decode_len::<32>("encrypted_hash", &meta.encrypted_hash)?;
    let iv = decode_len::<BLOCK>("iv", &meta.iv)?;
    let key = decode_len::<32>("encryption_key", &meta.encryption_key)?;
    let hmac_key = decode("hmac_key", &meta.hmac_key)?;
    if hmac_key.is_empty() {
        return Err(MediaError::BadMetadata {
            field: "hmac_key",
            reason: "empty".into(),
        });
    }
    let plaintext_hash = decode_len::<32>("plaintext_hash", &meta.plaintext_hash)?;

    if cdn_file.len() < BLOCK + HMAC_LEN {
        return Err(MediaError::TooShort {
            len: cdn_file.len(),
        });
    }
    if !bool::from(Sha256::digest(cdn_file).as_slice().ct_eq(&encrypted_hash)) {
        return Err(MediaError::EncryptedHash);
    }
    let (ciphertext, tag) = cdn_file.split_at(cdn_file.len() - HMAC_LEN);
    let mut mac = Hmac::<Sha256>::new_from_slice(&hmac_key).map_err(|_| MediaError::Hmac)?;
    mac.update(&iv);
    mac.update(ciphertext);
    // Constant time, on the first 10 bytes only (what the file carries).
    mac.verify_truncated_left(tag)
        .map_err(|_| MediaError::Hmac)?;

    let mut buf = ciphertext.to_vec();
    let len = cbc::Decryptor::<Aes256>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| MediaError::Padding)?
        .len();
    buf.truncate(len);
    if !bool::from(Sha256::digest(&buf).as_slice().ct_eq(&plaintext_hash)) {
        return Err(MediaError::PlaintextHash);
    }
    Ok(buf)
}

/// The raw keys of one encryption (what a client picks at random for each upload).
#[derive(Clone, Copy)]
pub struct Keys {
    pub encryption_key: [u8; 32],
    pub hmac_key: [u8; 32],
    pub iv: [u8; BLOCK],
}

/// Encrypts `plaintext` exactly as the WhatsApp client uploads it (the layout above):
/// returns the CDN file and its metadata. The inverse of [`decrypt`]; the sandbox's CDN and
/// the tests use it.
pub fn encrypt(plaintext: &[u8], keys: &Keys) -> (Vec<u8>, EncryptionMetadata) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let padded = (plaintext.len() / BLOCK + 1) * BLOCK;
    let mut buf = vec![0u8; padded];
    buf[..plaintext.len()].copy_from_slice(plaintext);
    let ct_len = cbc::Encryptor::<Aes256>::new(&keys.encryption_key.into(), &keys.iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, plaintext.len())
        // The buffer always has room for a full block of padding.
        .map_or(padded, <[u8]>::len);
    buf.truncate(ct_len);
    let mut mac = Hmac::<Sha256>::new_from_slice(&keys.hmac_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&keys.iv);
    mac.update(&buf);
    let tag = mac.finalize().into_bytes();
    buf.extend_from_slice(&tag[..HMAC_LEN]);
    let meta = EncryptionMetadata {
        encrypted_hash: b64(&Sha256::digest(&buf)),
        iv: b64(&keys.iv),
        encryption_key: b64(&keys.encryption_key),
        hmac_key: b64(&keys.hmac_key),
        plaintext_hash: b64(&Sha256::digest(plaintext)),
    };
    (buf, meta)
}

/// True when `v` has a descriptor's shape (what tells a picker's value from other answers).
fn is_descriptor(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.get("media_id").is_some_and(Value::is_string)
            && o.get("cdn_url").is_some_and(Value::is_string)
            && o.get("encryption_metadata").is_some_and(Value::is_object)
    })
}

/// Every media descriptor among a screen's answers: the values of top-level keys that are a
/// list of descriptors (Meta allows a picker only as a top-level payload value), or a single
/// one. A value of the right shape whose fields have the wrong types is skipped and logged.
pub fn find(answers: &Map<String, Value>) -> Vec<Found> {
    let mut out = Vec::new();
    for (field, value) in answers {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().filter(|i| is_descriptor(i)).collect(),
            v if is_descriptor(v) => vec![v],
            _ => continue,
        };
        for item in items {
            match serde_json::from_value::<Descriptor>(item.clone()) {
                Ok(descriptor) => out.push(Found {
                    field: field.clone(),
                    descriptor,
                }),
                Err(e) => tracing::warn!(field = %field, error = %e, "media descriptor skipped"),
            }
        }
    }
    out
}

/// The answers with each descriptor reduced to `{media_id, file_name}`: the keys and the
/// short-lived CDN address are kept with the download job only, never in the stored answers
/// (which `export` and the CRM API hand out).
pub fn without_keys(mut answers: Map<String, Value>) -> Map<String, Value> {
    for value in answers.values_mut() {
        match value {
            Value::Array(items) => {
                for item in items.iter_mut().filter(|i| is_descriptor(i)) {
                    *item = reference(item);
                }
            }
            v if is_descriptor(v) => *v = reference(v),
            _ => {}
        }
    }
    answers
}

fn reference(descriptor: &Value) -> Value {
    let mut r = Map::new();
    for k in ["media_id", "file_name"] {
        if let Some(v) = descriptor.get(k) {
            r.insert(k.into(), v.clone());
        }
    }
    Value::Object(r)
}

/// A file of a completion message: a Cloud API media id (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphMedia {
    /// The Graph media id.
    pub id: String,
    /// SHA-256 of the file (base64 or hex).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    /// The name on the person's device: untrusted, never used as a path.
    #[serde(default)]
    pub file_name: Option<String>,
}

/// Where a queued file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSource {
    /// The data endpoint's encrypted CDN file.
    Cdn(Descriptor),
    /// A completion message's Graph media id.
    Graph(GraphMedia),
}

impl MediaSource {
    /// Meta's id of the file.
    pub fn media_id(&self) -> &str {
        match self {
            MediaSource::Cdn(d) => &d.media_id,
            MediaSource::Graph(g) => &g.id,
        }
    }

    /// The name on the person's device (untrusted).
    pub fn file_name(&self) -> Option<&str> {
        match self {
            MediaSource::Cdn(d) => d.file_name.as_deref(),
            MediaSource::Graph(g) => g.file_name.as_deref(),
        }
    }
}

/// True when `v` has the completion message's media shape: a string `id` and `sha256`, and a
/// `mime_type` or `file_name`.
fn is_graph_media(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.get("id").is_some_and(Value::is_string)
            && o.get("sha256").is_some_and(Value::is_string)
            && (o.get("mime_type").is_some_and(Value::is_string)
                || o.get("file_name").is_some_and(Value::is_string))
    })
}

/// Every Graph media file among a completion message's answers (lists under top-level keys,
/// as for [`find`]), with the answer key it came under.
pub fn find_graph(answers: &Map<String, Value>) -> Vec<(String, GraphMedia)> {
    let mut out = Vec::new();
    for (field, value) in answers {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().filter(|i| is_graph_media(i)).collect(),
            v if is_graph_media(v) => vec![v],
            _ => continue,
        };
        for item in items {
            if let Ok(g) = serde_json::from_value::<GraphMedia>(item.clone()) {
                out.push((field.clone(), g));
            }
        }
    }
    out
}

/// Checks a downloaded file against the SHA-256 Meta gave (base64 or hex).
pub fn check_sha256(expected: &str, file: &[u8]) -> Result<(), MediaError> {
    let digest = Sha256::digest(file);
    let text = expected.trim();
    let hex_match = text.len() == 64
        && text
            .as_bytes()
            .chunks(2)
            .zip(digest.iter())
            .all(|(pair, b)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    == Some(*b)
            });
    if hex_match {
        return Ok(());
    }
    let expected = decode_len::<32>("sha256", text).map_err(|_| MediaError::PlaintextHash)?;
    if bool::from(digest.as_slice().ct_eq(&expected)) {
        Ok(())
    } else {
        Err(MediaError::PlaintextHash)
    }
}
