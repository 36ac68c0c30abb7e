//! The sandbox's CDN: the files the simulated people attach with a `PhotoPicker` or
//! `DocumentPicker`, encrypted exactly as WhatsApp stores them (`crate::media`: AES-256-CBC,
//! the first 10 bytes of HMAC-SHA256 appended), served at `GET /_sandbox/cdn/{name}`.
//!
//! Faults, set with `POST /_sandbox/cdn` and a JSON body:
//! - `{"tamper": ["+212…"]}` (or `--tamper-media PHONE` at start): those people's files are served with one byte changed (a
//!   corrupted or forged file: the SHA-256 of the file no longer matches);
//! - `{"fail_next": N}`: the next N downloads answer 500 (a CDN hiccup, to be retried).
//!
//! As Meta documents (<https://developers.facebook.com/docs/whatsapp/flows/reference/media_upload>),
//! the data endpoint receives each file as `{media_id, cdn_url, file_name, encryption_metadata}`,
//! while the completion message (`nfm_reply`) carries `{file_name, mime_type, sha256, id}`:
//! a Graph media id, whose URL `GET /{v}/{id}` gives and `GET /_sandbox/media/{id}` serves
//! (bearer token required, as Meta's media URLs). A tampered person's Graph file is served
//! with one byte changed too.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::media::{self, Keys};

/// The files and faults of the sandbox's CDN.
pub struct Cdn {
    /// `http://ADDR/_sandbox/cdn/`.
    base: String,
    files: Mutex<HashMap<String, Vec<u8>>>,
    tampered: Mutex<HashSet<String>>,
    fail_next: AtomicU32,
    /// The plaintext of each upload by media id (what the completion message's media is).
    plain: Mutex<HashMap<String, Vec<u8>>>,
    /// Graph media: id → (file as served, MIME type).
    graph: Mutex<HashMap<String, (Vec<u8>, &'static str)>>,
}

/// A CDN answer: status and body.
pub type CdnAnswer = (u16, Vec<u8>);

impl Cdn {
    /// An empty CDN whose files are addressed under `base` (ending with `/`).
    pub fn new(base: String) -> Cdn {
        Cdn {
            base,
            files: Mutex::default(),
            tampered: Mutex::default(),
            fail_next: AtomicU32::new(0),
            plain: Mutex::default(),
            graph: Mutex::default(),
        }
    }

    /// Serves the files these people attach corrupted (`--tamper-media`).
    pub fn set_tampered(&self, phones: &[String]) {
        *self.tampered.lock().unwrap_or_else(PoisonError::into_inner) =
            phones.iter().map(|p| phone_key(p)).collect();
    }

    /// Applies `POST /_sandbox/cdn` (see the module docs); the error names the bad input.
    pub fn configure(&self, body: &Value) -> Result<Value, String> {
        if let Some(list) = body.get("tamper") {
            let phones = list
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|p| p.as_str().map(phone_key))
                        .collect::<Option<HashSet<_>>>()
                })
                .ok_or_else(|| format!("\"tamper\" must be a list of phone numbers, got {list}"))?;
            *self.tampered.lock().unwrap_or_else(PoisonError::into_inner) = phones;
        }
        if let Some(n) = body.get("fail_next") {
            let n = n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("\"fail_next\" must be a whole number, got {n}"))?;
            self.fail_next.store(n, Ordering::SeqCst);
        }
        Ok(json!({
            "tamper": self.tampered.lock().unwrap_or_else(PoisonError::into_inner).iter().collect::<Vec<_>>(),
            "fail_next": self.fail_next.load(Ordering::SeqCst),
        }))
    }

    /// `GET /_sandbox/cdn/{name}`.
    pub fn get(&self, name: &str) -> CdnAnswer {
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return (500, b"CDN unavailable".to_vec());
        }
        match self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            Some(bytes) => (200, bytes.clone()),
            None => (404, b"no such file".to_vec()),
        }
    }

    /// Uploads the file person `to` attaches to picker `field` of their Flow `token`, as the
    /// WhatsApp client does: returns the descriptor the data endpoint receives.
    pub fn upload(&self, to: &str, token: &str, field: &str, kind: &str) -> Value {
        let (plaintext, file_name) = sample_file(kind, token);
        let seed = hash(&(token, field));
        let keys = Keys {
            encryption_key: bytes_from(seed ^ 1),
            hmac_key: bytes_from(seed ^ 2),
            iv: bytes_from(seed ^ 3),
        };
        let (mut file, meta) = media::encrypt(&plaintext, &keys);
        let media_id = media_id_of(token, field);
        let mut served = plaintext;
        if self
            .tampered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&phone_key(to))
        {
            file[0] ^= 0x55;
            served[0] ^= 0x55;
        }
        self.plain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(media_id.clone(), served);
        let name = format!("{media_id}.enc");
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), file);
        json!({
            "media_id": media_id,
            "cdn_url": format!("{}{name}", self.base),
            "file_name": file_name,
            "encryption_metadata": meta,
        })
    }

    /// What the completion message carries for an uploaded file instead of its descriptor:
    /// `{file_name, mime_type, sha256, id}`, the id a Graph media id that
    /// `GET /{v}/{id}` ([`Cdn::media_url`]) and `GET /_sandbox/media/{id}` then serve.
    pub fn webhook_shape(&self, descriptor: &Value) -> Value {
        let get = |p: &str| descriptor.pointer(p).cloned().unwrap_or(Value::Null);
        let file_name = get("/file_name");
        let mime = match file_name
            .as_str()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, e)| e)
        {
            Some("png") => "image/png",
            _ => "text/plain",
        };
        let media_id = get("/media_id");
        let id = (hash(&media_id.to_string()) % 10_000_000_000_000_000).to_string();
        let served = media_id
            .as_str()
            .and_then(|m| {
                self.plain
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(m)
                    .cloned()
            })
            .unwrap_or_default();
        self.graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), (served, mime));
        json!({
            "file_name": file_name,
            "mime_type": mime,
            "sha256": get("/encryption_metadata/plaintext_hash"),
            "id": id,
        })
    }

    /// `GET /{v}/{media id}`: the Cloud API's answer for a known media id (`None`: unknown).
    pub fn media_url(&self, id: &str) -> Option<Value> {
        let graph = self.graph.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, mime) = graph.get(id)?;
        Some(json!({
            "messaging_product": "whatsapp",
            "url": format!("{}{id}", self.base.replace("/_sandbox/cdn/", "/_sandbox/media/")),
            "mime_type": mime,
            "sha256": sha256_b64(file),
            "file_size": file.len().to_string(),
            "id": id,
        }))
    }

    /// `GET /_sandbox/media/{id}` with a bearer token: the file (`None`: unknown).
    pub fn media_file(&self, id: &str) -> Option<Vec<u8>> {
        let graph = self.graph.lock().unwrap_or_else(PoisonError::into_inner);
        graph.get(id).map(|(file, _)| file.clone())
    }
}

