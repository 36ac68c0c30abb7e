//! The `flow_token_signature` of data API 4.0: a JWT (HS256, keyed with the app secret) that
//! binds the request to its flow token, so that a request carrying a token it was not issued
//! for is refused even when the body signature is valid.
//!
//! Meta: data API 4.0 adds the optional `flow_token_signature` to the decrypted request, a JWT
//! signed with the app secret, sent only for Flow JSON 7.3+ with `data_api_version` 4.0
//! (<https://developers.facebook.com/documentation/business-messaging/whatsapp/flows/changelogs.md>,
//! "WhatsApp Flows Endpoints Security Enhancements (Data API Version 4.0)";
//! <https://developers.facebook.com/docs/whatsapp/flows/guides/implementingyourflowendpoint/>).
//! The claim that carries the token is not named in the pages found: this module reads it
//! from a `flow_token` claim (the request field's name) and refuses a JWT without it, the
//! conservative choice; an `exp` claim, when present, must not be past.
//!
//! Hand-written over `hmac`/`sha2`/`base64`, already in the tree: an HS256 JWT is three
//! base64url parts and one HMAC, and the maintained JWT crates pull a C-compiled crypto
//! backend (`ring`) or a second set of hash crates for it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a `flow_token_signature` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT (expected three base64url parts)")]
    Malformed,
    #[error("algorithm {0:?} (expected HS256)")]
    Algorithm(String),
    #[error("signature does not match the app secret")]
    Signature,
    #[error("no flow_token claim")]
    NoToken,
    #[error("signed for another flow token")]
    OtherToken,
    #[error("expired")]
    Expired,
}

impl JwtError {
    /// A short stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::Algorithm(_) => "algorithm",
            JwtError::Signature => "signature",
            JwtError::NoToken => "no_token_claim",
            JwtError::OtherToken => "other_token",
            JwtError::Expired => "expired",
        }
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; the error case cannot happen.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// Signs `flow_token` as the WhatsApp client of data API 4.0 does (the sandbox's people).
pub fn sign_flow_token(secret: &[u8], flow_token: &str) -> String {
    let header = B64URL.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = B64URL.encode(json!({ "flow_token": flow_token }).to_string());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = B64URL.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies `jwt` for `flow_token` with any of `secrets` (several during a rotation), at
/// `now` (seconds since the epoch). The signature is compared in constant time.
pub fn verify_flow_token(
    jwt: &str,
    flow_token: &str,
    secrets: &[&[u8]],
    now: i64,
) -> Result<(), JwtError> {
    let mut parts = jwt.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode_json = |part: &str| -> Result<Value, JwtError> {
        let bytes = B64URL
            .decode(part.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
    };
    let header = decode_json(h)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "HS256" {
        return Err(JwtError::Algorithm(alg.chars().take(16).collect()));
    }
    let sig = B64URL
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    let signing_input = format!("{h}.{p}");
    let valid = secrets.iter().any(|secret| {
        let mut m = mac(secret);
        m.update(signing_input.as_bytes());
        m.verify_slice(&sig).is_ok()
    });
    if !valid {
        return Err(JwtError::Signature);
    }
    let claims = decode_json(p)?;
    match claims.get("flow_token").and_then(Value::as_str) {
        None => return Err(JwtError::NoToken),
        Some(t) if t != flow_token => return Err(JwtError::OtherToken),
        Some(_) => {}
    }
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp < now)
    {
        return Err(JwtError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";

    #[test]
    fn a_signed_token_verifies_and_nothing_else_does() {
        let jwt = sign_flow_token(SECRET, "tok-1");
        assert_eq!(verify_flow_token(&jwt, "tok-1", &[SECRET], 0), Ok(()));
        // The previous secret during a rotation.
        assert_eq!(
            verify_flow_token(&jwt, "tok-1", &[b"new", SECRET], 0),
            Ok(())
        );
        assert_eq!(
            verify_flow_token(&jwt, "tok-1", &[b"other"], 0),
            Err(JwtError::Signature)
        );
        assert_eq!(
            verify_flow_token(&jwt, "tok-2", &[SECRET], 0),
            Err(JwtError::OtherToken)
        );
        assert_eq!(
            verify_flow_token("a.b", "tok-1", &[SECRET], 0),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn a_forged_payload_or_algorithm_is_refused() {
        let jwt = sign_flow_token(SECRET, "tok-1");
        let parts: Vec<&str> = jwt.split('.').collect();
        let forged_payload = B64URL.encode(r#"{"flow_token":"tok-2"}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            verify_flow_token(&forged, "tok-2", &[SECRET], 0),
            Err(JwtError::Signature)
        );
        let none = B64URL.encode(r#"{"alg":"none"}"#);
        let unsigned = format!("{none}.{}.", parts[1]);
        assert_eq!(
            verify_flow_token(&unsigned, "tok-1", &[SECRET], 0),
            Err(JwtError::Algorithm("none".into()))
        );
    }

    #[test]
    fn claims_are_checked() {
        let sign = |claims: &str| {
            let h = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
            let p = B64URL.encode(claims);
            let mut m = mac(SECRET);
            m.update(format!("{h}.{p}").as_bytes());
            format!("{h}.{p}.{}", B64URL.encode(m.finalize().into_bytes()))
        };
        assert_eq!(
            verify_flow_token(&sign(r#"{"sub":"x"}"#), "x", &[SECRET], 0),
            Err(JwtError::NoToken)
        );
        let expiring = sign(r#"{"flow_token":"t","exp":100}"#);
        assert_eq!(verify_flow_token(&expiring, "t", &[SECRET], 99), Ok(()));
        assert_eq!(
            verify_flow_token(&expiring, "t", &[SECRET], 101),
            Err(JwtError::Expired)
        );
    }
}
