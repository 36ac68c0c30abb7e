//! Settings of the sending commands: `send` (one recipient) and `bulk` (a CSV file).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{env_value, ConfigError};
use crate::cli::{BulkArgs, CsvEncoding, SendArgs};
use crate::graph::GraphSettings;
use crate::outbound::SendSettings;
use crate::phone::Phone;
use encoding_rs::Encoding;

/// Environment variable (no flag): interval of `bulk`'s plain progress lines (when stderr is
/// not a terminal), in milliseconds.
const PROGRESS_INTERVAL_VAR: &str = "FLOWCTL_PROGRESS_INTERVAL_MS";
/// Environment variable (no flag): how often `bulk` reads the Flow alerts, in milliseconds.
const FLOW_WATCH_INTERVAL_VAR: &str = "FLOWCTL_FLOW_WATCH_INTERVAL_MS";
/// Interval of the Flow alert reads when [`FLOW_WATCH_INTERVAL_VAR`] is unset or unusable.
const DEFAULT_FLOW_WATCH_INTERVAL: Duration = Duration::from_secs(3);
/// Interval of the plain progress lines when [`PROGRESS_INTERVAL_VAR`] is unset or unusable.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// `flowctl send`: one recipient, validated, and everything needed to send to it.
#[derive(Clone, Debug)]
pub struct SendCommandSettings {
    /// The message and token settings.
    pub send: SendSettings,
    /// Where the Graph API is, with the access token.
    pub graph: GraphSettings,
    /// The recipient, in E.164 (a national number is read with `DEFAULT_COUNTRY`).
    pub phone: Phone,
    /// `--name`, when not blank.
    pub customer_name: Option<String>,
    /// `--data`: the Flow's initial data (`None` for none or an empty object).
    pub data: Option<Map<String, Value>>,
    /// `--campaign`.
    pub campaign: String,
    /// `--force`: send even to a suppressed number.
    pub force: bool,
}

impl SendArgs {
    /// The settings of `flowctl send`, checked in the order a user fixes them: the message,
    /// the recipient, the data, then the Graph API.
    pub fn resolve(&self) -> Result<SendCommandSettings, ConfigError> {
        let template = self
            .template_button
            .template(self.template.clone().zip(self.lang.clone()))?;
        let send = self.message.resolve(template)?;
        let phone = Phone::parse(&self.phone, send.default_country)
            .map_err(|e| ConfigError::Unusable(e.to_string()))?;
        let data = match &self.data {
            Some(text) => json_object(text).map_err(ConfigError::Unusable)?,
            None => None,
        };
        let graph = self.graph.resolve()?;
        Ok(SendCommandSettings {
            send,
            graph,
            phone,
            customer_name: self.name.clone().filter(|n| !n.trim().is_empty()),
            data,
            campaign: self.campaign.clone(),
            force: self.force,
        })
    }
}

/// `--data`: a JSON object, or nothing (an empty object is nothing).
fn json_object(text: &str) -> Result<Option<Map<String, Value>>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) if m.is_empty() => Ok(None),
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(format!("invalid --data {text:?}: expected a JSON object")),
        Err(e) => Err(format!("invalid --data {text:?}: {e}")),
    }
}

