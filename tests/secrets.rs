//! Secrets stay where they belong. Every command of the binary runs with trace logging (text
//! and JSON) and every secret set to a recognisable value; nothing it prints, answers, logs or
//! writes may contain one, the key file itself excepted. Error paths are exercised on purpose
//! (wrong passphrase, a Graph API that echoes the bearer token, forged signatures, wrong keys),
//! since that is where secrets leak. Also: key files are owner-only, `.env` values are never
//! echoed, and every secret comparison refuses near misses.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

const S_ACCESS_TOKEN: &str = "EAAGleakAccessTok3nQx7Zp";
const S_APP_SECRET: &str = "leakAppSecretK4w9Rb2vNm";
const S_APP_SECRET_PREVIOUS: &str = "leakPrevAppSecretM8n2Hq";
const S_VERIFY_TOKEN: &str = "leakVerifyTokenJ6q3LcZw";
const S_API_KEY: &str = "leakCrmApiKeyT5y8Hs0dPa";
const S_PASSPHRASE: &str = "leakPassphraseZ2k7Wm4";
const S_WRONG_PASSPHRASE: &str = "leakWrongPassphraseX1y";
/// An answer typed by a person: stored and exported, but never logged.
const ANSWER: &str = "leakAnswerTextV3b9";

/// Strings that must not appear, each with what it is.
#[derive(Clone)]
struct Needles(Vec<(String, String)>);

impl Needles {
    /// Every secret value, raw and base64-encoded.
    fn secrets() -> Needles {
        let mut n = Needles(Vec::new());
        for (what, v) in [
            ("WHATSAPP_ACCESS_TOKEN", S_ACCESS_TOKEN),
            ("APP_SECRET", S_APP_SECRET),
            ("APP_SECRET_PREVIOUS", S_APP_SECRET_PREVIOUS),
            ("WEBHOOK_VERIFY_TOKEN", S_VERIFY_TOKEN),
            ("FLOWCTL_API_KEY", S_API_KEY),
            ("PRIVATE_KEY_PASSPHRASE", S_PASSPHRASE),
            ("a wrong passphrase", S_WRONG_PASSPHRASE),
        ] {
            n = n.add(what, v);
            let b64 = base64::engine::general_purpose::STANDARD.encode(v);
            n = n.add(&format!("{what} (base64)"), b64.trim_end_matches('='));
        }
        n
    }

    fn add(mut self, what: &str, value: &str) -> Needles {
        self.0.push((what.to_string(), value.to_string()));
        self
    }

