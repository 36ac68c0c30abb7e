//! Secrets and their redaction: a [`Secret`] never shows in `Debug` or `Display`, and
//! [`redact`] blanks every secret value read so far out of text about to leave the process.
//!
//! Imports nothing from the crate, so that every layer (`graph`, `server`, `config`, the
//! commands) can use it without importing one another.

use std::borrow::Cow;
use std::fmt;
use std::sync::{PoisonError, RwLock};

/// A secret value (token, key, passphrase). Its `Debug` and `Display` never show it.
///
/// Deliberately not `PartialEq`: `==` on strings stops at the first differing byte, which
/// tells a remote caller how much of a guess was right. Compare what a client sent with a
/// secret in constant time (`subtle::ConstantTimeEq`, over SHA-256 digests of both sides so
/// that the length does not show either).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. It is not registered for [`redact`]: values read from the environment
    /// are, by the settings layer, through [`remember`].
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when `given` (what a client sent) is this secret. Constant time, and the
    /// secret's length does not show either: both sides are hashed with SHA-256, then the
    /// digests are compared with `subtle`.
    pub fn matches(&self, given: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let a = Sha256::digest(given);
        let b = Sha256::digest(self.0.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Values of the secrets read so far, longest first (so that a secret containing another one
/// is replaced whole).
static SEEN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shortest secret value [`redact`] replaces: shorter ones would blank out ordinary words, and
/// are too weak to be worth protecting this way.
pub const REDACT_MIN_LEN: usize = 4;

/// What [`redact`] puts in place of a secret.
pub const REDACTED: &str = "***";

/// Registers `value` (trimmed) as a secret that [`redact`] blanks out from now on. Values
/// shorter than [`REDACT_MIN_LEN`] are not registered.
pub fn remember(value: &str) {
    let value = value.trim();
    if value.chars().count() < REDACT_MIN_LEN {
        return;
    }
    let mut seen = SEEN.write().unwrap_or_else(PoisonError::into_inner);
    if !seen.iter().any(|s| s == value) {
        seen.push(value.to_string());
        seen.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every secret registered so far (through [`remember`]) replaced by `***`.
///
/// A last line of defence for text that comes from elsewhere and is about to be printed,
/// stored or logged: a Graph API error message, an error chain, a log line. A server or proxy
/// that echoes the `Authorization` header back must not make flowctl print the token.
pub fn redact(text: &str) -> Cow<'_, str> {
    let seen = SEEN.read().unwrap_or_else(PoisonError::into_inner);
    if !seen.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in seen.iter() {
        out = out.replace(s.as_str(), REDACTED);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let s = Secret::new("EAAG-very-secret");
        assert!(!format!("{s:?} {s}").contains("very-secret"));
    }

    #[test]
    fn matches_accepts_the_secret_only() {
        let s = Secret::new("verify-token-77a1");
        assert!(s.matches(b"verify-token-77a1"));
        for near in [
            &b"verify-token-77a"[..],
            b"verify-token-77a1x",
            b"verify-token-77a2",
            b"Verify-token-77a1",
            b"",
            b"verify-token-77a1\0",
        ] {
            assert!(!s.matches(near), "{:?}", String::from_utf8_lossy(near));
        }
    }

    #[test]
    fn redact_blanks_out_every_secret_read_and_nothing_else() {
        // What the settings layer does with each secret it reads.
        remember("tok-abc-123");
        remember(" tok-abc-123-longer\n");
        remember("abc");
        assert_eq!(
            redact("Bearer tok-abc-123 then tok-abc-123-longer, abc"),
            "Bearer *** then ***, abc"
        );
        assert!(matches!(redact("nothing secret"), Cow::Borrowed(_)));
    }
}
