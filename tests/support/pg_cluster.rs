//! A throwaway PostgreSQL cluster a test owns (`scripts/pg-cluster`): it may stop and start
//! it, or give it TLS. Stopped and removed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    /// The server's URL (the `postgres` database, user `flowctl`).
    pub url: String,
}

impl Cluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster")
    }

    /// Starts one (with TLS when `tls`), or `None` after saying why `test` is skipped: what
    /// it needs are the PostgreSQL server programs, not a running server.
    pub fn start(test: &str, tls: bool) -> Option<Cluster> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Command::new(Cluster::script());
        if tls {
            c.env("PG_CLUSTER_TLS", "1");
        }
        let out = c
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .expect("run scripts/pg-cluster");
        if out.status.code() == Some(3) {
            eprintln!(
                "{test}: skipped: no PostgreSQL ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        assert!(
            out.status.success(),
            "pg-cluster start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(Cluster { dir, url })
    }

    /// `down` (an administrator's fast shutdown, data kept) or `up` (started again on its port).
    pub fn run(&self, what: &str) {
        let out = Command::new(Cluster::script())
            .arg(what)
            .arg(self.dir.path().join("pg"))
            .output()
            .expect("run scripts/pg-cluster");
        assert!(
            out.status.success(),
            "pg-cluster {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The CA certificate of a TLS cluster (for `PGSSLROOTCERT`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("pg/tls/ca.crt")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(Cluster::script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .output();
    }
}
