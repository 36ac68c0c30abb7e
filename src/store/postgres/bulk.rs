//! PostgreSQL queries for the `bulk` area of the store seam: the SQLite behaviour (see
//! `sqlite/bulk.rs`), plus what lets several workers share one campaign.
//!
//! A worker CLAIMS every row it is about to send (`claimed_by`, `claimed_until`): a row is
//! issued or taken over under its row lock (`FOR UPDATE SKIP LOCKED`: a row another worker is
//! busy with right now is simply "held"), a row another live worker holds is left to it, and
//! `sending` is set only while the claim is still the worker's. Whoever of two workers gets
//! the row lock first wins it; the other sees either a claim it must leave alone or a row
//! already `sending`/`sent`, which the campaign's rules never send again. The per-phone
//! unique index `tokens_bulk_member` stays the last guard: one member per (campaign, phone).

use std::sync::LazyLock;
use std::time::Duration;

use postgres::Transaction;

use super::tokens::{record_outcome_tx, record_sent_tx};
use super::PgStore;
use crate::phone::Phone;
use crate::store::{
    BulkMember, BulkOutcome, BulkQueries, Issued, NewToken, Permits, Result, SendState,
    RATE_LIMIT_PAUSE, RATE_QUIET, RATE_RECOVERY, RATE_SAME_EPISODE,
};
use crate::time::Timestamp;

/// The worker a handle claims rows for ([`BulkQueries::bulk_join`]).
#[derive(Clone, Debug)]
pub(crate) struct BulkWorker {
    id: String,
    lease_secs: f64,
}

type PgResult<T> = std::result::Result<T, postgres::Error>;

const MEMBER_SQL: &str =
    "SELECT token, state, COALESCE(error_retryable, 0) AS retryable, error_message, error_code,
            failed_after_acceptance, not_before, message_id
     FROM tokens WHERE campaign = $1 AND phone = $2 AND origin = 'bulk' AND superseded_by IS NULL";

/// The member row, locked, with whether another live worker holds it; rows another
/// transaction has locked right now are skipped (they are being worked on: held).
const CLAIMABLE_SQL: &str =
    "SELECT token, state, COALESCE(error_retryable, 0) AS retryable, error_message, error_code,
            failed_after_acceptance, not_before, message_id,
            (claimed_by IS NOT NULL AND claimed_by <> $3
             AND claimed_until IS NOT NULL AND claimed_until > clock_timestamp()) AS held
     FROM tokens WHERE campaign = $1 AND phone = $2 AND origin = 'bulk' AND superseded_by IS NULL
     FOR UPDATE SKIP LOCKED";

const LEASE: &str = "clock_timestamp() + $2 * interval '1 second'";

fn member_from_row(r: &postgres::Row) -> PgResult<BulkMember> {
    Ok(BulkMember {
        token: r.try_get("token")?,
        state: r.try_get("state")?,
        retryable: r.try_get::<_, i64>("retryable")? != 0,
        error: r.try_get("error_message")?,
        error_code: r.try_get("error_code")?,
        failed_after_acceptance: r.try_get::<_, i64>("failed_after_acceptance")? != 0,
        not_before: r.try_get("not_before")?,
        message_id: r.try_get("message_id")?,
    })
}

fn json_text(m: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(m.clone()).to_string()
}

/// Inserts a `pending` bulk token (claimed by `worker` when one is given); 0 when the token
/// or the campaign's member for the phone exists already (SQLite's `ON CONFLICT DO NOTHING`).
fn insert_tx(tx: &mut Transaction<'_>, t: &NewToken, worker: Option<&BulkWorker>) -> PgResult<u64> {
    let now = Timestamp::now();
    let data = t.initial_data.as_ref().map(json_text);
    let (by, secs) = match worker {
        Some(w) => (Some(w.id.as_str()), w.lease_secs),
        None => (None, 0.0),
    };
    tx.execute(
        "INSERT INTO tokens (token, phone, customer_name, campaign, origin, initial_data, state,
                             created_at, expires_at, claimed_by, claimed_until)
         VALUES ($1, $3, $4, $5, $6, $7, $8, $9, $10, $11::text,
                 CASE WHEN $11::text IS NULL THEN NULL
                      ELSE clock_timestamp() + $2 * interval '1 second' END)
         ON CONFLICT DO NOTHING",
        &[
            &t.token,
            &secs,
            &t.phone,
            &t.customer_name,
            &t.campaign,
            &t.origin,
            &data,
            &SendState::Pending,
            &now,
            &now.saturating_add(t.ttl),
            &by,
        ],
    )
}

