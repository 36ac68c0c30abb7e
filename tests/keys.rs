//! `flowctl keygen`, `keys upload` and `keys check` over the real binary and the sandbox.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn keygen_writes_an_owner_only_key_and_refuses_to_overwrite() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["keygen", "--out"]).arg(env.path("k.pem"));
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("-----BEGIN PUBLIC KEY-----"));
    let mode = std::fs::metadata(env.path("k.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(env.path("k.pem")).unwrap();
    assert!(!stdout(&out).contains("PRIVATE KEY") && !stderr(&out).contains("PRIVATE KEY"));
    let key = flowctl::crypto::PrivateKey::from_pem(&pem, None).unwrap();
    assert!(key.matches_public_pem(&std::fs::read_to_string(env.path("k.pem.pub")).unwrap()));

    let mut again = env.cmd();
    again.args(["keygen", "--out"]).arg(env.path("k.pem"));
    let out = run(again, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(env.path("k.pem")).unwrap(),
        pem,
        "the old key is kept"
    );
}

#[test]
fn upload_then_check_matches_and_another_key_does_not() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let key = env.key_file();

    // Nothing registered yet: check fails.
    let mut c = env.graph_cmd(&sb.url);
    c.args(["keys", "check", "--private-key-file"]).arg(&key);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("keys upload"), "{}", stderr(&out));

    let mut c = env.graph_cmd(&sb.url);
    c.args(["keys", "upload", "--private-key-file"]).arg(&key);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let uploads: Vec<_> = sandbox_requests(&sb.url)
        .into_iter()
        .filter(|r| {
            r["method"] == "POST"
                && r["path"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("/whatsapp_business_encryption")
        })
        .collect();
    assert_eq!(uploads.len(), 1);

    let mut c = env.graph_cmd(&sb.url);
    c.args(["keys", "check", "--private-key-file"]).arg(&key);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["matches"], true);

    // A different local key is a mismatch (the usual cause of endless 421s).
    let mut g = env.cmd();
    g.args(["keygen", "--out"]).arg(env.path("other.pem"));
    assert_eq!(run(g, LIMIT).status.code(), Some(0));
    let mut c = env.graph_cmd(&sb.url);
    c.args(["keys", "check", "--private-key-file"])
        .arg(env.path("other.pem"));
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
}

#[test]
fn an_encrypted_key_needs_its_passphrase() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let v = vectors();
    let enc = env.write(
        "enc.pem",
        v["keys"]["private_key_pkcs8_encrypted_pem"]
            .as_str()
            .unwrap(),
    );
    let mut c = env.graph_cmd(&sb.url);
    c.args(["keys", "upload", "--private-key-file"]).arg(&enc);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("PRIVATE_KEY_PASSPHRASE") || stderr(&out).contains("passphrase"),
        "{}",
        stderr(&out)
    );

    let mut c = env.graph_cmd(&sb.url);
    c.env(
        "PRIVATE_KEY_PASSPHRASE",
        v["keys"]["passphrase"].as_str().unwrap(),
    )
    .args(["keys", "upload", "--private-key-file"])
    .arg(&enc);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("flowctl-test-passphrase")
            && !stdout(&out).contains("flowctl-test-passphrase")
    );
}

/// The sandbox's `POST /_sandbox/key-status`, which sets the signature status Meta reports.
fn set_key_status(sandbox_url: &str, status: &str) {
    let (code, body) = http_post_json(
        &format!("{sandbox_url}/_sandbox/key-status"),
        &format!(r#"{{"status":"{status}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
}

/// `keys check` against the sandbox with the key Meta's docs make (`openssl genrsa -des3`).
fn check_genrsa_des3_key(env: &Env, sandbox_url: &str) -> std::process::Output {
    keys_with_genrsa_des3_key(env, sandbox_url, "check")
}

/// `keys SUB` with `tests/fixtures/genrsa_des3.pem`, a throwaway test key written by OpenSSL 3's
/// `openssl genrsa -des3` (PKCS#8, PBES2 with des-ede3-cbc), and its passphrase.
fn keys_with_genrsa_des3_key(env: &Env, sandbox_url: &str, sub: &str) -> std::process::Output {
    let key =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/genrsa_des3.pem");
    let mut c = env.graph_cmd(sandbox_url);
    c.env("PRIVATE_KEY_PASSPHRASE", "flowctl-genrsa-des3-test")
        .args(["keys", sub, "--private-key-file"])
        .arg(key);
    run(c, LIMIT)
}

#[test]
fn check_fails_on_a_signature_mismatch_until_the_key_is_uploaded_again() {
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let out = keys_with_genrsa_des3_key(&env, &sb.url, "upload");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = check_genrsa_des3_key(&env, &sb.url);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["signatureStatus"], "VALID");

    // Meta reports MISMATCH although the registered PEM is the local key's: exit 1, one
    // sentence that names the fix, and the JSON as before.
    set_key_status(&sb.url, "MISMATCH");
    let out = check_genrsa_des3_key(&env, &sb.url);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["matches"], true);
    assert_eq!(j["signatureStatus"], "MISMATCH");
    let err = stderr(&out);
    assert!(
        err.contains("MISMATCH") && err.contains("flowctl keys upload"),
        "{err}"
    );
    assert!(!err.contains("does not match"), "{err}");

    set_key_status(&sb.url, "VALID");
    let out = check_genrsa_des3_key(&env, &sb.url);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The fix the sentence names: an upload has the key signed again.
    set_key_status(&sb.url, "MISMATCH");
    assert_eq!(check_genrsa_des3_key(&env, &sb.url).status.code(), Some(1));
    let out = keys_with_genrsa_des3_key(&env, &sb.url, "upload");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = check_genrsa_des3_key(&env, &sb.url);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
