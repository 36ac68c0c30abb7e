//! `flowctl db migrate-to`: a SQLite database copied into PostgreSQL over the real binary,
//! every table, ids kept, resumable, counts verified, the URL's password never shown.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use flowctl::store::{CompletionInput, DbTarget, NewToken, Origin, SendState, Store};
use serde_json::json;
use support::db::{postgres_server, TestDb};
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
/// A password in the target URL (the test server trusts loopback, so any password works).
const PASSWORD: &str = "s3cret-pw-77e1";

/// Every table the copy carries, with the columns that order its rows.
const TABLES: [(&str, &str); 7] = [
    ("tokens", "token"),
    ("responses", "id"),
    ("message_statuses", "message_id, status"),
    ("events", "id"),
    ("webhook_inbox", "id"),
    ("media", "id"),
    ("suppressions", "key"),
];

/// A SQLite database with rows in every table: 30 tokens (sent, failed, pending), their
/// responses (one a duplicate of another), statuses, events, webhook bodies (bytes that are
/// not UTF-8), media, suppressions.
fn fill(file: &Path) {
    let mut s = Store::open(file).unwrap();
    let mut tokens = Vec::new();
    for i in 0..30 {
        let token = flowctl::token::FlowToken::generate();
        let new = NewToken {
            token: token.clone(),
            phone: flowctl::phone::Phone::parse(&format!("+2126100591{i:02}"), None).unwrap(),
            customer_name: (i % 3 == 0).then(|| format!("Client «{i}»")),
            campaign: if i < 20 { "spring" } else { "autumn" }.into(),
            origin: if i % 2 == 0 {
                Origin::Bulk
            } else {
                Origin::Send
            },
            initial_data: (i % 4 == 0).then(|| {
                json!({"city": "Rabat", "n": i})
                    .as_object()
                    .cloned()
                    .unwrap()
            }),
            ttl: Duration::from_secs(86_400),
        };
        s.insert_token(&new, SendState::Pending).unwrap();
        let t = token.as_str().to_string();
        if i % 5 != 4 {
            s.record_sent(
                &t,
                &format!("wamid.{i}"),
                Some(&format!("2126100591{i:02}")),
            )
            .unwrap();
        }
        tokens.push(t);
    }
    for (i, t) in tokens.iter().enumerate().take(12) {
        let answers = json!({"q1": "5_etoiles", "comment": format!("réponse {i}")});
        s.complete(&CompletionInput {
            token: t,
            answers: answers.as_object().unwrap(),
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: "2026-03-01T10:00:00.000Z",
        })
        .unwrap();
    }
    // The same completion again by the webhook: kept as a duplicate of the first.
    let answers = json!({"q1": "5_etoiles"});
    s.complete(&CompletionInput {
        token: &tokens[0],
        answers: answers.as_object().unwrap(),
        source: "webhook",
        sender: Some("212610059100"),
        event_id: Some("wamid.reply.0"),
        completed_at: "2026-03-01T10:00:01.000Z",
    })
    .unwrap();
    s.suppress("+212610059105", "STOP", "webhook").unwrap();
    s.suppress("+33612345678", "asked by phone", "manual")
        .unwrap();
    drop(s);
    let c = rusqlite::Connection::open(file).unwrap();
    for (i, token) in tokens.iter().enumerate().take(8) {
        c.execute(
            "INSERT INTO message_statuses (message_id, status, at, recipient, error_code, error_title, matched, received_at)
             VALUES (?1, ?2, '2026-03-01T09:00:00.000Z', '212610059100', ?3, ?4, 1, '2026-03-01T09:00:01.000Z')",
            rusqlite::params![
                format!("wamid.{}", i / 2),
                if i % 2 == 0 { "delivered" } else { "failed" },
                (i % 2 == 1).then_some(131047),
                (i % 2 == 1).then_some("Re-engagement message"),
            ],
        )
        .unwrap();
        c.execute(
            "INSERT INTO events (kind, token, reference, detail, received_at) VALUES ('alert', ?1, NULL, ?2, '2026-03-01T09:00:00.000Z')",
            rusqlite::params![token, format!("{{\"n\":{i}}}")],
        )
        .unwrap();
        c.execute(
            "INSERT INTO webhook_inbox (body, received_at, processed_at) VALUES (?1, '2026-03-01T09:00:00.000Z', ?2)",
            rusqlite::params![vec![0xffu8, 0x00, i as u8, b'{'], (i % 2 == 0).then_some("2026-03-01T09:00:02.000Z")],
        )
        .unwrap();
        c.execute(
            "INSERT INTO media (token, field, media_id, file_name, kind, cdn_url, state, attempts, next_attempt_at, size, created_at)
             VALUES (?1, 'photo', ?2, 'IMG 1.jpg', 'cdn', 'https://cdn.example/x', 'pending', ?3, '2026-03-01T09:00:00.000Z', NULL, '2026-03-01T09:00:00.000Z')",
            rusqlite::params![token, format!("media-{i}"), i as i64],
        )
        .unwrap();
    }
    // Ids with gaps, as deleted rows leave them.
    c.execute("DELETE FROM events WHERE id = 3", []).unwrap();
}

/// The PostgreSQL URL of `db` with [`PASSWORD`] in it.
fn with_password(db: &TestDb) -> String {
    let DbTarget::Postgres(u) = db.target() else {
        unreachable!("a PostgreSQL test database")
    };
    let mut url = url::Url::parse(u.expose()).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    url.to_string()
}

fn migrate(env: &Env, source: &Path, url: &str, extra: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env("FLOWCTL_DB", source)
        .args(["db", "migrate-to", url])
        .args(extra);
    let out = run(c, LIMIT);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(PASSWORD), "the password was shown: {all}");
    out
}

