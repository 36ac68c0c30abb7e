//! The checks that ask the Graph API: the token and its scopes, the phone number (its
//! quality rating, messaging limit and throughput), the Flow (its status and endpoint), and
//! the registered public key.

use serde_json::Value;

use super::local::PHONE_ID_FIX;
use super::{Check, Status};
use crate::config::DoctorSettings;
use crate::graph::{GraphClient, GraphError};

/// The names of these checks, in order (each is skipped when the Graph API settings are
/// unusable).
pub(super) const NAMES: [&str; 8] = [
    "access_token",
    "phone_number",
    "quality_rating",
    "messaging_limit",
    "throughput",
    "flow",
    "endpoint_uri",
    "public_key",
];

/// The permissions a token needs: sending messages, and reading the Flow and the phone
/// number's settings; `debug_token` lists a token's as `scopes`
/// (<https://developers.facebook.com/docs/graph-api/reference/debug_token>).
const SCOPES: [&str; 2] = [
    "whatsapp_business_messaging",
    "whatsapp_business_management",
];

/// Graph's "invalid or expired access token" code.
const INVALID_TOKEN: i64 = 190;
/// Graph's "object does not exist / unsupported request" code.
const NO_SUCH_OBJECT: i64 = 100;

/// Every account check, in [`NAMES`] order; those about the phone number only when
/// `phone_ok` (`PHONE_NUMBER_ID` is set and shaped like an id).
pub(super) async fn checks(
    graph: &GraphClient,
    settings: &DoctorSettings,
    phone_ok: bool,
) -> Vec<Check> {
    let mut checks = vec![access_token(graph).await];
    let needs = "a usable PHONE_NUMBER_ID";
    let mut phone_ok = phone_ok;
    if phone_ok {
        let phone = phone_number(graph).await;
        // The key is registered per number: a number Graph does not know has none.
        phone_ok = phone.first().is_some_and(|c| c.status == Status::Ok);
        checks.extend(phone);
    } else {
        for name in [
            "phone_number",
            "quality_rating",
            "messaging_limit",
            "throughput",
        ] {
            checks.push(Check::skip(name, needs));
        }
    }
    checks.extend(flow(graph, settings).await);
    checks.push(if phone_ok {
        public_key(graph, settings).await
    } else {
        Check::skip("public_key", needs)
    });
    checks
}

/// The fix of a Graph error that is not specific to one check.
fn fix_of(e: &GraphError) -> &'static str {
    match e.code() {
        Some(INVALID_TOKEN) => {
            "set WHATSAPP_ACCESS_TOKEN to a valid token (a system user token does not expire)"
        }
        _ if e.code().is_none() => "check GRAPH_API_URL, the network, and try again",
        _ => "see the Graph API error above",
    }
}

/// `GET /debug_token`: valid, not expiring within a week, with the scopes flowctl needs.
async fn access_token(graph: &GraphClient) -> Check {
    const NAME: &str = "access_token";
    let data = match graph.debug_token().await {
        Ok(data) => data,
        Err(e) if e.code() == Some(INVALID_TOKEN) => {
            return Check::fail(NAME, format!("refused: {e}"), fix_of(&e))
        }
        // Some tokens may not debug themselves; the other checks still show whether it works.
        Err(e) => {
            return Check::warn(
                NAME,
                format!("cannot read the token's validity and scopes: {e}"),
                "check the token in Meta's Access Token Debugger",
            )
        }
    };
    if data.get("is_valid").and_then(Value::as_bool) != Some(true) {
        return Check::fail(
            NAME,
            "Meta reports the token as not valid (expired or revoked)",
            fix_of_invalid(),
        );
    }
    let scopes: Vec<&str> = data
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let missing: Vec<&str> = SCOPES
        .iter()
        .copied()
        .filter(|s| !scopes.contains(s))
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            NAME,
            format!("the token lacks the permission {}", missing.join(" and ")),
            "generate a token with whatsapp_business_messaging and whatsapp_business_management (Business Settings > System users > Generate token)",
        );
    }
    let expires = data.get("expires_at").and_then(Value::as_i64).unwrap_or(0);
    let kind = data.get("type").and_then(Value::as_str).unwrap_or("token");
    let now = chrono::Utc::now().timestamp();
    if expires > 0 {
        let days = (expires - now) / 86_400;
        let when = chrono::DateTime::from_timestamp(expires, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| expires.to_string());
        if days < 7 {
            return Check::warn(
                NAME,
                format!("valid {kind}, expires {when}"),
                "use a system user token that does not expire (Business Settings > System users)",
            );
        }
        return Check::ok(
            NAME,
            format!("valid {kind} with {}, expires {when}", SCOPES.join(", ")),
        );
    }
    Check::ok(
        NAME,
        format!("valid {kind} with {}, does not expire", SCOPES.join(", ")),
    )
}

