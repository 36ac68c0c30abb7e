//! The Flows data-endpoint envelope (spec `whatsapp-cloud-api.md` d.2 and d.3): decrypting a
//! request body and encrypting the answer, plus the client side of the same exchange.

use std::fmt;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::AesGcm;
use aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::keys::{OsRng10, PrivateKey, PublicKey};

/// AES-128-GCM with the 16-byte nonce WhatsApp uses (not the usual 12-byte `Aes128Gcm`).
type FlowCipher = AesGcm<Aes128, U16>;

/// Length of the AES key carried in `encrypted_aes_key`.
pub const AES_KEY_LEN: usize = 16;
/// Length of `initial_vector`.
pub const IV_LEN: usize = 16;
/// Length of the GCM tag at the end of `encrypted_flow_data` and of the response.
pub const TAG_LEN: usize = 16;

/// The JSON body WhatsApp POSTs to the data endpoint: three standard base64 strings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct EncryptedRequest {
    /// AES-128-GCM ciphertext of the request JSON, tag appended.
    pub encrypted_flow_data: String,
    /// The client's AES key, RSA-OAEP(SHA-256) encrypted to the business public key.
    pub encrypted_aes_key: String,
    /// The 16-byte GCM nonce.
    pub initial_vector: String,
}

impl EncryptedRequest {
    /// Parses the raw HTTP body. A body that is not a JSON object with the three string fields
    /// is a [`BodyError`], distinct from a body that has the shape but does not decrypt.
    pub fn from_json(body: &[u8]) -> Result<EncryptedRequest, BodyError> {
        serde_json::from_slice(body).map_err(|e| BodyError {
            detail: e.to_string(),
        })
    }

    /// The body as compact JSON, as a client would send it.
    pub fn to_json(&self) -> String {
        // Serialising a struct of three strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The data-endpoint body is not the `{encrypted_flow_data, encrypted_aes_key,
/// initial_vector}` JSON shape.
#[derive(Debug, thiserror::Error)]
#[error("request body is not the encrypted Flow envelope: {detail}")]
pub struct BodyError {
    /// serde_json's description (position and expected token; no body bytes).
    pub detail: String,
}

/// Why an envelope could not be decrypted. Every variant means "cannot be decrypted", which
/// the endpoint answers with HTTP 421 so the client re-fetches the public key and retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// A field is not strict standard padded base64.
    #[error("{field} is not valid base64 (standard alphabet, padded)")]
    Base64 {
        /// The JSON field name, or `"body"` for a response body.
        field: &'static str,
    },
    /// RSA-OAEP (SHA-256, MGF1-SHA-256) decryption of `encrypted_aes_key` failed: usually the
    /// client encrypted to another public key.
    #[error("encrypted_aes_key does not decrypt with the private key (RSA-OAEP SHA-256)")]
    RsaOaep,
    /// The RSA plaintext is not a 16-byte AES-128 key.
    #[error("decrypted AES key is {len} bytes, expected {AES_KEY_LEN}")]
    KeyLength {
        /// Length found.
        len: usize,
    },
    /// `initial_vector` does not decode to 16 bytes.
    #[error("initial_vector is {len} bytes, expected {IV_LEN}")]
    IvLength {
        /// Length found.
        len: usize,
    },
    /// The GCM tag does not verify (tampered, truncated, or wrong key/IV).
    #[error("AES-GCM authentication failed (tag mismatch or data shorter than the tag)")]
    AesGcmTag,
}

impl DecryptError {
    /// A stable, short name of the failing stage, for logs and metrics: `base64`, `rsa_oaep`,
    /// `key_length`, `iv_length` or `aes_gcm_tag`.
    pub fn stage(&self) -> &'static str {
        match self {
            DecryptError::Base64 { .. } => "base64",
            DecryptError::RsaOaep => "rsa_oaep",
            DecryptError::KeyLength { .. } => "key_length",
            DecryptError::IvLength { .. } => "iv_length",
            DecryptError::AesGcmTag => "aes_gcm_tag",
        }
    }
}

/// The symmetric material of one exchange: the client's AES-128 key and the request IV.
/// The response is encrypted with the same key and the IV with every bit flipped.
/// `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ResponseKey {
    aes_key: [u8; AES_KEY_LEN],
    iv: [u8; IV_LEN],
}

impl fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseKey(<redacted>)")
    }
}

impl Drop for ResponseKey {
    fn drop(&mut self) {
        use rsa::pkcs8::der::zeroize::Zeroize;
        self.aes_key.zeroize();
    }
}

impl ResponseKey {
    /// Builds a key from its parts (tests, tools).
    pub fn new(aes_key: [u8; AES_KEY_LEN], iv: [u8; IV_LEN]) -> ResponseKey {
        ResponseKey { aes_key, iv }
    }

    /// The AES-128 key the client chose.
    pub fn aes_key(&self) -> &[u8; AES_KEY_LEN] {
        &self.aes_key
    }

