//! The documented layout built by hand (not with [`encrypt`]), one tampered case per check,
//! and the shape rules for finding descriptors.

use aes::Aes256;
use base64::Engine as _;
use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;

const KEY: [u8; 32] = [7; 32];
const HMAC_KEY: [u8; 32] = [9; 32];
const IV: [u8; 16] = [3; 16];
const PHOTO: &[u8] = b"\x89PNG\r\n\x1a\n a small deterministic photo";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Meta's recipe step by step: AES-256-CBC/PKCS#7, then the first 10 bytes of
/// HMAC-SHA256(hmac_key, iv || ciphertext) appended, hashes of the file and the plaintext.
fn documented_vector() -> (Vec<u8>, EncryptionMetadata) {
    // 36 bytes of photo: three blocks, the last one padded with twelve bytes of 12.
    let mut ciphertext = [0u8; 48];
    ciphertext[..PHOTO.len()].copy_from_slice(PHOTO);
    cbc::Encryptor::<Aes256>::new(&KEY.into(), &IV.into())
        .encrypt_padded_mut::<Pkcs7>(&mut ciphertext, PHOTO.len())
        .unwrap();
    let ciphertext = ciphertext.to_vec();
    let mut mac = Hmac::<Sha256>::new_from_slice(&HMAC_KEY).unwrap();
    mac.update(&IV);
    mac.update(&ciphertext);
    let tag = mac.finalize().into_bytes();
    let mut file = ciphertext.clone();
    file.extend_from_slice(&tag[..10]);
    let meta = EncryptionMetadata {
        encrypted_hash: b64(&Sha256::digest(&file)),
        iv: b64(&IV),
        encryption_key: b64(&KEY),
        hmac_key: b64(&HMAC_KEY),
        plaintext_hash: b64(&Sha256::digest(PHOTO)),
    };
    (file, meta)
}

/// Re-hashes a tampered file so that the earlier checks pass and the one under test fails.
fn rehash(file: &[u8], meta: &EncryptionMetadata) -> EncryptionMetadata {
    EncryptionMetadata {
        encrypted_hash: b64(&Sha256::digest(file)),
        ..meta.clone()
    }
}

#[test]
fn the_documented_layout_decrypts_to_the_plaintext() {
    let (file, meta) = documented_vector();
    assert_eq!(decrypt(&meta, &file).unwrap(), PHOTO);
}

#[test]
fn encrypt_produces_exactly_the_documented_layout() {
    let (file, meta) = documented_vector();
    let keys = Keys {
        encryption_key: KEY,
        hmac_key: HMAC_KEY,
        iv: IV,
    };
    assert_eq!(encrypt(PHOTO, &keys), (file, meta));
}

#[test]
fn a_changed_byte_fails_the_encrypted_hash() {
    let (mut file, meta) = documented_vector();
    file[0] ^= 1;
    assert_eq!(decrypt(&meta, &file), Err(MediaError::EncryptedHash));
}

#[test]
fn a_changed_ciphertext_with_a_matching_file_hash_fails_the_hmac() {
    let (mut file, meta) = documented_vector();
    file[5] ^= 1;
    let meta = rehash(&file, &meta);
    assert_eq!(decrypt(&meta, &file), Err(MediaError::Hmac));
    // The wrong HMAC key fails the same check.
    let (file, mut meta) = documented_vector();
    meta.hmac_key = b64(&[1; 32]);
    assert_eq!(decrypt(&meta, &file), Err(MediaError::Hmac));
}

#[test]
fn the_wrong_encryption_key_fails_the_padding_or_the_plaintext_hash() {
    let (file, mut meta) = documented_vector();
    meta.encryption_key = b64(&[8; 32]);
    let err = decrypt(&meta, &file).unwrap_err();
    assert!(
        matches!(err, MediaError::Padding | MediaError::PlaintextHash),
        "{err:?}"
    );
}

#[test]
fn a_wrong_plaintext_hash_fails_the_last_check() {
    let (file, mut meta) = documented_vector();
    meta.plaintext_hash = b64(&Sha256::digest(b"another photo"));
    assert_eq!(decrypt(&meta, &file), Err(MediaError::PlaintextHash));
}

#[test]
fn bad_metadata_names_the_field() {
    let (file, meta) = documented_vector();
    let bad_iv = EncryptionMetadata {
        iv: b64(&[0; 8]),
        ..meta.clone()
    };
    assert_eq!(
        decrypt(&bad_iv, &file),
        Err(MediaError::BadMetadata {
            field: "iv",
            reason: "8 bytes, expected 16".into()
        })
    );
    let not_b64 = EncryptionMetadata {
        encryption_key: "%%%".into(),
        ..meta
    };
    assert_eq!(
        decrypt(&not_b64, &file).unwrap_err().check(),
        "bad_metadata"
    );
    assert!(decrypt(&not_b64, &file)
        .unwrap_err()
        .to_string()
        .contains("encryption_key"));
}