/// The media id of a person's upload (a UUID-like text, as Meta's are).
fn media_id_of(token: &str, field: &str) -> String {
    let (a, b) = (hash(&(token, field, 1u8)), hash(&(token, field, 2u8)));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// The small file a simulated person attaches, different for each token: a 1×1 PNG carrying
/// the token in a text chunk for a photo, a short text for a document. Tests compare what
/// `serve` stored with it.
pub fn sample_file(kind: &str, token: &str) -> (Vec<u8>, String) {
    if kind == "DocumentPicker" {
        let text = format!("Attestation for Flow {token}\nSigned: the sandbox\n");
        return (text.into_bytes(), "attestation.txt".into());
    }
    let mut png = PNG_HEAD.to_vec();
    let mut chunk = b"tEXt".to_vec();
    chunk.extend_from_slice(b"Comment\0");
    chunk.extend_from_slice(token.as_bytes());
    png.extend_from_slice(&((chunk.len() - 4) as u32).to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    png.extend_from_slice(PNG_TAIL);
    (png, "IMG_0001.png".into())
}

/// A 1×1 transparent PNG up to its IDAT chunk (signature, IHDR, IDAT).
const PNG_HEAD: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4,
];
/// The IEND chunk.
const PNG_TAIL: &[u8] = &[
    0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The digits of a phone number (what `--fail` and `tamper` compare).
fn phone_key(p: &str) -> String {
    p.chars().filter(char::is_ascii_digit).collect()
}

fn bytes_from<const N: usize>(seed: u64) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = hash(&(seed, i)).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

fn hash<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Base64 of the SHA-256 of `bytes` (how Meta spells the hashes).
pub fn sha256_b64(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_chunk_crc_is_the_standard_one() {
        // The IHDR chunk of PNG_HEAD carries its CRC: recompute it.
        assert_eq!(crc32(&PNG_HEAD[12..29]).to_be_bytes(), PNG_HEAD[29..33]);
        assert_eq!(crc32(b"IEND").to_be_bytes(), PNG_TAIL[8..12]);
    }

    #[test]
    fn an_upload_decrypts_to_the_sample_and_a_tampered_one_does_not() {
        let cdn = Cdn::new("http://127.0.0.1:1/_sandbox/cdn/".into());
        let d = cdn.upload("+212610059159", "tok1", "photo", "PhotoPicker");
        let name = d["cdn_url"].as_str().unwrap().rsplit('/').next().unwrap();
        let (status, file) = cdn.get(name);
        assert_eq!(status, 200);
        let meta = serde_json::from_value(d["encryption_metadata"].clone()).unwrap();
        assert_eq!(
            media::decrypt(&meta, &file).unwrap(),
            sample_file("PhotoPicker", "tok1").0
        );

        cdn.configure(&json!({"tamper": ["+212 610 059 160"], "fail_next": 1}))
            .unwrap();
        assert_eq!(cdn.get(name).0, 500);
        assert_eq!(cdn.get(name).0, 200);
        let d = cdn.upload("+212610059160", "tok2", "photo", "PhotoPicker");
        let name = d["cdn_url"].as_str().unwrap().rsplit('/').next().unwrap();
        let meta = serde_json::from_value(d["encryption_metadata"].clone()).unwrap();
        assert_eq!(
            media::decrypt(&meta, &cdn.get(name).1),
            Err(media::MediaError::EncryptedHash)
        );
        assert!(cdn
            .configure(&json!({"fail_next": "x"}))
            .unwrap_err()
            .contains("fail_next"));
    }

    #[test]
    fn the_webhook_shape_carries_the_plaintext_hash_and_an_id() {
        let cdn = Cdn::new("http://127.0.0.1:1/_sandbox/cdn/".into());
        let d = cdn.upload("+212610059159", "tok1", "doc", "DocumentPicker");
        let w = cdn.webhook_shape(&d);
        let url = cdn.media_url(w["id"].as_str().unwrap()).unwrap();
        assert_eq!(url["sha256"], w["sha256"]);
        assert!(url["url"].as_str().unwrap().contains("/_sandbox/media/"));
        assert_eq!(
            cdn.media_file(w["id"].as_str().unwrap()).unwrap(),
            sample_file("DocumentPicker", "tok1").0
        );
        assert_eq!(w["mime_type"], "text/plain");
        assert_eq!(
            w["sha256"],
            sha256_b64(&sample_file("DocumentPicker", "tok1").0)
        );
        assert!(w["id"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit()));
    }
}
