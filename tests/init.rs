//! `flowctl init` and `--env-file` over the real binary.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_yes_writes_a_commented_owner_only_file_with_the_environments_values() {
    let env = Env::new();
    let mut c = env.cmd();
    c.env("PHONE_NUMBER_ID", "106540352242922")
        .env("APP_SECRET", "s3cr3t with space")
        .args(["init", "--yes"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = env.path(".env");
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\nPHONE_NUMBER_ID=106540352242922\n"),
        "{text}"
    );
    assert!(
        text.contains("\nAPP_SECRET='s3cr3t with space'\n"),
        "{text}"
    );
    assert!(
        text.contains("\nWHATSAPP_ACCESS_TOKEN=\n"),
        "placeholder: {text}"
    );
    assert!(
        text.contains("# The business number's id"),
        "commented: {text}"
    );
    // The output names what is left to fill in, and never a secret.
    let err = stderr(&out);
    assert!(
        err.contains("WHATSAPP_ACCESS_TOKEN") && err.contains("flowctl doctor"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t") && !stdout(&out).contains("s3cr3t"));
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let env = Env::new();
    let path = env.write(".env", "FLOW_ID=42\n");
    let mut c = env.cmd();
    c.args(["init", "--yes"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "FLOW_ID=42\n");

    let mut c = env.cmd();
    c.args(["init", "--yes", "--force"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&path).unwrap();
    // The old file's value was loaded, so it is kept.
    assert!(text.contains("\nFLOW_ID=42\n"), "{text}");
    assert!(text.contains("# --- serve"), "{text}");
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn init_reads_answers_from_stdin_without_yes() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["--env-file", "prod.env", "init"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // PHONE_NUMBER_ID, WHATSAPP_ACCESS_TOKEN, GRAPH_API_VERSION (default), FLOW_ID.
        stdin
            .write_all(b"106540352242922\nEAAtoken-from-stdin\n\n1234567890123456\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(env.path("prod.env")).unwrap();
    assert!(
        text.contains("\nWHATSAPP_ACCESS_TOKEN=EAAtoken-from-stdin\n"),
        "{text}"
    );
    assert!(text.contains("\nFLOW_ID=1234567890123456\n"), "{text}");
    assert!(text.contains("\n# GRAPH_API_VERSION=v"), "{text}");
    assert!(!stderr(&out).contains("EAAtoken-from-stdin"));
}

#[test]
fn env_file_is_read_by_commands_and_must_exist() {
    let env = Env::new();
    // A different database named only in the env file: stats reads it (and says it is
    // missing, by name), instead of ./flowctl.db.
    env.write("other.env", "FLOWCTL_DB=from-env-file.db\n");
    let mut c = env.cmd();
    c.env_remove("FLOWCTL_DB")
        .args(["--env-file", "other.env", "stats"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("from-env-file.db"),
        "{}",
        stderr(&out)
    );

    // After the subcommand too, and as --env-file=PATH.
    let sb = env.sandbox(&[]);
    env.write(
        "send.env",
        &format!(
            "WHATSAPP_ACCESS_TOKEN={ACCESS_TOKEN}\nPHONE_NUMBER_ID=106540352242922\nFLOW_ID=1234567890123456\nGRAPH_API_URL={}\n",
            sb.url
        ),
    );
    let mut c = env.cmd();
    c.args(["send", "+212612345678", "--env-file=send.env"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox_messages(&sb.url).len(), 1);

    // A ./.env is not read when --env-file names another file.
    env.write(".env", "FLOWCTL_DB=from-dot-env.db\n");
    let mut c = env.cmd();
    c.env_remove("FLOWCTL_DB")
        .args(["stats", "--env-file", "other.env"]);
    let out = run(c, LIMIT);
    assert!(
        stderr(&out).contains("from-env-file.db"),
        "{}",
        stderr(&out)
    );

    let mut c = env.cmd();
    c.args(["--env-file", "missing.env", "stats"]);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.env"), "{}", stderr(&out));
}
