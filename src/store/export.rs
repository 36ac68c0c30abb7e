//! Queries of `flowctl export`: the union of answer keys and the responses, streamed row by
//! row inside one read snapshot.

use super::flow::{response_from_row, RESPONSE_COLUMNS};
use super::{Result, Store, StoreError, StoredResponse};

/// Which responses an export covers. Duplicates (`duplicate_of` set) are never exported:
/// one response per token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// Only responses completed at or after this stored-form time.
    pub since: Option<String>,
    /// Only this campaign (unmatched completions have none unless the webhook knew it).
    pub campaign: Option<String>,
    /// Also export completions that could not be joined to a token (`matched = 0`).
    pub include_unmatched: bool,
}

/// The rows of [`ExportFilter`], as a condition on `responses r` with named parameters.
const FILTER: &str = "r.duplicate_of IS NULL
    AND (r.matched = 1 OR :unmatched)
    AND (:since IS NULL OR r.completed_at >= :since)
    AND (:campaign IS NULL OR r.campaign = :campaign)";

/// Export order: completion time, then arrival.
const ORDER: &str = "r.completed_at, r.id";

impl ExportFilter {
    fn params(&self) -> [(&'static str, &dyn rusqlite::ToSql); 3] {
        [
            (":unmatched", &self.include_unmatched),
            (":since", &self.since),
            (":campaign", &self.campaign),
        ]
    }
}

/// A consistent view of the responses for one export: the key pass and the row pass see the
/// same rows even while `serve` keeps writing (a row arriving in between would otherwise bring
/// a key that has no column). Dropping it ends the read transaction.
pub struct ExportSnapshot<'a> {
    store: &'a Store,
    _tx: rusqlite::Transaction<'a>,
}

impl Store {
    /// Starts a read snapshot for an export.
    pub fn export_snapshot(&self) -> Result<ExportSnapshot<'_>> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        Ok(ExportSnapshot {
            store: self,
            _tx: tx,
        })
    }
}

