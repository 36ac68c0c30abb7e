//! The read areas give the same answers on both backends: one set of rows, written with the
//! same SQL into a SQLite and a PostgreSQL database, must read back equal through every read
//! of the seam (tokens, API, stats, export, suppressions), same order included.

use super::test_util::temp_database;
use super::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    ApiQueries, ExportFilter, ExportQueries, ResponsesQuery, StatsQueries, StoreError,
    StoredResponse, SuppressionQueries, TokenQueries,
};
use crate::token::FlowToken;

const CAMPAIGNS: [&str; 3] = ["spring", "Autumn", "été"];

/// `0` → `'00'`: SQL text of a two-digit field.
fn two(n: usize) -> String {
    format!("{n:02}")
}

/// Rows in every table the reads look at, covering each state, delivery, failure, a replaced
/// token, duplicates, unmatched completions, damaged answers, times that tie, and media.
fn seed() -> String {
    let states = [
        "pending", "sending", "sent", "failed", "unknown", "deferred",
    ];
    let deliveries = [
        ("NULL", 0),
        ("'sent'", 1),
        ("'delivered'", 2),
        ("'read'", 3),
        ("'failed'", 1),
    ];
    let mut sql = String::new();
    let mut response_id = 0;
    let mut tokens = Vec::new();
    for i in 0..90 {
        let token = FlowToken::generate();
        let token = token.as_str();
        tokens.push(token.to_string());
        let campaign = CAMPAIGNS[i % 3];
        let state = states[i % 6];
        let accepted = matches!(state, "sent" | "failed" | "deferred") && i % 4 != 1;
        let (delivery, rank) = if accepted {
            deliveries[(i / 6) % 5]
        } else {
            ("NULL", 0)
        };
        let message_id = if accepted {
            format!("'wamid.{i}'")
        } else {
            "NULL".into()
        };
        let error_code = if state == "failed" && i % 2 == 0 {
            "131026"
        } else {
            "NULL"
        };
        let error_message = if state == "failed" {
            "'refused'"
        } else {
            "NULL"
        };
        let delivery_code = if delivery == "'failed'" && i % 3 != 0 {
            "131047"
        } else {
            "NULL"
        };
        let after = i64::from(delivery == "'failed'" && i % 4 == 0);
        let superseded = if matches!(state, "failed" | "deferred") && i % 7 == 0 {
            format!("'{}'", FlowToken::generate())
        } else {
            "NULL".into()
        };
        let sent_at = if accepted {
            format!("'2026-01-01T01:00:{}.000Z'", two(i % 60))
        } else {
            "NULL".into()
        };
        let not_before = if state == "deferred" {
            "'2026-01-02T00:00:00.000Z'"
        } else {
            "NULL"
        };
        let origin = if i % 2 == 0 { "bulk" } else { "send" };
        // Distinct issue times (ties are ordered differently, see `failed_sends`).
        sql.push_str(&format!(
            "INSERT INTO tokens (token, phone, customer_name, campaign, origin, initial_data,
                state, attempts, message_id, wa_id, error_code, error_message, error_retryable,
                delivery, delivery_rank, delivery_at, delivery_error_code, delivery_error_title,
                created_at, expires_at, sent_at, not_before, failed_after_acceptance,
                superseded_by)
             VALUES ('{token}', '+2126100590{i2}', 'Name {i}', '{campaign}', '{origin}',
                '{{\"z\": {i}, \"a\": 1}}', '{state}', {i}, {message_id}, NULL, {error_code},
                {error_message}, {retryable}, {delivery}, {rank}, NULL, {delivery_code},
                CASE WHEN {delivery_code} IS NULL THEN NULL ELSE 'undeliverable' END,
                '2026-01-01T00:{min}:{sec}.000Z', '2099-01-01T00:00:00.000Z', {sent_at},
                {not_before}, {after}, {superseded});\n",
            i2 = two(i),
            retryable = i % 2,
            min = two(i / 60),
            sec = two(i % 60),
        ));
        // A completion for most accepted tokens, times tying in fours.
        if accepted && (i / 3) % 3 != 2 {
            response_id += 1;
            let answers = match i % 5 {
                0 => format!("{{\"q{}\": {i}, \"name\": \"x\", \"z\": true}}", i % 4),
                1 => "{\"b\": 1, \"a\": [1, 2], \"q0\": null}".to_string(),
                2 => "[1, 2]".to_string(),
                3 => "not json".to_string(),
                _ => "{\"é\": \"ü\", \"Z\": {\"inner\": 1}}".to_string(),
            };
            let at = format!("'2026-01-01T02:{}:00.{:03}Z'", two(i / 8), i % 4);
            sql.push_str(&format!(
                "INSERT INTO responses (id, token, phone, sender, customer_name, campaign,
                    source, answers, matched, sender_mismatch, duplicate_of, event_id,
                    completed_at, received_at)
                 VALUES ({response_id}, '{token}', '+2126100590{i2}', NULL, 'Name {i}',
                    '{campaign}', 'endpoint', '{answers}', 1, {mismatch}, NULL, NULL, {at},
                    '2026-01-01T03:00:00.000Z');\n",
                i2 = two(i),
                mismatch = i % 2,
            ));
            if i % 4 == 0 {
                // The same completion from the webhook, kept as a duplicate.
                let primary = response_id;
                response_id += 1;
                sql.push_str(&format!(
                    "INSERT INTO responses (id, token, phone, customer_name, campaign, source,
                        answers, matched, duplicate_of, event_id, completed_at, received_at)
                     VALUES ({response_id}, '{token}', '+2126100590{i2}', 'Name {i}',
                        '{campaign}', 'webhook', '{{\"dup\": 1}}', 1, {primary}, 'wamid.d{i}',
                        {at}, '2026-01-01T03:00:00.000Z');\n",
                    i2 = two(i),
                ));
            }
            if i % 10 == 0 {
                sql.push_str(&format!(
                    "INSERT INTO media (token, field, media_id, next_attempt_at, created_at)
                     VALUES ('{token}', 'photo', 'm{i}', '2026-01-01T00:00:00.000Z',
                        '2026-01-01T00:00:00.000Z');\n"
                ));
            }
        }
    }
    // Completions joined to no token: one with a campaign the webhook knew, one without.
    for (k, campaign) in [(0, "'spring'"), (1, "NULL"), (2, "'nowhere'")] {
        response_id += 1;
        sql.push_str(&format!(
            "INSERT INTO responses (id, token, phone, sender, campaign, source, answers,
                matched, event_id, completed_at, received_at)
             VALUES ({response_id}, 'flow_unknown{k}', '+21260000000{k}', '21260000000{k}',
                {campaign}, 'webhook', '{{\"late\": {k}, \"b\": 0}}', 0, 'wamid.u{k}',
                '2026-01-01T02:0{k}:00.001Z', '2026-01-01T03:00:00.000Z');\n"
        ));
    }
    for (k, status) in ["sent", "delivered", "read"].iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO message_statuses (message_id, status, at, matched, received_at)
             VALUES ('wamid.{k}', '{status}', '2026-01-01T00:00:00.000Z', 1,
                '2026-01-01T00:00:00.000Z');\n"
        ));
    }
    for (k, key) in ["+212600000009", "+212600000001", "+5511987654321"]
        .iter()
        .enumerate()
    {
        // Two entries of one time: the key decides, byte by byte.
        sql.push_str(&format!(
            "INSERT INTO suppressions (key, phone, reason, source, at)
             VALUES ('{key}', '{key}', 'asked', 'manual', '2026-01-0{}T00:00:00.000Z');\n",
            1 + k / 2
        ));
    }
    sql
}

