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

/// Shortest secret value [`redact`] replaces: shorter ones are ordinary words too often (a
/// passphrase `wrong` would blank out "wrong passphrase"), and are too weak to be worth
/// protecting this way.
pub const REDACT_MIN_LEN: usize = 8;

/// What [`redact`] puts in place of a secret.
pub const REDACTED: &str = "***";

/// What [`redact_noted`] appends to a text it masked something in, so that a reader knows the
/// `***` stands for a secret value and is not what the program meant to say.
pub const MASKED_NOTE: &str = "(a secret value was masked as ***)";

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
///
/// Only whole-token occurrences are replaced: the characters on either side of the secret
/// must not be letters, digits or `_`. A secret that happens to be the inside of a longer
/// word (or an ordinary word itself, shorter than [`REDACT_MIN_LEN`]) leaves the text alone.
pub fn redact(text: &str) -> Cow<'_, str> {
    let seen = SEEN.read().unwrap_or_else(PoisonError::into_inner);
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    for s in seen.iter() {
        if let Some(replaced) = replace_tokens(&out, s) {
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// [`redact`], followed by [`MASKED_NOTE`] when something was masked: for a message a person
/// reads (an error line), who should not take `***` for what the program meant.
pub fn redact_noted(text: &str) -> Cow<'_, str> {
    match redact(text) {
        Cow::Owned(masked) => Cow::Owned(format!("{masked} {MASKED_NOTE}")),
        same => same,
    }
}

/// `text` with every whole-token occurrence of `secret` replaced by [`REDACTED`]; `None`
/// when there is none.
fn replace_tokens(text: &str, secret: &str) -> Option<String> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::new();
    let mut rest = 0; // text[rest..] is not copied yet
    let mut from = 0;
    let mut changed = false;
    while let Some(i) = text[from..].find(secret).map(|i| i + from) {
        let end = i + secret.len();
        let before = text[..i].chars().next_back();
        let after = text[end..].chars().next();
        // A secret's own edge may be a word character or not: only the outside counts.
        if !word(before) && !word(after) {
            out.push_str(&text[rest..i]);
            out.push_str(REDACTED);
            rest = end;
            from = end;
            changed = true;
        } else {
            // Not a token here; look again one character further.
            from = i + text[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    changed.then(|| {
        out.push_str(&text[rest..]);
        out
    })
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
        remember("abcdefg");
        assert_eq!(
            redact("Bearer tok-abc-123 then tok-abc-123-longer, abcdefg"),
            "Bearer *** then ***, abcdefg"
        );
        assert_eq!(redact("\"tok-abc-123\"&x=tok-abc-123"), "\"***\"&x=***");
        assert!(matches!(redact("nothing secret"), Cow::Borrowed(_)));
    }

    #[test]
    fn redact_masks_whole_tokens_only_and_never_short_words() {
        // A short passphrase is an ordinary word: never registered, never masked.
        remember("wrong");
        let said = "wrong passphrase for the encrypted private key";
        assert_eq!(redact(said), said);
        // Inside a longer word, a secret is not that secret.
        remember("passw0rd-77");
        assert_eq!(
            redact("xpassw0rd-77 passw0rd-77y"),
            "xpassw0rd-77 passw0rd-77y"
        );
        assert_eq!(redact("key passw0rd-77."), "key ***.");
        assert_eq!(
            redact_noted("bad key passw0rd-77"),
            format!("bad key *** {MASKED_NOTE}")
        );
        assert_eq!(redact_noted("nothing"), "nothing");
    }
}
