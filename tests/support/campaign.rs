//! A bulk campaign against an in-process sandbox, and the invariants every reliability
//! harness checks after it: nobody messaged twice, every accepted message recorded (or left
//! outcome-unknown), nothing recorded as sent that the API did not accept.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flowctl::sandbox::{start, Fault, SandboxHandle, SandboxOptions};

#[path = "rng.rs"]
mod rng;
pub use rng::Rng;

/// The test database helpers (the test file declares `mod support;`).
pub use crate::support::db;

/// A directory with its database and CSV, and a sandbox in this process.
pub struct Campaign {
    pub dir: tempfile::TempDir,
    db: db::TestDb,
    program: PathBuf,
    sandbox: Option<SandboxHandle>,
    pub rt: tokio::runtime::Runtime,
}

/// What the store and the sandbox hold, once checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// Messages the sandbox accepted.
    pub accepted: usize,
    /// Rows per state in the store.
    pub states: HashMap<String, usize>,
    /// Accepted messages whose row is `sending` or `unknown` (outcome not recorded).
    pub accepted_unrecorded: usize,
}

impl Tally {
    pub fn state(&self, s: &str) -> usize {
        self.states.get(s).copied().unwrap_or(0)
    }
}

/// Phone number `i` of the campaign (valid French mobiles).
pub fn phone(i: usize) -> String {
    format!("+336{:08}", 10_000_000 + i)
}

impl Campaign {
    pub fn new(latency: Duration) -> Campaign {
        Campaign::with(
            tempfile::tempdir().expect("tempdir"),
            SandboxOptions {
                latency,
                ..SandboxOptions::default()
            },
        )
    }

    /// A campaign in `dir` whose sandbox runs with `opts` (its recipients, webhook, faults).
    pub fn with(dir: tempfile::TempDir, opts: SandboxOptions) -> Campaign {
        let database = db::TestDb::new(dir.path(), "flowctl.db");
        Campaign::with_database(dir, database, opts)
    }

