//! Tests against the independent vectors (`tests/vectors/`, vendored copies of
//! `../shared/vectors/`) plus round trips and error behaviour.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

const VECTOR_FILES: [&str; 2] = ["flow-endpoint.json", "webhook-signatures.json"];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_json(rel: &str) -> Value {
    let path = crate_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn endpoint_vectors() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| load_json("tests/vectors/flow-endpoint.json"))
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(crate_dir().join("tests/fixtures").join(name)).unwrap()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string {key}"))
}

fn passphrase() -> &'static str {
    s(&endpoint_vectors()["keys"], "passphrase")
}

/// The vector key, loaded once (parsing is slow in debug builds).
fn vector_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        PrivateKey::from_pem(
            s(&endpoint_vectors()["keys"], "private_key_pkcs8_pem"),
            None,
        )
        .unwrap()
    })
}

fn request_of(body: &Value) -> EncryptedRequest {
    serde_json::from_value(body.clone()).unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    hex_decode(text).unwrap()
}

#[test]
fn vendored_vectors_are_identical_to_shared_vectors() {
    let shared: PathBuf = crate_dir().join("../shared/vectors");
    if !shared.is_dir() {
        println!("note: {} not found; drift check skipped", shared.display());
        return;
    }
    for name in VECTOR_FILES {
        let ours = std::fs::read(crate_dir().join("tests/vectors").join(name)).unwrap();
        let theirs = std::fs::read(shared.join(name)).unwrap();
        assert!(
            ours == theirs,
            "tests/vectors/{name} differs from ../shared/vectors/{name}"
        );
    }
}

#[test]
fn all_four_private_key_encodings_are_the_same_key() {
    let keys = &endpoint_vectors()["keys"];
    let fingerprint = s(keys, "public_key_spki_der_sha256_hex");
    let public_pem = s(keys, "public_key_pem");
    for field in [
        "private_key_pkcs8_pem",
        "private_key_pkcs8_encrypted_pem",
        "private_key_pkcs1_pem",
        "private_key_pkcs1_des3_encrypted_pem",
    ] {
        let key = PrivateKey::from_pem(s(keys, field), Some(passphrase()))
            .unwrap_or_else(|e| panic!("{field}: {e}"));
        assert_eq!(key.public_key_fingerprint(), fingerprint, "{field}");
        assert_eq!(key.public_key_pem(), public_pem, "{field}");
        assert!(key.matches_public_pem(public_pem), "{field}");
        assert_eq!(key.modulus_bits(), 2048);
    }
}

#[test]
fn legacy_aes_encrypted_pem_is_read_too() {
    let key = PrivateKey::from_pem(&fixture("legacy_aes128.pem"), Some(passphrase())).unwrap();
    assert_eq!(
        key.public_key_fingerprint(),
        vector_key().public_key_fingerprint()
    );
}

#[test]
fn public_key_pem_matches_only_its_own_key() {
    let key = vector_key();
    let other = s(
        &endpoint_vectors()["negative_cases"][1],
        "other_public_key_pem",
    );
    assert!(!key.matches_public_pem(other));
    assert!(!key.matches_public_pem("not a pem"));
    // Formatting differences (CRLF, no trailing newline) do not matter.
    let crlf = key.public_key_pem().replace('\n', "\r\n");
    assert!(key.matches_public_pem(crlf.trim_end()));
    let pk = PublicKey::from_pem(&key.public_key_pem()).unwrap();
    assert_eq!(pk.fingerprint().unwrap(), key.public_key_fingerprint());
    assert_eq!(pk.to_pem().unwrap(), key.public_key_pem());
}

#[test]
fn missing_passphrase_is_named_for_both_encrypted_formats() {
    let keys = &endpoint_vectors()["keys"];
    for field in [
        "private_key_pkcs8_encrypted_pem",
        "private_key_pkcs1_des3_encrypted_pem",
    ] {
        let err = PrivateKey::from_pem(s(keys, field), None).unwrap_err();
        assert!(
            matches!(err, KeyError::PassphraseRequired { .. }),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains("passphrase is required"), "{err}");
    }
}

