//! RSA key handling for the Flows data endpoint: reading the business private key in every
//! encoding people actually have, deriving the public key that is uploaded to Meta, and
//! generating a fresh key pair.
//!
//! Formats are parsed with the RustCrypto `rsa`/`pkcs8`/`pkcs1` crates; the private-key
//! operation on the request path runs in `aws-lc-rs` (constant-time, and about four times
//! faster than `rsa`, which carries the Marvin timing advisory RUSTSEC-2023-0071).

use std::fmt;

use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::der::zeroize::{Zeroize, Zeroizing};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

/// Smallest RSA modulus accepted for the data endpoint (Meta documents RSA-2048).
pub const MIN_MODULUS_BITS: u32 = 2048;

/// Size of the keys `PrivateKey::generate` creates (what Meta's upload endpoint expects).
pub const GENERATED_MODULUS_BITS: usize = 2048;

/// The command that turns any private key OpenSSL can read into an unencrypted PKCS#8 PEM,
/// quoted in errors about encodings this crate cannot read.
pub const CONVERT_COMMAND: &str =
    "openssl pkcs8 -topk8 -nocrypt -in private.pem -out private-pkcs8.pem";

/// Why a PEM key could not be used. Messages name the problem and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text holds no `-----BEGIN ...-----` / `-----END ...-----` block.
    #[error("no PEM block found (expected a line like -----BEGIN PRIVATE KEY-----)")]
    NoPem,
    /// A PEM block starts but its matching END line is missing.
    #[error("PEM block '{label}' has no matching -----END {label}----- line")]
    UnterminatedPem {
        /// The label of the unterminated block.
        label: String,
    },
    /// The PEM body is not valid base64.
    #[error("PEM block '{label}' is not valid base64")]
    PemBase64 {
        /// The label of the block.
        label: String,
    },
    /// The PEM holds something other than the kind of key that was asked for.
    #[error("expected {expected}, found a PEM block labelled '{found}'")]
    WrongPemKind {
        /// What the caller needed ("an RSA private key", "an RSA public key").
        expected: &'static str,
        /// The label that was found instead.
        found: String,
    },
    /// A PKCS#8 / SubjectPublicKeyInfo key whose algorithm is not RSA.
    #[error("the key is not an RSA key (algorithm {algorithm}); the data endpoint needs RSA-2048")]
    NotRsa {
        /// Human name or OID of the algorithm found.
        algorithm: String,
    },
    /// The key is encrypted and no passphrase was supplied.
    #[error("the private key is encrypted ({format}); a passphrase is required (PRIVATE_KEY_PASSPHRASE)")]
    PassphraseRequired {
        /// The encrypted encoding found.
        format: &'static str,
    },
    /// The passphrase does not decrypt the key.
    #[error(
        "wrong passphrase for the encrypted private key ({format}), or the key file is corrupt"
    )]
    WrongPassphrase {
        /// The encrypted encoding found.
        format: &'static str,
    },
    /// The key is encrypted with a scheme this build cannot read.
    #[error(
        "unsupported private key encryption ({detail}); convert the key with: {CONVERT_COMMAND}"
    )]
    UnsupportedEncryption {
        /// What was found (cipher name or decoder message).
        detail: String,
    },
    /// The DER structure inside the PEM is not a valid key of the announced format.
    #[error("malformed {format} key: {detail}")]
    Malformed {
        /// The encoding that was being parsed.
        format: &'static str,
        /// The decoder's description (structure only, never key bytes).
        detail: String,
    },
    /// The RSA modulus is smaller than [`MIN_MODULUS_BITS`].
    #[error("RSA key is {bits} bits; the data endpoint needs at least {MIN_MODULUS_BITS} bits")]
    TooSmall {
        /// Modulus size found.
        bits: u32,
    },
    /// `aws-lc-rs` refused the key for the decryption path.
    #[error("the RSA key was rejected for OAEP decryption: {detail}")]
    Rejected {
        /// aws-lc-rs' reason.
        detail: String,
    },
    /// Key generation or serialisation failed (RNG or encoder failure).
    #[error("RSA key generation failed: {detail}")]
    Generate {
        /// What failed.
        detail: String,
    },
}