    /// The request IV (`initial_vector`), unflipped.
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }

    /// The IV of the response: the request IV with every bit inverted.
    pub fn response_iv(&self) -> [u8; IV_LEN] {
        self.iv.map(|b| !b)
    }

    fn cipher(&self) -> FlowCipher {
        FlowCipher::new(GenericArray::from_slice(&self.aes_key))
    }
}

/// A decrypted request: the plaintext JSON bytes (exactly as the client sent them) and the
/// key needed to encrypt the answer.
#[derive(Debug)]
pub struct Decrypted {
    /// The request JSON, byte for byte.
    pub plaintext: Vec<u8>,
    /// Key and IV for [`encrypt_response`].
    pub key: ResponseKey,
}

/// Decrypts a data-endpoint request (spec d.2). Cheap checks (base64, IV length) run before
/// the RSA operation so junk does not cost a private-key operation.
///
/// CPU-bound (one RSA-2048 private operation, ~1 ms): call it off the async reactor.
pub fn decrypt_request(
    key: &PrivateKey,
    req: &EncryptedRequest,
) -> Result<Decrypted, DecryptError> {
    let blob = b64(&req.encrypted_flow_data, "encrypted_flow_data")?;
    let wrapped_key = b64(&req.encrypted_aes_key, "encrypted_aes_key")?;
    let iv = b64(&req.initial_vector, "initial_vector")?;
    let iv: [u8; IV_LEN] = iv
        .as_slice()
        .try_into()
        .map_err(|_| DecryptError::IvLength { len: iv.len() })?;

    let oaep = key.oaep();
    let mut out = vec![0u8; oaep.min_output_size()];
    let aes_key = oaep
        .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped_key, &mut out, None)
        .map_err(|_| DecryptError::RsaOaep)
        .and_then(|k| {
            <[u8; AES_KEY_LEN]>::try_from(&*k).map_err(|_| DecryptError::KeyLength { len: k.len() })
        });
    out.fill(0);
    let key = ResponseKey::new(aes_key?, iv);

    let plaintext = open(&key, &iv, &blob)?;
    Ok(Decrypted { plaintext, key })
}

/// Encrypts a response body (spec d.3): AES-128-GCM with the request's key and the flipped
/// IV, tag appended, standard padded base64. The result is the whole HTTP body (plain text).
///
/// # Panics
/// Only if `plaintext` exceeds AES-GCM's 64 GiB message limit.
pub fn encrypt_response(key: &ResponseKey, plaintext: &[u8]) -> String {
    B64.encode(seal(key, &key.response_iv(), plaintext))
}

/// Client side of d.2: encrypts `plaintext` to the business public key with a fresh random
/// AES key and IV, as WhatsApp does. Returns the body to POST and the key to read the answer.
///
/// # Panics
/// Only if the operating system RNG fails.
pub fn encrypt_request(pk: &PublicKey, plaintext: &[u8]) -> (EncryptedRequest, ResponseKey) {
    let mut aes_key = [0u8; AES_KEY_LEN];
    let mut iv = [0u8; IV_LEN];
    rand::rng().fill_bytes(&mut aes_key);
    rand::rng().fill_bytes(&mut iv);
    let key = ResponseKey::new(aes_key, iv);
    aes_key.fill(0);

    // `PublicKey` guarantees >= 2048 bits, so a 16-byte message always fits; only the RNG
    // can fail here.
    let wrapped = pk
        .rsa
        .encrypt(
            &mut OsRng10,
            rsa::Oaep::<rsa::sha2::Sha256>::new(),
            &key.aes_key,
        )
        .unwrap_or_else(|e| panic!("RSA-OAEP encryption failed (OS RNG): {e}"));
    let req = EncryptedRequest {
        encrypted_flow_data: B64.encode(seal(&key, &iv, plaintext)),
        encrypted_aes_key: B64.encode(wrapped),
        initial_vector: B64.encode(iv),
    };
    (req, key)
}

/// Client side of d.3: decrypts a response body produced by [`encrypt_response`].
pub fn decrypt_response(key: &ResponseKey, body: &str) -> Result<Vec<u8>, DecryptError> {
    let blob = b64(body, "body")?;
    open(key, &key.response_iv(), &blob)
}

fn b64(text: &str, field: &'static str) -> Result<Vec<u8>, DecryptError> {
    B64.decode(text).map_err(|_| DecryptError::Base64 { field })
}

fn seal(key: &ResponseKey, iv: &[u8; IV_LEN], plaintext: &[u8]) -> Vec<u8> {
    key.cipher()
        .encrypt(GenericArray::from_slice(iv), plaintext)
        .unwrap_or_else(|_| panic!("AES-GCM refuses messages over 64 GiB"))
}

fn open(key: &ResponseKey, iv: &[u8; IV_LEN], blob: &[u8]) -> Result<Vec<u8>, DecryptError> {
    if blob.len() < TAG_LEN {
        return Err(DecryptError::AesGcmTag);
    }
    key.cipher()
        .decrypt(GenericArray::from_slice(iv), blob)
        .map_err(|_| DecryptError::AesGcmTag)
}
