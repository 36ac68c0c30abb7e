//! Queries of `flowctl stats`: the funnel per campaign, from the tokens and their responses.
//!
//! The funnel is cumulative and disjoint from failures:
//! - `sent`: accepted by the Graph API (`state = 'sent'`) or reported by a status
//!   (`delivery_rank >= 1`), and not failed;
//! - `delivered`: `delivery_rank >= 2` (a read message was delivered), not failed;
//! - `read`: `delivery_rank >= 3`, not failed;
//! - `failed`: refused by the API (`state = 'failed'`) or failed to deliver
//!   (`delivery = 'failed'`), broken down by error code (`unknown` when none was given);
//! - `completed`: tokens with a (primary) response;
//! - `unmatched`: completions joined to no token; counted in a campaign only when known.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store};

/// The funnel of one campaign, or of all of them (`campaign: None`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Funnel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Tokens issued.
    pub issued: i64,
    /// Messages accepted (and not failed afterwards).
    pub sent: i64,
    /// Messages refused by the API or that failed to deliver.
    pub failed: i64,
    /// Error code (as text, `unknown` when none) → number of failed messages.
    pub failed_by_code: BTreeMap<String, i64>,
    /// Messages delivered (including read ones).
    pub delivered: i64,
    /// Messages read.
    pub read: i64,
    /// Tokens with a completion.
    pub completed: i64,
    /// Completions that could not be joined to a token.
    pub unmatched: i64,
    /// `completed / sent`; `None` when nothing was sent.
    pub completion_rate: Option<f64>,
    /// Median time from the send to the completion, in seconds (millisecond precision).
    pub median_completion_seconds: Option<f64>,
}

/// The funnel per campaign (by name) and over all of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FunnelReport {
    pub campaigns: Vec<Funnel>,
    pub total: Funnel,
}

/// A token's failure, as a condition on `tokens t`.
const FAILED: &str = "(t.state = 'failed' OR t.delivery IS 'failed')";