/// The same rows in a fresh SQLite and a fresh PostgreSQL database (`None` without a server).
/// The PostgreSQL database sorts text in English (ICU `en-US`) when the server has ICU, so
/// that an order left to the database's collation would show (SQLite compares bytes).
fn both(test: &str, sql: &str) -> Option<(tempfile::TempDir, SqliteStore, PgStore)> {
    let url = temp_database(test)?;
    let name: String = PgStore::open(&url)
        .unwrap()
        .value("SELECT current_database()::text", &[])
        .unwrap();
    let english = format!("{name}_en");
    let url = match PgStore::open(&url).unwrap().batch(&format!(
        "CREATE DATABASE {english} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )) {
        Ok(()) => url.with_database(&english),
        Err(e) => {
            eprintln!("{test}: no ICU collation ({e}); comparing on the default one");
            url
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteStore::open(&dir.path().join("parity.db")).unwrap();
    sqlite.write(|tx| tx.execute_batch(sql)).unwrap();
    let pg = PgStore::open(&url).unwrap();
    pg.batch(sql).unwrap();
    Some((dir, sqlite, pg))
}

fn export_rows(s: &dyn ExportQueries, f: &ExportFilter) -> (Vec<String>, Vec<StoredResponse>) {
    let snap = s.export_snapshot().unwrap();
    let keys = snap.answer_keys(f).unwrap();
    let mut rows = Vec::new();
    snap.for_each_response::<StoreError>(f, |r| {
        rows.push(r);
        Ok(())
    })
    .unwrap();
    (keys, rows)
}

fn filters() -> Vec<ExportFilter> {
    let mut out = Vec::new();
    for include_unmatched in [false, true] {
        for since in [None, Some("2026-01-01T02:05:00.000Z".to_string())] {
            for campaign in [None, Some("spring".to_string()), Some("été".to_string())] {
                out.push(ExportFilter {
                    since: since.clone(),
                    campaign,
                    include_unmatched,
                });
            }
        }
    }
    out
}

#[test]
fn every_read_answers_the_same_on_both_backends() {
    let Some((_dir, sqlite, pg)) = both("parity", &seed()) else {
        return;
    };

    // Tokens.
    for campaign in CAMPAIGNS {
        let (a, b) = (
            sqlite.tokens_of_campaign(campaign).unwrap(),
            pg.tokens_of_campaign(campaign).unwrap(),
        );
        assert_eq!(a.len(), 30);
        assert_eq!(a, b, "{campaign}");
        for t in &a {
            assert_eq!(pg.find_token(t.token.as_str()).unwrap().as_ref(), Some(t));
            if let Some(m) = &t.message_id {
                assert_eq!(pg.find_token_by_message_id(m).unwrap().as_ref(), Some(t));
            }
            let wa_id = t.phone.e164().trim_start_matches('+');
            assert_eq!(
                sqlite.open_token_of_whatsapp_id(wa_id).unwrap(),
                pg.open_token_of_whatsapp_id(wa_id).unwrap()
            );
        }
    }

    // Stats.
    for campaign in [None, Some("spring"), Some("Autumn"), Some("none")] {
        let (a, b) = (
            sqlite.funnel(campaign).unwrap(),
            pg.funnel(campaign).unwrap(),
        );
        assert_eq!(a, b, "{campaign:?}");
    }
    let total = pg.funnel(None).unwrap();
    assert_eq!(total.total.issued, 90);
    assert!(total.total.failed > 0 && total.total.completed > 0 && total.total.replaced > 0);
    assert!(total.total.median_completion_seconds.is_some());
    assert_eq!(total.total.unmatched, 3);
    assert_eq!(total.statuses_received, 3);
    assert_eq!(
        pg.campaign_names().unwrap(),
        sqlite.campaign_names().unwrap()
    );
    assert_eq!(pg.campaign_names().unwrap(), ["Autumn", "spring", "été"]);

    // Failures.
    for campaign in [None, Some("Autumn")] {
        let (a, b) = (
            sqlite.failed_sends(campaign).unwrap(),
            pg.failed_sends(campaign).unwrap(),
        );
        assert!(!a.is_empty());
        assert_eq!(a, b, "{campaign:?}");
    }

    // The CRM API, page by page.
    for (since, campaign) in [
        (None, None),
        (Some("2026-01-01T02:03:00.000Z"), None),
        (None, Some("été")),
    ] {
        let mut q = ResponsesQuery {
            since: since.map(str::to_string),
            campaign: campaign.map(str::to_string),
            after: None,
            limit: 2,
        };
        let mut pages = 0;
        loop {
            let (a, b) = (
                sqlite.api_responses(&q).unwrap(),
                pg.api_responses(&q).unwrap(),
            );
            assert_eq!(a, b, "{q:?}");
            pages += 1;
            match a.next {
                Some(next) => q.after = Some(next),
                None => break,
            }
        }
        assert!(pages > 1, "{since:?} {campaign:?}");
    }

    // Export: keys in first-seen order, rows in export order.
    for f in filters() {
        let (a, b) = (export_rows(&sqlite, &f), export_rows(&pg, &f));
        assert_eq!(a, b, "{f:?}");
        let snap = (
            sqlite.export_snapshot().unwrap(),
            pg.export_snapshot().unwrap(),
        );
        assert_eq!(
            snap.0.has_media(&f).unwrap(),
            snap.1.has_media(&f).unwrap(),
            "{f:?}"
        );
    }
    let (keys, rows) = export_rows(&pg, &ExportFilter::default());
    assert!(keys.len() > 5 && rows.len() > 10, "{keys:?} {}", rows.len());

    // Suppressions.
    assert_eq!(pg.suppressions().unwrap(), sqlite.suppressions().unwrap());
    assert_eq!(pg.suppressions().unwrap()[0].phone, "+212600000001");
}

#[test]
fn an_export_streams_past_its_pages_and_stops_when_asked() {
    // More rows than one keyset page, most of them completed at the same time (the id
    // decides between them, across a page boundary).
    let n = 2 * super::export::PAGE as usize + 123;
    let mut sql = String::new();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
        sql.push_str(
            "INSERT INTO responses (id, token, source, answers, matched, completed_at,
                received_at) VALUES ",
        );
        let values: Vec<String> = chunk
            .iter()
            .map(|id| {
                let at = if id % 1000 == 0 { "02" } else { "01" };
                format!(
                    "({id}, 'flow_{id}', 'endpoint', '{{\"k{}\": {id}, \"all\": 1}}', 1,
                      '2026-01-01T00:00:{at}.000Z', '2026-01-01T00:00:00.000Z')",
                    id % 7
                )
            })
            .collect();
        sql.push_str(&values.join(", "));
        sql.push_str(";\n");
    }
    let Some((_dir, sqlite, pg)) = both("export pages", &sql) else {
        return;
    };
    let f = ExportFilter::default();
    let (a, b) = (export_rows(&sqlite, &f), export_rows(&pg, &f));
    assert_eq!(b.1.len(), n);
    assert_eq!(a, b);
    let ids: std::collections::HashSet<i64> = b.1.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), n, "no row twice");

    // A callback that stops is not called again.
    let snap = pg.export_snapshot().unwrap();
    let mut seen = 0;
    snap.for_each_response::<StoreError>(&f, |_| {
        seen += 1;
        if seen == 3 {
            Err(StoreError::Task("enough".into()))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(seen, 3);
}

#[test]
fn an_export_sees_one_snapshot_and_lets_the_store_be_used_meanwhile() {
    let sql = "INSERT INTO responses (id, token, source, answers, matched, completed_at,
                   received_at)
               VALUES (1, 'flow_a', 'endpoint', '{\"first\": 1}', 1,
                   '2026-01-01T00:00:01.000Z', '2026-01-01T00:00:01.000Z');";
    let Some((_dir, _sqlite, pg)) = both("export snapshot", sql) else {
        return;
    };
    let writer = PgStore::open(pg.url()).unwrap();
    let f = ExportFilter::default();
    let snap = pg.export_snapshot().unwrap();
    assert_eq!(snap.answer_keys(&f).unwrap(), ["first"]);
    // Another replica stores a completion between the key pass and the row pass.
    writer
        .execute(
            "INSERT INTO responses (id, token, source, answers, matched, completed_at,
                 received_at)
             VALUES (2, 'flow_b', 'endpoint', '{\"second\": 1}', 1,
                 '2026-01-01T00:00:02.000Z', '2026-01-01T00:00:02.000Z')",
            &[],
        )
        .unwrap();
    let mut rows = Vec::new();
    snap.for_each_response::<StoreError>(&f, |r| {
        // The store answers other reads while the rows stream (no borrow is held).
        pg.find_token("flow_a").unwrap();
        rows.push(r.answers.keys().cloned().collect::<Vec<_>>());
        Ok(())
    })
    .unwrap();
    assert_eq!(rows, [["first"]]);
    drop(snap);
    // The next export sees it.
    let snap = pg.export_snapshot().unwrap();
    assert_eq!(snap.answer_keys(&f).unwrap(), ["first", "second"]);
    let mut n = 0;
    snap.for_each_response::<StoreError>(&f, |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 2);
    drop(snap);
    // The snapshot ended: the connection is usable for writes again.
    pg.execute("DELETE FROM responses WHERE id = 2", &[])
        .unwrap();
}