fn add_attempts_tx(tx: &mut Transaction<'_>, token: &str, extra: i64) -> PgResult<()> {
    if extra > 0 {
        tx.execute(
            "UPDATE tokens SET attempts = attempts + $2 WHERE token = $1",
            &[&token, &extra],
        )?;
    }
    Ok(())
}

/// What issuing one row found: inserted, existing (claimed now when shared), or held.
fn issue_one(
    tx: &mut Transaction<'_>,
    t: &NewToken,
    worker: Option<&BulkWorker>,
) -> PgResult<Issued> {
    if insert_tx(tx, t, worker)? == 1 {
        return Ok(Issued::New);
    }
    let member = match worker {
        None => tx
            .query_opt(MEMBER_SQL, &[&t.campaign, &t.phone])?
            .map(|r| member_from_row(&r))
            .transpose()?,
        Some(w) => match tx.query_opt(CLAIMABLE_SQL, &[&t.campaign, &t.phone, &w.id])? {
            Some(r) if r.try_get::<_, bool>("held")? => return Ok(Issued::Held),
            Some(r) => {
                let m = member_from_row(&r)?;
                tx.execute(
                    &format!("UPDATE tokens SET claimed_by = $1, claimed_until = {LEASE} WHERE token = $3"),
                    &[&w.id, &w.lease_secs, &m.token],
                )?;
                Some(m)
            }
            // Locked by another worker's transaction at this very moment: held, unless
            // there is no member at all (the token's primary key collided, below).
            None => {
                let exists = tx
                    .query_opt(MEMBER_SQL, &[&t.campaign, &t.phone])?
                    .is_some();
                if exists {
                    return Ok(Issued::Held);
                }
                None
            }
        },
    };
    if let Some(m) = &member {
        let data = t.initial_data.as_ref().map(json_text);
        tx.execute(
            "UPDATE tokens SET customer_name = $2, initial_data = $3
             WHERE token = $1
               AND (state = 'pending' OR (state = 'failed' AND error_retryable = 1))",
            &[&m.token, &t.customer_name, &data],
        )?;
    }
    // No bulk row for the pair means the insert lost on the token's primary key (a 2^-128
    // collision): a retryable failure rather than a send without a stored token.
    Ok(Issued::Existing(member.unwrap_or(BulkMember {
        token: t.token.as_str().to_string(),
        state: SendState::Failed,
        retryable: true,
        error: Some("token collision; run again".into()),
        error_code: None,
        failed_after_acceptance: false,
        not_before: None,
        message_id: None,
    })))
}

impl BulkQueries for PgStore {
    fn bulk_issue(&mut self, rows: &[NewToken]) -> Result<Vec<Issued>> {
        let worker = self.bulk_worker.clone();
        self.write(|tx| {
            // Rows are locked in phone order, whatever the file's order: two workers issuing
            // overlapping chunks then never wait for each other in a circle (a deadlock).
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by(|&a, &b| rows[a].phone.e164().cmp(rows[b].phone.e164()));
            let mut out: Vec<Option<Issued>> = vec![None; rows.len()];
            for i in order {
                out[i] = Some(issue_one(tx, &rows[i], worker.as_ref())?);
            }
            Ok(out.into_iter().flatten().collect())
        })
    }

