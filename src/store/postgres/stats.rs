//! Queries of `flowctl stats` on PostgreSQL: the funnel per campaign, with the counting rules
//! of [`Funnel`](crate::store::Funnel) and the results of `sqlite/stats.rs`.

use std::collections::BTreeMap;

use postgres::Row;

use super::PgStore;
use crate::store::{Funnel, FunnelReport, Result, StatsQueries};

/// A failed send: refused, or failed after acceptance (a deferred one is not failed for good),
/// and not replaced by a later resend. A condition on `tokens t`.
const FAILED: &str = "((t.state = 'failed'
      OR (t.delivery IS NOT DISTINCT FROM 'failed' AND t.state != 'deferred'))
     AND t.superseded_by IS NULL)";

/// The one bucket of a token (`tokens t`) among those that add up to `issued`; `sent` is the
/// only one the funnel goes on from (delivered, read).
const BUCKET: &str = "(CASE
     WHEN (t.state = 'failed'
           OR (t.delivery IS NOT DISTINCT FROM 'failed' AND t.state != 'deferred'))
          AND t.superseded_by IS NULL THEN 'failed'
     WHEN t.superseded_by IS NOT NULL THEN 'replaced'
     WHEN t.state = 'deferred' THEN 'deferred'
     WHEN t.state = 'sent' OR t.delivery_rank >= 1 THEN 'sent'
     WHEN t.state IN ('sending', 'unknown') THEN 'unknown'
     ELSE 'pending' END)";

impl StatsQueries for PgStore {
    fn funnel(&self, campaign: Option<&str>) -> Result<FunnelReport> {
        let mut by_name: BTreeMap<String, Funnel> = BTreeMap::new();
        let mut total = Funnel::default();
        let sql = format!(
            "SELECT t.campaign AS campaign,
                    COUNT(*) AS issued,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'sent') AS sent,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'failed') AS failed,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'sent' AND t.delivery_rank >= 2) AS delivered,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'sent' AND t.delivery_rank >= 3) AS read,
                    COUNT(*) FILTER (WHERE {FAILED} AND t.failed_after_acceptance = 1)
                        AS failed_after_acceptance,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'deferred') AS deferred,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'pending') AS pending,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'unknown') AS unknown,
                    COUNT(*) FILTER (WHERE {BUCKET} = 'replaced') AS replaced,
                    COUNT(*) FILTER (WHERE EXISTS(SELECT 1 FROM responses r
                               WHERE r.token = t.token AND r.duplicate_of IS NULL)) AS completed
             FROM tokens t
             WHERE $1::text IS NULL OR t.campaign = $1
             GROUP BY t.campaign"
        );
        for r in &self.rows(&sql, &[&campaign])? {
            let name: String = col(self, r, "campaign")?;
            let f = funnel_of(&mut by_name, &name);
            f.issued = col(self, r, "issued")?;
            f.sent = col(self, r, "sent")?;
            f.failed = col(self, r, "failed")?;
            f.delivered = col(self, r, "delivered")?;
            f.read = col(self, r, "read")?;
            f.failed_after_acceptance = col(self, r, "failed_after_acceptance")?;
            f.deferred = col(self, r, "deferred")?;
            f.pending = col(self, r, "pending")?;
            f.unknown = col(self, r, "unknown")?;
            f.replaced = col(self, r, "replaced")?;
            f.completed = col(self, r, "completed")?;
        }

        let sql = format!(
            "SELECT t.campaign AS campaign,
                    CASE WHEN t.delivery IS NOT DISTINCT FROM 'failed' THEN t.delivery_error_code
                         ELSE t.error_code END AS code,
                    COUNT(*) AS n
             FROM tokens t
             WHERE {FAILED} AND ($1::text IS NULL OR t.campaign = $1)
             GROUP BY 1, 2"
        );
        for r in &self.rows(&sql, &[&campaign])? {
            let name: String = col(self, r, "campaign")?;
            let code = col::<Option<i64>>(self, r, "code")?
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let n: i64 = col(self, r, "n")?;
            *funnel_of(&mut by_name, &name)
                .failed_by_code
                .entry(code.clone())
                .or_default() += n;
            *total.failed_by_code.entry(code).or_default() += n;
        }

        for r in &self.rows(
            "SELECT r.campaign AS campaign, COUNT(*) AS n FROM responses r
             WHERE r.matched = 0 AND r.duplicate_of IS NULL
               AND ($1::text IS NULL OR r.campaign = $1)
             GROUP BY r.campaign",
            &[&campaign],
        )? {
            let name: Option<String> = col(self, r, "campaign")?;
            let n: i64 = col(self, r, "n")?;
            if let Some(name) = name {
                funnel_of(&mut by_name, &name).unmatched = n;
            }
            total.unmatched += n;
        }

        for (name, median) in median_completion_seconds(self, campaign, true)? {
            if let Some(name) = name {
                funnel_of(&mut by_name, &name).median_completion_seconds = Some(median);
            }
        }
        total.median_completion_seconds = median_completion_seconds(self, campaign, false)?
            .into_iter()
            .next()
            .map(|(_, m)| m);

        let mut campaigns: Vec<Funnel> = by_name.into_values().collect();
        crate::store::stats::total_up(&mut campaigns, &mut total);
        let statuses_received: i64 = self.value("SELECT COUNT(*) FROM message_statuses", &[])?;
        Ok(FunnelReport {
            campaigns,
            total,
            statuses_received,
        })
    }

    fn campaign_names(&self) -> Result<Vec<String>> {
        // Byte order, as SQLite sorts text (whatever the database's collation).
        self.rows(
            "SELECT DISTINCT campaign COLLATE \"C\" AS campaign FROM tokens ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| col(self, r, "campaign"))
        .collect()
    }
}

