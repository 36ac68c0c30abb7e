//! Queries of `flowctl stats`: the funnel per campaign (the counting rules are those of
//! [`Funnel`](crate::store::Funnel)).

use std::collections::BTreeMap;

use rusqlite::params;

use super::SqliteStore;
use crate::store::{Funnel, FunnelReport, Result, StatsQueries};

/// A token's failure, as a condition on `tokens t`.
/// A failed send: refused, or failed after acceptance (a deferred one is not failed for good),
/// and not replaced by a later resend.
const FAILED: &str = "((t.state = 'failed' OR (t.delivery IS 'failed' AND t.state != 'deferred'))
     AND t.superseded_by IS NULL)";

/// The one bucket of a token (`tokens t`) among those that add up to `issued`; `sent` is the
/// only one the funnel goes on from (delivered, read).
const BUCKET: &str = "(CASE
     WHEN (t.state = 'failed' OR (t.delivery IS 'failed' AND t.state != 'deferred'))
          AND t.superseded_by IS NULL THEN 'failed'
     WHEN t.superseded_by IS NOT NULL THEN 'replaced'
     WHEN t.state = 'deferred' THEN 'deferred'
     WHEN t.state = 'sent' OR t.delivery_rank >= 1 THEN 'sent'
     WHEN t.state IN ('sending', 'unknown') THEN 'unknown'
     ELSE 'pending' END)";

impl StatsQueries for SqliteStore {
    fn funnel(&self, campaign: Option<&str>) -> Result<FunnelReport> {
        let mut by_name: BTreeMap<String, Funnel> = BTreeMap::new();
        let mut total = Funnel::default();
        let sql = format!(
            "SELECT t.campaign AS campaign,
                    COUNT(*) AS issued,
                    SUM({BUCKET} = 'sent') AS sent,
                    SUM({BUCKET} = 'failed') AS failed,
                    SUM({BUCKET} = 'sent' AND t.delivery_rank >= 2) AS delivered,
                    SUM({BUCKET} = 'sent' AND t.delivery_rank >= 3) AS read,
                    SUM({FAILED} AND t.failed_after_acceptance = 1) AS failed_after_acceptance,
                    SUM({BUCKET} = 'deferred') AS deferred,
                    SUM({BUCKET} = 'pending') AS pending,
                    SUM({BUCKET} = 'unknown') AS unknown,
                    SUM({BUCKET} = 'replaced') AS replaced,
                    SUM(EXISTS(SELECT 1 FROM responses r
                               WHERE r.token = t.token AND r.duplicate_of IS NULL)) AS completed
             FROM tokens t
             WHERE ?1 IS NULL OR t.campaign = ?1
             GROUP BY t.campaign"
        );
        self.each_row(&sql, params![campaign], |r| {
            let name: String = r.get("campaign")?;
            let f = funnel_of(&mut by_name, &name);
            f.issued = r.get("issued")?;
            f.sent = r.get("sent")?;
            f.failed = r.get("failed")?;
            f.delivered = r.get("delivered")?;
            f.read = r.get("read")?;
            f.failed_after_acceptance = r.get("failed_after_acceptance")?;
            f.deferred = r.get("deferred")?;
            f.pending = r.get("pending")?;
            f.unknown = r.get("unknown")?;
            f.replaced = r.get("replaced")?;
            f.completed = r.get("completed")?;
            Ok(())
        })?;

        let sql = format!(
            "SELECT t.campaign AS campaign,
                    CASE WHEN t.delivery IS 'failed' THEN t.delivery_error_code ELSE t.error_code END
                        AS code,
                    COUNT(*) AS n
             FROM tokens t
             WHERE {FAILED} AND (?1 IS NULL OR t.campaign = ?1)
             GROUP BY 1, 2"
        );
        self.each_row(&sql, params![campaign], |r| {
            let name: String = r.get("campaign")?;
            let code = r
                .get::<_, Option<i64>>("code")?
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let n: i64 = r.get("n")?;
            *funnel_of(&mut by_name, &name)
                .failed_by_code
                .entry(code.clone())
                .or_default() += n;
            *total.failed_by_code.entry(code).or_default() += n;
            Ok(())
        })?;

        self.each_row(
            "SELECT r.campaign AS campaign, COUNT(*) AS n FROM responses r
             WHERE r.matched = 0 AND r.duplicate_of IS NULL
               AND (?1 IS NULL OR r.campaign = ?1)
             GROUP BY r.campaign",
            params![campaign],
            |r| {
                let name: Option<String> = r.get("campaign")?;
                let n: i64 = r.get("n")?;
                if let Some(name) = name {
                    funnel_of(&mut by_name, &name).unmatched = n;
                }
                total.unmatched += n;
                Ok(())
            },
        )?;

        for (name, median) in self.median_completion_seconds(campaign, true)? {
            if let Some(name) = name {
                funnel_of(&mut by_name, &name).median_completion_seconds = Some(median);
            }
        }
        total.median_completion_seconds = self
            .median_completion_seconds(campaign, false)?
            .into_iter()
            .next()
            .map(|(_, m)| m);

        let mut campaigns: Vec<Funnel> = by_name.into_values().collect();
        crate::store::stats::total_up(&mut campaigns, &mut total);
        let statuses_received = self
            .rows("SELECT COUNT(*) FROM message_statuses", [], |r| r.get(0))?
            .into_iter()
            .next()
            .unwrap_or(0);
        Ok(FunnelReport {
            campaigns,
            total,
            statuses_received,
        })
    }