    fn bulk_commit(&mut self, outcomes: &[BulkOutcome], sending: &[String]) -> Result<Vec<String>> {
        if outcomes.is_empty() && sending.is_empty() {
            return Ok(Vec::new());
        }
        let worker = self.bulk_worker.clone();
        self.write(|tx| {
            let mut settled = Vec::with_capacity(outcomes.len());
            for o in outcomes {
                match o {
                    BulkOutcome::Sent {
                        token,
                        message_id,
                        wa_id,
                        extra_attempts,
                    } => {
                        record_sent_tx(tx, token, message_id, wa_id.as_deref())?;
                        add_attempts_tx(tx, token, *extra_attempts)?;
                        settled.push(token.clone());
                    }
                    BulkOutcome::NotSent {
                        token,
                        state,
                        failure,
                        extra_attempts,
                    } => {
                        record_outcome_tx(tx, token, *state, failure)?;
                        add_attempts_tx(tx, token, *extra_attempts)?;
                        settled.push(token.clone());
                    }
                    BulkOutcome::Deferred {
                        token,
                        until,
                        failure,
                        extra_attempts,
                    } => {
                        record_outcome_tx(tx, token, SendState::Deferred, failure)?;
                        tx.execute(
                            "UPDATE tokens SET not_before = $2 WHERE token = $1",
                            &[&token, until],
                        )?;
                        add_attempts_tx(tx, token, *extra_attempts)?;
                        settled.push(token.clone());
                    }
                }
            }
            let mut lost = Vec::new();
            match &worker {
                None => {
                    for token in sending {
                        tx.execute(
                            "UPDATE tokens SET state = 'sending', attempts = attempts + 1
                             WHERE token = $1",
                            &[token],
                        )?;
                    }
                }
                Some(w) => {
                    // A settled row is nobody's any more.
                    if !settled.is_empty() {
                        tx.execute(
                            "UPDATE tokens SET claimed_until = NULL
                             WHERE token = ANY($1) AND claimed_by = $2",
                            &[&settled, &w.id],
                        )?;
                    }
                    // Only while the claim is still this worker's: a worker whose lease ran
                    // out and whose row another took over must not send it.
                    for token in sending {
                        let n = tx.execute(
                            &format!(
                                "UPDATE tokens SET state = 'sending', attempts = attempts + 1,
                                        claimed_until = {LEASE}
                                 WHERE token = $1 AND claimed_by = $3"
                            ),
                            &[token, &w.lease_secs, &w.id],
                        )?;
                        if n == 0 {
                            lost.push(token.clone());
                        }
                    }
                }
            }
            Ok(lost)
        })
    }

