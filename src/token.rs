//! `FlowToken`: the unguessable per-recipient key that joins a completion to a phone number.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// Prefix of every token this program issues.
pub const PREFIX: &str = "flow_";

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

    /// Rebuilds a token from a value read back from the store.
    pub fn from_stored(s: String) -> FlowToken {
        FlowToken(s)
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
    fn tokens_are_unique() {
        let set: std::collections::HashSet<_> =
            (0..10_000).map(|_| FlowToken::generate()).collect();
        assert_eq!(set.len(), 10_000);
    }
}