/// The business private key of the data endpoint, ready to decrypt requests.
///
/// Holds the parsed RustCrypto key (for the public half and format conversions) and an
/// `aws-lc-rs` OAEP key (for the per-request RSA operation). `Debug` is redacted.
pub struct PrivateKey {
    rsa: rsa::PrivateKey,
    oaep: OaepPrivateDecryptingKey,
    spki_der: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("modulus_bits", &self.modulus_bits())
            .field("public_key_sha256", &self.public_key_fingerprint())
            .field("private", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// Reads a private key from PEM text: PKCS#8 (`BEGIN PRIVATE KEY`), encrypted PKCS#8
    /// (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2 with AES or 3DES: what OpenSSL 3's
    /// `genrsa -des3` writes), PKCS#1 (`BEGIN RSA PRIVATE KEY`) and legacy OpenSSL-encrypted
    /// PKCS#1 (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: DES-EDE3-CBC` or `AES-{128,192,256}-CBC`).
    ///
    /// `passphrase` is used only for encrypted encodings. Text taken from an environment
    /// variable with literal `\n` sequences instead of newlines is accepted too. Keys with a
    /// modulus under 2048 bits are refused.
    pub fn from_pem(pem: &str, passphrase: Option<&str>) -> Result<PrivateKey, KeyError> {
        let text = unescape_newlines(pem);
        let blocks = parse_pem_blocks(&text)?;
        let block = blocks
            .into_iter()
            .find(|b| is_private_key_label(&b.label))
            .ok_or_else(|| first_label_error(&text, "an RSA private key"))?;
        let key = match block.label.as_str() {
            "PRIVATE KEY" => pkcs8_plain(&block.body)?,
            "ENCRYPTED PRIVATE KEY" => pkcs8_encrypted(&block.body, passphrase)?,
            "RSA PRIVATE KEY" if block.is_encrypted() => legacy_encrypted(&block, passphrase)?,
            "RSA PRIVATE KEY" => {
                rsa::PrivateKey::from_pkcs1_der(&block.body).map_err(|e| KeyError::Malformed {
                    format: "PKCS#1",
                    detail: e.to_string(),
                })?
            }
            other => {
                return Err(KeyError::WrongPemKind {
                    expected: "an RSA private key",
                    found: other.to_owned(),
                })
            }
        };
        PrivateKey::from_rsa(key)
    }

    /// Generates a new RSA-2048 key pair; returns the key and its unencrypted PKCS#8 PEM.
    pub fn generate() -> Result<(PrivateKey, String), KeyError> {
        let key = rsa::PrivateKey::new(&mut OsRng10, GENERATED_MODULUS_BITS).map_err(|e| {
            KeyError::Generate {
                detail: e.to_string(),
            }
        })?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Generate {
                detail: e.to_string(),
            })?;
        let pem = String::from(pem.as_str());
        Ok((PrivateKey::from_rsa(key)?, pem))
    }

    /// The public key as SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`), the form uploaded to
    /// Meta as `business_public_key`.
    pub fn public_key_pem(&self) -> String {
        spki_der_to_pem(&self.spki_der)
    }

    /// The public half, for encrypting test requests against this key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            rsa: self.rsa.to_public_key(),
        }
    }

    /// True when `pem` is a public key (SPKI or PKCS#1 PEM) with the same modulus and exponent
    /// as this key. Compares parsed keys, so formatting differences do not matter.
    pub fn matches_public_pem(&self, pem: &str) -> bool {
        PublicKey::from_pem(pem).is_ok_and(|pk| &pk.rsa == self.rsa.as_public_key())
    }

    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER: a short, stable name for the
    /// key pair, safe to log.
    pub fn public_key_fingerprint(&self) -> String {
        super::hex_encode(&Sha256::digest(&self.spki_der))
    }

    /// Size of the RSA modulus in bits.
    pub fn modulus_bits(&self) -> u32 {
        self.rsa.n().bit_width()
    }

    /// The `aws-lc-rs` OAEP key used on the request path.
    pub(crate) fn oaep(&self) -> &OaepPrivateDecryptingKey {
        &self.oaep
    }

    fn from_rsa(key: rsa::PrivateKey) -> Result<PrivateKey, KeyError> {
        let bits = key.n().bit_width();
        if bits < MIN_MODULUS_BITS {
            return Err(KeyError::TooSmall { bits });
        }
        let pkcs8 = key.to_pkcs8_der().map_err(|e| KeyError::Malformed {
            format: "PKCS#8",
            detail: e.to_string(),
        })?;
        let oaep = PrivateDecryptingKey::from_pkcs8(pkcs8.as_bytes())
            .map_err(|e| KeyError::Rejected {
                detail: e.to_string(),
            })
            .and_then(|k| {
                OaepPrivateDecryptingKey::new(k).map_err(|_| KeyError::Rejected {
                    detail: "not usable for OAEP".to_owned(),
                })
            })?;
        let spki_der = spki_der(key.as_public_key())?;
        Ok(PrivateKey {
            rsa: key,
            oaep,
            spki_der,
        })
    }
}