#[test]
fn wrong_passphrase_is_named_for_both_encrypted_formats() {
    let keys = &endpoint_vectors()["keys"];
    for field in [
        "private_key_pkcs8_encrypted_pem",
        "private_key_pkcs1_des3_encrypted_pem",
    ] {
        for wrong in ["wrong", "", "flowctl-test-passphrasE"] {
            let err = PrivateKey::from_pem(s(keys, field), Some(wrong)).unwrap_err();
            assert!(
                matches!(err, KeyError::WrongPassphrase { .. }),
                "{field}: {err:?}"
            );
            assert!(err.to_string().contains("wrong passphrase"), "{err}");
        }
    }
}

/// Passphrase of `tests/fixtures/genrsa_des3.pem`, a throwaway test key made with OpenSSL 3's
/// `openssl genrsa -des3` (the command of Meta's docs), used nowhere but these tests.
const GENRSA_DES3_PASSPHRASE: &str = "flowctl-genrsa-des3-test";

/// The `genrsa -des3` test key and its plain PKCS#8 export (`openssl pkcs8 -topk8 -nocrypt`),
/// loaded once (parsing is slow in debug builds).
fn genrsa_des3_keys() -> &'static (PrivateKey, PrivateKey) {
    static K: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
    K.get_or_init(|| {
        let encrypted = fixture("genrsa_des3.pem");
        assert!(encrypted.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        (
            PrivateKey::from_pem(&encrypted, Some(GENRSA_DES3_PASSPHRASE)).unwrap(),
            PrivateKey::from_pem(&fixture("genrsa_des3.plain.pem"), None).unwrap(),
        )
    })
}

#[test]
fn openssl3_genrsa_des3_key_is_read_with_its_passphrase() {
    let (des3, plain) = genrsa_des3_keys();
    assert_eq!(des3.modulus_bits(), 2048);
    assert_eq!(
        des3.public_key_fingerprint(),
        plain.public_key_fingerprint()
    );
    assert_eq!(des3.public_key_pem(), plain.public_key_pem());
    assert!(plain.matches_public_pem(&des3.public_key_pem()));
}

