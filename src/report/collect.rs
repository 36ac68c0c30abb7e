//! Reading a campaign for the report: the funnel from `stats`' query, then ONE streaming pass
//! over the responses (the export snapshot) that keeps only counters and capped lists, so
//! memory does not grow with the number of responses.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::Value;

use crate::store::{ExportFilter, Funnel, Store, StoreError, StoredResponse};
use crate::time::Timestamp;

/// Rows of the responses table: the most recent ones.
pub const TABLE_ROWS: usize = 100;
/// Free-text answers shown per question: the most recent ones.
pub const RECENT_TEXTS: usize = 8;
/// Distinct values counted per question; past it the question is free text.
pub const MAX_DISTINCT: usize = 40;
/// Distinct numbers kept per question for its histogram.
pub const MAX_NUMBERS: usize = 2000;
/// Answer keys followed per campaign (answers are sent by anyone who has a token).
pub const MAX_KEYS: usize = 100;
/// Characters of one answer kept for the table and the recent answers.
pub const CELL_CHARS: usize = 200;

/// What was seen of one answer key.
#[derive(Clone, Debug, Default)]
pub struct AnswerStats {
    /// Responses that answered it (non-empty).
    pub answered: u64,
    /// Scalar answer (as text) → count, up to [`MAX_DISTINCT`] distinct values.
    pub values: HashMap<String, u64>,
    /// More distinct values than [`MAX_DISTINCT`] were seen.
    pub overflow: bool,
    /// List answers (multi-select): item → count.
    pub items: HashMap<String, u64>,
    /// Answers that were lists.
    pub lists: u64,
    /// Answers that were numbers.
    pub number_answers: u64,
    /// Number (its bits) → count, up to [`MAX_NUMBERS`] distinct values.
    pub numbers: HashMap<u64, u64>,
    /// Numbers past [`MAX_NUMBERS`] distinct ones, not in the histogram.
    pub numbers_dropped: u64,
    /// The most recent text answers, newest last.
    pub recent: VecDeque<(String, Timestamp)>,
}

impl AnswerStats {
    fn add(&mut self, v: &Value, at: Timestamp) {
        match v {
            Value::Null => return,
            Value::String(s) if s.trim().is_empty() => return,
            Value::Array(a) if a.is_empty() => return,
            _ => {}
        }
        self.answered += 1;
        match v {
            Value::Array(items) => {
                self.lists += 1;
                for item in items {
                    let key = scalar_text(item);
                    if let Some(n) = self.items.get_mut(&key) {
                        *n += 1;
                    } else if self.items.len() < MAX_DISTINCT {
                        self.items.insert(key, 1);
                    } else {
                        self.overflow = true;
                    }
                }
            }
            Value::Number(n) => {
                self.number_answers += 1;
                if let Some(f) = n.as_f64() {
                    let bits = f.to_bits();
                    if let Some(c) = self.numbers.get_mut(&bits) {
                        *c += 1;
                    } else if self.numbers.len() < MAX_NUMBERS {
                        self.numbers.insert(bits, 1);
                    } else {
                        self.numbers_dropped += 1;
                    }
                }
                self.count_value(n.to_string());
            }
            _ => {
                let text = scalar_text(v);
                if let Value::String(s) = v {
                    if self.recent.len() == RECENT_TEXTS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back((truncate(s), at));
                }
                self.count_value(text);
            }
        }
    }

    fn count_value(&mut self, text: String) {
        if let Some(n) = self.values.get_mut(&text) {
            *n += 1;
        } else if self.values.len() < MAX_DISTINCT {
            self.values.insert(text, 1);
        } else {
            self.overflow = true;
        }
    }
}

/// A scalar as text (`true`, `42`, the string itself); other values as compact JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => truncate(s),
        other => truncate(&crate::answer_text::render_answer(other)),
    }
}

