//! `flowctl bulk` over CSVs as Excel saves them in French and Moroccan locales: `;` as the
//! delimiter, a byte-order mark, CRLF, Windows-1252, UTF-16, headers of the user's own.
//! Over the real binary, against the Graph API sandbox (in this process, on port 0).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flowctl::sandbox::{start, SandboxHandle, SandboxOptions};

#[path = "support/db.rs"]
mod db;

const MA: &str = "+212610059159";
const FR: &str = "+33612345678";

struct Env {
    dir: tempfile::TempDir,
    /// `flowctl.db` in `dir`, or a PostgreSQL database of its own (support/db.rs).
    db: db::TestDb,
    sandbox: Option<SandboxHandle>,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Env {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let opts = SandboxOptions {
            latency: Duration::ZERO,
            ..SandboxOptions::default()
        };
        let sandbox = rt.block_on(start(opts)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Env {
            db: db::TestDb::new(dir.path(), "flowctl.db"),
            dir,
            sandbox: Some(sandbox),
            rt,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// `flowctl bulk ARGS` with a clean environment pointing at the sandbox.
    fn run(&self, args: &[&str]) -> Output {
        let addr = self.sandbox.as_ref().unwrap().addr();
        Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .env_clear()
            .current_dir(self.dir.path())
            .env("WHATSAPP_ACCESS_TOKEN", "test-token")
            .env("PHONE_NUMBER_ID", "106540352242922")
            .env("FLOW_ID", "1234567890123456")
            .env("GRAPH_API_URL", format!("http://{addr}"))
            .env("FLOWCTL_DB", self.db.arg())
            .arg("bulk")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Messages the sandbox accepted, by recipient (digits without `+`), sorted.
    fn accepted(&self) -> Vec<String> {
        let mut to: Vec<String> = self
            .sandbox
            .as_ref()
            .unwrap()
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/messages") && r.status == Some(200))
            .filter_map(|r| r.to.clone())
            .collect();
        to.sort();
        to
    }

    /// The stored customer name and initial data of a recipient.
    fn stored(&self, phone: &str) -> (Option<String>, Option<String>) {
        let row = db::Sql::open(&self.db.target())
            .row(
                "SELECT customer_name, initial_data FROM tokens WHERE phone = ?1",
                &[phone.into()],
            )
            .expect("a row for the phone");
        (row[0].opt_text(), row[1].opt_text())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.sandbox.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn digits(p: &str) -> String {
    p.trim_start_matches('+').to_string()
}

fn sorted(phones: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = phones.iter().map(|p| digits(p)).collect();
    v.sort();
    v
}

#[test]
fn semicolon_file_from_excel_with_a_bom_is_sent() {
    let env = Env::new();
    let csv = env.write(
        "excel.csv",
        format!(
            "\u{feff}phone_number;customer_name;ville\r\n{MA};Amal;Rabat\r\n{FR};Zoé;Paris\r\n"
        )
        .as_bytes(),
    );
    let out = env.run(&[&csv]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(env.accepted(), sorted(&[MA, FR]));
    assert_eq!(
        env.stored(FR),
        (Some("Zoé".into()), Some(r#"{"ville":"Paris"}"#.into()))
    );
}

#[test]
fn windows_1252_file_with_french_headers_stores_the_accented_names() {
    let env = Env::new();
    let mut bytes = b"T\xE9l\xE9phone;Nom;Ville\r\n".to_vec();
    bytes.extend(
        format!("{MA};Ren\u{e9}e;F\u{e8}s\r\n")
            .chars()
            .map(|c| c as u8),
    );
    bytes.extend(
        format!("{FR};J\u{e9}r\u{f4}me;Paris\r\n")
            .chars()
            .map(|c| c as u8),
    );
    let csv = env.write("clients.csv", &bytes);
    let out = env.run(&[&csv, "--phone-column", "téléphone", "--name-column", "NOM"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(env.accepted(), sorted(&[MA, FR]));
    assert_eq!(
        env.stored(MA),
        (Some("Renée".into()), Some(r#"{"Ville":"Fès"}"#.into()))
    );
    assert_eq!(env.stored(FR).0.as_deref(), Some("Jérôme"));
}

#[test]
fn utf16_file_from_excel_unicode_text_is_sent() {
    let env = Env::new();
    let content = format!("phone\tname\r\n{MA}\tAmélie\r\n{FR}\tB\r\n");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(content.encode_utf16().flat_map(u16::to_le_bytes));
    let csv = env.write("unicode.txt", &bytes);
    let out = env.run(&[&csv, "--campaign", "u16"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(env.accepted(), sorted(&[MA, FR]));
    assert_eq!(env.stored(MA).0.as_deref(), Some("Amélie"));
}

#[test]
fn phone_column_option_picks_a_column_of_any_name() {
    let env = Env::new();
    let csv = env.write(
        "m.csv",
        format!("client,Mobile,plan\nA,{MA},gold\nB,{FR},\n").as_bytes(),
    );
    let out = env.run(&[&csv, "--phone-column", "mobile", "--name-column", "client"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(env.accepted(), sorted(&[MA, FR]));
    assert_eq!(
        env.stored(MA),
        (Some("A".into()), Some(r#"{"plan":"gold"}"#.into()))
    );
}

#[test]
fn a_missing_phone_column_exits_2_naming_the_options_and_the_columns_found() {
    let env = Env::new();
    let csv = env.write("t.csv", format!("tel;nom;ville\n{MA};A;Rabat\n").as_bytes());
    let out = env.run(&[&csv]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        "tel;nom;ville",
        "--phone-column",
        "--name-column",
        "--delimiter",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
    let out = env.run(&[&csv, "--phone-column", "mobile"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"mobile\" (--phone-column)"), "{stderr}");
    assert!(env.accepted().is_empty());
}

#[test]
fn bad_delimiter_or_encoding_is_a_usage_error() {
    let env = Env::new();
    let csv = env.write("d.csv", format!("phone\n{MA}\n").as_bytes());
    for args in [["--delimiter", "::"], ["--encoding", "latin-9"]] {
        let out = env.run(&[&csv, args[0], args[1]]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
}

#[test]
fn dry_run_and_failures_file_keep_the_delimiter_in_utf8_with_a_bom() {
    let env = Env::new();
    let mut bytes = b"T\xE9l\xE9phone;Nom\r\n".to_vec();
    bytes.extend(
        format!("{MA};Ren\u{e9}e\r\nnope;Andr\u{e9}\r\n")
            .chars()
            .map(|c| c as u8),
    );
    let csv = env.write("f.csv", &bytes);
    let failures = env.path("failed.csv");
    let out = env.run(&[
        &csv,
        "--dry-run",
        "--phone-column",
        "Téléphone",
        "--failures",
        failures.to_str().unwrap(),
        "--json",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the bad row: {stderr}");
    assert!(
        stderr.contains("line 3:") && stderr.contains("\"nope\""),
        "{stderr}"
    );
    assert!(env.accepted().is_empty());
    let written = std::fs::read_to_string(&failures).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("\u{feff}Téléphone;Nom;line;error"));
    assert!(
        lines.next().unwrap().starts_with("nope;André;3;"),
        "{written}"
    );
}