    /// A campaign like [`Campaign::with`] on a database made beforehand (a server started
    /// before the sandbox shares it).
    pub fn with_database(
        dir: tempfile::TempDir,
        database: db::TestDb,
        opts: SandboxOptions,
    ) -> Campaign {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sandbox = rt.block_on(start(opts)).expect("sandbox");
        Campaign {
            db: database,
            program: PathBuf::from(env!("CARGO_BIN_EXE_flowctl")),
            dir,
            sandbox: Some(sandbox),
            rt,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The campaign's database (a SQLite file, or its own PostgreSQL database).
    pub fn db(&self) -> flowctl::store::DbTarget {
        self.db.target()
    }

    /// Runs this copy of the binary (one another user can reach, say).
    pub fn use_program(&mut self, program: PathBuf) {
        self.program = program;
    }

    /// Puts the database in another SQLite file (on a small disk, say).
    pub fn use_db(&mut self, file: PathBuf) {
        let dir = file.parent().expect("a file in a directory");
        let name = file.file_name().expect("a file name").to_string_lossy();
        self.db = db::TestDb::new(dir, &name);
    }

    pub fn sandbox(&self) -> &SandboxHandle {
        self.sandbox.as_ref().expect("sandbox")
    }

    pub fn graph_url(&self) -> String {
        format!("http://{}", self.sandbox().addr())
    }

    /// Writes `contacts.csv` with `rows` distinct phones.
    pub fn contacts(&self, rows: usize) -> PathBuf {
        let mut text = String::from("phone_number,customer_name\n");
        for i in 0..rows {
            text.push_str(&format!("{},Client {i}\n", phone(i)));
        }
        let p = self.path("contacts.csv");
        std::fs::write(&p, text).expect("write csv");
        p
    }

    /// `flowctl ARGS` with a clean environment pointing at the sandbox and the database.
    pub fn flowctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.env_clear()
            .current_dir(self.dir.path())
            .env("WHATSAPP_ACCESS_TOKEN", "test-token")
            .env("PHONE_NUMBER_ID", "106540352242922")
            .env("FLOW_ID", "1234567890123456")
            .env("GRAPH_API_URL", self.graph_url())
            .env("GRAPH_API_TIMEOUT", "5s")
            .env("FLOWCTL_DB", self.db.arg())
            .env("FLOWCTL_PROGRESS_INTERVAL_MS", "500")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// `flowctl bulk ARGS`.
    pub fn bulk(&self, args: &[&str]) -> Command {
        let mut c = self.flowctl(&["bulk"]);
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.bulk(args).output().expect("run bulk")
    }

    pub fn set_outage(&self, fault: Option<Fault>) {
        self.sandbox().set_outage(fault);
    }

    /// Messages the sandbox accepted so far.
    pub fn accepted(&self) -> usize {
        self.sandbox()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/messages") && r.status == Some(200))
            .count()
    }

    /// Waits until the sandbox has accepted at least `n` messages (panics after 60 s).
    pub fn wait_accepted(&self, n: usize) {
        let start = std::time::Instant::now();
        while self.accepted() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the sandbox accepted only {} of {n} messages in 60 s",
                self.accepted()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Checks the invariants over the sandbox's record and the store; the tally on success,
    /// the first violations otherwise.
    ///
    /// Safe on a live run: the sandbox is read before the store (a message accepted by then
    /// was marked `sending` before it left), and again after it (a row recorded `sent` by
    /// then was accepted before).
    pub fn check(&self) -> Result<Tally, String> {
        let before = self.sandbox().requests();
        let mut tally = Tally::default();
        let mut errors = Vec::new();
        // token -> (phone digits, state, message_id)
        let mut rows: HashMap<String, (String, String, Option<String>)> = HashMap::new();
        // A run killed before its migrations leaves a database without tables: no rows.
        if db::exists(&self.db()) && self.has_tokens_table() {
            let mut c = db::Sql::open(&self.db());
            for row in c.rows("SELECT token, phone, state, message_id FROM tokens", &[]) {
                let (token, phone, state, mid) = (
                    row[0].text(),
                    row[1].text(),
                    row[2].text(),
                    row[3].opt_text(),
                );
                *tally.states.entry(state.clone()).or_default() += 1;
                rows.insert(
                    token,
                    (phone.trim_start_matches('+').to_string(), state, mid),
                );
            }
        }
        let after: HashSet<String> = self
            .sandbox()
            .requests()
            .into_iter()
            .filter(|r| r.status == Some(200))
            .filter_map(|r| r.wamid)
            .collect();
        let mut per_phone: HashMap<String, usize> = HashMap::new();
        for r in before {
            if !(r.path.ends_with("/messages") && r.status == Some(200)) {
                continue;
            }
            tally.accepted += 1;
            let to = r.to.clone().unwrap_or_default();
            let n = per_phone.entry(to.clone()).or_default();
            *n += 1;
            if *n == 2 {
                errors.push(format!("+{to} was messaged twice"));
            }
            let token = r.flow_token.clone().unwrap_or_default();
            let wamid = r.wamid.clone().unwrap_or_default();
            match rows.get(&token) {
                None => errors.push(format!(
                    "accepted message to +{to} carries token {token:?}, which the store does not hold"
                )),
                Some((phone, _, _)) if *phone != to => errors.push(format!(
                    "token {token:?} is stored for +{phone} but was sent to +{to}"
                )),
                Some((_, state, mid)) => match state.as_str() {
                    "sent" if mid.as_deref() == Some(wamid.as_str()) => {}
                    "sent" => errors.push(format!(
                        "token {token:?} is recorded with message {mid:?}, the API accepted {wamid}"
                    )),
                    "sending" | "unknown" => tally.accepted_unrecorded += 1,
                    other => errors.push(format!(
                        "the API accepted the message to +{to} but its row is {other:?}: a rerun could send it again"
                    )),
                },
            }
        }
        for (token, (phone, state, mid)) in &rows {
            if state == "sent" && !mid.as_ref().is_some_and(|m| after.contains(m)) {
                errors.push(format!(
                    "token {token:?} (+{phone}) is recorded as sent with {mid:?}, which the API never accepted"
                ));
            }
        }
        if errors.is_empty() {
            Ok(tally)
        } else {
            errors.truncate(10);
            Err(errors.join("\n"))
        }
    }

    /// SIGKILLs `flowctl bulk ARGS` after a random 20..`max_ms` ms, then checks the
    /// invariants (panicking with the seed and the kill's number). True when the run had
    /// already ended by itself.
    pub fn kill_bulk_at_random(
        &self,
        args: &[&str],
        rng: &mut Rng,
        max_ms: u64,
        seed: u64,
        kill: usize,
    ) -> bool {
        let mut child = self
            .bulk(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bulk");
        std::thread::sleep(Duration::from_millis(rng.range(20, max_ms)));
        let finished = child.try_wait().expect("try_wait").is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if let Err(e) = self.check() {
            panic!("seed {seed}: after kill {kill}: {e}");
        }
        finished
    }

    /// Whether the migrations created the tokens table (a run killed before them did not).
    fn has_tokens_table(&self) -> bool {
        let sql = match self.db() {
            flowctl::store::DbTarget::Sqlite(_) => {
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'tokens'"
            }
            flowctl::store::DbTarget::Postgres(_) => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'tokens'"
            }
        };
        db::Sql::open(&self.db()).int(sql, &[]) > 0
    }

    /// `PRAGMA integrity_check` of the SQLite store; "ok" on PostgreSQL, whose own
    /// write-ahead log keeps its tables whole through a crash.
    pub fn integrity(&self) -> String {
        match self.db() {
            flowctl::store::DbTarget::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).expect("open db");
                c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .expect("integrity_check")
            }
            flowctl::store::DbTarget::Postgres(_) => "ok".into(),
        }
    }
}

impl Drop for Campaign {
    fn drop(&mut self) {
        if let Some(s) = self.sandbox.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

/// The last line of stdout as JSON (`--json` summaries).
pub fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `FLOWCTL_<name>` as a number, else `default` (the long harnesses scale with these).
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(format!("FLOWCTL_{name}"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
