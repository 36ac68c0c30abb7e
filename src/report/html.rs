//! The pages, rendered on the server with `maud` (every interpolated value is HTML-escaped:
//! answers are text anyone holding a token can send). No script anywhere: the live pages are
//! served with a CSP that forbids it, and the file opens the same without network access.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::collect::{AnswerStats, CampaignData, TABLE_ROWS};
use super::flow::{QuestionKind, Questions};
use super::svg::{self, Bar};
use crate::store::Funnel;
use crate::time::human_duration;
use crate::time::Timestamp;

/// How a page is rendered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// Labels, kinds and option titles of the questions.
    pub questions: Option<&'a Questions>,
    /// Show phone numbers whole (otherwise masked).
    pub show_phones: bool,
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1f2937;background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:24px}
header.top{background:#075e54;color:#fff;padding:14px 24px}
header.top a{color:#fff}
h1{font-size:1.5rem;margin:0}
h2{font-size:1.3rem;margin:32px 0 8px;border-bottom:2px solid #25d366;padding-bottom:4px}
h3{font-size:1.05rem;margin:22px 0 6px}
h4{font-size:.95rem;margin:16px 0 4px}
.muted,.note{color:#6b7280;font-size:.85rem}
.card{background:#fff;border-radius:8px;padding:14px 18px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpis{display:flex;flex-wrap:wrap;gap:10px}
.kpi{background:#fff;border-radius:8px;padding:10px 14px;min-width:110px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpi b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%;font-size:.85rem;background:#fff}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.responses{overflow-x:auto}
svg.chart{max-width:100%;height:auto}
svg .bar{fill:#25d366}
svg .label,svg .value,svg .tick{font-size:12px;fill:#374151}
svg .axis{stroke:#9ca3af}
ul.recent{margin:4px 0;padding-left:18px}
ul.recent li{margin:2px 0;white-space:pre-wrap;word-break:break-word}
form.login{max-width:360px}
form.login input{width:100%;padding:8px;margin:6px 0 12px;box-sizing:border-box}
form.login button{padding:8px 16px}
.error{color:#b91c1c;font-weight:600}
";

/// A whole page: head with the inline style, a top bar, then `body`.
pub fn page(title: &str, nav: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header.top {
                    h1 { (title) }
                    @if let Some((href, text)) = nav {
                        a href=(href) { (text) }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The report file: every campaign's section.
pub fn document(campaigns: &[CampaignData], generated: Timestamp, opts: Options<'_>) -> Markup {
    let body = html! {
        p.muted {
            "Generated " (generated) " by flowctl. "
            @if opts.show_phones { "Phone numbers are shown in full." } @else { "Phone numbers are masked." }
        }
        @if campaigns.is_empty() {
            p.card { "No campaign in this database yet." }
        }
        @if campaigns.len() > 1 {
            nav.card {
                "Campaigns: "
                @for (i, c) in campaigns.iter().enumerate() {
                    @if i > 0 { " · " }
                    a href=(format!("#campaign-{i}")) { (c.name) }
                }
            }
        }
        @for (i, c) in campaigns.iter().enumerate() {
            (campaign(c, &format!("campaign-{i}"), opts))
        }
    };
    page("flowctl report", None, body)
}

/// One campaign's section: key figures, funnel, failures, completions over time, one chart
/// per question, the most recent responses.
pub fn campaign(c: &CampaignData, id: &str, opts: Options<'_>) -> Markup {
    let f = &c.funnel;
    html! {
        section.campaign id=(id) {
            h2 { "Campaign " (c.name) }
            (kpis(f))
            h3 { "Funnel" }
            div.card {
                (svg::bars("Funnel", &funnel_bars(f), Some(f.issued.max(0) as u64)))
                (funnel_table(f))
            }
            @if !f.failed_by_code.is_empty() {
                h3 { "Failures by error code" }
                div.card { (failures(f)) }
            }
            h3 { "Completions over time" }
            div.card {
                @if c.per_hour.is_empty() {
                    p.muted { "No completion yet." }
                } @else {
                    @let (cols, unit) = timeline(c);
                    (svg::columns("Completions over time", &cols, (cols.len() / 8).max(1)))
                    p.note {
                        "Completions per " (unit) " (UTC). Median time from the send to the completion: "
                        (f.median_completion_seconds.map_or_else(|| "-".to_string(), human_duration)) "."
                    }
                }
            }
            h3 { "Answers" }
            @if c.answers.is_empty() { p.muted { "No answer yet." } }
            @for (key, stats) in ordered_answers(c, opts.questions) {
                div.card.question { (question(key, stats, c.responses, opts.questions)) }
            }
            @if c.keys_dropped {
                p.note { "Some answer keys were left out: only the first " (super::collect::MAX_KEYS) " are charted." }
            }
            h3 { "Responses" }
            (responses(c, opts))
        }
    }
}

fn kpis(f: &Funnel) -> Markup {
    let items = [
        ("issued", f.issued.to_string()),
        ("sent", f.sent.to_string()),
        ("delivered", f.delivered.to_string()),
        ("read", f.read.to_string()),
        ("completed", f.completed.to_string()),
        ("failed", f.failed.to_string()),
        (
            "completion",
            f.completion_rate
                .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0)),
        ),
        (
            "median time",
            f.median_completion_seconds
                .map_or_else(|| "-".into(), human_duration),
        ),
    ];
    html! {
        div.kpis {
            @for (name, value) in items {
                div.kpi { b { (value) } span.muted { (name) } }
            }
        }
    }
}

/// The funnel's stages, in order.
pub fn funnel_bars(f: &Funnel) -> Vec<Bar> {
    [
        ("issued", f.issued),
        ("sent", f.sent),
        ("delivered", f.delivered),
        ("read", f.read),
        ("completed", f.completed),
    ]
    .into_iter()
    .map(|(label, n)| Bar {
        label: label.into(),
        count: n.max(0) as u64,
    })
    .collect()
}

fn funnel_table(f: &Funnel) -> Markup {
    html! {
        table.funnel {
            thead { tr {
                th.n { "issued" } th.n { "sent" } th.n { "delivered" } th.n { "read" } th.n { "completed" }
                th.n { "failed" } th.n { "deferred" } th.n { "pending" } th.n { "unknown" } th.n { "unmatched" }
            } }
            tbody { tr {
                td.n { (f.issued) } td.n { (f.sent) } td.n { (f.delivered) } td.n { (f.read) }
                td.n { (f.completed) } td.n { (f.failed) } td.n { (f.deferred) } td.n { (f.pending) }
                td.n { (f.unknown) } td.n { (f.unmatched) }
            } }
        }
    }
}

/// What an error code means, from the table of Meta's error codes `stats` uses too
/// ([`crate::graph::meaning`]).
pub fn code_meaning(code: &str) -> &'static str {
    match code.parse::<i64>().ok().and_then(crate::graph::meaning) {
        Some(m) => m,
        None if code == "unknown" => "no error code was given",
        None => "not in flowctl's table: see Meta's error codes page",
    }
}

fn failures(f: &Funnel) -> Markup {
    html! {
        table.failures {
            thead { tr { th { "code" } th { "meaning" } th.n { "messages" } } }
            tbody {
                @for (code, n) in &f.failed_by_code {
                    tr { td { (code) } td { (code_meaning(code)) } td.n { (n) } }
                }
            }
        }
        @if f.failed_after_acceptance > 0 || f.deferred > 0 {
            p.note {
                (f.failed_after_acceptance) " failed after Meta accepted them (reported by a status); "
                (f.deferred) " deferred by a per-user limit, to be sent again later."
            }
        }
        p.note {
            "Meaning of each code: "
            a href="https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/" {
                "Meta's error codes"
            }
        }
    }
}

/// Completions per hour when they span at most three days, else per day (wider when there
/// would be more than 120 columns); empty slots in between count 0.
fn timeline(c: &CampaignData) -> (Vec<Bar>, &'static str) {
    let (Some((&first, _)), Some((&last, _))) =
        (c.per_hour.first_key_value(), c.per_hour.last_key_value())
    else {
        return (Vec::new(), "hour");
    };
    let hours = (last - first) / 3600 + 1;
    let (step, unit) = if hours <= 72 {
        (3600, "hour")
    } else {
        let days = hours / 24 + 1;
        let width = (days + 119) / 120;
        (86_400 * width, if width == 1 { "day" } else { "period" })
    };
    let start = first.div_euclid(step) * step;
    let n = ((last - start) / step + 1) as usize;
    let mut counts = vec![0u64; n];
    for (&h, &k) in &c.per_hour {
        counts[((h - start) / step) as usize] += k;
    }
    let label = |i: usize| {
        let t = chrono::DateTime::from_timestamp(start + step * i as i64, 0).unwrap_or_default();
        if step == 3600 {
            t.format("%d/%m %Hh").to_string()
        } else {
            t.format("%Y-%m-%d").to_string()
        }
    };
    let cols = counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| Bar {
            label: label(i),
            count,
        })
        .collect();
    (cols, unit)
}

/// The answer keys: the Flow's questions first, in its order, then the others as seen.
fn ordered_answers<'a>(
    c: &'a CampaignData,
    questions: Option<&Questions>,
) -> Vec<(&'a str, &'a AnswerStats)> {
    let mut out: Vec<(&str, &AnswerStats)> = Vec::new();
    if let Some(q) = questions {
        for question in q.iter() {
            if let Some((k, s)) = c.answers.iter().find(|(k, _)| *k == question.name) {
                out.push((k, s));
            }
        }
    }
    for (k, s) in &c.answers {
        if !out.iter().any(|(o, _)| *o == k) {
            out.push((k, s));
        }
    }
    out
}

/// How to chart an answer key: the Flow's kind, else what its values look like.
pub fn kind_of(stats: &AnswerStats, declared: Option<QuestionKind>) -> QuestionKind {
    if let Some(k) = declared {
        return k;
    }
    let half = stats.answered.div_ceil(2);
    if stats.lists > 0 && stats.lists >= half {
        QuestionKind::Multi
    } else if stats.number_answers > 0 && stats.number_answers >= half {
        QuestionKind::Number
    } else if !stats.overflow
        && stats.values.len() <= 12
        && (stats.values.keys().all(|v| looks_like_an_id(v))
            || stats.values.len() as u64 * 2 <= stats.answered)
    {
        QuestionKind::Single
    } else {
        QuestionKind::Text
    }
}

/// An option id rather than prose: short, no spaces.
fn looks_like_an_id(v: &str) -> bool {
    v.chars().count() <= 40 && !v.contains(char::is_whitespace)
}

fn question(key: &str, s: &AnswerStats, responses: u64, questions: Option<&Questions>) -> Markup {
    let q = questions.and_then(|q| q.get(key));
    let kind = kind_of(s, q.map(|q| q.kind));
    let title = q
        .and_then(|q| q.label.clone())
        .unwrap_or_else(|| key.to_string());
    let options: &[(String, String)] = q.map(|q| q.options.as_slice()).unwrap_or(&[]);
    html! {
        h4 { (title) " " span.muted { "(" (key) ")" } }
        p.muted { (s.answered) " of " (responses) " responses answered" }
        @match kind {
            QuestionKind::Single => (svg::bars(&title, &choice_bars(&s.values, options), Some(s.answered))),
            QuestionKind::Multi => {
                (svg::bars(&title, &choice_bars(&s.items, options), Some(s.answered)))
                p.note { "Several options per person: each person counts in every option chosen; shares are of the people who answered." }
            }
            QuestionKind::Number => (histogram(&title, s)),
            QuestionKind::Text => (recent_texts(s)),
        }
        @if s.overflow && kind != QuestionKind::Text {
            p.note { "More than " (super::collect::MAX_DISTINCT) " different answers: only the first ones are charted." }
        }
    }
}

/// Bars of a choice: the Flow's options in its order (with their titles, zero counts
/// included), then the values it does not declare, most frequent first.
fn choice_bars(
    counts: &std::collections::HashMap<String, u64>,
    options: &[(String, String)],
) -> Vec<Bar> {
    let mut bars: Vec<Bar> = options
        .iter()
        .map(|(id, title)| Bar {
            label: title.clone(),
            count: counts.get(id).copied().unwrap_or(0),
        })
        .collect();
    let mut rest: Vec<(&String, &u64)> = counts
        .iter()
        .filter(|(v, _)| !options.iter().any(|(id, _)| id == *v))
        .collect();
    rest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    bars.extend(rest.into_iter().map(|(v, n)| Bar {
        label: v.clone(),
        count: *n,
    }));
    bars
}

fn histogram(title: &str, s: &AnswerStats) -> Markup {
    let mut values: Vec<(f64, u64)> = s
        .numbers
        .iter()
        .map(|(bits, n)| (f64::from_bits(*bits), *n))
        .filter(|(v, _)| v.is_finite())
        .collect();
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cols: Vec<Bar> = if values.len() <= 12 {
        values
            .iter()
            .map(|(v, n)| Bar {
                label: v.to_string(),
                count: *n,
            })
            .collect()
    } else {
        let (lo, hi) = (values[0].0, values[values.len() - 1].0);
        let bins = 10usize;
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0u64; bins];
        for (v, n) in &values {
            let i = (((v - lo) / width) as usize).min(bins - 1);
            counts[i] += n;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| Bar {
                label: format!("{:.4}", lo + width * i as f64)
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
                count,
            })
            .collect()
    };
    html! {
        (svg::columns(title, &cols, 1))
        @if s.numbers_dropped > 0 {
            p.note { (s.numbers_dropped) " answers past " (super::collect::MAX_NUMBERS) " different values are not in the histogram." }
        }
    }
}

fn recent_texts(s: &AnswerStats) -> Markup {
    html! {
        p { (s.answered) " answers; the most recent:" }
        ul.recent {
            @for (text, at) in s.recent.iter().rev() {
                li { (text) " " span.muted { "— " (at) } }
            }
        }
    }
}

/// `+212•••••159`: the country and the last three digits, enough to tell rows apart.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 7))
}

/// A row's answer to `key`: an option's title instead of its id when the Flow declares it.
fn cell<'a>(r: &'a super::collect::Row, key: &str, questions: Option<&'a Questions>) -> &'a str {
    let Some((_, v)) = r.answers.iter().find(|(a, _)| a == key) else {
        return "";
    };
    questions
        .and_then(|q| q.get(key))
        .and_then(|q| q.options.iter().find(|(id, _)| id == v))
        .map_or(v.as_str(), |(_, title)| title.as_str())
}

fn responses(c: &CampaignData, opts: Options<'_>) -> Markup {
    let keys: Vec<&str> = ordered_answers(c, opts.questions)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    html! {
        p.note {
            @if c.responses as usize > TABLE_ROWS {
                "The " (TABLE_ROWS) " most recent of " (c.responses) " responses; "
                code { "flowctl export" } " writes them all."
            } @else {
                (c.responses) " responses."
            }
        }
        div.responses {
            table.responses {
                thead { tr {
                    th { "phone" } th { "name" } th { "completed at" }
                    @for k in &keys { th { (k) } }
                } }
                tbody {
                    @for r in c.recent.iter().rev() {
                        tr {
                            td {
                                @if let Some(p) = &r.phone {
                                    @if opts.show_phones { (p) } @else { (mask_phone(p)) }
                                }
                            }
                            td { (r.name.as_deref().unwrap_or("")) }
                            td { (r.completed_at) }
                            @for k in &keys {
                                td { (cell(r, k, opts.questions)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked_to_country_and_last_digits() {
        assert_eq!(mask_phone("+212610059159"), "+212••••••159");
        assert_eq!(mask_phone("+3361"), "•••••");
        assert!(!mask_phone("+33612345678").contains("12345"));
    }

    #[test]
    fn codes_have_their_meaning() {
        assert!(code_meaning("131026").starts_with("message undeliverable"));
        assert!(code_meaning("999999").contains("not in flowctl's table"));
        assert_eq!(code_meaning("unknown"), "no error code was given");
    }
}