    /// The material of a PEM key: every body line, and a slice of the DER's tail (private
    /// CRT values) as hex and as a Rust `Debug` byte list.
    fn key(mut self, what: &str, pem: &str) -> Needles {
        let body: Vec<&str> = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && !l.contains(':') && l.len() >= 16)
            .collect();
        for (i, line) in body.iter().enumerate() {
            self = self.add(&format!("{what}, PEM line {}", i + 1), line);
        }
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.concat()) {
            if der.len() > 240 {
                let tail = &der[der.len() - 200..der.len() - 176];
                let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
                let list = tail[..12]
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                self = self
                    .add(&format!("{what}, DER bytes as hex"), &hex)
                    .add(&format!("{what}, DER bytes as hex"), &hex.to_uppercase())
                    .add(&format!("{what}, DER bytes as a byte list"), &list);
            }
        }
        self
    }

    /// Panics, naming the command, the place and the line, when `text` holds a needle.
    fn check(&self, command: &str, place: &str, text: &str) {
        for line in text.lines() {
            for (what, value) in &self.0 {
                if let Some(at) = line.find(value.as_str()) {
                    // The line around the match (a binary file's "line" may be long).
                    let mut start = at.saturating_sub(160);
                    while !line.is_char_boundary(start) {
                        start -= 1;
                    }
                    let mut end = (at + value.len() + 160).min(line.len());
                    while !line.is_char_boundary(end) {
                        end += 1;
                    }
                    panic!(
                        "\n{what} leaked\n  command: {command}\n  in: {place}\n  line: {}\n",
                        &line[start..end]
                    );
                }
            }
        }
    }

    fn check_output(&self, command: &str, out: &Output) {
        self.check(command, "stdout", &stdout(out));
        self.check(command, "stderr", &stderr(out));
    }

    /// Checks every file under `dir` (recursively, binary files included) but `allowed`.
    fn check_files(&self, command: &str, dir: &Path, allowed: &[PathBuf]) {
        for path in files_under(dir) {
            if allowed.iter().any(|a| a == &path) {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            self.check(command, &format!("file {}", path.display()), &text);
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `flowctl ARGS…` as text, for failure messages (never the environment: it holds secrets).
fn describe(c: &Command) -> String {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("flowctl {}", args.join(" "))
}

/// Every secret in the environment, trace logging in the given format.
fn with_secrets(c: &mut Command, format: &str) {
    c.env("WHATSAPP_ACCESS_TOKEN", S_ACCESS_TOKEN)
        .env("APP_SECRET", S_APP_SECRET)
        .env("APP_SECRET_PREVIOUS", S_APP_SECRET_PREVIOUS)
        .env("WEBHOOK_VERIFY_TOKEN", S_VERIFY_TOKEN)
        .env("FLOWCTL_API_KEY", S_API_KEY)
        .env("PRIVATE_KEY_PASSPHRASE", S_PASSPHRASE)
        .env("FLOWCTL_LOG", "trace")
        .env("FLOWCTL_LOG_FORMAT", format);
}

/// Runs `c`, checks its output against `needles`, returns the output.
fn run_checked(needles: &Needles, c: Command) -> Output {
    let what = describe(&c);
    let out = run(c, LIMIT);
    needles.check_output(&what, &out);
    out
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A file's permission bits, in octal ("600").
fn mode(path: &Path) -> String {
    let bits = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777;
    format!("{bits:o}")
}

/// The vectors' key as a legacy OpenSSL-encrypted PKCS#1 PEM (`Proc-Type: 4,ENCRYPTED`,
/// AES-128-CBC, key from `EVP_BytesToKey` with MD5), as `openssl genrsa -aes128` writes it.
fn encrypted_key_pem(passphrase: &str) -> String {
    use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    use md5::Digest;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;

    let plain = test_private_key_pem();
    let b64: String = plain.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("pem base64");
    let key = rsa::PrivateKey::from_pkcs8_der(&der).expect("pkcs8");
    let pkcs1 = key.to_pkcs1_der().expect("pkcs1");
    let pkcs1 = pkcs1.as_bytes();
    let iv: [u8; 16] = *b"\x3a\x91\x07\xc4\x5e\x22\xb8\x10\x6d\xf3\x48\x9a\x01\xce\x77\x2b";
    let mut k = Vec::new();
    let mut prev: Vec<u8> = Vec::new();
    while k.len() < 16 {
        let mut h = md5::Md5::new();
        h.update(&prev);
        h.update(passphrase.as_bytes());
        h.update(&iv[..8]);
        prev = h.finalize().to_vec();
        k.extend_from_slice(&prev);
    }
    let mut buf = pkcs1.to_vec();
    buf.resize(pkcs1.len() + 16, 0);
    let ct = cbc::Encryptor::<aes_gcm::aes::Aes128>::new_from_slices(&k[..16], &iv)
        .expect("cbc")
        .encrypt_padded_mut::<Pkcs7>(&mut buf, pkcs1.len())
        .expect("pad")
        .to_vec();
    let body = base64::engine::general_purpose::STANDARD.encode(ct);
    let mut pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,{}\n\n",
        iv.iter().map(|b| format!("{b:02X}")).collect::<String>()
    );
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END RSA PRIVATE KEY-----\n");
    pem
}

/// Writes a file with owner-only permissions (as an operator would keep a key or `.env`).
fn write_private(env: &Env, name: &str, content: &str) -> PathBuf {
    let p = env.write(name, content);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// A stand-in Graph API that answers every request 401 and echoes its `Authorization`
/// header: in a Graph error envelope (`json`) or as a bare text body. Returns its base URL.
fn echoing_graph(json_envelope: bool) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let (mut auth, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("authorization:") {
                    auth = line["authorization:".len()..].trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let answer = if json_envelope {
                json!({"error": {
                    "message": format!("Invalid OAuth access token - {auth}"),
                    "type": "OAuthException", "code": 190,
                    "error_data": {"messaging_product": "whatsapp", "details": format!("received {auth}")},
                    "fbtrace_id": auth
                }})
                .to_string()
            } else {
                format!("401 Unauthorized: {auth}")
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                if json_envelope { "application/json" } else { "text/plain" },
                answer.len()
            );
        }
    });
    url
}

// ---------------------------------------------------------------------------------------
// help, usage errors, keygen

#[test]
fn help_and_configuration_errors_show_no_secret() {
    let env = Env::new();
    let needles = Needles::secrets();
    let mut helps: Vec<Vec<&str>> = vec![vec!["--help"], vec!["--version"], vec!["keys", "--help"]];
    for sub in [
        "send", "bulk", "serve", "export", "stats", "keygen", "sandbox", "demo",
    ] {
        helps.push(vec![sub, "--help"]);
    }
    helps.push(vec!["keys", "upload", "--help"]);
    helps.push(vec!["keys", "check", "--help"]);
    for (i, args) in helps.iter().enumerate() {
        let mut c = env.cmd();
        with_secrets(&mut c, if i % 2 == 0 { "text" } else { "json" });
        c.args(args);
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", stderr(&out));
    }
    // Configuration errors quote settings, never secrets.
    for args in [
        vec!["send", "+212610059159"],
        vec![
            "send",
            "+212610059159",
            "--flow-id",
            "1",
            "--graph-url",
            "ftp://x",
        ],
        vec!["bulk", "missing.csv"],
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["keys", "check"],
        vec!["export"],
        vec!["stats"],
    ] {
        let mut c = env.cmd();
        with_secrets(&mut c, "text");
        c.args(&args);
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn keygen_writes_owner_only_keys_and_prints_no_private_material() {
    let env = Env::new();
    let needles = Needles::secrets();
    let keys = env.path("keys");

    // A missing directory is named, not created.
    let mut c = env.cmd();
    with_secrets(&mut c, "json");
    c.args(["keygen", "--out"]).arg(keys.join("k.pem"));
    let out = run_checked(&needles, c);
    assert_ne!(code(&out), Some(0));
    assert!(stderr(&out).contains("keys"), "{}", stderr(&out));
    assert!(!keys.exists(), "keygen created the directory");

    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o750)).unwrap();
    // Under the loosest umask the private key is still 0600.
    let key = keys.join("k.pem");
    let mut c = Command::new("sh");
    c.current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLOWCTL_DB", env.db_arg())
        .args([
            "-c",
            "umask 000; exec \"$0\" \"$@\"",
            bin(),
            "keygen",
            "--out",
        ])
        .arg(&key);
    with_secrets(&mut c, "text");
    let out = run(c, LIMIT);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let pem = std::fs::read_to_string(&key).unwrap();
    let key_needles = needles.clone().key("the generated private key", &pem);
    key_needles.check_output("flowctl keygen --out keys/k.pem (umask 000)", &out);
    assert_eq!(mode(&key), "600", "private key mode");
    assert_eq!(mode(&keys.join("k.pem.pub")), "644", "public key mode");
    assert_eq!(mode(&keys), "750", "the directory's mode is left alone");
    let mut names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["k.pem", "k.pem.pub"], "no temporary file is left");
    assert!(stdout(&out).starts_with("-----BEGIN PUBLIC KEY-----"));
    key_needles.check_files("flowctl keygen", env.dir.path(), std::slice::from_ref(&key));

    // No overwrite without --force; with it, a loosened mode is tightened again.
    let mut c = env.cmd();
    with_secrets(&mut c, "text");
    c.args(["keygen", "--out"]).arg(&key);
    let out = run_checked(&key_needles, c);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = env.cmd();
    with_secrets(&mut c, "json");
    c.args(["keygen", "--force", "--out"]).arg(&key);
    let out = run_checked(&key_needles, c);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let new_pem = std::fs::read_to_string(&key).unwrap();
    assert_ne!(new_pem, pem);
    assert_eq!(mode(&key), "600", "mode after --force");
    needles
        .clone()
        .key("the regenerated private key", &new_pem)
        .check_output("flowctl keygen --force", &out);
}

// ---------------------------------------------------------------------------------------
// keys upload / check, private key loading

#[test]
fn keys_commands_and_key_loading_errors_show_no_key_material() {
    let env = Env::new();
    let encrypted = encrypted_key_pem(S_PASSPHRASE);
    let needles = Needles::secrets()
        .key("the private key", &test_private_key_pem())
        .key("the encrypted private key", &encrypted);
    let key_file = write_private(&env, "enc.pem", &encrypted);
    let plain_file = write_private(&env, "plain.pem", &test_private_key_pem());
    let allowed = vec![key_file.clone(), plain_file.clone()];
    let mut sb_cmd = env.cmd();
    with_secrets(&mut sb_cmd, "json");
    sb_cmd.args(["sandbox", "--listen", "127.0.0.1:0"]);
    let sb = Running::start(sb_cmd);

    for (i, sub) in ["upload", "check"].iter().enumerate() {
        let mut c = env.graph_cmd(&sb.url);
        with_secrets(&mut c, if i == 0 { "text" } else { "json" });
        c.args(["keys", sub, "--private-key-file"]).arg(&key_file);
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(0), "keys {sub}: {}", stderr(&out));
    }
    // The PEM text in PRIVATE_KEY, newlines escaped as in a .env file.
    let mut c = env.graph_cmd(&sb.url);
    with_secrets(&mut c, "text");
    c.env("PRIVATE_KEY", encrypted.replace('\n', "\\n"))
        .args(["keys", "check"]);
    let out = run_checked(&needles, c);
    assert_eq!(code(&out), Some(0), "PRIVATE_KEY: {}", stderr(&out));

    // Error paths: wrong or missing passphrase, a corrupt PEM, a PEM whose DER is cut short.
    let mut corrupt_lines: Vec<String> = test_private_key_pem().lines().map(String::from).collect();
    corrupt_lines[5].replace_range(10..11, "*");
    let corrupt = corrupt_lines.join("\n");
    let plain = test_private_key_pem();
    let truncated = {
        let lines: Vec<&str> = plain.lines().collect();
        let mut t = lines[..lines.len() / 2].join("\n");
        t.push_str("\n-----END PRIVATE KEY-----\n");
        t
    };
    let cases: Vec<(&str, Option<&str>, Option<String>, &str)> = vec![
        (
            "wrong passphrase",
            Some(S_WRONG_PASSPHRASE),
            None,
            "passphrase",
        ),
        ("no passphrase", None, None, "PRIVATE_KEY_PASSPHRASE"),
        ("corrupt PEM", None, Some(corrupt), "base64"),
        ("truncated PEM", None, Some(truncated), "PKCS#8"),
    ];
    for (what, pass, pem_text, expected) in cases {
        let mut c = env.graph_cmd(&sb.url);
        with_secrets(&mut c, "json");
        c.env_remove("PRIVATE_KEY_PASSPHRASE");
        if let Some(p) = pass {
            c.env("PRIVATE_KEY_PASSPHRASE", p);
        }
        match pem_text {
            Some(t) => {
                c.env("PRIVATE_KEY", t).args(["keys", "check"]);
            }
            None => {
                c.args(["keys", "check", "--private-key-file"])
                    .arg(&key_file);
            }
        }
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(2), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{what}: {}", stderr(&out));
    }
    needles.check("flowctl sandbox", "stderr", &sb.stderr());
    needles.check_files("flowctl keys", env.dir.path(), &allowed);
}