fn fix_of_invalid() -> &'static str {
    "generate a new token and set WHATSAPP_ACCESS_TOKEN (a system user token does not expire)"
}

/// `GET /{PHONE_NUMBER_ID}`: it exists, then its quality rating, messaging limit and
/// throughput level.
async fn phone_number(graph: &GraphClient) -> Vec<Check> {
    let id = graph.settings().phone_number_id.clone();
    let profile = match graph.phone_number_profile().await {
        Ok(p) => p,
        Err(e) => {
            let (detail, fix) = if e.code() == Some(NO_SUCH_OBJECT) {
                let phone_like = crate::phone::Phone::parse(&format!("+{id}"), None).is_ok();
                let detail = if phone_like {
                    format!("PHONE_NUMBER_ID {id} is unknown to Graph, and it reads like a phone number: Graph wants the number's id ({e})")
                } else {
                    format!("PHONE_NUMBER_ID {id} is unknown to Graph or this token cannot read it ({e})")
                };
                (detail, PHONE_ID_FIX)
            } else {
                (e.to_string(), fix_of(&e))
            };
            let mut checks = vec![Check::fail("phone_number", detail, fix)];
            for name in ["quality_rating", "messaging_limit", "throughput"] {
                checks.push(Check::skip(name, "a readable phone number"));
            }
            return checks;
        }
    };
    let text = |k: &str| profile.get(k).and_then(Value::as_str).map(str::to_string);
    let shown = match (text("display_phone_number"), text("verified_name")) {
        (Some(n), Some(v)) => format!("{id} is {n} ({v})"),
        (Some(n), None) => format!("{id} is {n}"),
        _ => format!("{id} exists"),
    };
    vec![
        Check::ok("phone_number", shown),
        quality_rating(text("quality_rating")),
        messaging_limit(
            text("whatsapp_business_manager_messaging_limit").or(text("messaging_limit_tier")),
        ),
        throughput(
            profile
                .pointer("/throughput/level")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
    ]
}

/// GREEN is fine, YELLOW a warning, RED a failure: Meta lowers the messaging limit of a
/// portfolio whose numbers stay low-quality
/// (<https://developers.facebook.com/docs/whatsapp/messaging-limits>).
fn quality_rating(rating: Option<String>) -> Check {
    const NAME: &str = "quality_rating";
    const FIX: &str = "send only to people who opted in, and check the feedback in WhatsApp Manager > Insights before the next campaign";
    match rating.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("GREEN") => Check::ok(NAME, "GREEN (high)"),
        Some("YELLOW") => Check::warn(
            NAME,
            "YELLOW (medium): recipients have been blocking or reporting",
            FIX,
        ),
        Some("RED") => Check::fail(NAME, "RED (low): the messaging limit may be lowered", FIX),
        Some(other) => Check::ok(NAME, format!("{other} (not rated yet)")),
        None => Check::warn(
            NAME,
            "not reported",
            "check WhatsApp Manager > Phone numbers",
        ),
    }
}