/// One column of a row, by name.
fn col<T: for<'a> postgres::types::FromSql<'a>>(s: &PgStore, r: &Row, column: &str) -> Result<T> {
    r.try_get(column).map_err(|e| s.err(e))
}

/// `(campaign, median seconds from send to completion)`, per campaign or (with
/// `per_campaign` false) once over all, with `None` as campaign: whole milliseconds, as
/// SQLite computes it ([`median_seconds`](crate::store::stats::median_seconds)).
fn median_completion_seconds(
    s: &PgStore,
    campaign: Option<&str>,
    per_campaign: bool,
) -> Result<Vec<(Option<String>, f64)>> {
    let key = if per_campaign {
        "t.campaign"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "WITH d AS (
             SELECT {key} AS campaign,
                    ROUND(EXTRACT(EPOCH FROM (r.completed_at::timestamptz
                                              - t.sent_at::timestamptz)) * 1000)::bigint AS ms
             FROM tokens t
             JOIN responses r ON r.token = t.token AND r.duplicate_of IS NULL
             WHERE t.sent_at IS NOT NULL AND ($1::text IS NULL OR t.campaign = $1)
         ), ranked AS (
             SELECT campaign, ms,
                    ROW_NUMBER() OVER (PARTITION BY campaign ORDER BY ms) AS rn,
                    COUNT(*) OVER (PARTITION BY campaign) AS n
             FROM d WHERE ms IS NOT NULL
         )
         SELECT campaign, SUM(ms)::bigint AS middle_ms, COUNT(*) AS middle FROM ranked
         WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
         GROUP BY campaign"
    );
    s.rows(&sql, &[&campaign])?
        .iter()
        .map(|r| {
            Ok((
                col(s, r, "campaign")?,
                crate::store::stats::median_seconds(col(s, r, "middle_ms")?, col(s, r, "middle")?),
            ))
        })
        .collect()
}

fn funnel_of<'a>(m: &'a mut BTreeMap<String, Funnel>, name: &str) -> &'a mut Funnel {
    m.entry(name.to_string()).or_insert_with(|| Funnel {
        campaign: Some(name.to_string()),
        ..Funnel::default()
    })
}