    fn campaign_names(&self) -> Result<Vec<String>> {
        self.rows(
            "SELECT DISTINCT campaign FROM tokens ORDER BY campaign",
            [],
            |r| r.get(0),
        )
    }
}

impl SqliteStore {
    /// `(campaign, median seconds from send to completion)`, per campaign or (with
    /// `per_campaign` false) once over all, with `None` as campaign. The durations are whole
    /// milliseconds (the stored precision), so that the median is exact and the same on every
    /// backend ([`median_seconds`](crate::store::stats::median_seconds)).
    fn median_completion_seconds(
        &self,
        campaign: Option<&str>,
        per_campaign: bool,
    ) -> Result<Vec<(Option<String>, f64)>> {
        let key = if per_campaign { "t.campaign" } else { "NULL" };
        let sql = format!(
            "WITH d AS (
                 SELECT {key} AS campaign,
                        CAST(ROUND((julianday(r.completed_at) - julianday(t.sent_at))
                                   * 86400000.0) AS INTEGER) AS ms
                 FROM tokens t
                 JOIN responses r ON r.token = t.token AND r.duplicate_of IS NULL
                 WHERE t.sent_at IS NOT NULL AND (?1 IS NULL OR t.campaign = ?1)
             ), ranked AS (
                 SELECT campaign, ms,
                        ROW_NUMBER() OVER (PARTITION BY campaign ORDER BY ms) AS rn,
                        COUNT(*) OVER (PARTITION BY campaign) AS n
                 FROM d WHERE ms IS NOT NULL
             )
             SELECT campaign, SUM(ms) AS middle_ms, COUNT(*) AS middle FROM ranked
             WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
             GROUP BY campaign"
        );
        self.rows(&sql, params![campaign], |r| {
            Ok((
                r.get("campaign")?,
                crate::store::stats::median_seconds(r.get("middle_ms")?, r.get("middle")?),
            ))
        })
    }

    /// Calls `f` with every row of a query (for aggregations that fold rows into a map).
    fn each_row(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        self.rows(sql, params, |r| f(r)).map(drop)
    }
}

fn funnel_of<'a>(m: &'a mut BTreeMap<String, Funnel>, name: &str) -> &'a mut Funnel {
    m.entry(name.to_string()).or_insert_with(|| Funnel {
        campaign: Some(name.to_string()),
        ..Funnel::default()
    })
}