    fn bulk_supersede(&mut self, pairs: &[(String, NewToken)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let worker = self.bulk_worker.clone();
        self.write(|tx| {
            for (old, new) in pairs {
                tx.execute(
                    "UPDATE tokens SET superseded_by = $2, claimed_until = NULL WHERE token = $1",
                    &[old, &new.token],
                )?;
                insert_tx(tx, new, worker.as_ref())?;
            }
            Ok(())
        })
    }

    fn bulk_members(&self, campaign: &str, phones: &[Phone]) -> Result<Vec<Option<BulkMember>>> {
        phones
            .iter()
            .map(|p| {
                let row = self.row(MEMBER_SQL, &[&campaign, p])?;
                row.map(|r| member_from_row(&r).map_err(|e| self.err(e)))
                    .transpose()
            })
            .collect()
    }

    fn bulk_state_counts(&self, campaign: &str) -> Result<Vec<(SendState, i64)>> {
        let rows = self.rows(
            "SELECT state, COUNT(*) AS n FROM tokens WHERE campaign = $1 AND origin = 'bulk'
             GROUP BY state ORDER BY state COLLATE \"C\"",
            &[&campaign],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect::<PgResult<_>>()
            .map_err(|e| self.err(e))
    }

    fn bulk_shared(&self) -> bool {
        true
    }

    fn bulk_join(&mut self, worker: &str, lease: Duration) -> Result<()> {
        self.bulk_worker = Some(BulkWorker {
            id: worker.to_string(),
            lease_secs: lease.as_secs_f64(),
        });
        Ok(())
    }

    fn bulk_renew(&mut self) -> Result<u64> {
        let Some(w) = self.bulk_worker.clone() else {
            return Ok(0);
        };
        self.execute(
            &format!(
                "UPDATE tokens SET claimed_until = {LEASE}
                 WHERE claimed_by = $1 AND claimed_until IS NOT NULL"
            ),
            &[&w.id, &w.lease_secs],
        )
    }

    fn bulk_release(&mut self, tokens: &[String]) -> Result<()> {
        let Some(w) = self.bulk_worker.clone() else {
            return Ok(());
        };
        if tokens.is_empty() {
            return Ok(());
        }
        self.execute(
            "UPDATE tokens SET claimed_until = NULL WHERE token = ANY($1) AND claimed_by = $2",
            &[&tokens, &w.id],
        )
        .map(drop)
    }

    fn bulk_leave(&mut self) -> Result<()> {
        let Some(w) = self.bulk_worker.clone() else {
            return Ok(());
        };
        self.execute(
            "UPDATE tokens SET claimed_until = NULL
             WHERE claimed_by = $1 AND claimed_until IS NOT NULL",
            &[&w.id],
        )
        .map(drop)
    }

    fn bulk_take_permits(
        &mut self,
        key: &str,
        rate: f64,
        burst: f64,
        want: u32,
    ) -> Result<Permits> {
        // One statement, one round trip (it is on the send path): the row is locked, refilled
        // by the time passed on the database's clock at the rate in force, and taken from,
        // unless a rate-limit answer paused the number. A caller that waited for the lock
        // brings an earlier time: it credits nothing twice (GREATEST), so the bucket never
        // holds more than the rate allows.
        static TAKE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t),
                 cur AS (
                    SELECT b.tokens, b.at, b.cut_at, now.t AS nt, {in_force} AS eff
                    FROM bulk_rate b, now WHERE b.phone_number_id = $1 FOR UPDATE OF b),
                 avail AS (
                    SELECT LEAST($3, tokens + GREATEST(0, nt - at) * eff) AS avail,
                           GREATEST(at, nt) AS t, eff,
                           GREATEST(0, COALESCE(cut_at + $7::float8 - nt, 0)) AS paused
                    FROM cur),
                 take AS (
                    SELECT CASE WHEN paused > 0 THEN 0 ELSE LEAST($4, floor(avail)) END AS n
                    FROM avail)
                 UPDATE bulk_rate SET rate = $2, burst = $3,
                        tokens = avail.avail - take.n, at = avail.t
                 FROM avail, take WHERE phone_number_id = $1
                 RETURNING take.n AS granted, avail.avail AS avail, avail.eff AS eff,
                           avail.paused AS paused",
                in_force = in_force("b", "now.t", "$2", "$5", "$6"),
            )
        });
        let want_f = f64::from(want);
        let (recovery, quiet, pause) = (
            RATE_RECOVERY,
            RATE_QUIET.as_secs_f64(),
            RATE_LIMIT_PAUSE.as_secs_f64(),
        );
        let params: [&(dyn postgres::types::ToSql + Sync); 7] =
            [&key, &rate, &burst, &want_f, &recovery, &quiet, &pause];
        let mut row = self.row(&TAKE, &params)?;
        if row.is_none() {
            // The number's first take: its bucket starts full.
            self.execute(
                "INSERT INTO bulk_rate (phone_number_id, rate, burst, tokens, at)
                 VALUES ($1, $2, $3, $3, extract(epoch FROM clock_timestamp())::float8)
                 ON CONFLICT DO NOTHING",
                &[&key, &rate, &burst],
            )?;
            row = self.row(&TAKE, &params)?;
        }
        let Some(row) = row else {
            return Ok(Permits {
                granted: 0,
                wait: Duration::from_millis(50),
            });
        };
        let read = |r: &postgres::Row| -> PgResult<(f64, f64, f64, f64)> {
            Ok((
                r.try_get("granted")?,
                r.try_get("avail")?,
                r.try_get("eff")?,
                r.try_get("paused")?,
            ))
        };
        let (granted, avail, eff, paused) = read(&row).map_err(|e| self.err(e))?;
        let granted = granted.clamp(0.0, want_f) as u32;
        let wait = if granted > 0 {
            Duration::ZERO
        } else if paused > 0.0 {
            Duration::from_secs_f64(paused)
        } else {
            Duration::from_secs_f64(((1.0 - avail) / eff.max(0.001)).max(0.0))
        };
        Ok(Permits { granted, wait })
    }

    fn bulk_rate_limited(&mut self, key: &str, rate: f64) -> Result<()> {
        // The cut halves the rate in force (never below 1 msg/s, or the configured rate if
        // lower), empties the bucket and starts the pause; a second answer within the same
        // episode changes nothing but the emptied bucket.
        static CUT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t),
                 cur AS (
                    SELECT b.cut_at, now.t AS nt, {in_force} AS eff,
                           (b.cut_at IS NOT NULL AND now.t - b.cut_at < $5::float8) AS same
                    FROM bulk_rate b, now WHERE b.phone_number_id = $1 FOR UPDATE OF b)
                 UPDATE bulk_rate SET
                    cut_rate = CASE WHEN cur.same THEN bulk_rate.cut_rate
                                    ELSE GREATEST(LEAST($2, 1.0), cur.eff / 2) END,
                    cut_at = CASE WHEN cur.same THEN bulk_rate.cut_at ELSE cur.nt END,
                    tokens = 0, at = cur.nt
                 FROM cur WHERE phone_number_id = $1",
                in_force = in_force("b", "now.t", "$2", "$3", "$4"),
            )
        });
        let (recovery, quiet, episode) = (
            RATE_RECOVERY,
            RATE_QUIET.as_secs_f64(),
            RATE_SAME_EPISODE.as_secs_f64(),
        );
        self.execute(&CUT, &[&key, &rate, &recovery, &quiet, &episode])
            .map(drop)
    }
}