#[test]
fn a_file_shorter_than_a_block_and_the_hmac_is_refused() {
    let (_, meta) = documented_vector();
    assert_eq!(
        decrypt(&meta, &[0; 20]),
        Err(MediaError::TooShort { len: 20 })
    );
}

#[test]
fn unpadded_and_url_safe_base64_are_read() {
    let (file, meta) = documented_vector();
    let url_safe = |s: &str| {
        s.replace('+', "-")
            .replace('/', "_")
            .trim_end_matches('=')
            .to_string()
    };
    let meta = EncryptionMetadata {
        encrypted_hash: url_safe(&meta.encrypted_hash),
        iv: url_safe(&meta.iv),
        encryption_key: url_safe(&meta.encryption_key),
        hmac_key: url_safe(&meta.hmac_key),
        plaintext_hash: url_safe(&meta.plaintext_hash),
    };
    assert_eq!(decrypt(&meta, &file).unwrap(), PHOTO);
}

#[test]
fn debug_never_shows_the_keys() {
    let (_, meta) = documented_vector();
    let shown = format!("{meta:?}");
    assert!(!shown.contains(&meta.encryption_key), "{shown}");
    assert!(!shown.contains(&meta.hmac_key), "{shown}");
}

fn descriptor_json(id: &str) -> Value {
    let (_, meta) = documented_vector();
    json!({"media_id": id, "cdn_url": "https://cdn.example/x", "file_name": "IMG_1.jpg",
           "encryption_metadata": meta})
}

#[test]
fn descriptors_are_found_by_shape_under_top_level_keys() {
    let answers = json!({
        "photo": [descriptor_json("m1"), descriptor_json("m2")],
        "doc": descriptor_json("m3"),
        "name": "Ahmed",
        "list": [{"media_id": "no cdn_url"}],
        "nested": {"inner": [descriptor_json("m4")]},
    });
    let found = find(answers.as_object().unwrap());
    let ids: Vec<(&str, &str)> = found
        .iter()
        .map(|f| (f.field.as_str(), f.descriptor.media_id.as_str()))
        .collect();
    assert_eq!(ids, [("photo", "m1"), ("photo", "m2"), ("doc", "m3")]);
    assert_eq!(found[0].descriptor.file_name.as_deref(), Some("IMG_1.jpg"));
}

#[test]
fn stored_answers_keep_a_reference_without_the_keys() {
    let answers =
        json!({"photo": [descriptor_json("m1")], "name": "Ahmed", "doc": descriptor_json("m3")});
    let kept = without_keys(answers.as_object().unwrap().clone());
    assert_eq!(
        Value::Object(kept),
        json!({"photo": [{"media_id": "m1", "file_name": "IMG_1.jpg"}], "name": "Ahmed",
               "doc": {"media_id": "m3", "file_name": "IMG_1.jpg"}})
    );
}

#[test]
fn file_names_come_from_trusted_parts_only() {
    assert_eq!(
        file_name_for("tok_1", "790aba14-5f4a", Some("IMG_5237.JPG")),
        "tok_1-790aba14-5f4a.jpg"
    );
    assert_eq!(
        file_name_for("tok", "../../etc/passwd", Some("x./../../evil.sh\n")),
        "tok-etcpasswd.sh"
    );
    assert_eq!(file_name_for("tok", "///", None), "tok-media");
    assert_eq!(file_name_for("tok", "m", Some("no_extension")), "tok-m");
}

#[test]
fn written_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let path = write_private(&media, "t-m.png", PHOTO).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), PHOTO);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(&media).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn completion_message_media_are_found_by_their_own_shape() {
    let answers = json!({
        "photo": [{"file_name": "IMG_5237.jpg", "mime_type": "image/jpeg",
                   "sha256": "PqHgadp8cJ/N6mvAYGNMxhs9Ra5hbZFcctCtCClXsMU=", "id": "3631120727156756"}],
        "doc": [descriptor_json("m3")],
        "name": "John",
        "other": [{"id": "1", "title": "an option, not a file"}],
    });
    let found = find_graph(answers.as_object().unwrap());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "photo");
    assert_eq!(found[0].1.id, "3631120727156756");
    assert_eq!(found[0].1.mime_type.as_deref(), Some("image/jpeg"));
}

#[test]
fn a_graph_files_sha256_is_checked_in_base64_or_hex() {
    let digest = Sha256::digest(PHOTO);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(check_sha256(&b64(&digest), PHOTO), Ok(()));
    assert_eq!(check_sha256(&hex, PHOTO), Ok(()));
    assert_eq!(check_sha256(&hex.to_uppercase(), PHOTO), Ok(()));
    assert!(check_sha256(&b64(&digest), b"another file").is_err());
    assert!(check_sha256("not a hash", PHOTO).is_err());
}
