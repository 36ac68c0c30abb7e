//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw request body under the Meta app secret,
//! carried by both the Flows data endpoint and the messages webhook.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the HTTP header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

const PREFIX: &str = "sha256=";
const DIGEST_HEX_LEN: usize = 64;

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("malformed X-Hub-Signature-256 header: {reason}")]
    Malformed {
        /// What is wrong with it (never echoes the value).
        reason: &'static str,
    },
    /// Well-formed, but no configured secret produces it over these bytes.
    #[error("X-Hub-Signature-256 does not match the request body")]
    Mismatch,
    /// The caller passed no secret to check against.
    #[error("no app secret configured to verify X-Hub-Signature-256")]
    NoSecret,
}

/// The header value Meta would send for `body`: `sha256=` + lowercase hex HMAC-SHA256.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac_for(secret);
    mac.update(body);
    format!(
        "{PREFIX}{}",
        super::hex_encode(&mac.finalize().into_bytes())
    )
}

/// Checks `header` against HMAC-SHA256 of the exact `body` bytes under any of `secrets`
/// (several are allowed so an app secret can be rotated without downtime). The digest is
/// compared in constant time. Never pass a re-serialised body: Meta signs the bytes it sent.
pub fn verify_signature(
    secrets: &[&[u8]],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex = header
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &header[PREFIX.len()..])
        .ok_or(SignatureError::Malformed {
            reason: "does not start with sha256=",
        })?;
    if hex.len() != DIGEST_HEX_LEN {
        return Err(SignatureError::Malformed {
            reason: "digest is not 64 hex digits",
        });
    }
    let expected = super::hex_decode(hex).ok_or(SignatureError::Malformed {
        reason: "digest is not hexadecimal",
    })?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let matched = secrets.iter().any(|secret| {
        let mut mac = mac_for(secret);
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn mac_for(secret: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of every length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}