#[test]
fn openssl3_genrsa_des3_key_with_a_wrong_or_no_passphrase_is_named() {
    let pem = fixture("genrsa_des3.pem");
    for wrong in ["wrong", "", "flowctl-genrsa-des3-tesT"] {
        let err = PrivateKey::from_pem(&pem, Some(wrong)).unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err:?}");
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
    }
    let err = PrivateKey::from_pem(&pem, None).unwrap_err();
    assert!(
        matches!(err, KeyError::PassphraseRequired { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("PRIVATE_KEY_PASSPHRASE"), "{err}");
}

#[test]
fn openssl3_genrsa_des3_key_decrypts_and_encrypts_like_its_plain_export() {
    let (des3, plain) = genrsa_des3_keys();
    let body = br#"{"version":"3.0","action":"ping"}"#;
    for to in [des3, plain] {
        let (req, client_key) = encrypt_request(&to.public_key(), body);
        for server in [des3, plain] {
            let dec = decrypt_request(server, &req).unwrap();
            assert_eq!(dec.plaintext, body);
            let answer = encrypt_response(&dec.key, br#"{"data":{"status":"active"}}"#);
            assert_eq!(
                decrypt_response(&client_key, &answer).unwrap(),
                br#"{"data":{"status":"active"}}"#
            );
        }
    }
}

#[test]
fn pbes2_des3_encoding_of_the_vector_key_is_the_vector_key() {
    let key = PrivateKey::from_pem(&fixture("pkcs8_pbes2_des3.pem"), Some(passphrase())).unwrap();
    assert_eq!(
        key.public_key_fingerprint(),
        vector_key().public_key_fingerprint()
    );
}

#[test]
fn pbes1_key_is_refused_with_the_conversion_command() {
    let err = PrivateKey::from_pem(&fixture("pkcs8_pbes1_sha1_3des.pem"), Some(passphrase()))
        .unwrap_err();
    assert!(
        matches!(err, KeyError::UnsupportedEncryption { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(CONVERT_COMMAND), "{err}");
}

#[test]
fn non_rsa_and_non_key_pems_are_refused_by_name() {
    let err = PrivateKey::from_pem(&fixture("ed25519.pem"), None).unwrap_err();
    assert!(matches!(err, KeyError::NotRsa { .. }), "{err:?}");
    assert!(err.to_string().contains("Ed25519"), "{err}");

    let public = s(&endpoint_vectors()["keys"], "public_key_pem");
    let err = PrivateKey::from_pem(public, None).unwrap_err();
    assert!(matches!(err, KeyError::WrongPemKind { .. }), "{err:?}");
    assert!(err.to_string().contains("'PUBLIC KEY'"), "{err}");

    assert!(matches!(
        PrivateKey::from_pem("", None),
        Err(KeyError::NoPem)
    ));
    let truncated = "-----BEGIN PRIVATE KEY-----\nMIIE\n";
    assert!(matches!(
        PrivateKey::from_pem(truncated, None),
        Err(KeyError::UnterminatedPem { .. })
    ));
    let bad_b64 = "-----BEGIN PRIVATE KEY-----\nMII*E\n-----END PRIVATE KEY-----\n";
    assert!(matches!(
        PrivateKey::from_pem(bad_b64, None),
        Err(KeyError::PemBase64 { .. })
    ));
}

#[test]
fn env_style_pem_with_literal_backslash_n_loads() {
    let pem = s(&endpoint_vectors()["keys"], "private_key_pkcs1_pem").replace('\n', "\\n");
    let key = PrivateKey::from_pem(&pem, None).unwrap();
    assert_eq!(
        key.public_key_fingerprint(),
        vector_key().public_key_fingerprint()
    );
}

#[test]
fn debug_and_errors_never_show_key_material() {
    let keys = &endpoint_vectors()["keys"];
    let pem = s(keys, "private_key_pkcs1_pem");
    let body_line = pem.lines().nth(1).unwrap();
    let debug = format!("{:?}", vector_key());
    assert!(
        debug.contains("redacted") && !debug.contains(&body_line[..20]),
        "{debug}"
    );

    let corrupt = pem.replacen(&body_line[10..14], "AAAA", 1);
    let err = PrivateKey::from_pem(&corrupt, None).unwrap_err();
    assert!(!err.to_string().contains(&body_line[20..40]), "{err}");

    let (_, rk) = encrypt_request(&vector_key().public_key(), b"{}");
    assert_eq!(format!("{rk:?}"), "ResponseKey(<redacted>)");
}

#[test]
fn every_endpoint_case_matches_the_vectors() {
    let v = endpoint_vectors();
    let secret = s(v, "app_secret").as_bytes();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let id = s(case, "id");
        // The raw HTTP body (with its `\/` escapes) parses and is signed as given.
        let raw = s(case, "request_body_raw").as_bytes();
        let req = EncryptedRequest::from_json(raw).unwrap();
        assert_eq!(req, request_of(&case["request_body"]), "{id}");
        verify_signature(&[secret], raw, Some(s(case, "x_hub_signature_256")))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(sign(secret, raw), s(case, "x_hub_signature_256"), "{id}");

        let dec = decrypt_request(vector_key(), &req).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            dec.key.aes_key().as_slice(),
            hex(s(case, "aes_key_hex")),
            "{id}"
        );
        assert_eq!(dec.key.iv().as_slice(), hex(s(case, "iv_hex")), "{id}");
        let request = &case["request"];
        assert_eq!(dec.plaintext, s(request, "plaintext").as_bytes(), "{id}");
        assert_eq!(
            dec.plaintext.len() as u64,
            request["plaintext_utf8_len"].as_u64().unwrap()
        );
        let parsed: Value = serde_json::from_slice(&dec.plaintext).unwrap();
        assert_eq!(parsed, request["json"], "{id}");

        let response = &case["response"];
        assert_eq!(
            dec.key.response_iv().as_slice(),
            hex(s(response, "iv_hex")),
            "{id}"
        );
        let body = encrypt_response(&dec.key, s(response, "plaintext").as_bytes());
        assert_eq!(body, s(response, "body_base64"), "{id}");
        let raw_out = B64.decode(&body).unwrap();
        let (ct, tag) = raw_out.split_at(raw_out.len() - TAG_LEN);
        assert_eq!(ct, hex(s(response, "ciphertext_hex")), "{id}");
        assert_eq!(tag, hex(s(response, "tag_hex")), "{id}");
        let back = decrypt_response(&dec.key, &body).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&back).unwrap(),
            response["json"],
            "{id}"
        );
    }
}