// ---------------------------------------------------------------------------------------
// send, bulk: through the sandbox, and against a Graph API that echoes the token

#[test]
fn send_and_bulk_show_no_secret() {
    let env = Env::new();
    let needles = Needles::secrets();
    let mut sb_cmd = env.cmd();
    with_secrets(&mut sb_cmd, "text");
    sb_cmd.args([
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--fail",
        "+212610059160=131026",
        "--record",
        "graph-requests.ndjson",
    ]);
    let mut sb = Running::start(sb_cmd);

    for (phone, expected, format) in [("+212610059159", 0, "json"), ("+212610059160", 1, "text")] {
        let mut c = env.graph_cmd(&sb.url);
        with_secrets(&mut c, format);
        c.args([
            "send",
            phone,
            "--name",
            "Ahmed",
            "--data",
            r#"{"city":"Rabat"}"#,
        ]);
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(expected), "{}", stderr(&out));
    }
    let csv = env.write(
        "contacts.csv",
        "phone_number,customer_name\n+212610059161,Sara\n+212610059160,Omar\nnot-a-phone,X\n",
    );
    for (extra, format) in [
        (vec!["--dry-run"], "text"),
        (vec!["--json"], "json"),
        (vec![], "text"),
    ] {
        let mut c = env.graph_cmd(&sb.url);
        with_secrets(&mut c, format);
        c.args(["bulk", "--rate", "50", "--campaign"])
            .arg(format!("c{}", extra.len()))
            .arg(&csv)
            .args(&extra)
            .arg("--failures")
            .arg(env.path(&format!("failures-{format}-{}.csv", extra.len())));
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(1), "bulk {extra:?}: {}", stderr(&out));
    }
    // A Graph API that cannot be reached.
    let mut c = env.graph_cmd("http://127.0.0.1:9");
    with_secrets(&mut c, "json");
    c.env("GRAPH_API_TIMEOUT", "2s")
        .args(["send", "+212610059159"]);
    let out = run_checked(&needles, c);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));

    needles.check("flowctl sandbox", "stderr", &sb.stderr());
    sb.signal("TERM");
    assert!(
        sb.wait(Duration::from_secs(10)).is_some(),
        "sandbox did not stop"
    );
    assert!(
        env.path("graph-requests.ndjson").exists(),
        "the sandbox's record file is checked too"
    );
    needles.check_files("flowctl send/bulk", env.dir.path(), &[]);
}