/// The SQL of the rate in force for bulk_rate row `b` at time `now`: the configured `rate`,
/// or since a cut, the cut rate stepped up by `recovery` every `quiet` seconds, up to `rate`
/// (the exponent is capped: 1.25^64 brings 1 msg/s past any real rate, and `power` must
/// not overflow on a cut from last month).
fn in_force(b: &str, now: &str, rate: &str, recovery: &str, quiet: &str) -> String {
    format!(
        "CASE WHEN {b}.cut_at IS NULL THEN {rate}
              ELSE LEAST({rate}, {b}.cut_rate * power({recovery}::float8,
                   LEAST(64, floor(GREATEST(0, {now} - {b}.cut_at) / {quiet}::float8)))) END"
    )
}

#[cfg(test)]
mod tests {
    //! Several workers on one campaign: two connections, two threads, one database.

    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    use super::*;
    use crate::store::postgres::test_util::temp_database;
    use crate::store::{Origin, TokenQueries};
    use crate::token::FlowToken;

    fn rows(n: usize) -> Vec<NewToken> {
        (0..n)
            .map(|i| NewToken {
                token: FlowToken::generate(),
                phone: Phone::parse(&format!("+336{:08}", 10_000_000 + i), None).unwrap(),
                customer_name: None,
                campaign: "c".into(),
                origin: Origin::Bulk,
                initial_data: None,
                ttl: Duration::from_secs(3600),
            })
            .collect()
    }

    fn worker(url: &crate::store::PgUrl, name: &str, lease: Duration) -> PgStore {
        let mut s = PgStore::open(url).unwrap();
        s.bulk_join(name, lease).unwrap();
        s
    }

    fn tokens(issued: &[Issued], rows: &[NewToken]) -> Vec<String> {
        issued
            .iter()
            .zip(rows)
            .filter_map(|(i, r)| match i {
                Issued::New => Some(r.token.as_str().to_string()),
                Issued::Existing(m) => Some(m.token.clone()),
                Issued::Held => None,
            })
            .collect()
    }