#[test]
fn negative_cases_fail_as_the_vectors_expect() {
    let v = endpoint_vectors();
    let secret = s(v, "app_secret").as_bytes();
    let negatives = v["negative_cases"].as_array().unwrap();
    assert_eq!(negatives.len(), 4);
    for case in negatives {
        let id = s(case, "id");
        let raw = s(case, "request_body_raw").as_bytes();
        let header = Some(s(case, "x_hub_signature_256"));
        let req = EncryptedRequest::from_json(raw).unwrap();
        match case["expected_http_status"].as_u64().unwrap() {
            421 => {
                // The signature is fine: the failure is in decryption, at the named stage.
                verify_signature(&[secret], raw, header).unwrap();
                let err = decrypt_request(vector_key(), &req).unwrap_err();
                assert_eq!(
                    err.stage(),
                    s(case, "expected_failure_stage"),
                    "{id}: {err}"
                );
            }
            432 => {
                assert_eq!(s(case, "expected_failure_stage"), "signature");
                assert_eq!(
                    verify_signature(&[secret], raw, header),
                    Err(SignatureError::Mismatch),
                    "{id}"
                );
                decrypt_request(vector_key(), &req).unwrap_or_else(|e| panic!("{id}: {e}"));
            }
            other => panic!("{id}: unexpected status {other}"),
        }
    }
}

#[test]
fn remaining_decrypt_stages_are_reported() {
    let key = vector_key();
    let (good, _) = encrypt_request(&key.public_key(), b"{}");

    let mut short_iv = good.clone();
    short_iv.initial_vector = B64.encode([0u8; 12]);
    let err = decrypt_request(key, &short_iv).unwrap_err();
    assert_eq!(
        (err.stage(), err.clone()),
        ("iv_length", DecryptError::IvLength { len: 12 })
    );

    // A 32-byte "AES key" that decrypts fine under RSA is still not AES-128.
    let wrapped = key
        .public_key()
        .rsa
        .encrypt(
            &mut super::keys::OsRng10,
            rsa::Oaep::<rsa::sha2::Sha256>::new(),
            &[7u8; 32],
        )
        .unwrap();
    let mut long_key = good.clone();
    long_key.encrypted_aes_key = B64.encode(wrapped);
    assert_eq!(
        decrypt_request(key, &long_key).unwrap_err(),
        DecryptError::KeyLength { len: 32 }
    );

    let mut unpadded = good.clone();
    unpadded.initial_vector = unpadded.initial_vector.trim_end_matches('=').to_owned();
    assert_eq!(
        decrypt_request(key, &unpadded).unwrap_err().stage(),
        "base64"
    );
    let mut url_safe = good.clone();
    url_safe.encrypted_aes_key = url_safe
        .encrypted_aes_key
        .replace('+', "-")
        .replace('/', "_");
    if url_safe.encrypted_aes_key != good.encrypted_aes_key {
        assert_eq!(
            decrypt_request(key, &url_safe).unwrap_err().stage(),
            "base64"
        );
    }

    let mut short_blob = good.clone();
    short_blob.encrypted_flow_data = B64.encode([1u8; 5]);
    assert_eq!(
        decrypt_request(key, &short_blob).unwrap_err().stage(),
        "aes_gcm_tag"
    );

    let mut truncated_rsa = good;
    truncated_rsa.encrypted_aes_key = B64.encode([1u8; 255]);
    assert_eq!(
        decrypt_request(key, &truncated_rsa).unwrap_err().stage(),
        "rsa_oaep"
    );
}