#[test]
fn an_export_whose_connection_was_lost_fails_instead_of_reading_past_its_snapshot() {
    let sql = "INSERT INTO responses (id, token, source, answers, matched, completed_at,
                   received_at)
               VALUES (1, 'flow_a', 'endpoint', '{\"first\": 1}', 1,
                   '2026-01-01T00:00:01.000Z', '2026-01-01T00:00:01.000Z');";
    let Some((_dir, _sqlite, pg)) = both("export lost connection", sql) else {
        return;
    };
    let killer = PgStore::open(pg.url()).unwrap();
    let f = ExportFilter::default();
    let snap = pg.export_snapshot().unwrap();
    assert_eq!(snap.answer_keys(&f).unwrap(), ["first"]);
    let pid: i32 = pg.value("SELECT pg_backend_pid()", &[]).unwrap();
    killer
        .value::<bool>("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // The call that finds the connection gone fails; the next one, on a new connection, is
    // outside the snapshot and refuses to read on.
    for _ in 0..2 {
        let err = snap
            .for_each_response::<StoreError>(&f, |_| Ok(()))
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }
    drop(snap);
    // A new export works on the new connection.
    let (keys, rows) = export_rows(&pg, &f);
    assert_eq!((keys.len(), rows.len()), (1, 1));
}