/// `flowctl bulk`: the file, the campaign, the pace, and what a run needs to send.
#[derive(Clone, Debug)]
pub struct BulkSettings {
    /// The message and token settings.
    pub send: SendSettings,
    /// Where the Graph API is; `None` for `--dry-run`, which sends nothing and so needs no
    /// credentials.
    pub graph: Option<GraphSettings>,
    /// The CSV file.
    pub csv: PathBuf,
    /// `--campaign`, else the CSV file's stem, else `bulk`.
    pub campaign: String,
    /// Messages per second: finite and positive.
    pub rate: f64,
    /// Requests in flight at most, at least 1; `None` sizes it from the rate.
    pub concurrency: Option<usize>,
    /// `--json`: the final summary as one JSON object on stdout.
    pub json: bool,
    /// `--failures`: where to write the failed and invalid rows.
    pub failures: Option<PathBuf>,
    /// How the CSV is read: delimiter, encoding, column names.
    pub input: CsvInput,
    /// `--resend-unknown`: also resend rows whose earlier outcome is unknown.
    pub resend_unknown: bool,
    /// `--retry-failed [--codes …]`: which failed rows of earlier runs to resend.
    pub retry_failed: RetryFailed,
    /// `--max-outage`: how long a Graph API outage is waited out.
    pub max_outage: Duration,
    /// Interval of the plain progress lines (`FLOWCTL_PROGRESS_INTERVAL_MS`, default 5 s).
    pub progress_interval: Duration,
    /// `--yes`: no confirmation asked before a large run.
    pub yes: bool,
    /// `--force`: go on when the pre-flight check finds the Flow not PUBLISHED or the file
    /// larger than the messaging limit.
    pub force: bool,
    /// How often a run reads the Flow alerts `serve` recorded
    /// (`FLOWCTL_FLOW_WATCH_INTERVAL_MS`, default 3 s).
    pub flow_watch_interval: Duration,
    /// `--lease`: how long a worker's claimed rows stay its own without renewal (PostgreSQL,
    /// several workers on one campaign); at least one second.
    pub lease: Duration,
}

/// How `bulk` reads its CSV; `None` fields are detected from the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsvInput {
    /// `--delimiter`, as the byte the CSV reader splits on.
    pub delimiter: Option<u8>,
    /// `--encoding` (a byte-order mark in the file still wins).
    pub encoding: Option<&'static Encoding>,
    /// `--phone-column`, trimmed and not blank.
    pub phone_column: Option<String>,
    /// `--name-column`, trimmed and not blank.
    pub name_column: Option<String>,
}

/// `--delimiter`: `,`, `;`, `tab` (or `\t`) or one ASCII character other than a quote or a
/// line end (the CSV reader splits on a byte).
fn delimiter(value: &str) -> Result<u8, String> {
    let b = match value {
        "tab" | "TAB" | "\\t" | "\t" => b'\t',
        v if v.len() == 1 && v.is_ascii() => v.as_bytes()[0],
        _ => {
            return Err(format!(
                "invalid --delimiter {value:?}: expected `,`, `;`, `tab` or one ASCII character"
            ))
        }
    };
    if matches!(b, b'"' | b'\n' | b'\r') {
        return Err(format!(
            "invalid --delimiter {value:?}: a quote or a line end cannot separate fields"
        ));
    }
    Ok(b)
}