/// At most [`CELL_CHARS`] characters, with `…` when cut.
pub fn truncate(s: &str) -> String {
    match s.char_indices().nth(CELL_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// One row of the responses table.
#[derive(Clone, Debug)]
pub struct Row {
    pub phone: Option<String>,
    pub name: Option<String>,
    /// Answer key → the answer as text (truncated).
    pub answers: Vec<(String, String)>,
    pub completed_at: Timestamp,
}

/// Everything the report shows of one campaign.
#[derive(Clone, Debug, Default)]
pub struct CampaignData {
    pub name: String,
    pub funnel: Funnel,
    /// Responses read (one per token).
    pub responses: u64,
    /// Completions per hour (Unix seconds of the hour's start → count).
    pub per_hour: BTreeMap<i64, u64>,
    /// Answer keys in order of first appearance, with what was seen of each.
    pub answers: Vec<(String, AnswerStats)>,
    /// Answer keys past [`MAX_KEYS`], not followed.
    pub keys_dropped: bool,
    /// The most recent responses, newest last.
    pub recent: VecDeque<Row>,
}

impl CampaignData {
    fn new(funnel: Funnel) -> CampaignData {
        CampaignData {
            name: funnel.campaign.clone().unwrap_or_default(),
            funnel,
            ..CampaignData::default()
        }
    }

    /// Counts one response in.
    pub fn add(&mut self, r: &StoredResponse) {
        self.responses += 1;
        let at = r.completed_at;
        let hour = at.as_datetime().timestamp().div_euclid(3600) * 3600;
        *self.per_hour.entry(hour).or_insert(0) += 1;
        for (k, v) in &r.answers {
            let i = match self.answers.iter().position(|(key, _)| key == k) {
                Some(i) => i,
                None if self.answers.len() < MAX_KEYS => {
                    self.answers.push((k.clone(), AnswerStats::default()));
                    self.answers.len() - 1
                }
                None => {
                    self.keys_dropped = true;
                    continue;
                }
            };
            self.answers[i].1.add(v, at);
        }
        if self.recent.len() == TABLE_ROWS {
            self.recent.pop_front();
        }
        self.recent.push_back(Row {
            phone: r.phone.clone().or_else(|| r.sender.clone()),
            name: r.customer_name.as_deref().map(truncate),
            answers: r
                .answers
                .iter()
                .take(MAX_KEYS)
                .map(|(k, v)| (truncate(k), truncate(&crate::answer_text::render_answer(v))))
                .collect(),
            completed_at: at,
        });
    }
}

/// Reads the campaigns of `store` (all, or only `campaign`): the funnels, then one pass over
/// the responses. A named campaign that does not exist gives an empty list.
pub fn collect(store: &Store, campaign: Option<&str>) -> Result<Vec<CampaignData>, StoreError> {
    let funnel = store.funnel(campaign)?;
    let mut campaigns: Vec<CampaignData> = funnel
        .campaigns
        .into_iter()
        .filter(|f| f.campaign.is_some())
        .map(CampaignData::new)
        .collect();
    if campaigns.is_empty() {
        return Ok(campaigns);
    }
    let index: HashMap<String, usize> = campaigns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    let filter = ExportFilter {
        since: None,
        campaign: campaign.map(str::to_string),
        include_unmatched: false,
    };
    let snapshot = store.export_snapshot()?;
    snapshot.for_each_response(&filter, |r| {
        if let Some(&i) = r.campaign.as_deref().and_then(|c| index.get(c)) {
            campaigns[i].add(&r);
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(campaigns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(answers: Value, at: &str) -> StoredResponse {
        StoredResponse {
            id: 1,
            token: Some("flow_x".into()),
            phone: Some("+212610059159".into()),
            sender: None,
            customer_name: Some("Amina".into()),
            campaign: Some("c".into()),
            source: "endpoint".into(),
            answers: answers.as_object().unwrap().clone(),
            matched: true,
            sender_mismatch: false,
            duplicate_of: None,
            completed_at: at.parse().unwrap(),
        }
    }

    #[test]
    fn answers_are_counted_by_kind_and_lists_stay_capped() {
        let mut c = CampaignData::default();
        for i in 0..(TABLE_ROWS + 5) {
            c.add(&response(
                json!({"q": if i % 2 == 0 { "a" } else { "b" }, "m": ["x", "y"], "n": i % 3, "t": format!("text {i}"), "e": ""}),
                "2026-01-01T10:30:00.000Z",
            ));
        }
        assert_eq!(c.responses, (TABLE_ROWS + 5) as u64);
        assert_eq!(c.recent.len(), TABLE_ROWS);
        let get = |k: &str| &c.answers.iter().find(|(key, _)| key == k).unwrap().1;
        assert_eq!(get("q").values["a"], 53);
        assert_eq!(get("m").items["y"], (TABLE_ROWS + 5) as u64);
        assert_eq!(get("n").number_answers, (TABLE_ROWS + 5) as u64);
        assert_eq!(get("n").numbers.len(), 3);
        let t = get("t");
        assert!(t.overflow);
        assert_eq!(t.values.len(), MAX_DISTINCT);
        assert_eq!(t.recent.len(), RECENT_TEXTS);
        assert_eq!(t.recent.back().unwrap().0, "text 104");
        assert_eq!(get("e").answered, 0);
        assert_eq!(c.per_hour.len(), 1);
        assert_eq!(c.per_hour.keys().next(), Some(&1_767_261_600));
    }

    #[test]
    fn long_answers_are_cut() {
        let long = "é".repeat(CELL_CHARS + 10);
        let t = truncate(&long);
        assert_eq!(t.chars().count(), CELL_CHARS + 1);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }
}
