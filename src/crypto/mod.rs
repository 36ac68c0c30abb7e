//! Cryptography of the WhatsApp Flows data endpoint and webhooks, as pure functions without
//! I/O: private-key loading ([`PrivateKey`]), the request/response envelope
//! ([`decrypt_request`], [`encrypt_response`] and the client-side twins), and
//! `X-Hub-Signature-256` ([`sign`], [`verify_signature`]).
//!
//! Protocol: `whatsapp-cloud-api.md` sections d and e. Every function agrees with the
//! independent vectors in `tests/vectors/`.

mod endpoint;
pub mod jwt;
mod keys;
mod signature;

#[cfg(test)]
mod tests;

pub use endpoint::{
    decrypt_request, decrypt_response, encrypt_request, encrypt_response, BodyError, DecryptError,
    Decrypted, EncryptedRequest, ResponseKey, AES_KEY_LEN, IV_LEN, TAG_LEN,
};
pub use keys::{
    KeyError, PrivateKey, PublicKey, CONVERT_COMMAND, GENERATED_MODULUS_BITS, MIN_MODULUS_BITS,
};
pub use signature::{sign, verify_signature, SignatureError, SIGNATURE_HEADER};

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}