/// `--phone-column`/`--name-column`: the header, or `None` when blank.
fn column_name(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `--retry-failed [--codes …]`: which rows that failed in an earlier run a rerun resends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RetryFailed {
    /// None (without the flag): a failure for good stays failed.
    #[default]
    No,
    /// Every failed row.
    All,
    /// The rows that failed with one of these Graph error codes (`--codes`).
    Codes(Vec<i64>),
}

impl RetryFailed {
    /// Whether a row that failed with `code` is to be resent.
    pub fn covers(&self, code: Option<i64>) -> bool {
        match self {
            RetryFailed::No => false,
            RetryFailed::All => true,
            RetryFailed::Codes(codes) => code.is_some_and(|c| codes.contains(&c)),
        }
    }
}

impl BulkArgs {
    /// The settings of `flowctl bulk`. The Graph API settings are resolved only when the run
    /// sends (not for `--dry-run`).
    pub fn resolve(&self) -> Result<BulkSettings, ConfigError> {
        let template = self
            .template_button
            .template(self.template.clone().zip(self.lang.clone()))?;
        let send = self.message.resolve(template)?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(ConfigError::Unusable(format!(
                "invalid --rate {}: expected a positive number",
                self.rate
            )));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError::Unusable(format!(
                "invalid --lease {}: expected at least 1s",
                humantime::format_duration(self.lease)
            )));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError::Unusable(
                "invalid --concurrency 0: expected at least 1".into(),
            ));
        }
        let input = CsvInput {
            delimiter: match &self.delimiter {
                Some(d) => Some(delimiter(d).map_err(ConfigError::Unusable)?),
                None => None,
            },
            encoding: self.encoding.map(|e| match e {
                CsvEncoding::Utf8 => encoding_rs::UTF_8,
                CsvEncoding::Utf16 => encoding_rs::UTF_16LE,
                CsvEncoding::Windows1252 => encoding_rs::WINDOWS_1252,
            }),
            phone_column: column_name(&self.phone_column),
            name_column: column_name(&self.name_column),
        };
        if self.csv.as_os_str() == "-"
            && self.campaign.as_deref().is_none_or(|c| c.trim().is_empty())
        {
            // A file's stem names its campaign; stdin has none, and one fixed name would make
            // every piped list skip the phones of the one before.
            return Err(ConfigError::Unusable(
                "`bulk -` reads the CSV from stdin and needs --campaign NAME (the campaign a rerun resumes)".into(),
            ));
        }
        let graph = if self.dry_run {
            None
        } else {
            Some(self.graph.resolve()?)
        };
        Ok(BulkSettings {
            send,
            graph,
            csv: self.csv.clone(),
            campaign: self.campaign(),
            rate: self.rate,
            concurrency: self.concurrency,
            json: self.json,
            failures: self.failures.clone(),
            input,
            resend_unknown: self.resend_unknown,
            retry_failed: match (self.retry_failed, self.codes.is_empty()) {
                (false, _) => RetryFailed::No,
                (true, true) => RetryFailed::All,
                (true, false) => RetryFailed::Codes(self.codes.clone()),
            },
            max_outage: self.max_outage,
            progress_interval: progress_interval(env_value(PROGRESS_INTERVAL_VAR).as_deref()),
            yes: self.yes,
            force: self.force,
            flow_watch_interval: env_value(FLOW_WATCH_INTERVAL_VAR)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map_or(DEFAULT_FLOW_WATCH_INTERVAL, Duration::from_millis),
            lease: self.lease,
        })
    }

    /// The campaign: `--campaign`, else the CSV file's stem.
    fn campaign(&self) -> String {
        self.campaign
            .clone()
            .filter(|c| !c.trim().is_empty())
            .or_else(|| {
                self.csv
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "bulk".to_string())
    }
}

/// The progress-line interval from [`PROGRESS_INTERVAL_VAR`]'s value: whole milliseconds
/// above zero; anything else keeps the default (a display setting is not worth a refusal).
fn progress_interval(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_PROGRESS_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_a_json_object_or_nothing() {
        assert_eq!(json_object("{}"), Ok(None));
        assert_eq!(
            json_object(r#"{"city":"Rabat"}"#)
                .unwrap()
                .and_then(|m| m.get("city").cloned()),
            Some(Value::from("Rabat"))
        );
        assert_eq!(
            json_object("[1]").unwrap_err(),
            r#"invalid --data "[1]": expected a JSON object"#
        );
        assert!(json_object("{").unwrap_err().starts_with("invalid --data"));
    }

    #[test]
    fn delimiter_takes_a_name_or_one_ascii_character() {
        assert_eq!(delimiter(","), Ok(b','));
        assert_eq!(delimiter(";"), Ok(b';'));
        assert_eq!(delimiter("tab"), Ok(b'\t'));
        assert_eq!(delimiter("|"), Ok(b'|'));
        for bad in ["", ";;", "é", "\""] {
            assert!(
                delimiter(bad)
                    .unwrap_err()
                    .starts_with("invalid --delimiter"),
                "{bad}"
            );
        }
    }

    #[test]
    fn progress_interval_falls_back_on_unusable_values() {
        assert_eq!(progress_interval(Some(" 200 ")), Duration::from_millis(200));
        for unusable in [None, Some("0"), Some("-5"), Some("soon")] {
            assert_eq!(progress_interval(unusable), DEFAULT_PROGRESS_INTERVAL);
        }
    }
}
