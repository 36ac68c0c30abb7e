//! Faults around a bulk run: the Graph API down in the middle of it (503, then reset
//! connections), an outage longer than `--max-outage`, a read-only database, a full disk.
//!
//! Quick versions run in the normal suite; the one-minute outage runs with
//! `cargo test --test reliability_faults -- --ignored --nocapture`.

#[path = "support/campaign.rs"]
mod campaign;
mod support;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use campaign::{summary, Campaign};
use flowctl::sandbox::Fault;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a bulk campaign of `rows` at `rate`, with the API answering 503 once `start` rows
/// were accepted, for
/// `http503`, then resetting connections for `reset`, then back. Checks everything and
/// returns (tally, summary, elapsed).
fn outage_during_bulk(
    rows: usize,
    rate: u32,
    start: usize,
    http503: Duration,
    reset: Duration,
) -> (campaign::Tally, serde_json::Value, Duration) {
    let c = Campaign::new(Duration::from_millis(5));
    let csv = c.contacts(rows);
    let rate = rate.to_string();
    let began = Instant::now();
    let child = c
        .bulk(&[csv.to_str().unwrap(), "--rate", &rate, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulk");
    c.wait_accepted(start);
    let before = c.check().expect("invariants before the outage").accepted;
    c.set_outage(Some(Fault::Http503));
    std::thread::sleep(http503);
    c.set_outage(Some(Fault::Reset));
    std::thread::sleep(reset);
    c.set_outage(None);
    let out = child.wait_with_output().expect("bulk");
    let elapsed = began.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        before > 0 && before < rows,
        "the outage must fall in the middle of the run ({before} of {rows} sent before it)"
    );
    let tally = c
        .check()
        .unwrap_or_else(|e| panic!("{e}\nstderr: {stderr}"));
    assert_eq!(tally.accepted, rows, "everyone messaged exactly once");
    assert_eq!(tally.state("sent"), rows);
    let s = summary(&out);
    assert_eq!(s["sent"], rows as u64, "{s}");
    assert_eq!(s["unknown"], 0, "{s}");
    assert_eq!(s["outages"], 1, "{s}");
    assert!(
        s["outage_s"].as_f64().unwrap() >= (http503 + reset).as_secs_f64() - 0.5,
        "{s}"
    );
    assert!(
        stderr.contains("sends paused") && stderr.contains("answers again"),
        "{stderr}"
    );
    // The outage was real: requests met both faults.
    let faults: Vec<String> = c
        .sandbox()
        .requests()
        .into_iter()
        .filter_map(|r| r.fault)
        .collect();
    assert!(faults.iter().any(|f| f == "http503"), "{faults:?}");
    assert!(faults.iter().any(|f| f == "reset"), "{faults:?}");
    (tally, s, elapsed)
}

#[test]
fn bulk_waits_out_an_outage_and_messages_everyone_once() {
    outage_during_bulk(
        600,
        150,
        150,
        Duration::from_millis(1500),
        Duration::from_millis(1500),
    );
}

#[test]
#[ignore = "one-minute outage; run with --ignored"]
fn long_bulk_waits_out_a_one_minute_outage() {
    let rows = campaign::knob("OUTAGE_ROWS", 3000) as usize;
    let (tally, s, elapsed) = outage_during_bulk(
        rows,
        50,
        750,
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    println!(
        "RELIABILITY outage: {rows} rows at 50/s, Graph API 503 for 30 s then resetting connections for 30 s, after 750 sends: exit 0 in {:.1} s, {} messages accepted for {rows} phones (0 twice), {} unknown, paused {:.1} s",
        elapsed.as_secs_f64(),
        tally.accepted,
        s["unknown"],
        s["outage_s"].as_f64().unwrap_or(0.0)
    );
}

#[test]
fn an_outage_longer_than_max_outage_stops_the_run_and_the_rerun_completes() {
    let c = Campaign::new(Duration::ZERO);
    let csv = c.contacts(300);
    let child = c
        .bulk(&[
            csv.to_str().unwrap(),
            "--rate",
            "100",
            "--max-outage",
            "2s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulk");
    c.wait_accepted(30);
    c.set_outage(Some(Fault::Http503));
    let out = child.wait_with_output().expect("bulk");
    c.set_outage(None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unreachable for") && stderr.contains("--max-outage"),
        "{stderr}"
    );
    assert!(stderr.contains("resume with:"), "{stderr}");
    let first = c.check().unwrap_or_else(|e| panic!("{e}\n{stderr}"));
    let s = summary(&out);
    assert_eq!(s["sent"], first.state("sent") as u64, "{s}");
    assert!(first.accepted > 0 && first.accepted < 300, "{first:?}");
    assert_eq!(s["unknown"], 0, "{s}");

    let again = c.run(&[csv.to_str().unwrap(), "--rate", "400", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let last = c.check().expect("invariants after the rerun");
    assert_eq!(last.accepted, 300);
    assert_eq!(last.state("sent"), 300);
    assert_eq!(summary(&again)["skipped"], first.accepted as u64);
}

/// Whether this process may change users and mount file systems.
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn a_read_only_database_is_refused_with_a_clear_error_and_nothing_is_sent() {
    use std::os::unix::fs::PermissionsExt;
    if campaign::db::skip_on_postgres("about a read-only SQLite file") {
        return;
    }
    let c = Campaign::new(Duration::ZERO);
    let csv = c.contacts(20);
    let first = c.run(&[csv.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(c.check().unwrap().accepted, 20);

    let more = c.path("more.csv");
    std::fs::write(
        &more,
        format!(
            "phone_number\n{}\n{}\n",
            campaign::phone(100),
            campaign::phone(101)
        ),
    )
    .unwrap();
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["flowctl.db", "flowctl.db-wal", "flowctl.db-shm"] {
        let p = c.path(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    let mut c = c;
    if is_root() {
        // nobody must reach the binary: the build directory may sit under a private home.
        let exe = c.path("flowctl-copy");
        std::fs::copy(env!("CARGO_BIN_EXE_flowctl"), &exe).expect("copy the binary");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        c.use_program(exe);
    }
    let as_user = |mut cmd: std::process::Command| {
        // root writes through file modes: run as nobody to make the file really read-only.
        if is_root() {
            cmd.uid(65534).gid(65534);
        }
        cmd.output().expect("run")
    };
    let bulk = as_user(c.bulk(&[more.to_str().unwrap()]));
    let stderr = text(&bulk.stderr);
    assert_ne!(bulk.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("is read-only"),
        "the error must say the database is read-only: {stderr}"
    );
    assert!(stderr.contains("flowctl.db"), "and name the file: {stderr}");
    println!("read-only database, bulk:\n{}", tail(&stderr, 3));

    let send = c.flowctl(&["send", &campaign::phone(102)]);
    let send = as_user(send);
    let stderr = text(&send.stderr);
    assert_ne!(send.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("read-only") || stderr.contains("readonly"),
        "{stderr}"
    );

    // Nothing left for anyone the store could not record, and the file is intact.
    assert_eq!(c.check().unwrap().accepted, 20);
    for f in ["flowctl.db", "flowctl.db-wal", "flowctl.db-shm"] {
        let p = c.path(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert_eq!(c.integrity(), "ok");
}

/// A tmpfs of `size` mounted on `dir` for the life of the value.
struct TinyDisk {
    dir: std::path::PathBuf,
}

impl TinyDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<TinyDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| TinyDisk {
            dir: dir.to_path_buf(),
        })
    }

    fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("remount");
        assert!(ok.success());
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_a_clear_error_and_nothing_claimed_unrecorded() {
    if campaign::db::skip_on_postgres("about the SQLite file on a full disk") {
        return;
    }
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let mut c = Campaign::new(Duration::ZERO);
    let Some(disk) = TinyDisk::mount(&c.path("disk"), "1m") else {
        eprintln!("skipped: this machine does not allow mounting a tmpfs");
        return;
    };
    c.use_db(disk.dir.join("flowctl.db"));
    let rows = 3000;
    let csv = c.contacts(rows);
    let out = c
        .bulk(&[csv.to_str().unwrap(), "--rate", "2000", "--json"])
        .output()
        .expect("bulk");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("full"),
        "the error must say the disk is full: {stderr}"
    );
    let s = summary(&out);
    println!("full disk, first run:\n{}", tail(&stderr, 4));

    let first = c.check().unwrap_or_else(|e| panic!("{e}\n{stderr}"));
    assert_eq!(c.integrity(), "ok");
    assert!(
        first.accepted > 0 && first.accepted < rows,
        "the disk must fill in the middle of the run: {first:?}"
    );
    // Nothing claimed as sent that is not recorded as sent.
    assert_eq!(s["sent"], first.state("sent") as u64, "{s}\n{stderr}");
    assert_eq!(
        s["sent"].as_u64().unwrap() + s["unknown"].as_u64().unwrap(),
        first.accepted as u64,
        "every accepted message is either recorded sent or reported unknown: {s}"
    );

    // Room again: the rerun completes on the same file, nobody messaged twice.
    disk.grow("64m");
    let again = c
        .bulk(&[csv.to_str().unwrap(), "--rate", "2000", "--json"])
        .output()
        .expect("bulk");
    let s2 = summary(&again);
    let last = c.check().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.integrity(), "ok");
    assert_eq!(
        last.state("sent") + last.accepted_unrecorded,
        last.accepted,
        "{last:?}"
    );
    assert_eq!(
        last.state("sent") + s2["unknown"].as_u64().unwrap() as usize,
        rows,
        "every row ends sent or reported unknown: {s2}"
    );
}

#[test]
fn a_second_run_of_a_campaign_in_progress_is_refused_and_nobody_is_messaged_twice() {
    if campaign::db::skip_on_postgres(
        "about the SQLite campaign lock file (on PostgreSQL, workers share a campaign)",
    ) {
        return;
    }
    let c = Campaign::new(Duration::from_millis(5));
    let csv = c.contacts(400);
    let failures = c.path("failures.csv");
    let first = c
        .bulk(&[
            csv.to_str().unwrap(),
            "--rate",
            "200",
            "--json",
            "--failures",
            failures.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulk");
    c.wait_accepted(20);
    let second = c.run(&[
        csv.to_str().unwrap(),
        "--rate",
        "200",
        "--failures",
        failures.to_str().unwrap(),
    ]);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("campaign \"contacts\" is already being sent") && stderr.contains("pid "),
        "{stderr}"
    );
    // Another campaign of the same file and database may run beside it.
    let other = c.run(&[csv.to_str().unwrap(), "--campaign", "other", "--dry-run"]);
    assert_eq!(other.status.code(), Some(0), "{}", text(&other.stderr));

    let out = first.wait_with_output().expect("first run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(summary(&out)["sent"], 400);
    let tally = c.check().expect("invariants");
    assert_eq!(tally.accepted, 400, "nobody messaged twice");
    // The refused run did not touch the first run's failures file.
    assert_eq!(
        std::fs::read_to_string(&failures).unwrap().lines().count(),
        1,
        "only the header of the first run's (empty) failures file"
    );
    // Once the first run is over, the lock is free again: the rerun skips everyone.
    let again = c.run(&[csv.to_str().unwrap(), "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(summary(&again)["skipped"], 400);
}