impl ExportSnapshot<'_> {
    /// Every answer key of the selected responses, once, in order of first appearance (rows
    /// in export order, keys in the order they were stored). SQLite extracts the keys while
    /// walking the completion index (no sort); only the distinct keys are held, so memory
    /// does not grow with the number of responses.
    pub fn answer_keys(&self, filter: &ExportFilter) -> Result<Vec<String>> {
        // Answers are always stored as JSON objects; the guard keeps one corrupt row from
        // failing the whole export (json_each raises on malformed JSON).
        let sql = format!(
            "SELECT j.key
             FROM responses r,
                  json_each(CASE WHEN json_valid(r.answers) AND json_type(r.answers) = 'object'
                                 THEN r.answers ELSE '{{}}' END) j
             WHERE {FILTER}
             ORDER BY {ORDER}"
        );
        // No `j.id` in the ORDER BY: it would make SQLite sort every (row, key) pair in a
        // temporary b-tree. The responses are walked in index order and, as the inner loop
        // of the join, json_each yields each object's keys in document order.
        let store = self.store;
        let mut stmt = store.conn.prepare(&sql).map_err(|e| store.err(e))?;
        let mut rows = stmt.query(&filter.params()[..]).map_err(|e| store.err(e))?;
        let mut seen = std::collections::HashSet::new();
        let mut keys = Vec::new();
        while let Some(row) = rows.next().map_err(|e| store.err(e))? {
            let key = row.get_ref(0).map_err(|e| store.err(e))?;
            let key = key.as_str().map_err(|e| store.err(e.into()))?;
            if !seen.contains(key) {
                seen.insert(key.to_string());
                keys.push(key.to_string());
            }
        }
        Ok(keys)
    }

    /// Calls `each` with every selected response, in export order, one at a time: memory
    /// stays flat whatever the number of rows. Stops at the first error `each` returns.
    pub fn for_each_response<E: From<StoreError>>(
        &self,
        filter: &ExportFilter,
        mut each: impl FnMut(StoredResponse) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let store = self.store;
        let sql =
            format!("SELECT {RESPONSE_COLUMNS} FROM responses r WHERE {FILTER} ORDER BY {ORDER}");
        let mut stmt = store.conn.prepare(&sql).map_err(|e| store.err(e))?;
        let mut rows = stmt.query(&filter.params()[..]).map_err(|e| store.err(e))?;
        while let Some(row) = rows.next().map_err(|e| store.err(e))? {
            each(response_from_row(row).map_err(|e| store.err(e))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::Phone;
    use crate::store::test_util::temp_store;
    use crate::store::{
        CompletionInput, NewToken, Origin, SendState, WebhookCompletion, WebhookCompletionOutcome,
    };
    use crate::token::FlowToken;
    use serde_json::{json, Map, Value};

    fn token(s: &mut Store, campaign: &str) -> String {
        let t = NewToken {
            token: FlowToken::generate(),
            phone: Phone::parse("+212610059159", None).unwrap(),
            customer_name: Some("Ahmed".into()),
            campaign: campaign.into(),
            origin: Origin::Send,
            initial_data: None,
            ttl: std::time::Duration::from_secs(60),
        };
        s.insert_token(&t, SendState::Sent).unwrap();
        t.token.as_str().to_string()
    }

    fn complete(s: &mut Store, t: &str, source: &str, answers: Value, at: &str) {
        let answers = answers.as_object().unwrap().clone();
        s.complete(&CompletionInput {
            token: t,
            answers: &answers,
            source,
            sender: None,
            event_id: None,
            completed_at: at,
        })
        .unwrap();
    }

    fn rows(s: &Store, f: &ExportFilter) -> Vec<StoredResponse> {
        let snap = s.export_snapshot().unwrap();
        let mut out = Vec::new();
        snap.for_each_response::<StoreError>(f, |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn export_keys_are_the_union_in_first_seen_order() {
        let (_d, mut s) = temp_store();
        let (a, b) = (token(&mut s, "c"), token(&mut s, "c"));
        // b completed first: its keys come first.
        complete(
            &mut s,
            &a,
            "endpoint",
            json!({"z": 1, "a": 2}),
            "2026-01-02T00:00:00.000Z",
        );
        complete(
            &mut s,
            &b,
            "endpoint",
            json!({"m": 1, "z": 3}),
            "2026-01-01T00:00:00.000Z",
        );
        let snap = s.export_snapshot().unwrap();
        let keys = snap.answer_keys(&ExportFilter::default()).unwrap();
        assert_eq!(keys, ["m", "z", "a"]);
    }

    #[test]
    fn export_rows_skip_duplicates_and_unmatched_unless_asked() {
        let (_d, mut s) = temp_store();
        let a = token(&mut s, "c");
        complete(
            &mut s,
            &a,
            "endpoint",
            json!({"q": 1}),
            "2026-01-01T00:00:00.000Z",
        );
        complete(
            &mut s,
            &a,
            "webhook",
            json!({"q": 1}),
            "2026-01-01T00:00:01.000Z",
        );
        let answers = json!({"q": 2}).as_object().unwrap().clone();
        let u = WebhookCompletion {
            flow_token: Some("flow_unknown"),
            context_id: None,
            sender: Some("212600000001"),
            answers: &answers,
            event_id: "wamid.u1",
            completed_at: "2026-01-03T00:00:00.000Z",
        };
        assert!(matches!(
            s.webhook_completion(&u).unwrap(),
            WebhookCompletionOutcome::Unmatched { .. }
        ));
        assert_eq!(
            s.webhook_completion(&u).unwrap(),
            WebhookCompletionOutcome::Duplicate
        );
        let base = ExportFilter::default();
        assert_eq!(rows(&s, &base).len(), 1);
        let all = rows(
            &s,
            &ExportFilter {
                include_unmatched: true,
                ..base.clone()
            },
        );
        assert_eq!(all.len(), 2);
        assert!(!all[1].matched);
        assert_eq!(all[1].phone.as_deref(), Some("+212600000001"));
        let since = ExportFilter {
            include_unmatched: true,
            since: Some("2026-01-02T00:00:00.000Z".into()),
            ..base.clone()
        };
        assert_eq!(rows(&s, &since).len(), 1);
        let campaign = ExportFilter {
            include_unmatched: true,
            campaign: Some("c".into()),
            ..base
        };
        assert_eq!(rows(&s, &campaign).len(), 1);
    }

    #[test]
    fn a_business_scoped_sender_has_no_phone() {
        let (_d, mut s) = temp_store();
        let answers = Map::new();
        let outcome = s
            .webhook_completion(&WebhookCompletion {
                flow_token: None,
                context_id: None,
                sender: Some("US.13491208655302741918"),
                answers: &answers,
                event_id: "wamid.bsuid.1",
                completed_at: "2026-01-03T00:00:00.000Z",
            })
            .unwrap();
        assert!(matches!(
            outcome,
            WebhookCompletionOutcome::Unmatched { .. }
        ));
        let r = &rows(
            &s,
            &ExportFilter {
                include_unmatched: true,
                ..Default::default()
            },
        )[0];
        assert_eq!(r.phone, None);
        assert_eq!(r.sender.as_deref(), Some("US.13491208655302741918"));
    }
}
