//! The reading commands print the same thing on PostgreSQL as on SQLite: one set of rows is
//! written with the same SQL into a SQLite file and a PostgreSQL database (both created and
//! migrated by the binary itself), then `stats`, `export` (every format, filters, failures)
//! and `suppress list` must print byte-identical output on both. Skipped without
//! `FLOWCTL_TEST_POSTGRES` (a server URL; `scripts/pg-cluster start DIR` prints one).

mod support;

use std::process::Command;
use std::time::Duration;

use support::{run, stderr, stdout, Env};

/// A fresh database on the test server, or `None` (and a line saying so) without one.
fn pg_database() -> Option<String> {
    let Ok(admin) = std::env::var("FLOWCTL_TEST_POSTGRES") else {
        eprintln!("skipped: no PostgreSQL (set FLOWCTL_TEST_POSTGRES to a server URL)");
        return None;
    };
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("test server");
    let name = format!(
        "pg_reads_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    Some(format!("{base}/{name}"))
}

/// The rows both databases get: tokens in every state and delivery, failures with and
/// without codes, completions whose answers keep their own key order, a duplicate, unmatched
/// completions, and suppressions.
fn seed() -> String {
    let states = [
        "pending", "sending", "sent", "failed", "unknown", "deferred",
    ];
    let campaigns = ["spring", "Autumn", "été"];
    let mut sql = String::new();
    let mut response = 0;
    for i in 0..36usize {
        let token = format!("flow_{:0>22}", format!("T{i}"));
        let state = states[i % 6];
        let accepted = matches!(state, "sent" | "failed" | "deferred");
        let delivery = match (accepted, i % 4) {
            (false, _) => "NULL",
            (true, 0) => "'delivered'",
            (true, 1) => "'read'",
            (true, 2) => "'failed'",
            _ => "NULL",
        };
        let rank = match delivery {
            "'delivered'" => 2,
            "'read'" => 3,
            "'failed'" => 1,
            _ => 0,
        };
        sql.push_str(&format!(
            "INSERT INTO tokens (token, phone, customer_name, campaign, origin, state,
                message_id, error_code, error_message, error_retryable, delivery, delivery_rank,
                delivery_error_code, created_at, expires_at, sent_at, not_before,
                failed_after_acceptance)
             VALUES ('{token}', '+2126100590{i:02}', 'Nom {i}', '{campaign}', 'bulk', '{state}',
                {message_id}, {code}, {message}, 0, {delivery}, {rank}, {delivery_code},
                '2026-01-01T00:00:{i:02}.000Z', '2099-01-01T00:00:00.000Z', {sent_at},
                {not_before}, {after});\n",
            campaign = campaigns[i % 3],
            message_id = if accepted {
                format!("'wamid.{i}'")
            } else {
                "NULL".into()
            },
            code = if state == "failed" && i % 2 == 1 {
                "131026"
            } else {
                "NULL"
            },
            message = if state == "failed" {
                "'refused'"
            } else {
                "NULL"
            },
            delivery_code = if delivery == "'failed'" {
                "131047"
            } else {
                "NULL"
            },
            sent_at = if accepted {
                format!("'2026-01-01T01:00:{i:02}.000Z'")
            } else {
                "NULL".into()
            },
            not_before = if state == "deferred" {
                "'2026-01-02T00:00:00.000Z'"
            } else {
                "NULL"
            },
            after = i64::from(delivery == "'failed'"),
        ));
        if accepted {
            response += 1;
            let answers = match i % 3 {
                0 => format!("{{\"z_note\": {i}, \"avis\": \"très bien\", \"a\": true}}"),
                1 => "{\"avis\": \"bof\", \"m\": [1, 2]}".to_string(),
                _ => "{\"q\": null, \"z_note\": 3}".to_string(),
            };
            sql.push_str(&format!(
                "INSERT INTO responses (id, token, phone, customer_name, campaign, source, answers,
                    matched, completed_at, received_at)
                 VALUES ({response}, '{token}', '+2126100590{i:02}', 'Nom {i}', '{campaign}',
                    'endpoint', '{answers}', 1, '2026-01-01T02:{min:02}:00.000Z',
                    '2026-01-01T03:00:00.000Z');\n",
                campaign = campaigns[i % 3],
                min = i / 4,
            ));
            if i % 5 == 0 {
                let primary = response;
                response += 1;
                sql.push_str(&format!(
                    "INSERT INTO responses (id, token, phone, campaign, source, answers, matched,
                        duplicate_of, event_id, completed_at, received_at)
                     VALUES ({response}, '{token}', '+2126100590{i:02}', '{campaign}', 'webhook',
                        '{{\"dup\": 1}}', 1, {primary}, 'wamid.d{i}',
                        '2026-01-01T02:{min:02}:00.000Z', '2026-01-01T03:00:00.000Z');\n",
                    campaign = campaigns[i % 3],
                    min = i / 4,
                ));
            }
        }
    }
    for k in 0..2 {
        response += 1;
        sql.push_str(&format!(
            "INSERT INTO responses (id, token, phone, sender, campaign, source, answers, matched,
                event_id, completed_at, received_at)
             VALUES ({response}, 'flow_unknown{k}', '+21260000000{k}', '21260000000{k}',
                {campaign}, 'webhook', '{{\"late\": {k}}}', 0, 'wamid.u{k}',
                '2026-01-01T02:0{k}:30.000Z', '2026-01-01T03:00:00.000Z');\n",
            campaign = if k == 0 { "'spring'" } else { "NULL" },
        ));
    }
    sql.push_str(
        "INSERT INTO suppressions (key, phone, reason, source, at)
         VALUES ('+212600000001', '+212600000001', 'replied \"STOP\"', 'keyword',
                 '2026-01-01T00:00:00.000Z');
         -- The entry `suppress add` wrote: one time on both sides.
         UPDATE suppressions SET at = '2026-01-01T00:00:01.000Z' WHERE source = 'manual';\n",
    );
    sql
}

