//! The checks that need no network: the settings, the Graph API version, the shape of
//! `PHONE_NUMBER_ID`, the database and the listen address.

use std::net::SocketAddr;

use chrono::NaiveDate;

use super::Check;
use crate::config::DoctorSettings;
use crate::graph::version;
use crate::store::{Store, StoreError};

/// One failed line per missing or unusable setting, or one line saying they are all set.
pub(super) fn settings(settings: &DoctorSettings) -> Vec<Check> {
    if settings.problems.is_empty() {
        let mut checks = vec![Check::ok("settings", "every required setting is set")];
        if !settings.verify_token {
            checks.push(Check::warn(
                "settings",
                "WEBHOOK_VERIFY_TOKEN is not set: serve refuses Meta's webhook verification",
                "set WEBHOOK_VERIFY_TOKEN (environment or .env) to the token entered in the app's webhook settings",
            ));
        }
        return checks;
    }
    settings
        .problems
        .iter()
        .map(|p| Check::fail("settings", p.to_string(), fix_of(p)))
        .collect()
}

/// The fix of a configuration problem: where to set it (`flowctl init` writes them all).
fn fix_of(problem: &crate::config::ConfigError) -> String {
    use crate::config::ConfigError;
    match problem {
        ConfigError::Missing { var, .. } | ConfigError::MissingSecret { var } => {
            format!("add {var} to .env (or run `flowctl init`)")
        }
        ConfigError::Invalid { name, .. } => format!("correct {name}"),
        ConfigError::Unusable(_) => "correct the value or file named above".into(),
    }
}

/// Whether Meta still serves `GRAPH_API_VERSION` and for how long.
pub(super) fn graph_version(v: &str, today: NaiveDate) -> Check {
    const NAME: &str = "graph_version";
    let fix = format!(
        "set GRAPH_API_VERSION to {} (or later) and check Meta's changelog",
        version::DEFAULT_VERSION
    );
    match (version::expires(v), version::warning(v, today)) {
        (Some(end), None) => Check::ok(NAME, format!("{v}, served until {end}")),
        (Some(end), Some(warning)) if end < today => Check::fail(NAME, warning, fix),
        (Some(_), Some(warning)) => Check::warn(NAME, warning, fix),
        (None, _) => Check::warn(
            NAME,
            format!("{v}: this build does not know when Meta stops serving it"),
            fix,
        ),
    }
}

/// `Some(failure)` when `PHONE_NUMBER_ID` is written like a phone number (a `+`, spaces,
/// dashes, parentheses): Graph wants the number's id, and answers a phone number with
/// "Object with ID … does not exist".
pub(super) fn phone_number_id_shape(id: &str) -> Option<Check> {
    let id = id.trim();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let phone_like = id
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    let detail = if phone_like {
        format!("PHONE_NUMBER_ID {id:?} is a phone number, not the phone number's id")
    } else {
        format!("PHONE_NUMBER_ID {id:?} is not a Graph id (ids are digits only)")
    };
    Some(Check::fail("phone_number_id", detail, PHONE_ID_FIX))
}

/// Where the phone number id is found.
pub(super) const PHONE_ID_FIX: &str = "set PHONE_NUMBER_ID to the \"Phone number ID\" shown under WhatsApp > API Setup in the app dashboard (or in WhatsApp Manager > Phone numbers), a long number that is not the phone number itself";

/// The database opens, and its schema is this build's.
pub(super) fn database(db: &crate::store::DbTarget) -> Check {
    const NAME: &str = "database";
    match Store::open_read_only(db) {
        Ok(Some(_)) => Check::ok(
            NAME,
            format!("{} opens, its schema is current", db),
        ),
        Ok(None) if db.is_postgres() => Check::warn(
            NAME,
            format!("{db} has no flowctl tables yet"),
            "nothing to do if this is a first run: send, bulk or serve create them",
        ),
        Ok(None) => Check::warn(
            NAME,
            format!("{} does not exist yet", db),
            "nothing to do if this is a first run: send, bulk or serve create it; otherwise set FLOWCTL_DB (or --db) to the existing file",
        ),
        Err(e @ StoreError::TooOld { .. }) => Check::warn(
            NAME,
            e.to_string(),
            "the next send, bulk or serve migrates it (back the file up first)",
        ),
        Err(e @ StoreError::TooNew { .. }) => Check::fail(
            NAME,
            e.to_string(),
            "use the flowctl version that wrote it, or a newer one",
        ),
        Err(e) if db.is_postgres() => Check::fail(
            NAME,
            e.to_string(),
            "check the URL (FLOWCTL_DB, --db or DATABASE_URL), that the server is up and reachable, and the user's rights on the database",
        ),
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "check the path and its permissions (FLOWCTL_DB or --db)",
        ),
    }
}

/// The address `serve` listens on is free to bind.
pub(super) fn listen(addr: Option<SocketAddr>) -> Check {
    const NAME: &str = "listen";
    let Some(addr) = addr else {
        return Check::skip(NAME, "a usable FLOWCTL_LISTEN");
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok(NAME, format!("{addr} is free for serve")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Check::fail(
            NAME,
            format!("{addr} is already in use"),
            "stop what listens there (is serve already running?) or set FLOWCTL_LISTEN to another port",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("cannot listen on {addr}: {e}"),
            "set FLOWCTL_LISTEN to an address of this machine",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn a_phone_number_is_not_a_phone_number_id() {
        assert!(phone_number_id_shape("106540352242922").is_none());
        let c = phone_number_id_shape("+212 612-345678").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("is a phone number"), "{}", c.detail);
        let c = phone_number_id_shape("my-number").unwrap();
        assert!(c.detail.contains("not a Graph id"), "{}", c.detail);
    }

    #[test]
    fn versions_fail_once_expired_and_warn_before() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(graph_version("v25.0", day(2026, 12, 1)).status, Status::Ok);
        assert_eq!(
            graph_version("v21.0", day(2026, 12, 1)).status,
            Status::Warn
        );
        assert_eq!(
            graph_version("v20.0", day(2026, 12, 1)).status,
            Status::Fail
        );
        assert_eq!(
            graph_version("v99.0", day(2026, 12, 1)).status,
            Status::Warn
        );
    }
}