/// The portfolio's messaging limit: unique people reached outside a customer service window
/// per 24 hours. 250 (and the old 50) is a warning: a campaign larger than that stops
/// mid-way.
fn messaging_limit(limit: Option<String>) -> Check {
    const NAME: &str = "messaging_limit";
    let Some(limit) = limit else {
        return Check::warn(
            NAME,
            "not reported",
            "check WhatsApp Manager > Overview for the business portfolio's messaging limit",
        );
    };
    let people = match limit.to_ascii_uppercase().as_str() {
        "TIER_50" => "50",
        "TIER_250" => "250",
        "TIER_1K" => "1,000",
        "TIER_2K" => "2,000",
        "TIER_10K" => "10,000",
        "TIER_100K" => "100,000",
        "TIER_UNLIMITED" => "unlimited",
        _ => "",
    };
    let detail = if people.is_empty() {
        limit.clone()
    } else {
        format!("{limit}: {people} people per 24 hours")
    };
    if matches!(people, "50" | "250") {
        Check::warn(
            NAME,
            detail,
            "a larger campaign stops at the limit: verify the business or complete a scaling path (https://developers.facebook.com/docs/whatsapp/messaging-limits)",
        )
    } else {
        Check::ok(NAME, detail)
    }
}

/// STANDARD is 80 messages per second, HIGH 1,000
/// (<https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput>).
fn throughput(level: Option<String>) -> Check {
    const NAME: &str = "throughput";
    match level.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("STANDARD") => Check::ok(NAME, "STANDARD: up to 80 messages per second"),
        Some("HIGH") => Check::ok(NAME, "HIGH: up to 1,000 messages per second"),
        Some(other) => Check::warn(
            NAME,
            other.to_string(),
            "keep bulk --rate at or below what this level allows",
        ),
        None => Check::warn(NAME, "not reported", "keep bulk --rate at 80 or below"),
    }
}

/// `GET /{FLOW_ID}`: it exists and is PUBLISHED, and has the endpoint a data exchange needs.
async fn flow(graph: &GraphClient, settings: &DoctorSettings) -> Vec<Check> {
    let Some(flow_id) = &settings.flow_id else {
        return vec![
            Check::skip("flow", "FLOW_ID"),
            Check::skip("endpoint_uri", "FLOW_ID"),
        ];
    };
    if !flow_id.bytes().all(|b| b.is_ascii_digit()) {
        return vec![
            Check::fail(
                "flow",
                format!("FLOW_ID {flow_id:?} is not a Graph id (ids are digits only)"),
                "set FLOW_ID to the id shown in WhatsApp Manager > Flows",
            ),
            Check::skip("endpoint_uri", "a readable Flow"),
        ];
    }
    let flow = match graph.flow(flow_id).await {
        Ok(flow) => flow,
        Err(e) => {
            let fix = if e.code() == Some(NO_SUCH_OBJECT) {
                "set FLOW_ID to the id shown in WhatsApp Manager > Flows (the token's business must own the Flow)"
            } else {
                fix_of(&e)
            };
            let detail = if e.code() == Some(NO_SUCH_OBJECT) {
                format!("FLOW_ID {flow_id} is not a Flow this token can read ({e})")
            } else {
                e.to_string()
            };
            return vec![
                Check::fail("flow", detail, fix),
                Check::skip("endpoint_uri", "a readable Flow"),
            ];
        }
    };
    let name = flow.get("name").and_then(Value::as_str).unwrap_or("");
    let status = flow
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase();
    let about = format!("{flow_id} ({name:?}) is {status}");
    let mut status_check = match status.as_str() {
        "PUBLISHED" => Check::ok("flow", about),
        "DRAFT" => Check::fail("flow", about, "publish the Flow in WhatsApp Manager > Flows: a draft cannot be sent to customers"),
        "THROTTLED" => Check::fail("flow", format!("{about}: Meta sends it to at most 10 people an hour because its endpoint was slow or failing"), "make the endpoint answer fast and without errors (serve running, `flowctl keys check` passing); Meta returns the Flow to PUBLISHED once it is healthy"),
        "BLOCKED" => Check::fail("flow", format!("{about}: it cannot be sent"), "fix the endpoint's health (serve running, `flowctl keys check` passing), or send another Flow"),
        "DEPRECATED" => Check::fail("flow", format!("{about}: it can no longer be sent"), "clone it in WhatsApp Manager > Flows, publish the copy and set FLOW_ID to its id"),
        _ => Check::warn("flow", about, "check the Flow in WhatsApp Manager > Flows"),
    };
    let errors = flow
        .get("validation_errors")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if errors > 0 && status_check.status == Status::Ok {
        status_check = Check::warn(
            "flow",
            format!("{} with {errors} validation errors", status_check.detail),
            "open the Flow in WhatsApp Manager > Flows and fix its errors",
        );
    }
    let endpoint = flow.get("endpoint_uri").and_then(Value::as_str);
    let endpoint_check = match (settings.data_exchange, endpoint) {
        (false, Some(uri)) => Check::ok("endpoint_uri", uri.to_string()),
        (false, None) => Check::ok("endpoint_uri", "none (not needed: FLOW_ACTION is navigate)"),
        (true, None) => Check::fail(
            "endpoint_uri",
            "the Flow has no endpoint_uri, and FLOW_ACTION=data_exchange needs one",
            "set the Flow's endpoint to https://YOUR-HOST/api/flow (serve's data endpoint) in WhatsApp Manager > Flows, or use FLOW_ACTION=navigate",
        ),
        (true, Some(uri)) if !uri.starts_with("https://") => Check::fail(
            "endpoint_uri",
            format!("{uri} is not https"),
            "Meta calls the endpoint over HTTPS only: put serve behind a TLS proxy and set the Flow's endpoint to its https:// URL",
        ),
        (true, Some(uri)) => Check::ok("endpoint_uri", format!("{uri} (serve's /api/flow should answer there)")),
    };
    vec![status_check, endpoint_check]
}

