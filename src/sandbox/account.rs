//! The simulated account's objects that `doctor` reads: the phone number's profile, the
//! Flows, and what `debug_token` says about the access token; with `POST /_sandbox/account`
//! to make any of them bad (a RED rating, a low limit, a THROTTLED Flow, an invalid token).
//!
//! Meta's references for the shapes:
//! - phone number fields (`quality_rating`, `throughput{level}`, and the portfolio's
//!   `whatsapp_business_manager_messaging_limit`, which replaced the deprecated
//!   `messaging_limit_tier`):
//!   <https://developers.facebook.com/docs/whatsapp/messaging-limits>,
//!   <https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput>
//! - a Flow's fields (`name`, `status`: DRAFT, PUBLISHED, DEPRECATED, BLOCKED or THROTTLED,
//!   `endpoint_uri`, `validation_errors`):
//!   <https://developers.facebook.com/docs/whatsapp/flows/reference/flowsapi>
//! - `GET /debug_token?input_token=…` answers `{"data": {"is_valid", "scopes", "expires_at",
//!   …}}`: <https://developers.facebook.com/docs/graph-api/reference/debug_token>
//!
//! Reading a field the node type does not have is error 100 ("Tried accessing nonexisting
//! field"), as Graph answers; an id that is no Flow, asked for a Flow's fields, does not
//! exist, nor does an id that is really a phone number (`212612345678`: a common mistake for
//! `PHONE_NUMBER_ID`). Every other numeric id is the business phone number, as before.

use std::sync::{Mutex, PoisonError};

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::answer::{graph_error, json_response, Answer, LogFields, Resp};

/// The objects of the simulated account.
#[derive(Debug)]
pub(crate) struct Account {
    /// The phone number's profile (every numeric id that is not a Flow).
    phone_number: Map<String, Value>,
    /// The Flows, by id.
    flows: Map<String, Value>,
    /// What `debug_token` reports about any token.
    token: Map<String, Value>,
    /// When each THROTTLED Flow was last sent, within the hour (Meta lets 10 through).
    throttled_sends: std::collections::HashMap<String, Vec<std::time::Instant>>,
}

/// The scopes a system user token for WhatsApp messaging carries.
const SCOPES: [&str; 2] = [
    "whatsapp_business_management",
    "whatsapp_business_messaging",
];

/// What the sandbox says when `--endpoint` does not name the data endpoint.
const DEFAULT_ENDPOINT_URI: &str = "https://flowctl.example/api/flow";

/// Fields of a Flow node.
const FLOW_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "endpoint_uri",
    "validation_errors",
    "categories",
    "json_version",
    "data_api_version",
];

/// Fields of a phone number node.
const PHONE_FIELDS: &[&str] = &[
    "id",
    "verified_name",
    "display_phone_number",
    "quality_rating",
    "throughput",
    "whatsapp_business_manager_messaging_limit",
    "messaging_limit_tier",
    "code_verification_status",
    "platform_type",
    "name_status",
];

impl Account {
    /// A healthy account owning `flows` (`(id, status)`), whose endpoint is `endpoint_uri`.
    pub(crate) fn new(flows: &[(String, String)], endpoint_uri: Option<&str>) -> Account {
        let phone_number = json!({
            "verified_name": "flowctl sandbox",
            "display_phone_number": "+1 555-0100",
            "quality_rating": "GREEN",
            "throughput": { "level": "STANDARD" },
            "whatsapp_business_manager_messaging_limit": "TIER_10K",
            "code_verification_status": "VERIFIED",
            "platform_type": "CLOUD_API",
            "name_status": "APPROVED",
        });
        let flows = flows
            .iter()
            .map(|(id, status)| {
                let flow = json!({
                    "name": format!("sandbox flow {id}"),
                    "status": status,
                    "endpoint_uri": endpoint_uri.unwrap_or(DEFAULT_ENDPOINT_URI),
                    "validation_errors": [],
                    "categories": ["SURVEY"],
                    "json_version": "7.1",
                    "data_api_version": "3.0",
                });
                (id.clone(), flow)
            })
            .collect();
        let token = json!({
            "app_id": "100000000000001",
            "type": "SYSTEM_USER",
            "application": "flowctl sandbox",
            "expires_at": 0,
            "is_valid": true,
            "scopes": SCOPES,
        });
        Account {
            phone_number: object(phone_number),
            flows,
            token: object(token),
            throttled_sends: Default::default(),
        }
    }
}

