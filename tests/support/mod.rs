//! Shared helpers of the end-to-end tests: run the real binary, start the sandbox and the
//! server on free ports, act as the WhatsApp client of the data endpoint.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowctl::store::DbTarget;
use serde_json::Value;

pub mod db;
#[allow(unused_imports)]
pub use db::{skip_on_postgres, Sql, Val};

/// App secret used by the tests' servers.
pub const APP_SECRET: &str = "test-app-secret-5f1c";
/// Access token given to commands that call the (sandboxed) Graph API.
pub const ACCESS_TOKEN: &str = "EAAtest-access-token-9d2e";

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flowctl")
}

/// A temporary working directory with its database: `flowctl.db` there, or a fresh
/// PostgreSQL database of its own when `FLOWCTL_TEST_POSTGRES` is set (see [`db`]).
pub struct Env {
    pub dir: tempfile::TempDir,
    database: db::TestDb,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = db::TestDb::new(dir.path(), "flowctl.db");
        Env { dir, database }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The test's database.
    pub fn db(&self) -> DbTarget {
        self.database.target()
    }

    /// The database as `FLOWCTL_DB` / `--db` names it.
    pub fn db_arg(&self) -> std::ffi::OsString {
        self.database.arg()
    }

    /// Whether a flowctl database was created (the file, or flowctl's tables).
    pub fn db_exists(&self) -> bool {
        db::exists(&self.db())
    }

    /// Plain SQL on the test's database.
    pub fn sql(&self) -> Sql {
        Sql::open(&self.db())
    }

    /// The SQLite file, for the tests about the file itself (they skip on PostgreSQL first).
    pub fn db_file(&self) -> PathBuf {
        self.path("flowctl.db")
    }

    /// `flowctl` with an empty environment but the database, run in the temp dir.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(self.dir.path())
            .env_clear()
            .env("FLOWCTL_DB", self.db_arg());
        if let Ok(p) = std::env::var("PATH") {
            c.env("PATH", p);
        }
        c
    }

    /// `flowctl` configured to send through the sandbox at `graph_url`.
    pub fn graph_cmd(&self, graph_url: &str) -> Command {
        let mut c = self.cmd();
        c.env("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("PHONE_NUMBER_ID", "106540352242922")
            .env("FLOW_ID", "1234567890123456")
            .env("GRAPH_API_URL", graph_url)
            .env("GRAPH_API_TIMEOUT", "5s");
        c
    }

    /// Writes a file in the temp dir and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write");
        p
    }

    /// Starts a sandbox with extra arguments.
    pub fn sandbox(&self, args: &[&str]) -> Running {
        let mut c = self.cmd();
        c.args(["sandbox", "--listen", "127.0.0.1:0"]).args(args);
        Running::start(c)
    }

    /// Writes the vectors' private key and returns its path.
    pub fn key_file(&self) -> PathBuf {
        self.write("private.pem", &test_private_key_pem())
    }

    /// Starts `serve` with the vectors' key and [`APP_SECRET`], plus extra arguments.
    pub fn serve(&self, args: &[&str]) -> Running {
        self.serve_with_env(&[], args)
    }
}