/// `copied` per table from the command's table (`table sqlite postgres copied`).
fn copied(out: &Output) -> Vec<(String, u64, u64, u64)> {
    stdout(out)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

/// The SQLite columns of `table`.
fn columns(file: &Path, table: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(file).unwrap();
    let mut q = c.prepare(&format!("PRAGMA table_info({table})")).unwrap();
    q.query_map([], |r| r.get::<_, String>("name"))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Every row of every table is the same on both sides, field by field.
fn assert_same_rows(file: &Path, pg: &DbTarget) {
    let (mut sqlite, mut postgres) = (Sql::open(&DbTarget::Sqlite(file.into())), Sql::open(pg));
    for (table, order) in TABLES {
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY {order}",
            columns(file, table).join(", ")
        );
        let (a, b) = (sqlite.rows(&sql, &[]), postgres.rows(&sql, &[]));
        assert!(!a.is_empty(), "{table} has rows to copy");
        assert_eq!(a, b, "{table}");
    }
}

/// The test database on the PostgreSQL server, or `None` (and why) without one.
fn postgres_target(env: &Env) -> Option<TestDb> {
    if postgres_server().is_none() {
        eprintln!("skipped: no PostgreSQL (set FLOWCTL_TEST_POSTGRES; scripts/test starts one)");
        return None;
    }
    Some(TestDb::new(env.dir.path(), "unused.db"))
}

#[test]
fn every_table_is_copied_with_its_ids_and_a_rerun_copies_nothing() {
    let env = Env::new();
    let Some(target) = postgres_target(&env) else {
        return;
    };
    let file = env.path("old.db");
    fill(&file);
    let url = with_password(&target);
    let out = migrate(&env, &file, &url, &["--batch", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = copied(&out);
    assert_eq!(
        first.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        TABLES.iter().map(|t| t.0).collect::<Vec<_>>()
    );
    for (table, sqlite, postgres, n) in &first {
        assert!(*sqlite > 0, "{table}");
        assert_eq!((postgres, n), (sqlite, sqlite), "{table}");
    }
    assert_same_rows(&file, &target.target());

    // New rows get ids after the copied ones (the sequences moved past them).
    drop(Store::open(target.target()).unwrap());
    let last = Sql::open(&DbTarget::Sqlite(file.clone())).int("SELECT MAX(id) FROM events", &[]);
    let mut pg = Sql::open(&target.target());
    let next = pg.int(
        "INSERT INTO events (kind, detail, received_at) VALUES ('alert', 'after the move', '2026-03-02T00:00:00.000Z') RETURNING id",
        &[],
    );
    assert_eq!(next, last + 1);
    let events = first.iter().find(|r| r.0 == "events").unwrap().1;

    let again = migrate(&env, &file, &url, &[]);
    assert_eq!(again.status.code(), Some(1), "events now has one more row");
    for (table, sqlite, postgres, n) in copied(&again) {
        assert_eq!(n, 0, "{table}: a rerun copies nothing");
        if table != "events" {
            assert_eq!(sqlite, postgres, "{table}");
        }
    }
    let differ = format!(
        "events: {events} rows in SQLite, {} in PostgreSQL",
        events + 1
    );
    assert!(stderr(&again).contains(&differ), "{}", stderr(&again));
}

#[test]
fn an_interrupted_copy_completes_on_the_next_run() {
    let env = Env::new();
    let Some(target) = postgres_target(&env) else {
        return;
    };
    let file = env.path("old.db");
    fill(&file);
    let url = with_password(&target);
    assert_eq!(migrate(&env, &file, &url, &[]).status.code(), Some(0));
    // As a run stopped part way leaves it: some tables whole, others partly or not copied.
    let mut pg = Sql::open(&target.target());
    let responses = pg.execute("DELETE FROM responses WHERE duplicate_of IS NULL AND id > 6 AND id NOT IN (SELECT duplicate_of FROM responses WHERE duplicate_of IS NOT NULL)", &[]);
    let media = pg.execute("DELETE FROM media", &[]);
    let suppressions = pg.execute("DELETE FROM suppressions", &[]);
    let inbox = pg.execute("DELETE FROM webhook_inbox WHERE id > 3", &[]);
    assert!(responses > 0 && inbox > 0);

    let out = migrate(&env, &file, &url, &["--batch", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let counts = copied(&out);
    let n = |t: &str| counts.iter().find(|r| r.0 == t).unwrap().3;
    assert_eq!(
        (
            n("tokens"),
            n("responses"),
            n("media"),
            n("suppressions"),
            n("webhook_inbox")
        ),
        (0, responses, media, suppressions, inbox),
        "only the missing rows: {counts:?}"
    );
    assert_same_rows(&file, &target.target());
}

#[test]
fn a_bad_url_is_a_usage_error_that_hides_the_password() {
    let env = Env::new();
    let file = env.path("old.db");
    drop(Store::open(file.as_path()).unwrap());
    for url in [
        format!("postgres://flowctl:{PASSWORD}@127.0.0.1:notaport/x"),
        "not-a-url.db".to_string(),
    ] {
        let out = migrate(&env, &file, &url, &[]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        assert!(stderr(&out).contains("postgres"), "{}", stderr(&out));
    }
    // The source must be a SQLite file that exists.
    let out = migrate(
        &env,
        &env.path("missing.db"),
        "postgres://flowctl@127.0.0.1/x",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!env.path("missing.db").exists());
}

#[test]
fn an_unreachable_server_fails_without_showing_the_password() {
    let env = Env::new();
    let file = env.path("old.db");
    fill(&file);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = migrate(
        &env,
        &file,
        &format!("postgres://flowctl:{PASSWORD}@127.0.0.1:{port}/x?connect_timeout=2"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}
