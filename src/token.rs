//! `FlowToken`: the unguessable per-recipient key that joins a completion to a phone number.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// Prefix of every token this program issues.
pub const PREFIX: &str = "flow_";

/// Length of the base64url text of 128 bits, without padding.
const BODY_LEN: usize = 22;

/// A text that is not a token of the form this program issues; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid flow token {0:?}: expected flow_ and 22 base64url characters")]
pub struct TokenError(pub String);

/// A `flow_` token: 128 random bits from the operating system's CSPRNG, base64url.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FlowToken(String);

impl FlowToken {
    /// A fresh token (`flow_` + 22 base64url characters = 128 bits).
    pub fn generate() -> FlowToken {
        let mut bytes = [0u8; 16];
        // ThreadRng is a ChaCha CSPRNG seeded and periodically reseeded from the OS.
        rand::rng().fill_bytes(&mut bytes);
        FlowToken(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts a token of the form this program issues (`flow_` and 22 base64url characters
    /// for 128 bits): a value read back from the store, which must not be taken on trust
    /// either. Lookups of a token a user sent use plain text instead, since an unknown token
    /// is an answer there, not an error.
    pub fn parse(s: &str) -> Result<FlowToken, TokenError> {
        let well_formed = s.strip_prefix(PREFIX).is_some_and(|body| {
            body.len() == BODY_LEN
                && URL_SAFE_NO_PAD
                    .decode(body)
                    .is_ok_and(|bytes| bytes.len() == 16)
        });
        if well_formed {
            Ok(FlowToken(s.to_string()))
        } else {
            Err(TokenError(s.to_string()))
        }
    }

    /// The token text, as sent in the message and echoed by WhatsApp.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FlowToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serialised as its text: JSON outputs (the CRM API) carry the token on purpose.
impl serde::Serialize for FlowToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Debug for FlowToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token is a bearer credential for one completion: keep it out of debug dumps.
        write!(f, "FlowToken({}…)", &self.0[..self.0.len().min(9)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_prefix_and_128_bits() {
        let t = FlowToken::generate();
        let body = t.as_str().strip_prefix(PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 16);
        assert!(body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn only_the_issued_form_parses() {
        let t = FlowToken::generate();
        assert_eq!(FlowToken::parse(t.as_str()).unwrap(), t);
        for bad in [
            "",
            "flow_",
            "unused",
            "flow_short",
            "FLOW_AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let err = FlowToken::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        // 22 characters whose last one carries bits beyond the 128.
        assert!(FlowToken::parse("flow_AAAAAAAAAAAAAAAAAAAAAB").is_err());
    }

    #[test]
    fn tokens_are_unique() {
        let set: std::collections::HashSet<_> =
            (0..10_000).map(|_| FlowToken::generate()).collect();
        assert_eq!(set.len(), 10_000);
    }
}