/// An RSA public key: the client side of the protocol (what WhatsApp holds), used by tests,
/// the local sandbox and the load generator to encrypt requests.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    pub(crate) rsa: rsa::PublicKey,
}

impl PublicKey {
    /// Reads a public key from PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`). Keys under 2048 bits are refused.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let text = unescape_newlines(pem);
        let blocks = parse_pem_blocks(&text)?;
        let block = blocks
            .into_iter()
            .find(|b| b.label == "PUBLIC KEY" || b.label == "RSA PUBLIC KEY")
            .ok_or_else(|| first_label_error(&text, "an RSA public key"))?;
        let rsa = if block.label == "PUBLIC KEY" {
            rsa::PublicKey::from_public_key_der(&block.body).map_err(|e| match e {
                rsa::pkcs8::spki::Error::OidUnknown { oid } => KeyError::NotRsa {
                    algorithm: algorithm_name(&oid.to_string()),
                },
                other => KeyError::Malformed {
                    format: "SubjectPublicKeyInfo",
                    detail: other.to_string(),
                },
            })?
        } else {
            rsa::PublicKey::from_pkcs1_der(&block.body).map_err(|e| KeyError::Malformed {
                format: "PKCS#1 public",
                detail: e.to_string(),
            })?
        };
        let bits = rsa.n().bit_width();
        if bits < MIN_MODULUS_BITS {
            return Err(KeyError::TooSmall { bits });
        }
        Ok(PublicKey { rsa })
    }

    /// The key as SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        Ok(spki_der_to_pem(&spki_der(&self.rsa)?))
    }

    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER (same as
    /// [`PrivateKey::public_key_fingerprint`] for the matching private key).
    pub fn fingerprint(&self) -> Result<String, KeyError> {
        Ok(super::hex_encode(&Sha256::digest(spki_der(&self.rsa)?)))
    }
}

/// A rand_core 0.10 view of the operating-system RNG (the `rsa` crate uses rand_core 0.10,
/// the rest of the crate rand 0.9).
pub(crate) struct OsRng10;

impl rsa::rand_core::TryRng for OsRng10 {
    type Error = rand::rand_core::OsError;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        rand::rand_core::TryRngCore::try_next_u32(&mut rand::rngs::OsRng)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        rand::rand_core::TryRngCore::try_next_u64(&mut rand::rngs::OsRng)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::rand_core::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, dst)
    }
}

impl rsa::rand_core::TryCryptoRng for OsRng10 {}

fn spki_der(key: &rsa::PublicKey) -> Result<Vec<u8>, KeyError> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| KeyError::Malformed {
            format: "SubjectPublicKeyInfo",
            detail: e.to_string(),
        })
}

fn spki_der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so any 64-byte chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

fn pkcs8_plain(der: &[u8]) -> Result<rsa::PrivateKey, KeyError> {
    rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| match e {
        rsa::pkcs8::Error::PublicKey(rsa::pkcs8::spki::Error::OidUnknown { oid }) => {
            KeyError::NotRsa {
                algorithm: algorithm_name(&oid.to_string()),
            }
        }
        other => KeyError::Malformed {
            format: "PKCS#8",
            detail: other.to_string(),
        },
    })
}