    #[test]
    fn two_workers_issuing_the_same_rows_at_once_each_get_a_row_once() {
        let Some(url) = temp_database("bulk claims") else {
            return;
        };
        let all = rows(600);
        let start = Arc::new(Barrier::new(2));
        let run = |name: &'static str| {
            let (url, all, start) = (url.clone(), all.clone(), start.clone());
            // Each worker brings its own fresh tokens for the same phones, as two
            // processes reading one file do.
            std::thread::spawn(move || {
                let mut s = worker(&url, name, Duration::from_secs(30));
                let mine: Vec<NewToken> = all
                    .iter()
                    .map(|r| NewToken {
                        token: FlowToken::generate(),
                        ..r.clone()
                    })
                    .collect();
                start.wait();
                let mut got = Vec::new();
                for chunk in mine.chunks(64) {
                    got.extend(s.bulk_issue(chunk).unwrap());
                }
                got
            })
        };
        let (a, b) = (run("a"), run("b"));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let held = [x, y].iter().filter(|g| ***g == Issued::Held).count();
            assert_eq!(held, 1, "row {i}: {x:?} / {y:?}");
        }
        let s = PgStore::open(&url).unwrap();
        let n: i64 = s
            .value("SELECT COUNT(*) FROM tokens WHERE campaign = 'c'", &[])
            .unwrap();
        assert_eq!(n, 600, "one member per phone");
    }

    #[test]
    fn a_dead_workers_rows_return_after_its_lease_and_it_can_no_longer_send_them() {
        let Some(url) = temp_database("bulk lease") else {
            return;
        };
        let all = rows(4);
        let mut a = worker(&url, "a", Duration::from_secs(1));
        let mut b = worker(&url, "b", Duration::from_secs(30));
        let issued = a.bulk_issue(&all).unwrap();
        assert!(issued.iter().all(|i| *i == Issued::New));
        let ts = tokens(&issued, &all);
        // A's request for row 0 may have left; rows 1-3 were only claimed.
        assert!(a.bulk_commit(&[], &ts[..1]).unwrap().is_empty());
        assert!(b
            .bulk_issue(&all)
            .unwrap()
            .iter()
            .all(|i| *i == Issued::Held));

        std::thread::sleep(Duration::from_millis(1200));
        let taken = b.bulk_issue(&all).unwrap();
        let states: Vec<SendState> = taken
            .iter()
            .map(|i| match i {
                Issued::Existing(m) => m.state,
                other => panic!("{other:?}"),
            })
            .collect();
        // The row whose outcome is unknown comes back `sending` (reported, never resent).
        assert_eq!(
            states,
            [
                SendState::Sending,
                SendState::Pending,
                SendState::Pending,
                SendState::Pending
            ]
        );
        // A, alive after all, may not send what B took over.
        let lost = a.bulk_commit(&[], &ts[1..3]).unwrap();
        assert_eq!(lost, ts[1..3].to_vec());
        assert_eq!(
            a.find_token(&ts[1]).unwrap().unwrap().state,
            SendState::Pending
        );
        assert!(b.bulk_commit(&[], &ts[1..3]).unwrap().is_empty());
    }

    #[test]
    fn a_renewed_lease_keeps_the_rows_and_a_release_frees_them_at_once() {
        let Some(url) = temp_database("bulk renew") else {
            return;
        };
        let all = rows(3);
        let mut a = worker(&url, "a", Duration::from_secs(1));
        let mut b = worker(&url, "b", Duration::from_secs(30));
        let ts = tokens(&a.bulk_issue(&all).unwrap(), &all);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(a.bulk_renew().unwrap(), 3);
        }
        assert!(b
            .bulk_issue(&all)
            .unwrap()
            .iter()
            .all(|i| *i == Issued::Held));
        a.bulk_release(&ts[..1]).unwrap();
        let got = b.bulk_issue(&all).unwrap();
        assert!(matches!(got[0], Issued::Existing(_)), "{got:?}");
        assert_eq!(got[1..], [Issued::Held, Issued::Held]);
        // A settled row is released with its outcome; leaving releases the rest.
        a.bulk_commit(
            &[BulkOutcome::Sent {
                token: ts[1].clone(),
                message_id: "wamid.1".into(),
                wa_id: None,
                extra_attempts: 0,
            }],
            &[],
        )
        .unwrap();
        a.bulk_leave().unwrap();
        let got = b.bulk_issue(&all[1..]).unwrap();
        match &got[..] {
            [Issued::Existing(sent), Issued::Existing(pending)] => {
                assert_eq!(sent.state, SendState::Sent);
                assert_eq!(pending.state, SendState::Pending);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_workers_share_one_rate() {
        let Some(url) = temp_database("bulk rate") else {
            return;
        };
        let (rate, burst) = (50.0, 2.0);
        let window = Duration::from_millis(1500);
        let start = Arc::new(Barrier::new(2));
        let origin = Instant::now();
        let take = || {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                let mut s = PgStore::open(&url).unwrap();
                start.wait();
                let began = Instant::now();
                let mut granted = 0u32;
                let mut last = began;
                while began.elapsed() < window {
                    let p = s
                        .bulk_take_permits("106540352242922", rate, burst, 1)
                        .unwrap();
                    if p.granted > 0 {
                        granted += p.granted;
                        last = Instant::now();
                    } else {
                        std::thread::sleep(p.wait);
                    }
                }
                (granted, began - origin, last - origin)
            })
        };
        let (a, b) = (take(), take());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let total = f64::from(a.0 + b.0);
        // Over the span in which either took permits (threads may start apart on a busy
        // machine): never more than the rate allows, burst included.
        let span = (a.2.max(b.2) - a.1.min(b.1)).as_secs_f64();
        let allowed = rate * span + burst;
        assert!(
            total <= allowed + 1.0,
            "{total} permits in {span:.3}s > {allowed}"
        );
        assert!(
            total >= 0.6 * rate * window.as_secs_f64(),
            "{total} permits"
        );
        assert!(
            a.0 > 5 && b.0 > 5,
            "both workers got permits: {} / {}",
            a.0,
            b.0
        );
    }

    /// A rate-limit answer one worker met pauses and slows every worker of the number: the
    /// rate is halved once per episode, steps back up by 1.25 every 2 s, never above the
    /// configured rate nor below 1 msg/s. Time is moved by rewriting the row's clock.
    #[test]
    fn a_rate_limit_answer_pauses_and_slows_every_worker() {
        let Some(url) = temp_database("bulk rate cut") else {
            return;
        };
        const NUMBER: &str = "106540352242922";
        let (rate, burst) = (100.0, 64.0);
        let mut a = PgStore::open(&url).unwrap();
        let mut b = PgStore::open(&url).unwrap();
        assert_eq!(
            a.bulk_take_permits(NUMBER, rate, burst, 64)
                .unwrap()
                .granted,
            64
        );

        a.bulk_rate_limited(NUMBER, rate).unwrap();
        // The other worker is paused: nothing granted, asked to wait out the second.
        let paused = b.bulk_take_permits(NUMBER, rate, burst, 64).unwrap();
        assert_eq!(paused.granted, 0);
        assert!(
            paused.wait > Duration::from_millis(500) && paused.wait <= Duration::from_secs(1),
            "{paused:?}"
        );
        let cut = |s: &mut PgStore| -> f64 {
            s.value(
                "SELECT cut_rate FROM bulk_rate WHERE phone_number_id = $1",
                &[&NUMBER],
            )
            .unwrap()
        };
        assert_eq!(cut(&mut b), 50.0);
        // Every request in flight comes back with the same answer: one cut per episode.
        b.bulk_rate_limited(NUMBER, rate).unwrap();
        assert_eq!(cut(&mut b), 50.0);

        // `since` seconds after the cut, with the bucket empty half a second ago: how many
        // permits are there (the refill of 0.5 s at the rate in force, plus the moment between
        // the two statements on a busy machine)?
        let mut refill_after = |since: f64| -> u32 {
            b.execute(
                "UPDATE bulk_rate SET tokens = 0,
                        at = extract(epoch FROM clock_timestamp()) - 0.5,
                        cut_at = extract(epoch FROM clock_timestamp()) - $2::float8
                 WHERE phone_number_id = $1",
                &[&NUMBER, &since],
            )
            .unwrap();
            b.bulk_take_permits(NUMBER, rate, burst, 64)
                .unwrap()
                .granted
        };
        let at_half = refill_after(1.2);
        assert!((25..=32).contains(&at_half), "0.5 s at 50 msg/s: {at_half}");
        let stepped = refill_after(4.5);
        assert!((38..=46).contains(&stepped), "0.5 s at 78 msg/s: {stepped}");
        // Long after: back to the configured rate (and no overflow in the step-up).
        let recovered = refill_after(30.0 * 86_400.0);
        assert!(
            (49..=58).contains(&recovered),
            "0.5 s at 100 msg/s: {recovered}"
        );

        // A new episode halves the rate in force again, never below 1 msg/s.
        b.execute(
            "UPDATE bulk_rate SET cut_at = extract(epoch FROM clock_timestamp()) - 1.5
             WHERE phone_number_id = $1",
            &[&NUMBER],
        )
        .unwrap();
        a.bulk_rate_limited(NUMBER, rate).unwrap();
        assert_eq!(cut(&mut a), 25.0);
        for _ in 0..10 {
            a.execute(
                "UPDATE bulk_rate SET cut_at = cut_at - 1.5 WHERE phone_number_id = $1",
                &[&NUMBER],
            )
            .unwrap();
            a.bulk_rate_limited(NUMBER, rate).unwrap();
        }
        assert_eq!(cut(&mut a), 1.0);
    }
}