/// The registered business public key is the local key's, and Meta reports it VALID; the
/// same test as `flowctl keys check`.
async fn public_key(graph: &GraphClient, settings: &DoctorSettings) -> Check {
    const NAME: &str = "public_key";
    let Some(key) = &settings.key else {
        return Check::skip(
            NAME,
            "a loadable private key (PRIVATE_KEY_FILE or PRIVATE_KEY)",
        );
    };
    let upload = "run `flowctl keys upload` with this private key";
    match graph.registered_public_key().await {
        Ok(None) => Check::fail(NAME, "no public key is registered for this number: the data endpoint gets 421s", upload),
        Ok(Some(r)) if !key.matches_public_pem(&r.pem) => Check::fail(
            NAME,
            "the registered public key is not the local private key's: WhatsApp clients get 421 from the endpoint",
            upload,
        ),
        Ok(Some(r)) if r.signature_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("MISMATCH")) => Check::fail(
            NAME,
            "Meta reports the registered key's signature as MISMATCH for this number",
            upload,
        ),
        Ok(Some(_)) => Check::ok(
            NAME,
            format!("registered and matches the local key ({})", key.public_key_fingerprint()),
        ),
        Err(e) => Check::fail(NAME, e.to_string(), fix_of(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_limits_and_levels() {
        assert_eq!(quality_rating(Some("GREEN".into())).status, Status::Ok);
        assert_eq!(quality_rating(Some("YELLOW".into())).status, Status::Warn);
        assert_eq!(quality_rating(Some("RED".into())).status, Status::Fail);
        assert_eq!(
            messaging_limit(Some("TIER_250".into())).status,
            Status::Warn
        );
        assert_eq!(messaging_limit(Some("TIER_10K".into())).status, Status::Ok);
        assert!(messaging_limit(Some("TIER_10K".into()))
            .detail
            .contains("10,000"));
        assert_eq!(throughput(Some("HIGH".into())).status, Status::Ok);
        assert_eq!(throughput(None).status, Status::Warn);
    }
}