/// Decrypts `BEGIN ENCRYPTED PRIVATE KEY`: PBES2 with PBKDF2 (HMAC-SHA-2) or scrypt, and
/// AES-CBC, AES-GCM or des-ede3-cbc. The last is what OpenSSL 3 writes for
/// `openssl genrsa -des3`, the command of Meta's docs, hence the `pkcs8` crate's `3des` feature.
fn pkcs8_encrypted(der: &[u8], passphrase: Option<&str>) -> Result<rsa::PrivateKey, KeyError> {
    const FORMAT: &str = "encrypted PKCS#8";
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der).map_err(|e| {
        // A scheme the decoder does not know (PBES1, single DES, a SHA-1 PRF) fails here,
        // before any passphrase is involved.
        KeyError::UnsupportedEncryption {
            detail: format!("{FORMAT}: {e}"),
        }
    })?;
    let passphrase = passphrase.ok_or(KeyError::PassphraseRequired { format: FORMAT })?;
    let doc = info.decrypt(passphrase).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::DecryptFailed) => {
            KeyError::WrongPassphrase { format: FORMAT }
        }
        other => KeyError::UnsupportedEncryption {
            detail: format!("{FORMAT}: {other}"),
        },
    })?;
    // A wrong passphrase that happens to yield valid padding gives garbage DER.
    pkcs8_plain(doc.as_bytes()).map_err(|e| match e {
        KeyError::Malformed { .. } => KeyError::WrongPassphrase { format: FORMAT },
        other => other,
    })
}

fn legacy_encrypted(
    block: &PemBlock,
    passphrase: Option<&str>,
) -> Result<rsa::PrivateKey, KeyError> {
    const FORMAT: &str = "legacy OpenSSL PEM";
    let dek = block
        .header("DEK-Info")
        .ok_or_else(|| KeyError::UnsupportedEncryption {
            detail: format!("{FORMAT}: Proc-Type is ENCRYPTED but DEK-Info is missing"),
        })?;
    let (cipher, iv_hex) = dek.split_once(',').unwrap_or((dek, ""));
    let cipher =
        LegacyCbc::from_name(cipher.trim()).ok_or_else(|| KeyError::UnsupportedEncryption {
            detail: format!("{FORMAT} with cipher {}", cipher.trim()),
        })?;
    let iv = super::hex_decode(iv_hex.trim())
        .filter(|iv| iv.len() == cipher.iv_len())
        .ok_or_else(|| KeyError::Malformed {
            format: FORMAT,
            detail: format!("DEK-Info IV must be {} hex bytes", cipher.iv_len()),
        })?;
    let passphrase = passphrase.ok_or(KeyError::PassphraseRequired { format: FORMAT })?;
    let key = evp_bytes_to_key_md5(passphrase.as_bytes(), &iv[..8], cipher.key_len());
    let der = cipher
        .decrypt(&key, &iv, &block.body)
        .ok_or(KeyError::WrongPassphrase { format: FORMAT })?;
    rsa::PrivateKey::from_pkcs1_der(&der).map_err(|_| KeyError::WrongPassphrase { format: FORMAT })
}

/// Ciphers OpenSSL's legacy PEM encryption uses (`openssl genrsa -des3|-aes128|...` with
/// OpenSSL 1.x, Node's `crypto.generateKeyPairSync` with a `cipher` option).
#[derive(Clone, Copy)]
enum LegacyCbc {
    DesEde3,
    Aes128,
    Aes192,
    Aes256,
}