#[test]
fn a_graph_api_echoing_the_token_does_not_make_send_or_keys_repeat_it() {
    let env = Env::new();
    let needles = Needles::secrets();
    let key = env.key_file();
    for envelope in [true, false] {
        let graph = echoing_graph(envelope);
        let mut c = env.graph_cmd(&graph);
        with_secrets(&mut c, if envelope { "json" } else { "text" });
        c.args(["send", "+212610059159"]);
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(1), "{}", stderr(&out));
        assert!(stdout(&out).contains("***"), "{}", stdout(&out));
        for sub in ["upload", "check"] {
            let mut c = env.graph_cmd(&graph);
            with_secrets(&mut c, "text");
            c.args(["keys", sub, "--private-key-file"]).arg(&key);
            let out = run_checked(&needles, c);
            assert_eq!(code(&out), Some(1), "keys {sub}: {}", stderr(&out));
        }
    }
    // `serve`: the CRM client of /api/send-flow gets the refusal, not the token.
    let graph = echoing_graph(true);
    let mut c = env.graph_cmd(&graph);
    with_secrets(&mut c, "json");
    c.env("FLOW_SCREEN", DEFAULT_SCREEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
        .arg(&key);
    let mut server = Running::start(c);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (status, body) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}/api/send-flow", server.url))
            .bearer_auth(S_API_KEY)
            .json(&json!({"phoneNumber": "+212610059159", "customerName": "Ahmed"}))
            .send()
            .await
            .expect("post");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("190"), "{body}");
    needles.check(
        "flowctl serve (echoing Graph API)",
        "the answer to POST /api/send-flow",
        &body,
    );
    server.signal("TERM");
    assert!(
        server.wait(Duration::from_secs(15)).is_some(),
        "serve did not stop"
    );
    needles.check(
        "flowctl serve (echoing Graph API)",
        "stderr (the log)",
        &server.stderr(),
    );
    needles.check_files("flowctl send (echoing Graph API)", env.dir.path(), &[key]);
}

#[test]
fn a_graph_api_echoing_the_token_does_not_make_bulk_repeat_it() {
    let env = Env::new();
    let needles = Needles::secrets();
    let csv = env.write("contacts.csv", "phone_number\n+212610059159\n");
    for envelope in [true, false] {
        let graph = echoing_graph(envelope);
        let mut c = env.graph_cmd(&graph);
        with_secrets(&mut c, "text");
        c.args(["bulk", "--campaign"])
            .arg(format!("echo-{envelope}"))
            .arg(&csv)
            .arg("--failures")
            .arg(env.path(&format!("failures-{envelope}.csv")));
        let out = run_checked(&needles, c);
        assert_ne!(code(&out), Some(0), "{}", stderr(&out));
    }
    needles.check_files("flowctl bulk (echoing Graph API)", env.dir.path(), &[]);
}

