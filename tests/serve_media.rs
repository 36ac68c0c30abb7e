//! End-to-end tests of Flow media (PhotoPicker, DocumentPicker): the sandbox's people attach
//! files, encrypted on the sandbox's CDN as Meta documents
//! (<https://developers.facebook.com/docs/whatsapp/flows/reference/media_upload>); `serve`
//! downloads, verifies, decrypts and stores them off the request path, and `export` joins
//! them to the right phone.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowctl::sandbox::media::sample_file;
use flowctl::store::{MediaRecord, MediaState};
use serde_json::{json, Value};
use support::*;

const DAY: Duration = Duration::from_secs(86_400);

fn media_flow() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media_flow.json")
}

/// The sandbox playing the people, completing through `server`'s data endpoint.
fn sandbox_people(env: &Env, server: &Running) -> Running {
    let pub_key = env.write(
        "public.pem",
        vectors()["keys"]["public_key_pem"].as_str().unwrap(),
    );
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--complete-via",
            "endpoint",
        ])
        .args(["--user-delay-ms", "50"])
        .arg("--endpoint")
        .arg(format!("{}/api/flow", server.url))
        .arg("--public-key")
        .arg(&pub_key)
        .arg("--flow-json")
        .arg(media_flow());
    Running::start(sb)
}

