//! Timestamps as the store and the JSON outputs write them: RFC 3339, UTC, milliseconds, `Z`.
//! This text form sorts in time order, which the store's range queries rely on; in Rust a
//! [`Timestamp`] compares as time.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, SubsecRound, Utc};

/// A point in time as the store keeps it: UTC, whole milliseconds, in the years 0 to 9999.
///
/// Within that range the text form (`2026-02-03T10:30:00.000Z`, its `Display`) has a fixed
/// width, so text order is time order: existing databases, their indexes and the range
/// queries that compare stored text keep working. Times outside the range are clamped to it,
/// since `+10000-…` or `-0001-…` would sort out of time order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A text that is not an RFC 3339 time; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected RFC 3339 such as 2026-02-03T10:30:00.000Z")]
pub struct TimestampError(pub String);

impl Timestamp {
    /// Now (to the millisecond).
    pub fn now() -> Timestamp {
        Timestamp::from_datetime(Utc::now())
    }

    /// A time, truncated to the millisecond and clamped to the years 0 to 9999.
    pub fn from_datetime(t: DateTime<Utc>) -> Timestamp {
        let t = t.clamp(earliest(), latest());
        Timestamp(t.trunc_subsecs(3))
    }

    /// Unix seconds (as webhooks carry them); `None` outside the years 0 to 9999.
    pub fn from_unix(secs: i64) -> Option<Timestamp> {
        DateTime::<Utc>::from_timestamp(secs, 0)
            .filter(|t| (0..=9999).contains(&t.year()))
            .map(Timestamp)
    }

    /// Reads any RFC 3339 time (the stored form is one).
    pub fn parse(s: &str) -> Result<Timestamp, TimestampError> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)))
            .map_err(|_| TimestampError(s.to_string()))
    }

    /// This time plus `d`, saturating at the last representable millisecond (a token
    /// lifetime of a million years means "never expires", not "already expired").
    pub fn saturating_add(self, d: std::time::Duration) -> Timestamp {
        let later = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| self.0.checked_add_signed(d))
            .unwrap_or_else(latest);
        Timestamp::from_datetime(later)
    }

    /// The time as a chrono value, for arithmetic.
    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }
}

/// 0000-01-01T00:00:00.000Z.
fn earliest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(0, 1, 1)
        .and_then(|d| d.and_hms_milli_opt(0, 0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// 9999-12-31T23:59:59.999Z.
fn latest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 999))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Now, as stored text (`2026-02-03T10:30:00.000Z`).
pub fn now() -> String {
    Timestamp::now().to_string()
}

/// A time as stored text.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Unix seconds (as webhooks carry them) as stored text; `None` when out of range, which
/// includes years before 0 and after 9999: their text (`+10000-…`, `-0001-…`) would not sort
/// in time order.
pub fn from_unix(secs: i64) -> Option<String> {
    Timestamp::from_unix(secs).map(|t| t.to_string())
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

/// `45s`, `3m 05s`, `2h 07m`, `3d 04h`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(human_duration(4.4), "4s");
        assert_eq!(human_duration(185.0), "3m 05s");
        assert_eq!(human_duration(7620.0), "2h 07m");
        assert_eq!(human_duration(273600.0), "3d 04h");
    }

    #[test]
    fn stored_times_sort_in_time_order() {
        let a = from_unix(1_700_000_000).unwrap();
        let b = from_unix(1_700_000_001).unwrap();
        assert!(a < b);
        assert!(a.ends_with('Z') && a.contains(".000"));
    }

    #[test]
    fn timestamps_compare_as_time_not_as_text() {
        // The same instant in another offset, and a later one whose text sorts first.
        let utc = Timestamp::parse("2026-02-03T10:30:00.000Z").unwrap();
        let paris = Timestamp::parse("2026-02-03T11:30:00+01:00").unwrap();
        assert_eq!(utc, paris);
        let later = Timestamp::parse("2026-02-03T10:00:00-01:00").unwrap();
        assert!("2026-02-03T10:00:00-01:00" < "2026-02-03T10:30:00.000Z");
        assert!(later > utc);
    }

    #[test]
    fn the_text_form_round_trips_to_the_millisecond() {
        let t = Timestamp::now();
        let text = t.to_string();
        assert_eq!(text.len(), "2026-02-03T10:30:00.000Z".len());
        assert_eq!(text.parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            Timestamp::parse("2026-02-03T10:30:00.123456Z")
                .unwrap()
                .to_string(),
            "2026-02-03T10:30:00.123Z"
        );
        let err = Timestamp::parse("yesterday").unwrap_err().to_string();
        assert!(err.contains("\"yesterday\""), "{err}");
    }

    #[test]
    fn a_huge_lifetime_saturates_instead_of_leaving_the_sortable_range() {
        let t = Timestamp::now().saturating_add(std::time::Duration::from_secs(u64::MAX / 4));
        assert_eq!(t.to_string(), "9999-12-31T23:59:59.999Z");
        assert!(t > Timestamp::now());
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