#[test]
fn the_database_is_owner_only_whatever_the_umask() {
    if skip_on_postgres("about the SQLite file's permissions") {
        return;
    }
    let env = Env::new();
    let sb = env.sandbox(&[]);
    let mut c = Command::new("sh");
    c.current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLOWCTL_DB", env.db_arg())
        .env("WHATSAPP_ACCESS_TOKEN", S_ACCESS_TOKEN)
        .env("PHONE_NUMBER_ID", "106540352242922")
        .env("FLOW_ID", "1234567890123456")
        .env("GRAPH_API_URL", &sb.url)
        .args([
            "-c",
            "umask 022; exec \"$0\" \"$@\"",
            bin(),
            "send",
            "+212610059159",
        ]);
    let out = run(c, LIMIT);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // The token → phone link and the answers are in there (and in its -wal/-shm files).
    for path in files_under(env.dir.path()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("flowctl.db") {
            assert_eq!(mode(&path), "600", "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// serve with real traffic, then export and stats on what it stored

/// What one HTTP exchange answered.
struct Answer {
    status: u16,
    body: String,
}

async fn get(url: &str, bearer: Option<&str>) -> Answer {
    let mut req = reqwest::Client::new().get(url);
    if let Some(b) = bearer {
        req = req.header("authorization", b);
    }
    let resp = req.send().await.expect("get");
    Answer {
        status: resp.status().as_u16(),
        body: resp.text().await.unwrap_or_default(),
    }
}

async fn serve_scenario(format: &str) {
    let env = Env::new();
    let encrypted = encrypted_key_pem(S_PASSPHRASE);
    let key_file = write_private(&env, "enc.pem", &encrypted);
    let pub_file = env.write(
        "public.pem",
        vectors()["keys"]["public_key_pem"].as_str().unwrap(),
    );
    let flow = survey_flow();
    let token = issue_token(
        &env.db(),
        "+212610059159",
        Some("Ahmed"),
        None,
        Duration::from_secs(86_400),
    );
    let token2 = issue_token(
        &env.db(),
        "+212610059162",
        Some("Sara"),
        None,
        Duration::from_secs(86_400),
    );

    // The Graph API of /api/send-flow.
    let mut c = env.cmd();
    with_secrets(&mut c, format);
    c.args(["sandbox", "--listen", "127.0.0.1:0"]);
    let graph = Running::start(c);

    let mut c = env.graph_cmd(&graph.url);
    with_secrets(&mut c, format);
    c.args(["serve", "--listen", "127.0.0.1:0", "--flow-json"])
        .arg(&flow)
        .arg("--private-key-file")
        .arg(&key_file);
    let mut server = Running::start(c);
    let url = server.url.clone();
    let mut answers: Vec<(String, Answer)> = Vec::new();

    // The data endpoint: a full survey signed with the current secret, a ping signed with
    // the previous one, forged and near-miss signatures.
    let mut client = FlowClient::new(&url);
    client.secret = S_APP_SECRET.to_string();
    let step = |screen: &str, data: Value| json!({"version": "3.0", "action": "data_exchange", "screen": screen, "data": data, "flow_token": token});
    for (screen, data) in [
        (
            "ACCUEIL_SERVICE",
            json!({"q1_accueil": "5_etoiles", "q2_delai": "4_etoiles"}),
        ),
        (
            "QUALITE_PRIX",
            json!({"q3_qualite": "5_etoiles", "q4_prix": "3_etoiles"}),
        ),
        (
            "RECOMMANDATION",
            json!({"q5_recommandation": "5_etoiles", "commentaire": ANSWER}),
        ),
    ] {
        let a = client.call(&step(screen, data)).await;
        assert_eq!(a.status, 200, "{screen}: {}", server.stderr());
    }
    let mut previous = FlowClient::new(&url);
    previous.secret = S_APP_SECRET_PREVIOUS.to_string();
    let a = previous
        .call(&json!({"version": "3.0", "action": "ping"}))
        .await;
    assert_eq!(a.status, 200, "signed with APP_SECRET_PREVIOUS");
    let (body, _) = client.encrypt(&json!({"version": "3.0", "action": "ping"}));
    let good = flowctl::crypto::sign(S_APP_SECRET.as_bytes(), body.as_bytes());
    let forged_sigs = forged_signatures(&good, body.as_bytes());
    for (what, sig) in &forged_sigs {
        let r = client.post_raw(body.clone(), sig.clone()).await;
        let status = r.status().as_u16();
        answers.push((
            format!("POST /api/flow ({what})"),
            Answer {
                status,
                body: r.text().await.unwrap_or_default(),
            },
        ));
        assert_eq!(status, 432, "data endpoint, {what}");
    }

    // The webhook: a signed completion, then forged and near-miss signatures.
    let completion = nfm_reply(
        "wamid.secrets-1",
        "212610059162",
        None,
        json!({"flow_token": token2, "commentaire": ANSWER}),
    );
    let r = post_webhook(&url, &completion, Some(S_APP_SECRET)).await;
    assert_eq!(r.status().as_u16(), 200, "signed webhook");
    let forged_body = status_body("wamid.secrets-2", "delivered", None);
    let good_webhook_sig = flowctl::crypto::sign(S_APP_SECRET.as_bytes(), &forged_body);
    for (what, sig) in forged_signatures(&good_webhook_sig, &forged_body) {
        let mut req = reqwest::Client::new()
            .post(format!("{url}/api/message-webhook"))
            .body(forged_body.clone());
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        let r = req.send().await.expect("post");
        let status = r.status().as_u16();
        answers.push((
            format!("POST /api/message-webhook ({what})"),
            Answer {
                status,
                body: r.text().await.unwrap_or_default(),
            },
        ));
        assert_eq!(status, 403, "webhook, {what}");
    }

    // The verification GET: near misses of the verify token, then the right one.
    let verify = |token: &str, mode: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("hub.mode", mode)
            .append_pair("hub.verify_token", token)
            .append_pair("hub.challenge", "1158201444")
            .finish();
        format!("{url}/api/message-webhook?{q}")
    };
    let prefix = &S_VERIFY_TOKEN[..S_VERIFY_TOKEN.len() - 1];
    let longer = format!("{S_VERIFY_TOKEN}x");
    let last_changed = format!("{prefix}X");
    for (what, t, m) in [
        ("wrong", "not-the-token", "subscribe"),
        ("empty", "", "subscribe"),
        ("prefix", prefix, "subscribe"),
        ("longer", longer.as_str(), "subscribe"),
        ("last character changed", last_changed.as_str(), "subscribe"),
        ("right token, wrong mode", S_VERIFY_TOKEN, "unsubscribe"),
    ] {
        let a = get(&verify(t, m), None).await;
        assert_eq!(a.status, 403, "verification GET, {what}");
        answers.push((format!("GET /api/message-webhook ({what})"), a));
    }
    let a = get(&verify(S_VERIFY_TOKEN, "subscribe"), None).await;
    assert_eq!((a.status, a.body.as_str()), (200, "1158201444"));

    // The CRM API: near misses of the bearer key, then the right one.
    let key_prefix = &S_API_KEY[..S_API_KEY.len() - 1];
    let near_misses = [
        ("no header", None),
        ("empty key", Some("Bearer ".to_string())),
        ("wrong key", Some("Bearer not-the-key".to_string())),
        ("prefix of the key", Some(format!("Bearer {key_prefix}"))),
        ("key plus a character", Some(format!("Bearer {S_API_KEY}x"))),
        (
            "last character changed",
            Some(format!("Bearer {key_prefix}X")),
        ),
        ("no scheme", Some(S_API_KEY.to_string())),
        ("basic scheme", Some(format!("Basic {S_API_KEY}"))),
    ];
    for (what, header) in &near_misses {
        let a = get(&format!("{url}/api/responses"), header.as_deref()).await;
        assert_eq!(a.status, 401, "/api/responses, {what}");
        answers.push((format!("GET /api/responses ({what})"), a));
        let mut req = reqwest::Client::new()
            .post(format!("{url}/api/send-flow"))
            .json(&json!({"phoneNumber": "+212610059163", "customerName": "Nour"}));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.expect("post");
        let status = r.status().as_u16();
        answers.push((
            format!("POST /api/send-flow ({what})"),
            Answer {
                status,
                body: r.text().await.unwrap_or_default(),
            },
        ));
        assert_eq!(status, 401, "/api/send-flow, {what}");
    }
    let bearer = format!("Bearer {S_API_KEY}");
    let r = reqwest::Client::new()
        .post(format!("{url}/api/send-flow"))
        .header("authorization", &bearer)
        .json(&json!({"phoneNumber": "+212610059163", "customerName": "Nour"}))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    answers.push((
        "POST /api/send-flow (right key)".into(),
        Answer {
            status,
            body: r.text().await.unwrap_or_default(),
        },
    ));
    assert_eq!(
        status,
        200,
        "/api/send-flow with the key: {}",
        answers.last().unwrap().1.body
    );
    env.wait_inbox_drained();
    let a = get(&format!("{url}/api/responses"), Some(&bearer)).await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains(ANSWER),
        "the responses carry the answers: {}",
        a.body
    );
    for path in ["/healthz", "/metrics", "/nowhere"] {
        let a = get(&format!("{url}{path}"), None).await;
        answers.push((format!("GET {path}"), a));
    }

    // The simulated people of the sandbox sign with APP_SECRET from its environment.
    let mut c = env.cmd();
    with_secrets(&mut c, format);
    c.args([
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--complete-via",
        "both",
        "--user-delay-ms",
        "20",
    ])
    .arg("--endpoint")
    .arg(format!("{url}/api/flow"))
    .arg("--webhook")
    .arg(format!("{url}/api/message-webhook"))
    .arg("--public-key")
    .arg(&pub_file)
    .arg("--flow-json")
    .arg(&flow);
    let people = Running::start(c);
    let mut c = env.graph_cmd(&people.url);
    with_secrets(&mut c, format);
    c.args(["send", "+212610059164", "--name", "Yasmine"]);
    let out = run_checked(&Needles::secrets(), c);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let start = std::time::Instant::now();
    loop {
        let stats: Value =
            serde_json::from_str(&http_get(&format!("{}/_sandbox/users", people.url)))
                .unwrap_or_default();
        if stats["completed"].as_u64().unwrap_or(0) + stats["failed"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(stats["completed"], 1, "{stats}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the simulated person did not finish: {stats}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }

    server.signal("TERM");
    assert!(
        server.wait(Duration::from_secs(15)).is_some(),
        "serve did not stop"
    );
    let command = format!("flowctl serve (FLOWCTL_LOG_FORMAT={format})");
    // The digest a refused request should have carried is an oracle for forging: never shown.
    let server_needles = Needles::secrets()
        .key("the private key", &test_private_key_pem())
        .key("the encrypted private key", &encrypted)
        .add("a decrypted answer", ANSWER)
        .add(
            "the expected signature of a refused request",
            good.trim_start_matches("sha256="),
        )
        .add(
            "the expected signature of a refused webhook",
            good_webhook_sig.trim_start_matches("sha256="),
        );
    // Its stdout holds only the listening line, read by `Running`.
    server_needles.check(&command, "stderr (the log)", &server.stderr());
    for (what, a) in &answers {
        server_needles.check(
            &command,
            &format!("the answer to {what} ({})", a.status),
            &a.body,
        );
    }
    server_needles.check(
        &format!("flowctl sandbox (FLOWCTL_LOG_FORMAT={format})"),
        "stderr",
        &graph.stderr(),
    );
    server_needles.check(
        "flowctl sandbox --complete-via both",
        "stderr",
        &people.stderr(),
    );
    drop(people);
    drop(graph);

    // export (every format, stdout and --out) and stats on what was stored: the answers are
    // there, the secrets are not.
    let needles = Needles::secrets()
        .key("the private key", &test_private_key_pem())
        .key("the encrypted private key", &encrypted);
    let exports: Vec<Vec<&str>> = vec![
        vec!["export"],
        vec!["export", "--csv", "--bom", "--include-unmatched"],
        vec!["export", "--json", "--flow-json", flow.to_str().unwrap()],
        vec!["export", "--ndjson", "--since", "7d"],
        vec!["export", "--csv", "--out", "out.csv"],
        vec!["export", "--json", "--out", "out.json"],
        vec![
            "export",
            "--ndjson",
            "--out",
            "out.ndjson",
            "--campaign",
            "test",
        ],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["stats", "--campaign", "test"],
    ];
    for args in exports {
        let mut c = env.cmd();
        with_secrets(&mut c, format);
        c.args(&args);
        let out = run_checked(&needles, c);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", stderr(&out));
        if args[0] == "export" && !args.contains(&"--out") {
            assert!(
                stdout(&out).contains(ANSWER),
                "{args:?} exports the answers"
            );
        }
    }
    // A new export file holds phone numbers and answers: owner-only.
    for name in ["out.csv", "out.json", "out.ndjson"] {
        assert_eq!(mode(&env.path(name)), "600", "{name}");
    }
    needles.check_files(&command, env.dir.path(), &[key_file]);
}

/// Wrong signatures for `body` whose right one is `good`: absent, empty, malformed, under
/// another secret, under a prefix of the secret, and the right digest with its last byte
/// changed (or with a character appended).
fn forged_signatures(good: &str, body: &[u8]) -> Vec<(String, Option<String>)> {
    let mut last_byte = good.to_string();
    let flipped = if last_byte.ends_with('0') { '1' } else { '0' };
    last_byte.pop();
    last_byte.push(flipped);
    let prefix = &S_APP_SECRET[..S_APP_SECRET.len() - 1];
    vec![
        ("no signature".into(), None),
        ("empty signature".into(), Some(String::new())),
        ("bare sha256=".into(), Some("sha256=".into())),
        (
            "not hex".into(),
            Some(format!("sha256={}", "zz".repeat(32))),
        ),
        (
            "another secret".into(),
            Some(flowctl::crypto::sign(b"not-the-secret", body)),
        ),
        (
            "a prefix of the secret".into(),
            Some(flowctl::crypto::sign(prefix.as_bytes(), body)),
        ),
        (
            "an empty secret".into(),
            Some(flowctl::crypto::sign(b"", body)),
        ),
        ("last byte changed".into(), Some(last_byte)),
        ("a digit appended".into(), Some(format!("{good}0"))),
        (
            "half the digest".into(),
            Some(good[..good.len() - 32].to_string()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_text_logs_shows_no_secret() {
    serve_scenario("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_json_logs_shows_no_secret() {
    serve_scenario("json").await;
}

// ---------------------------------------------------------------------------------------
// demo

#[test]
fn demo_shows_no_secret_and_keeps_its_key_owner_only() {
    let env = Env::new();
    let dir = env.path("demo");
    let mut c = env.cmd();
    // Its serve, sandbox and bulk inherit the environment, trace logging included.
    with_secrets(&mut c, "json");
    c.args(["demo", "--dir"]).arg(&dir);
    let command = describe(&c);
    let out = run(c, Duration::from_secs(60));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let key = dir.join("private.pem");
    assert_eq!(mode(&key), "600", "the demo's private key mode");
    let needles = Needles::secrets().key(
        "the demo's private key",
        &std::fs::read_to_string(&key).unwrap(),
    );
    needles.check_output(&command, &out);
    needles.check_files(&command, env.dir.path(), &[key]);
}

// ---------------------------------------------------------------------------------------
// .env

#[test]
fn dotenv_values_are_used_but_never_echoed() {
    let env = Env::new();
    let needles = Needles::secrets();
    let sb = env.sandbox(&[]);
    let dotenv = write_private(
        &env,
        ".env",
        &format!(
            "WHATSAPP_ACCESS_TOKEN={S_ACCESS_TOKEN}\nAPP_SECRET=\"{S_APP_SECRET}\"\nWEBHOOK_VERIFY_TOKEN='{S_VERIFY_TOKEN}'\n\
             FLOWCTL_API_KEY={S_API_KEY}\nPRIVATE_KEY_PASSPHRASE={S_PASSPHRASE}\nPHONE_NUMBER_ID=106540352242922\n\
             FLOW_ID=1234567890123456\nGRAPH_API_URL={}\nFLOWCTL_LOG=trace\n",
            sb.url
        ),
    );
    let mut c = env.cmd();
    c.args(["send", "+212610059159"]);
    let out = run_checked(&needles, c);
    assert_eq!(
        code(&out),
        Some(0),
        "send configured by .env: {}",
        stderr(&out)
    );
    let requests = sandbox_messages(&sb.url);
    assert_eq!(requests.len(), 1, "the .env token was used");

    // Unparsable lines are named by number, never quoted.
    for (n, bad) in [
        (
            2,
            format!("FLOW_ID=1\nAPP_SECRET=\"{S_APP_SECRET}\nFLOWCTL_API_KEY={S_API_KEY}\n"),
        ),
        (
            1,
            format!("WHATSAPP_ACCESS_TOKEN={S_ACCESS_TOKEN} and more\n"),
        ),
        (1, format!("WHATSAPP_ACCESS_TOKEN='{S_ACCESS_TOKEN}\\'x\n")),
        (
            3,
            format!("FLOW_ID=1\nAPP_SECRET={S_APP_SECRET}\n{S_API_KEY}\n"),
        ),
    ] {
        std::fs::write(&dotenv, bad).unwrap();
        for args in [vec!["stats"], vec!["send", "+212610059159"]] {
            let mut c = env.cmd();
            c.args(&args);
            let out = run_checked(&needles, c);
            assert_eq!(code(&out), Some(2), "{}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!(".env: cannot parse line {n}")),
                "{}",
                stderr(&out)
            );
        }
    }

    // Only the working directory's .env is read: not one in a parent directory, which
    // another local user may have planted (it could redirect GRAPH_API_URL).
    std::fs::remove_file(&dotenv).unwrap();
    std::fs::write(
        env.path(".env"),
        format!("WHATSAPP_ACCESS_TOKEN={S_ACCESS_TOKEN}\nFLOW_ID=1\nPHONE_NUMBER_ID=2\n"),
    )
    .unwrap();
    std::fs::create_dir(env.path("sub")).unwrap();
    let mut c = env.cmd();
    c.current_dir(env.path("sub"))
        .args(["send", "+212610059159"]);
    let out = run_checked(&needles, c);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    needles.check("flowctl sandbox", "stderr", &sb.stderr());
}

// ---------------------------------------------------------------------------------------
// the signature check itself

#[test]
fn the_signature_check_refuses_every_near_miss() {
    use flowctl::crypto::{sign, verify_signature, SignatureError};
    let secret = S_APP_SECRET.as_bytes();
    let body = br#"{"object":"whatsapp_business_account"}"#;
    let good = sign(secret, body);
    assert_eq!(verify_signature(&[secret], body, Some(&good)), Ok(()));
    assert_eq!(
        verify_signature(
            &[secret],
            body,
            Some(&good.to_uppercase().replace("SHA256=", "sha256="))
        ),
        Ok(()),
        "hex digits of either case"
    );
    // Accepted under any configured secret (rotation), refused without one.
    assert_eq!(
        verify_signature(&[b"old", secret], body, Some(&good)),
        Ok(())
    );
    assert_eq!(
        verify_signature(&[], body, Some(&good)),
        Err(SignatureError::NoSecret)
    );
    for (what, sig) in forged_signatures(&good, body) {
        let r = verify_signature(&[secret], body, sig.as_deref());
        assert!(r.is_err(), "{what} accepted");
        let text = r.unwrap_err().to_string();
        assert!(
            !text.contains(&good[7..]),
            "{what}: the expected digest is revealed: {text}"
        );
    }
    // The body is signed byte for byte: one more space, or one byte changed, is refused.
    let mut spaced = body.to_vec();
    spaced.insert(1, b' ');
    assert_eq!(
        verify_signature(&[secret], &spaced, Some(&good)),
        Err(SignatureError::Mismatch)
    );
    let mut changed = body.to_vec();
    *changed.last_mut().unwrap() ^= 1;
    assert_eq!(
        verify_signature(&[secret], &changed, Some(&good)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn secrets_do_not_show_in_debug_prints() {
    use flowctl::secret::Secret;
    let s = Secret::new(S_APP_SECRET);
    assert!(!format!("{s:?} {s} {:?}", Some(&s)).contains(S_APP_SECRET));
    let settings = flowctl::graph::GraphSettings {
        base_url: "http://127.0.0.1:9".into(),
        version: "v21.0".into(),
        phone_number_id: "1".into(),
        access_token: Secret::new(S_ACCESS_TOKEN),
        timeout: Duration::from_secs(1),
    };
    let client = flowctl::graph::GraphClient::new(settings.clone()).unwrap();
    let key =
        flowctl::crypto::PrivateKey::from_pem(&encrypted_key_pem(S_PASSPHRASE), Some(S_PASSPHRASE))
            .unwrap();
    let needles = Needles::secrets().key("the private key", &test_private_key_pem());
    needles.check(
        "Debug",
        "GraphSettings",
        &format!("{settings:?} {settings:#?}"),
    );
    needles.check("Debug", "GraphClient", &format!("{client:?} {client:#?}"));
    needles.check("Debug", "PrivateKey", &format!("{key:?} {key:#?}"));
    let err = flowctl::crypto::PrivateKey::from_pem(
        &encrypted_key_pem(S_PASSPHRASE),
        Some(S_WRONG_PASSPHRASE),
    )
    .unwrap_err();
    needles.check("Debug", "KeyError", &format!("{err:?} {err}"));
}
