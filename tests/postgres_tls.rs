//! TLS to PostgreSQL through rustls: a server whose certificate a private CA signed is trusted
//! with `PGSSLROOTCERT`, and refused without it (`sslmode=require` never falls back to clear
//! text). Runs on a throwaway TLS cluster (`PG_CLUSTER_TLS=1 scripts/pg-cluster start`); without
//! the PostgreSQL server binaries it says "skipped: no PostgreSQL".

#[path = "support/pg_cluster.rs"]
mod pg_cluster;
mod support;

use std::path::Path;

use support::Env;

#[test]
fn tls_to_postgres_trusts_the_given_ca_and_refuses_an_unknown_one() {
    let Some(cluster) = pg_cluster::Cluster::start("postgres tls", true) else {
        return;
    };
    let env = Env::new();
    let url = format!("{}?sslmode=require", cluster.url);
    let run = |ca: Option<&Path>, args: &[&str]| {
        let mut c = env.cmd();
        c.env("FLOWCTL_DB", &url).args(args);
        if let Some(ca) = ca {
            c.env("PGSSLROOTCERT", ca);
        }
        c.output().expect("run flowctl")
    };
    let ok = run(
        Some(&cluster.ca()),
        &[
            "suppress",
            "add",
            "+212610059159",
            "--reason",
            "asked by phone",
        ],
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let listed = run(Some(&cluster.ca()), &["suppress", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("212610059159"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // Without the CA the server's certificate is not trusted: no connection, and no silent
    // fallback to clear text.
    let refused = run(None, &["suppress", "list"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot connect") && err.contains("certificate"),
        "{err}"
    );
}