/// Runs `flowctl ARGS --db DB` in `env`'s directory; its stdout (it must succeed).
fn flowctl(env: &Env, db: &str, args: &[&str]) -> String {
    let mut c = Command::new(support::bin());
    c.current_dir(env.dir.path())
        .env_clear()
        .args(args)
        .args(["--db", db]);
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    let out = run(c, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?} on {db}: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn reading_commands_print_the_same_on_both_backends() {
    let Some(pg) = pg_database() else {
        return;
    };
    let env = Env::new();
    let sqlite = env.db_file().to_string_lossy().into_owned();
    // The binary creates and migrates both databases (and writes one suppression on each).
    for db in [&sqlite, &pg] {
        flowctl(&env, db, &["suppress", "add", "+5511987654321"]);
    }
    let sql = seed();
    rusqlite::Connection::open(&sqlite)
        .unwrap()
        .execute_batch(&sql)
        .unwrap();
    postgres::Client::connect(&pg, postgres::NoTls)
        .unwrap()
        .batch_execute(&sql)
        .unwrap();

    let reads: &[&[&str]] = &[
        &["stats", "--json"],
        &["stats"],
        &["stats", "--campaign", "été", "--json"],
        &["export", "--csv"],
        &["export", "--json", "--include-unmatched"],
        &[
            "export",
            "--ndjson",
            "--campaign",
            "spring",
            "--include-unmatched",
        ],
        &["export", "--csv", "--since", "2026-01-01T02:04:00Z"],
        &["export", "--failures", "--json"],
        &["export", "--failures", "--csv", "--campaign", "Autumn"],
        &["suppress", "list", "--json"],
    ];
    for args in reads {
        let (a, b) = (flowctl(&env, &sqlite, args), flowctl(&env, &pg, args));
        assert_eq!(a, b, "{args:?}");
        assert!(a.len() > 40, "{args:?}: {a}");
    }
    // The figures are those of the rows, not of an empty database on both sides.
    let stats: serde_json::Value =
        serde_json::from_str(&flowctl(&env, &pg, &["stats", "--json"])).unwrap();
    assert_eq!(stats["total"]["issued"], 36, "{stats}");
    let header = flowctl(&env, &pg, &["export", "--csv"]);
    let header = header.lines().next().unwrap();
    // Answer columns in order of first appearance, each object's keys in stored order.
    assert!(header.ends_with(",q,z_note,avis,a"), "{header}");
}