impl Store {
    /// The funnel of every campaign (or only `campaign`), with the total. Without a campaign
    /// filter, the total also counts unmatched completions whose campaign is unknown.
    pub fn funnel(&self, campaign: Option<&str>) -> Result<FunnelReport> {
        let mut by_name: BTreeMap<String, Funnel> = BTreeMap::new();
        let mut total = Funnel::default();
        let sql = format!(
            "SELECT t.campaign,
                    COUNT(*),
                    SUM(NOT {FAILED} AND (t.state = 'sent' OR t.delivery_rank >= 1)),
                    SUM({FAILED}),
                    SUM(NOT {FAILED} AND t.delivery_rank >= 2),
                    SUM(NOT {FAILED} AND t.delivery_rank >= 3),
                    SUM(EXISTS(SELECT 1 FROM responses r
                               WHERE r.token = t.token AND r.duplicate_of IS NULL))
             FROM tokens t
             WHERE ?1 IS NULL OR t.campaign = ?1
             GROUP BY t.campaign"
        );
        self.each_row(&sql, params![campaign], |r| {
            let name: String = r.get(0)?;
            let f = funnel_of(&mut by_name, &name);
            f.issued = r.get(1)?;
            f.sent = r.get(2)?;
            f.failed = r.get(3)?;
            f.delivered = r.get(4)?;
            f.read = r.get(5)?;
            f.completed = r.get(6)?;
            Ok(())
        })?;

        let sql = format!(
            "SELECT t.campaign,
                    CASE WHEN t.delivery IS 'failed' THEN t.delivery_error_code ELSE t.error_code END,
                    COUNT(*)
             FROM tokens t
             WHERE {FAILED} AND (?1 IS NULL OR t.campaign = ?1)
             GROUP BY 1, 2"
        );
        self.each_row(&sql, params![campaign], |r| {
            let name: String = r.get(0)?;
            let code = r
                .get::<_, Option<i64>>(1)?
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let n: i64 = r.get(2)?;
            *funnel_of(&mut by_name, &name)
                .failed_by_code
                .entry(code.clone())
                .or_default() += n;
            *total.failed_by_code.entry(code).or_default() += n;
            Ok(())
        })?;

        self.each_row(
            "SELECT r.campaign, COUNT(*) FROM responses r
             WHERE r.matched = 0 AND r.duplicate_of IS NULL
               AND (?1 IS NULL OR r.campaign = ?1)
             GROUP BY r.campaign",
            params![campaign],
            |r| {
                let name: Option<String> = r.get(0)?;
                let n: i64 = r.get(1)?;
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
        for f in &campaigns {
            total.issued += f.issued;
            total.sent += f.sent;
            total.failed += f.failed;
            total.delivered += f.delivered;
            total.read += f.read;
            total.completed += f.completed;
        }
        for f in campaigns.iter_mut().chain(std::iter::once(&mut total)) {
            f.completion_rate = (f.sent > 0).then(|| f.completed as f64 / f.sent as f64);
        }
        Ok(FunnelReport { campaigns, total })
    }

    /// `(campaign, median seconds from send to completion)`, per campaign or (with
    /// `per_campaign` false) once over all, with `None` as campaign.
    fn median_completion_seconds(
        &self,
        campaign: Option<&str>,
        per_campaign: bool,
    ) -> Result<Vec<(Option<String>, f64)>> {
        let key = if per_campaign { "t.campaign" } else { "NULL" };
        let sql = format!(
            "WITH d AS (
                 SELECT {key} AS campaign,
                        (julianday(r.completed_at) - julianday(t.sent_at)) * 86400.0 AS secs
                 FROM tokens t
                 JOIN responses r ON r.token = t.token AND r.duplicate_of IS NULL
                 WHERE t.sent_at IS NOT NULL AND (?1 IS NULL OR t.campaign = ?1)
             ), ranked AS (
                 SELECT campaign, secs,
                        ROW_NUMBER() OVER (PARTITION BY campaign ORDER BY secs) AS rn,
                        COUNT(*) OVER (PARTITION BY campaign) AS n
                 FROM d WHERE secs IS NOT NULL
             )
             SELECT campaign, ROUND(AVG(secs), 3) FROM ranked
             WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
             GROUP BY campaign"
        );
        let mut out = Vec::new();
        self.each_row(&sql, params![campaign], |r| {
            out.push((r.get(0)?, r.get(1)?));
            Ok(())
        })?;
        Ok(out)
    }

    fn each_row(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            f(row).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn funnel_of<'a>(m: &'a mut BTreeMap<String, Funnel>, name: &str) -> &'a mut Funnel {
    m.entry(name.to_string()).or_insert_with(|| Funnel {
        campaign: Some(name.to_string()),
        ..Funnel::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::temp_store;
    use crate::store::{CompletionInput, Failure, SendState};

    fn token(s: &mut Store, campaign: &str) -> String {
        crate::store::test_util::issue_in(s, campaign, SendState::Pending)
    }

    fn sent(s: &mut Store, campaign: &str, n: u32, delivery: Option<(&str, i64)>) -> String {
        let t = token(s, campaign);
        s.record_sent(&t, &format!("wamid.{t}.{n}"), None).unwrap();
        s.conn
            .execute(
                "UPDATE tokens SET sent_at = '2026-01-01T00:00:00.000Z' WHERE token = ?1",
                [&t],
            )
            .unwrap();
        if let Some((d, rank)) = delivery {
            s.conn
                .execute(
                    "UPDATE tokens SET delivery = ?2, delivery_rank = ?3 WHERE token = ?1",
                    params![t, d, rank],
                )
                .unwrap();
        }
        t
    }

    fn complete_after(s: &mut Store, t: &str, secs: u32) {
        let answers = serde_json::Map::new();
        let at = format!("2026-01-01T00:{:02}:{:02}.000Z", secs / 60, secs % 60);
        s.complete(&CompletionInput {
            token: t,
            answers: &answers,
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: &at,
        })
        .unwrap();
    }

    #[test]
    fn funnel_is_cumulative_and_failures_are_broken_down() {
        let (_d, mut s) = temp_store();
        token(&mut s, "a"); // issued only
        sent(&mut s, "a", 1, None);
        let d = sent(&mut s, "a", 2, Some(("delivered", 2)));
        let r = sent(&mut s, "a", 3, Some(("read", 3)));
        sent(&mut s, "a", 4, Some(("failed", 1)));
        let f = token(&mut s, "a");
        let refusal = Failure {
            code: Some(131026),
            message: "x".into(),
            retryable: false,
        };
        s.record_failed(&f, &refusal).unwrap();
        complete_after(&mut s, &d, 60);
        complete_after(&mut s, &r, 120);
        let other = sent(&mut s, "b", 5, None);
        complete_after(&mut s, &other, 10);

        let report = s.funnel(None).unwrap();
        let a = &report.campaigns[0];
        assert_eq!(a.campaign.as_deref(), Some("a"));
        assert_eq!(
            (a.issued, a.sent, a.failed, a.delivered, a.read, a.completed),
            (6, 3, 2, 2, 1, 2)
        );
        assert_eq!(a.failed_by_code["131026"], 1);
        assert_eq!(a.failed_by_code["unknown"], 1);
        assert_eq!(a.completion_rate, Some(2.0 / 3.0));
        assert_eq!(a.median_completion_seconds, Some(90.0));
        assert_eq!((report.total.issued, report.total.completed), (7, 3));
        assert_eq!(report.total.median_completion_seconds, Some(60.0));

        let only_b = s.funnel(Some("b")).unwrap();
        assert_eq!(only_b.campaigns.len(), 1);
        assert_eq!(only_b.total.issued, 1);
        assert_eq!(only_b.total.completion_rate, Some(1.0));
    }

    #[test]
    fn an_empty_database_has_an_empty_funnel() {
        let (_d, s) = temp_store();
        let report = s.funnel(None).unwrap();
        assert!(report.campaigns.is_empty());
        assert_eq!(report.total.completion_rate, None);
        assert_eq!(report.total.median_completion_seconds, None);
    }
}
