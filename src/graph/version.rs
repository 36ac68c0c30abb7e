//! Graph API versions and the date Meta stops serving each one.
//!
//! From Meta's changelog (<https://developers.facebook.com/docs/graph-api/changelog/versions/>,
//! read 2026-12-01: v26.0 is current, v25.0 available until 2028-07-29). A call to an expired
//! version is answered with an error, so flowctl warns ahead of time. **This table needs a
//! yearly update**: add each new version's expiry date when Meta publishes it (a version whose
//! date is still "TBD" is left out and never warned about).

use chrono::NaiveDate;

/// The default `GRAPH_API_VERSION`.
pub const DEFAULT_VERSION: &str = "v25.0";

/// How long before a version expires flowctl starts warning.
pub const WARN_DAYS: i64 = 90;

/// Known versions and the last day Meta serves them.
const EXPIRES: &[(&str, (i32, u32, u32))] = &[
    ("v25.0", (2028, 7, 29)),
    ("v24.0", (2028, 2, 18)),
    ("v23.0", (2027, 10, 8)),
    ("v22.0", (2027, 5, 20)),
    ("v21.0", (2027, 1, 21)),
    ("v20.0", (2026, 9, 24)),
    ("v19.0", (2026, 5, 21)),
    ("v18.0", (2026, 1, 26)),
    ("v17.0", (2025, 9, 12)),
    ("v16.0", (2025, 5, 14)),
    ("v15.0", (2024, 11, 20)),
    ("v14.0", (2024, 9, 17)),
    ("v13.0", (2024, 5, 28)),
];

/// The day Meta stops serving `version` (`v21.0`, or `21.0`), when the table knows it.
pub fn expires(version: &str) -> Option<NaiveDate> {
    let v = version.trim().trim_matches('/');
    let v = v.strip_prefix('v').unwrap_or(v);
    EXPIRES
        .iter()
        .find(|(name, _)| name.strip_prefix('v') == Some(v))
        .and_then(|(_, (y, m, d))| NaiveDate::from_ymd_opt(*y, *m, *d))
}

/// The warning to print for `version` on `today`: when it has expired, or expires within
/// [`WARN_DAYS`]. `None` for a version far from its end or one the table does not know.
pub fn warning(version: &str, today: NaiveDate) -> Option<String> {
    let end = expires(version)?;
    let left = (end - today).num_days();
    if left < 0 {
        Some(format!(
            "Graph API version {version} expired on {end}: Meta refuses calls to it. Set GRAPH_API_VERSION (or --graph-version) to {DEFAULT_VERSION} or later"
        ))
    } else if left <= WARN_DAYS {
        Some(format!(
            "Graph API version {version} expires on {end} ({left} days left). Set GRAPH_API_VERSION (or --graph-version) to {DEFAULT_VERSION} or later"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_default_is_far_from_its_end() {
        assert_eq!(DEFAULT_VERSION, "v25.0");
        assert_eq!(warning(DEFAULT_VERSION, day(2026, 12, 1)), None);
    }

    #[test]
    fn a_version_is_warned_about_within_90_days_and_once_expired() {
        // v21.0 ends on 2027-01-21.
        assert_eq!(warning("v21.0", day(2026, 10, 22)), None, "91 days left");
        let w = warning("v21.0", day(2026, 12, 1)).unwrap();
        assert!(w.contains("expires on 2027-01-21 (51 days left)"), "{w}");
        assert!(w.contains("GRAPH_API_VERSION"), "{w}");
        let w = warning("21.0", day(2027, 2, 1)).unwrap();
        assert!(w.contains("expired on 2027-01-21"), "{w}");
        assert_eq!(
            warning("v99.0", day(2026, 12, 1)),
            None,
            "unknown: no guess"
        );
    }
}