/// A background `flowctl` process that printed `… listening on http://ADDR` first.
pub struct Running {
    pub child: Child,
    pub url: String,
    pub stderr: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Running {
    pub fn start(mut c: Command) -> Running {
        let errdir = tempfile::tempdir().expect("tempdir");
        let stderr = errdir.path().join("stderr.log");
        let errfile = std::fs::File::create(&stderr).expect("stderr file");
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(errfile)
            .spawn()
            .expect("spawn flowctl");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read first line");
        let url = match line.split("listening on ").nth(1) {
            Some(u) => u.trim().to_string(),
            None => {
                let _ = child.kill();
                panic!(
                    "process did not report its address; stdout: {line:?}; stderr: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        Running {
            child,
            url,
            stderr,
            _stderr_dir: errdir,
        }
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends a signal (e.g. "INT", "TERM") to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion with a time limit.
pub fn run(mut c: Command, limit: Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(id.to_string())
                .status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The crypto vectors shipped in tests/vectors.
pub fn vectors() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/flow-endpoint.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("vectors")).expect("vectors json")
}

/// The vectors' private key (PKCS#8 PEM).
pub fn test_private_key_pem() -> String {
    vectors()["keys"]["private_key_pkcs8_pem"]
        .as_str()
        .expect("pem")
        .to_string()
}

/// The vectors' public key.
pub fn test_public_key() -> flowctl::crypto::PublicKey {
    flowctl::crypto::PublicKey::from_pem(vectors()["keys"]["public_key_pem"].as_str().expect("pem"))
        .expect("pk")
}

/// Acts as the WhatsApp client of a data endpoint: encrypts, signs, posts, decrypts.
pub struct FlowClient {
    pub url: String,
    pub secret: String,
    pub key: flowctl::crypto::PublicKey,
    pub http: reqwest::Client,
}

/// A data-endpoint answer: status, and the decrypted JSON for 200/427.
#[derive(Debug)]
pub struct FlowAnswer {
    pub status: u16,
    pub json: Option<Value>,
    pub raw: String,
}

impl FlowClient {
    pub fn new(server_url: &str) -> FlowClient {
        FlowClient {
            url: format!("{server_url}/api/flow"),
            secret: APP_SECRET.to_string(),
            key: test_public_key(),
            http: reqwest::Client::new(),
        }
    }

    /// Encrypts `request` and returns the exact body bytes and the key to read the answer.
    pub fn encrypt(&self, request: &Value) -> (String, flowctl::crypto::ResponseKey) {
        let (env, key) =
            flowctl::crypto::encrypt_request(&self.key, request.to_string().as_bytes());
        (env.to_json(), key)
    }

    /// Posts a raw body with the given signature header (None: no header).
    pub async fn post_raw(
        &self,
        body: impl Into<Vec<u8>>,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        req.send().await.expect("post")
    }

    /// Encrypts, signs and posts `request`; decrypts the answer when it is encrypted.
    pub async fn call(&self, request: &Value) -> FlowAnswer {
        let (body, key) = self.encrypt(request);
        self.send_encrypted(body, &key).await
    }

    /// Posts an already encrypted body (for replays) and decrypts the answer.
    pub async fn send_encrypted(
        &self,
        body: String,
        key: &flowctl::crypto::ResponseKey,
    ) -> FlowAnswer {
        let sig = flowctl::crypto::sign(self.secret.as_bytes(), body.as_bytes());
        let resp = self.post_raw(body, Some(sig)).await;
        let status = resp.status().as_u16();
        let raw = resp.text().await.expect("body");
        let json = flowctl::crypto::decrypt_response(key, &raw)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok());
        FlowAnswer { status, json, raw }
    }
}

/// Issues a token directly in the store, as `send` would before sending.
pub fn issue_token(
    db: &DbTarget,
    phone: &str,
    name: Option<&str>,
    data: Option<Value>,
    ttl: Duration,
) -> String {
    use flowctl::store::{NewToken, Origin, SendState, Store};
    let mut store = Store::open(db).expect("open store");
    let token = flowctl::token::FlowToken::generate();
    let new = NewToken {
        token: token.clone(),
        phone: flowctl::phone::Phone::parse(phone, None).expect("phone"),
        customer_name: name.map(str::to_string),
        campaign: "test".into(),
        origin: Origin::Send,
        initial_data: data.and_then(|d| d.as_object().cloned()),
        ttl,
    };
    store.insert_token(&new, SendState::Sent).expect("insert");
    token.as_str().to_string()
}

/// Path of the example survey Flow JSON.
pub fn survey_flow() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/survey_flow.json")
}

/// The requests a sandbox received (its `GET /_sandbox/requests`).
pub fn sandbox_requests(sandbox_url: &str) -> Vec<Value> {
    let text = http_get(&format!("{sandbox_url}/_sandbox/requests"));
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => a,
        other => panic!("unexpected /_sandbox/requests answer: {other:?}"),
    }
}

/// The `/messages` requests a sandbox received.
pub fn sandbox_messages(sandbox_url: &str) -> Vec<Value> {
    sandbox_requests(sandbox_url)
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/messages")))
        .collect()
}

/// A blocking GET over a plain TCP socket (keeps sync tests free of an async runtime).
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

/// A blocking POST of a JSON body over a plain TCP socket (the sandbox's control routes);
/// returns the status code and the body.
pub fn http_post_json(url: &str, json: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("url with a path");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        body = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// The one screen of the tests' servers started without a Flow JSON or a forward URL.
pub const DEFAULT_SCREEN: &str = "Q1";

/// Verify token and API key of the tests' servers that need them.
pub const VERIFY_TOKEN: &str = "test-verify-token-77a1";
pub const API_KEY: &str = "test-api-key-0c4b";

impl Env {
    /// Starts `serve` like [`Env::serve`], with extra environment variables.
    pub fn serve_with_env(&self, vars: &[(&str, &str)], args: &[&str]) -> Running {
        let key = self.key_file();
        let mut c = self.cmd();
        c.env("APP_SECRET", APP_SECRET).env("FLOWCTL_LOG", "info");
        for (k, v) in vars {
            c.env(k, v);
        }
        // `serve` needs to know what to answer an INIT: a test that gives neither a Flow JSON
        // nor a forward URL runs a one-screen Flow.
        let told = |flag: &str, var: &str| {
            args.iter().any(|a| a.starts_with(flag)) || vars.iter().any(|(k, _)| *k == var)
        };
        if !told("--flow-json", "FLOW_JSON")
            && !told("--forward", "FLOW_FORWARD_URL")
            && !told("--screen", "FLOW_SCREEN")
        {
            c.env("FLOW_SCREEN", DEFAULT_SCREEN);
        }
        c.args(["serve", "--listen", "127.0.0.1:0", "--private-key-file"])
            .arg(key)
            .args(args);
        Running::start(c)
    }

    /// Waits until the inbox worker has processed every stored webhook body.
    pub fn wait_inbox_drained(&self) {
        let start = Instant::now();
        loop {
            let store = flowctl::store::Store::open(self.db()).expect("open store");
            let rows = store.inbox_rows().expect("inbox rows");
            if !rows.is_empty() && rows.iter().all(|r| r.1) {
                return;
            }
            drop(store);
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "webhook inbox not processed: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The store, for reading results.
    pub fn store(&self) -> flowctl::store::Store {
        flowctl::store::Store::open(self.db()).expect("open store")
    }
}

/// Posts a webhook body to `serve`, signed with `secret` (None: no signature header).
pub async fn post_webhook(
    server_url: &str,
    body: &[u8],
    secret: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{server_url}/api/message-webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(secret) = secret {
        req = req.header(
            "x-hub-signature-256",
            flowctl::crypto::sign(secret.as_bytes(), body),
        );
    }
    req.send().await.expect("post webhook")
}

/// A Meta envelope around one `messages` change value.
pub fn messages_envelope(value: Value) -> Vec<u8> {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]
    })
    .to_string()
    .into_bytes()
}

/// A Flow completion (`nfm_reply`) as the webhook carries it.
pub fn nfm_reply(
    message_id: &str,
    from: &str,
    context_id: Option<&str>,
    response: Value,
) -> Vec<u8> {
    let mut message = serde_json::json!({
        "from": from,
        "id": message_id,
        "timestamp": "1767225600",
        "type": "interactive",
        "interactive": {"type": "nfm_reply", "nfm_reply": {
            "name": "flow", "body": "Sent", "response_json": response.to_string()
        }}
    });
    if let Some(ctx) = context_id {
        message["context"] = serde_json::json!({"from": "15550783881", "id": ctx});
    }
    messages_envelope(serde_json::json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Renée"}, "wa_id": from}],
        "messages": [message]
    }))
}

/// A delivery status as the webhook carries it.
pub fn status_body(message_id: &str, status: &str, error: Option<(i64, &str)>) -> Vec<u8> {
    let mut s = serde_json::json!({
        "id": message_id, "status": status, "timestamp": "1767225700", "recipient_id": "33612345678"
    });
    if let Some((code, title)) = error {
        s["errors"] = serde_json::json!([{"code": code, "title": title, "message": title}]);
    }
    messages_envelope(serde_json::json!({"messaging_product": "whatsapp", "statuses": [s]}))
}

/// The webhook signature vectors shipped in tests/vectors.
pub fn webhook_vectors() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/webhook-signatures.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("vectors")).expect("vectors json")
}

/// Waits until the sandbox's simulated people have all finished (`completed + failed` reaches
/// `expected`, at most 60 s) and returns their counters (`GET /_sandbox/users`).
pub fn wait_for_people(sandbox_url: &str, expected: u64) -> Value {
    let start = Instant::now();
    loop {
        let stats: Value =
            serde_json::from_str(&http_get(&format!("{sandbox_url}/_sandbox/users")))
                .unwrap_or_default();
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        if n("completed") + n("failed") >= expected {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "people did not finish: {stats}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