impl Account {
    /// The Flows by id, for the Flows API (`flows_api`).
    pub(crate) fn flows_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.flows
    }

    /// A Flow's status, when the account owns it.
    pub(crate) fn flow_status(&self, id: &str) -> Option<String> {
        self.flows
            .get(id)
            .and_then(|f| f.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The Graph error a send of Flow `id` meets, per Flow Health and Monitoring
    /// (<https://developers.facebook.com/docs/whatsapp/flows/guides/healthmonitoring>): none
    /// sent while BLOCKED (132068), 10 an hour while THROTTLED (132069 past them). A Flow the
    /// account does not know is let through, as before Flows had statuses here.
    pub(crate) fn flow_send_refusal(&mut self, id: &str) -> Option<u32> {
        const THROTTLED_PER_HOUR: usize = 10;
        match self.flow_status(id).as_deref() {
            Some("BLOCKED") => Some(132068),
            Some("THROTTLED") => {
                let hour = std::time::Duration::from_secs(3600);
                let sends = self.throttled_sends.entry(id.to_string()).or_default();
                sends.retain(|t| t.elapsed() < hour);
                if sends.len() >= THROTTLED_PER_HOUR {
                    Some(132069)
                } else {
                    sends.push(std::time::Instant::now());
                    None
                }
            }
            _ => None,
        }
    }

    /// Sets a Flow's status (creating the Flow when unknown); returns the old status
    /// (`DRAFT` for a new Flow).
    pub(crate) fn set_flow_status(&mut self, id: &str, status: &str) -> String {
        let old = self.flow_status(id).unwrap_or_else(|| "DRAFT".into());
        let fresh = Account::new(&[(id.to_string(), status.to_string())], None);
        let flow = self
            .flows
            .entry(id.to_string())
            .or_insert_with(|| fresh.flows[id].clone());
        if let Value::Object(flow) = flow {
            flow.insert("status".into(), Value::String(status.to_string()));
        }
        old
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Sets each key of `changes` in `target`; a `null` removes the key.
fn merge(target: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (k, v) in changes {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// `POST /_sandbox/account {"phone_number": {…}, "flows": {"ID": {…} | null}, "token": {…}}`:
/// changes the account's objects field by field (`null` removes a field, or a Flow). A Flow
/// not yet known is created PUBLISHED first.
pub(super) fn update(account: &Mutex<Account>, body: Option<&[u8]>) -> Resp {
    let Some(Value::Object(changes)) = body.and_then(|b| serde_json::from_slice(b).ok()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "expected {\"phone_number\": {…}, \"flows\": {\"ID\": {…}}, \"token\": {…}}" }),
        );
    };
    let mut account = account.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(Value::Object(c)) = changes.get("phone_number") {
        merge(&mut account.phone_number, c);
    }
    if let Some(Value::Object(c)) = changes.get("token") {
        merge(&mut account.token, c);
    }
    if let Some(Value::Object(flows)) = changes.get("flows") {
        for (id, c) in flows {
            match c {
                Value::Object(c) => {
                    let fresh = Account::new(&[(id.clone(), "PUBLISHED".into())], None);
                    let flow = account
                        .flows
                        .entry(id.clone())
                        .or_insert_with(|| fresh.flows[id].clone());
                    if let Value::Object(flow) = flow {
                        merge(flow, c);
                    }
                }
                _ => {
                    account.flows.remove(id);
                }
            }
        }
    }
    tracing::info!("sandbox account changed");
    json_response(
        StatusCode::OK,
        &json!({
            "phone_number": account.phone_number,
            "flows": account.flows,
            "token": account.token,
        }),
    )
}

/// The top-level names of a `fields` parameter: `a,b{c,d},e` → `a`, `b`, `e`.
fn field_names(fields: &str) -> Vec<String> {
    let (mut names, mut depth, mut current) = (Vec::new(), 0usize, String::new());
    for ch in fields.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => names.push(std::mem::take(&mut current)),
            c if depth == 0 => current.push(c),
            _ => {}
        }
    }
    names.push(current);
    names
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The value of `name` in a query string.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

const UNAUTHORIZED: &str =
    "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header";

/// `GET /{version}/{id}?fields=…`: a Flow when `id` is one, else the phone number's profile.
pub(super) fn node(
    account: &Mutex<Account>,
    id: &str,
    query: Option<&str>,
    authorized: bool,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(log, 190, UNAUTHORIZED);
    }
    let account = account.lock().unwrap_or_else(PoisonError::into_inner);
    let requested = query_param(query, "fields").map(|f| field_names(&f));
    let (node_type, fields, known): (_, _, &[&str]) = match account.flows.get(id) {
        Some(Value::Object(flow)) => ("WhatsAppFlow", flow, FLOW_FIELDS),
        // A phone number is not an id: Graph knows no object by that number.
        _ if crate::phone::Phone::parse(&format!("+{id}"), None).is_ok() => {
            let message = format!(
                "(#100) Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
            );
            return graph_error(log, 100, &message);
        }
        _ => {
            let asks_flow_fields = requested
                .iter()
                .flatten()
                .any(|f| FLOW_FIELDS.contains(&f.as_str()) && !PHONE_FIELDS.contains(&f.as_str()));
            if asks_flow_fields {
                let message = format!(
                    "(#100) Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
                );
                return graph_error(log, 100, &message);
            }
            (
                "WhatsAppBusinessPhoneNumber",
                &account.phone_number,
                PHONE_FIELDS,
            )
        }
    };
    let names: Vec<String> = match requested {
        Some(names) => names,
        // Without `fields`, Graph answers a default set.
        None => fields.keys().cloned().collect(),
    };
    let mut out = Map::new();
    for name in &names {
        if !known.contains(&name.as_str()) {
            let message = format!(
                "(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})"
            );
            return graph_error(log, 100, &message);
        }
        if let Some(v) = fields.get(name) {
            out.insert(name.clone(), v.clone());
        }
    }
    out.insert("id".into(), Value::String(id.to_string()));
    Answer::Reply(json_response(StatusCode::OK, &Value::Object(out)))
}

/// `GET /{version}/debug_token?input_token=…`: what the account says about the token.
pub(super) fn debug_token(
    account: &Mutex<Account>,
    query: Option<&str>,
    authorized: bool,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(log, 190, UNAUTHORIZED);
    }
    if query_param(query, "input_token").is_none_or(|t| t.trim().is_empty()) {
        return graph_error(log, 100, "(#100) The parameter input_token is required");
    }
    let account = account.lock().unwrap_or_else(PoisonError::into_inner);
    Answer::Reply(json_response(
        StatusCode::OK,
        &json!({ "data": account.token }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_keep_the_top_level_only() {
        assert_eq!(
            field_names("id,throughput{level}, quality_rating ,a{b,c{d}},e"),
            ["id", "throughput", "quality_rating", "a", "e"]
        );
        assert!(field_names("").is_empty());
    }
}