impl LegacyCbc {
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "DES-EDE3-CBC" => Some(Self::DesEde3),
            "AES-128-CBC" => Some(Self::Aes128),
            "AES-192-CBC" => Some(Self::Aes192),
            "AES-256-CBC" => Some(Self::Aes256),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::DesEde3 | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Self::DesEde3 => 8,
            _ => 16,
        }
    }

    /// CBC-decrypts and strips PKCS#7 padding; `None` when the padding is wrong, which is
    /// what a wrong passphrase almost always produces.
    fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        use aes_gcm::aes::{Aes128, Aes192, Aes256};
        match self {
            Self::DesEde3 => cbc_decrypt::<des::TdesEde3>(key, iv, data),
            Self::Aes128 => cbc_decrypt::<Aes128>(key, iv, data),
            Self::Aes192 => cbc_decrypt::<Aes192>(key, iv, data),
            Self::Aes256 => cbc_decrypt::<Aes256>(key, iv, data),
        }
    }
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>>
where
    C: cbc::cipher::BlockDecryptMut + cbc::cipher::BlockCipher + cbc::cipher::KeyInit,
{
    use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    let mut buf = Zeroizing::new(data.to_vec());
    let len = cbc::Decryptor::<C>::new_from_slices(key, iv)
        .ok()?
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round: D_i = MD5(D_{i-1} || pass || salt).
fn evp_bytes_to_key_md5(pass: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Option<md5::digest::Output<md5::Md5>> = None;
    while out.len() < len {
        let mut h = md5::Md5::new();
        if let Some(p) = &prev {
            h.update(p);
        }
        h.update(pass);
        h.update(salt);
        let d = h.finalize();
        out.extend_from_slice(&d);
        prev = Some(d);
    }
    if let Some(p) = prev.as_mut() {
        p.zeroize();
    }
    out.truncate(len);
    out
}

/// One `-----BEGIN label-----` block with its RFC 1421 headers and decoded body.
struct PemBlock {
    label: String,
    headers: Vec<(String, String)>,
    body: Zeroizing<Vec<u8>>,
}

impl PemBlock {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_encrypted(&self) -> bool {
        self.header("Proc-Type")
            .is_some_and(|v| v.to_ascii_uppercase().contains("ENCRYPTED"))
    }
}

/// Splits PEM text into blocks. Text outside blocks (comments, `openssl` "Bag Attributes")
/// is ignored; the body is decoded with strict, padded, standard base64.
fn parse_pem_blocks(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = pem_boundary(line, "BEGIN") else {
            continue;
        };
        let mut headers = Vec::new();
        let mut b64 = Zeroizing::new(String::new());
        let mut ended = false;
        for line in lines.by_ref() {
            if pem_boundary(line, "END") == Some(label) {
                ended = true;
                break;
            }
            match line.split_once(':') {
                Some((k, v)) if b64.is_empty() => {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => b64.push_str(line),
            }
        }
        if !ended {
            return Err(KeyError::UnterminatedPem {
                label: label.to_owned(),
            });
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| KeyError::PemBase64 {
                label: label.to_owned(),
            })?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            headers,
            body: Zeroizing::new(body),
        });
    }
    if blocks.is_empty() {
        return Err(KeyError::NoPem);
    }
    Ok(blocks)
}

fn pem_boundary<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_suffix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')
}

fn is_private_key_label(label: &str) -> bool {
    matches!(
        label,
        "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY"
    )
}

/// The error for PEM text whose blocks are all of the wrong kind.
fn first_label_error(text: &str, expected: &'static str) -> KeyError {
    let found = text
        .lines()
        .find_map(|l| pem_boundary(l.trim(), "BEGIN"))
        .unwrap_or_default();
    if found.contains("PRIVATE KEY") && !found.starts_with("RSA") && found != "PRIVATE KEY" {
        KeyError::NotRsa {
            algorithm: found.trim_end_matches(" PRIVATE KEY").to_owned(),
        }
    } else {
        KeyError::WrongPemKind {
            expected,
            found: found.to_owned(),
        }
    }
}

fn algorithm_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.10045.2.1" => "EC",
        "1.3.101.112" => "Ed25519",
        "1.3.101.110" => "X25519",
        "1.2.840.10040.4.1" => "DSA",
        _ => return format!("OID {oid}"),
    };
    format!("{name}, OID {oid}")
}

/// `.env` files and CI secrets often carry a PEM on one line with literal `\n` escapes.
fn unescape_newlines(pem: &str) -> std::borrow::Cow<'_, str> {
    if !pem.contains('\n') && pem.contains("\\n") {
        std::borrow::Cow::Owned(pem.replace("\\n", "\n"))
    } else {
        std::borrow::Cow::Borrowed(pem)
    }
}