/// Waits until `token` has `count` files and none is pending any more.
fn settled_media(env: &Env, token: &str, count: usize) -> Vec<MediaRecord> {
    let start = Instant::now();
    loop {
        let files = env.store().media_of(token).expect("media");
        if files.len() == count && files.iter().all(|f| f.state != MediaState::Pending) {
            return files;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "media of {token} not settled: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn export_json(env: &Env) -> Vec<Value> {
    let mut c = env.cmd();
    c.args(["export", "--json"]);
    let out = run(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("export JSON")
}

#[test]
fn attached_files_are_downloaded_verified_stored_and_exported_with_the_phone() {
    let env = Env::new();
    let flow = media_flow();
    let server = env.serve(&["--flow-json", flow.to_str().unwrap()]);
    let sandbox = sandbox_people(&env, &server);
    // One person's files are forged on the CDN; the first two downloads meet a CDN hiccup.
    let tampered = "+212610059162";
    let (status, body) = http_post_json(
        &format!("{}/_sandbox/cdn", sandbox.url),
        &json!({"tamper": [tampered], "fail_next": 2}).to_string(),
    );
    assert_eq!(status, 200, "{body}");

    let csv = "phone_number,customer_name\n+212610059160,Amina\n+212610059161,Youssef\n+212610059162,Karim\n";
    let file = env.write("meters.csv", csv);
    let mut bulk = env.graph_cmd(&sandbox.url);
    bulk.args(["bulk", "--rate", "50"]).arg(&file);
    let out = run(bulk, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = wait_for_people(&sandbox.url, 3);
    assert_eq!(stats["completed"], 3, "{stats}");

    let tokens = env.store().tokens_of_campaign("meters").unwrap();
    assert_eq!(tokens.len(), 3);
    let media_dir = env.path("media");
    let mut attempts = 0;
    for t in &tokens {
        let token = t.token.as_str();
        let files = settled_media(&env, token, 2);
        attempts += files.iter().map(|f| f.attempts).sum::<u32>();
        // The completion is stored whatever became of the files, without their keys.
        let responses = env.store().responses_for_token(token).unwrap();
        assert_eq!(responses.len(), 1, "{responses:?}");
        let answers = &responses[0].answers;
        let photo = &answers["meter_photo"][0];
        assert_eq!(photo["media_id"], files[0].media_id.as_str());
        assert!(photo.get("encryption_metadata").is_none(), "{answers:?}");
        assert!(!Value::Object(answers.clone())
            .to_string()
            .contains("cdn_url"));

        if t.phone.e164() == tampered {
            for f in &files {
                assert_eq!(f.state, MediaState::Failed, "{f:?}");
                assert!(
                    f.error
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("encrypted_hash"),
                    "{f:?}"
                );
                assert_eq!(f.path, None);
            }
            continue;
        }
        for (f, kind) in files.iter().zip(["PhotoPicker", "DocumentPicker"]) {
            assert_eq!(f.state, MediaState::Done, "{f:?}");
            let path = PathBuf::from(f.path.as_deref().unwrap());
            assert_eq!(path.parent(), Some(media_dir.as_path()));
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(&format!("{token}-")), "{name}");
            // Exactly the bytes the person attached, readable by the owner only.
            assert_eq!(std::fs::read(&path).unwrap(), sample_file(kind, token).0);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }
    // Six files, two CDN 500s, each retried once: eight downloads.
    assert_eq!(attempts, 6 + 2);
    let metrics = http_get(&format!("{}/metrics", server.url));
    assert!(
        metrics.contains("flowctl_media_retries_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowctl_media_total{outcome=\"done\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowctl_media_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );

    // export: the stored paths joined to each phone (CSV columns, JSON field).
    let rows = export_json(&env);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let token = row["flow_token"].as_str().unwrap();
        let stored = env.store().media_of(token).unwrap();
        let exported: Vec<MediaRecord> = serde_json::from_value(row["media_files"].clone())
            .unwrap_or_else(|e| panic!("{e}: {row}"));
        assert_eq!(exported, stored, "{row}");
    }
    let mut c = env.cmd();
    c.args(["export", "--csv"]);
    let out = run(c, Duration::from_secs(30));
    let text = stdout(&out);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[header.len() - 2..], ["media_files", "media_errors"]);
    for record in reader.records() {
        let record = record.unwrap();
        let (phone, files, errors) = (
            &record[1],
            &record[header.len() - 2],
            &record[header.len() - 1],
        );
        let token = &record[0];
        let stored = env.store().media_of(token).unwrap();
        if phone == tampered {
            assert_eq!(files, "");
            assert!(
                errors.contains("meter_photo/") && errors.contains("encrypted_hash"),
                "{errors}"
            );
        } else {
            let paths: Vec<&str> = stored.iter().map(|f| f.path.as_deref().unwrap()).collect();
            assert_eq!(files, paths.join(";"));
            assert_eq!(errors, "");
        }
    }
}

/// One `data_exchange` carrying a descriptor, straight to the endpoint: the answer comes at
/// once (the download is queued), and a file the CDN does not have, or that is over the
/// limit, is recorded as failed with the reason.
#[tokio::test]
async fn bad_media_is_recorded_and_never_delays_or_fails_the_answer() {
    let env = Env::new();
    let sandbox = env.sandbox(&[]);
    // Without a Flow JSON, FLOW_SCREEN names the first screen and every submit completes.
    let server = env.serve_with_env(&[("FLOW_SCREEN", "ONE")], &["--media-max-bytes", "40"]);
    let client = FlowClient::new(&server.url);
    let keys = flowctl::media::Keys {
        encryption_key: [1; 32],
        hmac_key: [2; 32],
        iv: [3; 16],
    };
    let (_, meta) = flowctl::media::encrypt(b"never uploaded", &keys);
    let missing = json!({"media_id": "m-missing", "cdn_url": format!("{}/_sandbox/cdn/nothing-here.enc", sandbox.url),
                         "file_name": "a.jpg", "encryption_metadata": meta});
    let token = issue_token(&env.db(), "+212610059170", None, None, DAY);
    let started = Instant::now();
    let a = client
        .call(
            &json!({"version": "3.0", "action": "data_exchange", "screen": "ONE",
                      "data": {"photo": [missing]}, "flow_token": token}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", server.stderr());
    assert!(started.elapsed() < Duration::from_secs(2));
    let files = settled_media(&env, &token, 1);
    assert_eq!(files[0].state, MediaState::Failed);
    assert_eq!(files[0].error.as_deref(), Some("CDN answered HTTP 404"));
    assert_eq!(env.store().responses_for_token(&token).unwrap().len(), 1);

    // A real upload on the sandbox's CDN, bigger than --media-max-bytes 40.
    let big = token_with_upload(&env, &server, "+212610059171").await;
    let files = settled_media(&env, &big, 1);
    assert_eq!(files[0].state, MediaState::Failed);
    assert!(
        files[0]
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("too_big"),
        "{files:?}"
    );
    assert!(
        !env.path("media").exists() || std::fs::read_dir(env.path("media")).unwrap().count() == 0
    );

    // A cdn_url that is neither HTTPS nor on the loopback is never fetched.
    let token = issue_token(&env.db(), "+212610059172", None, None, DAY);
    let lan = json!({"media_id": "m-lan", "cdn_url": "http://10.1.2.3/x.enc", "encryption_metadata": meta});
    let a = client
        .call(
            &json!({"version": "3.0", "action": "data_exchange", "screen": "ONE",
                      "data": {"doc": lan}, "flow_token": token}),
        )
        .await;
    assert_eq!(a.status, 200);
    let files = settled_media(&env, &token, 1);
    assert!(
        files[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not allowed"),
        "{files:?}"
    );
}

/// Sends one screen for a new token of `phone` with a real encrypted file (the sample photo,
/// about 90 bytes) served from a local one-file server; returns the token.
async fn token_with_upload(env: &Env, server: &Running, phone: &str) -> String {
    let token = issue_token(&env.db(), phone, None, None, DAY);
    let keys = flowctl::media::Keys {
        encryption_key: [4; 32],
        hmac_key: [5; 32],
        iv: [6; 16],
    };
    let (file, meta) = flowctl::media::encrypt(&sample_file("PhotoPicker", &token).0, &keys);
    let d = json!({"media_id": "m-big", "cdn_url": serve_bytes(file), "file_name": "big.png",
                   "encryption_metadata": meta});
    let a = FlowClient::new(&server.url)
        .call(
            &json!({"version": "3.0", "action": "data_exchange", "screen": "ONE",
                      "data": {"photo": [d]}, "flow_token": token}),
        )
        .await;
    assert_eq!(a.status, 200);
    token
}

/// Answers every request on a free loopback port with `body`; returns a URL there.
fn serve_bytes(body: Vec<u8>) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}/file.enc")
}

/// A free port on the loopback (the sandbox must know `serve`'s webhook before `serve`
/// starts, and `serve` the sandbox's Graph URL).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Without a data endpoint the files come in the completion message as Graph media ids
/// (`{file_name, mime_type, sha256, id}`): `serve` asks the Graph API for each file's URL,
/// downloads it with the access token, and checks its SHA-256.
#[test]
fn a_completion_messages_files_are_fetched_from_the_graph_api() {
    let env = Env::new();
    let flow = media_flow();
    let port = free_port();
    let tampered = "+212610059181";
    let mut sb = env.cmd();
    sb.env("APP_SECRET", APP_SECRET)
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--complete-via",
            "webhook",
        ])
        .args(["--user-delay-ms", "50"])
        .arg("--webhook")
        .arg(format!("http://127.0.0.1:{port}/api/message-webhook"))
        .arg("--flow-json")
        .arg(&flow)
        .args(["--tamper-media", tampered]);
    let sandbox = Running::start(sb);
    let mut c = env.graph_cmd(&sandbox.url);
    c.env("APP_SECRET", APP_SECRET)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--private-key-file")
        .arg(env.key_file())
        .arg("--flow-json")
        .arg(&flow);
    let server = Running::start(c);

    let csv = "phone_number,customer_name\n+212610059180,Salma\n+212610059181,Hamza\n";
    let file = env.write("hooks.csv", csv);
    let mut bulk = env.graph_cmd(&sandbox.url);
    bulk.args(["bulk", "--rate", "50"]).arg(&file);
    let out = run(bulk, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = wait_for_people(&sandbox.url, 2);
    assert_eq!(stats["completed"], 2, "{stats}");

    for t in env.store().tokens_of_campaign("hooks").unwrap() {
        let token = t.token.as_str();
        let files = settled_media(&env, token, 2);
        let responses = env.store().responses_for_token(token).unwrap();
        assert_eq!(responses[0].source, "webhook", "{}", server.stderr());
        if t.phone.e164() == tampered {
            for f in &files {
                assert_eq!(f.state, MediaState::Failed, "{f:?}");
                assert!(
                    f.error.as_deref().unwrap_or("").starts_with("sha256"),
                    "{f:?}"
                );
            }
            continue;
        }
        for (f, kind) in files.iter().zip(["PhotoPicker", "DocumentPicker"]) {
            assert_eq!(f.state, MediaState::Done, "{f:?} {}", server.stderr());
            let stored = std::fs::read(f.path.as_deref().unwrap()).unwrap();
            assert_eq!(stored, sample_file(kind, token).0);
        }
    }
}