#[test]
fn body_that_is_not_the_envelope_shape_is_a_body_error() {
    for body in [
        &b"not json"[..],
        b"{}",
        b"[]",
        br#"{"encrypted_flow_data":"QQ==","encrypted_aes_key":"QQ=="}"#,
        br#"{"encrypted_flow_data":1,"encrypted_aes_key":"QQ==","initial_vector":"QQ=="}"#,
    ] {
        assert!(
            EncryptedRequest::from_json(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let extra = br#"{"encrypted_flow_data":"QQ==","encrypted_aes_key":"QQ==","initial_vector":"QQ==","x":1}"#;
    assert!(EncryptedRequest::from_json(extra).is_ok());
}

#[test]
fn webhook_signature_vectors_all_agree() {
    let v = load_json("tests/vectors/webhook-signatures.json");
    let secret = s(&v, "app_secret").as_bytes();
    let body_of = |case: &Value| B64.decode(s(case, "body_base64")).unwrap();
    let valid = v["valid_cases"].as_array().unwrap();
    assert_eq!(valid.len(), 7);
    for case in valid {
        let id = s(case, "id");
        let body = body_of(case);
        assert_eq!(body, s(case, "body").as_bytes(), "{id}");
        let header = s(case, "x_hub_signature_256");
        assert_eq!(sign(secret, &body), header, "{id}");
        assert_eq!(
            &sign(secret, &body)[7..],
            s(case, "hmac_sha256_hex"),
            "{id}"
        );
        verify_signature(&[secret], &body, Some(header)).unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    let invalid = v["invalid_cases"].as_array().unwrap();
    assert_eq!(invalid.len(), 6);
    for case in invalid {
        let id = s(case, "id");
        let result = verify_signature(
            &[secret],
            &body_of(case),
            Some(s(case, "x_hub_signature_256")),
        );
        assert!(result.is_err(), "{id} verified but must not");
    }
}

#[test]
fn signature_errors_are_distinct_and_rotation_works() {
    let (old, new) = (&b"old-secret"[..], &b"new-secret"[..]);
    let body = br#"{"a":1}"#;
    let header = sign(old, body);
    assert_eq!(verify_signature(&[new, old], body, Some(&header)), Ok(()));
    assert_eq!(
        verify_signature(&[new], body, Some(&header)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(&[old], body, None),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        verify_signature(&[], body, Some(&header)),
        Err(SignatureError::NoSecret)
    );
    for bad in [
        "",
        "sha256=",
        "sha1=abcd",
        &header[7..],
        &header[..70],
        "sha256=zz",
    ] {
        assert!(
            matches!(
                verify_signature(&[old], body, Some(bad)),
                Err(SignatureError::Malformed { .. })
            ),
            "{bad:?}"
        );
    }
    let upper = format!("sha256={}", header[7..].to_ascii_uppercase());
    assert_eq!(verify_signature(&[old], body, Some(&upper)), Ok(()));
}

#[test]
fn request_round_trip_through_server_and_client() {
    let key = vector_key();
    let plaintext = r#"{"version":"3.0","action":"ping"}"#.as_bytes();
    let (req, client_key) = encrypt_request(&key.public_key(), plaintext);
    let req = EncryptedRequest::from_json(req.to_json().as_bytes()).unwrap();
    let dec = decrypt_request(key, &req).unwrap();
    assert_eq!(dec.plaintext, plaintext);
    assert_eq!(dec.key, client_key);
    let body = encrypt_response(&dec.key, br#"{"data":{"status":"active"}}"#);
    assert_eq!(
        decrypt_response(&client_key, &body).unwrap(),
        br#"{"data":{"status":"active"}}"#
    );
    // The response is not readable with the unflipped IV, and a tampered body is refused.
    let mut raw = B64.decode(&body).unwrap();
    raw[0] ^= 1;
    assert_eq!(
        decrypt_response(&client_key, &B64.encode(raw)),
        Err(DecryptError::AesGcmTag)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn arbitrary_plaintexts_round_trip(request in proptest::collection::vec(any::<u8>(), 0..2048),
                                       response in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let key = vector_key();
        let (req, client_key) = encrypt_request(&key.public_key(), &request);
        let dec = decrypt_request(key, &req).unwrap();
        prop_assert_eq!(&dec.plaintext, &request);
        let body = encrypt_response(&dec.key, &response);
        prop_assert_eq!(decrypt_response(&client_key, &body).unwrap(), response);
    }
}

#[test]
fn generated_key_is_rsa_2048_and_loads_back() {
    let (key, pem) = PrivateKey::generate().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(key.modulus_bits(), 2048);
    let again = PrivateKey::from_pem(&pem, None).unwrap();
    assert_eq!(again.public_key_fingerprint(), key.public_key_fingerprint());
    assert!(again.matches_public_pem(&key.public_key_pem()));
    assert!(!again.matches_public_pem(&vector_key().public_key_pem()));
}

#[test]
fn hex_helpers_round_trip() {
    assert_eq!(hex_encode(&[0x00, 0xab, 0xff]), "00abff");
    assert_eq!(hex_decode("00ABff"), Some(vec![0x00, 0xab, 0xff]));
    assert_eq!(hex_decode("abc"), None);
    assert_eq!(hex_decode("zz"), None);
}
