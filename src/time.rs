//! Timestamps as the store and the JSON outputs write them: RFC 3339, UTC, milliseconds, `Z`.
//! This text form sorts in time order, which the store's range queries rely on.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

/// Now, as stored text (`2026-02-03T10:30:00.000Z`).
pub fn now() -> String {
    format(Utc::now())
}

/// A time as stored text.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Unix seconds (as webhooks carry them) as stored text; `None` when out of range, which
/// includes years before 0 and after 9999: their text (`+10000-…`, `-0001-…`) would not sort
/// in time order.
pub fn from_unix(secs: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .filter(|t| (0..=9999).contains(&t.year()))
        .map(format)
}

/// Parses a user-given time for `--since`: RFC 3339, a bare date (`2026-02-03`), or a
/// duration back from now (`24h`, `7d`).
pub fn parse_since(s: &str) -> Result<String, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(format(t.with_timezone(&Utc)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(format(t.and_utc()));
        }
    }
    if let Ok(d) = humantime::parse_duration(s) {
        if let Ok(d) = chrono::Duration::from_std(d) {
            return Ok(format(Utc::now() - d));
        }
    }
    Err(format!(
        "invalid time {s:?}: expected RFC 3339 (2026-02-03T10:30:00Z), a date (2026-02-03) or a duration back from now (24h, 7d)"
    ))
}

/// Parses a token lifetime such as `30d` or `12h`.
pub fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30d, 12h, 90m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_sort_in_time_order() {
        let a = from_unix(1_700_000_000).unwrap();
        let b = from_unix(1_700_000_001).unwrap();
        assert!(a < b);
        assert!(a.ends_with('Z') && a.contains(".000"));
    }

    #[test]
    fn since_accepts_three_forms() {
        assert_eq!(
            parse_since("2026-02-03").unwrap(),
            "2026-02-03T00:00:00.000Z"
        );
        assert_eq!(
            parse_since("2026-02-03T10:30:00+01:00").unwrap(),
            "2026-02-03T09:30:00.000Z"
        );
        assert!(parse_since("24h").unwrap() < now());
        assert!(parse_since("yesterday-ish")
            .unwrap_err()
            .contains("yesterday-ish"));
    }

    #[test]
    fn ttl_parses_days_and_hours() {
        assert_eq!(parse_ttl("30d").unwrap().as_secs(), 30 * 86400);
        assert_eq!(parse_ttl("12h").unwrap().as_secs(), 12 * 3600);
        assert!(parse_ttl("soon").is_err());
    }
}
