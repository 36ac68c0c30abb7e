//! The Flows API as the sandbox plays it: create and list a WABA's Flows, upload the Flow
//! JSON (answering `validation_errors` with the line and column of each problem), publish,
//! deprecate, delete a draft, the preview URL and the endpoint metrics. The Flows live in the
//! simulated account (see `account`), so `GET /{flow-id}` and `doctor` see them.
//!
//! Meta's references for the shapes and codes:
//! - <https://developers.facebook.com/docs/whatsapp/flows/reference/flowsapi> (requests,
//!   answers, `validation_errors` with `line_start`, `line_end`, `column_start`, `column_end`,
//!   `pointers`; `GET /{flow-id}/assets` with `download_url`)
//! - <https://developers.facebook.com/docs/whatsapp/flows/reference/error-codes> (100 a Flow
//!   name already used, 139001 a published Flow cannot be updated, 139002 publishing a Flow
//!   that is not a valid draft, 139003 deprecating an unpublished Flow, 139004 deleting a
//!   published Flow; the static errors `INVALID_FLOW_JSON`, `MISSING_FLOW_JSON_VERSION`,
//!   `INVALID_ROUTING_MODEL`)
//! - <https://developers.facebook.com/documentation/business-messaging/whatsapp/flows/reference/metrics_api>
//!   (`metric.name(…).granularity(…).since(…).until(…)`, `data_points` of key/value pairs;
//!   the sandbox answers sample values shaped like the reference's examples)

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::account::Account;
use super::answer::{bytes_response, graph_error, json_response, Answer, LogFields, Resp};

/// The categories a Flow may have.
const CATEGORIES: [&str; 9] = [
    "SIGN_UP",
    "SIGN_IN",
    "APPOINTMENT_BOOKING",
    "LEAD_GENERATION",
    "CONTACT_US",
    "CUSTOMER_SUPPORT",
    "SURVEY",
    "SHOPPING",
    "OTHER",
];

/// What the sandbox keeps beside the account's Flows: each Flow's uploaded `flow.json`.
#[derive(Debug, Default)]
pub(crate) struct FlowAssets {
    assets: HashMap<String, Vec<u8>>,
    previews: HashMap<String, u32>,
}

const UNAUTHORIZED: &str =
    "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header";

fn no_such_flow(log: &mut LogFields, id: &str) -> Answer {
    graph_error(
        log,
        100,
        &format!("(#100) Flow with specified ID does not exist: '{id}'"),
    )
}

fn ok(v: Value) -> Answer {
    Answer::Reply(json_response(StatusCode::OK, &v))
}

/// `GET|POST /{v}/{waba-id}/flows`: the Flows, or a new draft.
pub(super) fn waba_flows(
    account: &Mutex<Account>,
    method: &Method,
    authorized: bool,
    body: &Value,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(log, 190, UNAUTHORIZED);
    }
    let mut account = account.lock().unwrap_or_else(PoisonError::into_inner);
    let flows = account.flows_mut();
    if method == Method::GET {
        let data: Vec<Value> = flows
            .iter()
            .map(|(id, f)| {
                let mut out = Map::new();
                out.insert("id".into(), json!(id));
                for k in ["name", "status", "categories", "validation_errors"] {
                    if let Some(v) = f.get(k) {
                        out.insert(k.into(), v.clone());
                    }
                }
                Value::Object(out)
            })
            .collect();
        return ok(json!({ "data": data, "paging": { "cursors": { "before": "", "after": "" } } }));
    }
    if method != Method::POST {
        return graph_error(
            log,
            100,
            &format!("(#100) Unsupported request: {method} flows"),
        );
    }
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if name.is_empty() {
        return graph_error(log, 100, "(#100) The parameter name is required");
    }
    let categories = match body.get("categories").and_then(Value::as_array) {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            return graph_error(
                log,
                100,
                "(#100) The parameter categories is required: at least one category",
            )
        }
    };
    if let Some(bad) = categories
        .iter()
        .find(|c| !c.as_str().is_some_and(|c| CATEGORIES.contains(&c)))
    {
        return graph_error(
            log,
            100,
            &format!(
                "(#100) Invalid category {bad}: expected one of {}",
                CATEGORIES.join(", ")
            ),
        );
    }
    if flows
        .values()
        .any(|f| f.get("name").and_then(Value::as_str) == Some(name))
    {
        return graph_error(
            log,
            100,
            &format!("(#100) Flow name is not unique: a Flow named {name:?} already exists on this WhatsApp Business Account"),
        );
    }
    let id = new_flow_id();
    let mut flow = json!({
        "name": name,
        "status": "DRAFT",
        "categories": categories,
        "validation_errors": [],
        "json_version": "7.2",
        "data_api_version": "3.0",
    });
    if let Some(uri) = body.get("endpoint_uri").and_then(Value::as_str) {
        flow["endpoint_uri"] = json!(uri);
    }
    flows.insert(id.clone(), flow);
    tracing::info!(flow_id = %id, name, "sandbox flow created");
    ok(json!({ "id": id, "success": true }))
}

/// A 16-digit id like Meta's.
fn new_flow_id() -> String {
    format!(
        "{}",
        1_000_000_000_000_000u64 + rand::random::<u64>() % 8_999_999_999_999_999
    )
}

/// `POST /{v}/{flow-id}` (metadata) and `DELETE /{v}/{flow-id}` (a draft).
pub(super) fn flow_node(
    account: &Mutex<Account>,
    assets: &Mutex<FlowAssets>,
    method: &Method,
    id: &str,
    authorized: bool,
    body: &Value,
    log: &mut LogFields,
) -> Option<Answer> {
    if !authorized {
        return Some(graph_error(log, 190, UNAUTHORIZED));
    }
    let mut account = account.lock().unwrap_or_else(PoisonError::into_inner);
    let flows = account.flows_mut();
    let status = flows
        .get(id)?
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if method == Method::DELETE {
        if status != "DRAFT" {
            return Some(graph_error(
                log,
                139004,
                &format!("(#139004) Can't delete a {status} Flow: deprecate it instead"),
            ));
        }
        flows.remove(id);
        assets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .assets
            .remove(id);
        return Some(ok(json!({ "success": true })));
    }
    let Some(changes) = body.as_object() else {
        return Some(graph_error(
            log,
            100,
            "(#100) Invalid parameter: expected a JSON object",
        ));
    };
    let allowed = ["name", "categories", "endpoint_uri", "application_id"];
    if let Some(k) = changes.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Some(graph_error(
            log,
            100,
            &format!("(#100) Unknown parameter {k:?}"),
        ));
    }
    if status != "DRAFT" && changes.keys().any(|k| k == "categories") {
        return Some(graph_error(
            log,
            139001,
            &format!("(#139001) Flow can't be updated: the Flow is {status}"),
        ));
    }
    if let Some(Value::Object(flow)) = flows.get_mut(id) {
        for (k, v) in changes {
            flow.insert(k.clone(), v.clone());
        }
    }
    Some(ok(json!({ "success": true })))
}

/// `POST /{v}/{flow-id}/assets|publish|deprecate` and `GET /{v}/{flow-id}/assets`.
pub(super) fn flow_edge(
    account: &Mutex<Account>,
    assets: &Mutex<FlowAssets>,
    req: EdgeRequest<'_>,
    log: &mut LogFields,
) -> Answer {
    let EdgeRequest {
        method,
        id,
        edge,
        authorized,
        raw,
        base_url,
    } = req;
    if !authorized {
        return graph_error(log, 190, UNAUTHORIZED);
    }
    let mut account = account.lock().unwrap_or_else(PoisonError::into_inner);
    let flows = account.flows_mut();
    let Some(Value::Object(flow)) = flows.get_mut(id) else {
        return no_such_flow(log, id);
    };
    let status = flow
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut assets = assets.lock().unwrap_or_else(PoisonError::into_inner);
    match (method, edge) {
        (&Method::GET, "assets") => {
            let data: Vec<Value> = assets
                .assets
                .contains_key(id)
                .then(|| {
                    json!({
                        "name": "flow.json",
                        "asset_type": "FLOW_JSON",
                        "download_url": format!("{base_url}/_sandbox/flow-assets/{id}"),
                    })
                })
                .into_iter()
                .collect();
            ok(json!({ "data": data, "paging": { "cursors": { "before": "", "after": "" } } }))
        }
        (&Method::POST, "assets") => {
            if status != "DRAFT" {
                return graph_error(
                    log,
                    139001,
                    &format!("(#139001) Flow can't be updated: the Flow is {status}; clone it to change it"),
                );
            }
            let parts = match raw.map(multipart_fields) {
                Some(Ok(parts)) => parts,
                Some(Err(why)) => {
                    return graph_error(log, 100, &format!("(#100) Invalid parameter: {why} (expected multipart/form-data with name, asset_type and file)"));
                }
                None => return graph_error(log, 100, "(#100) The parameter file is required"),
            };
            let field = |n: &str| parts.iter().find(|p| p.name == n);
            if field("asset_type").map(|p| p.data.as_slice()) != Some(b"FLOW_JSON".as_slice()) {
                return graph_error(
                    log,
                    100,
                    "(#100) Invalid parameter: asset_type must be FLOW_JSON",
                );
            }
            if field("name").map(|p| p.data.as_slice()) != Some(b"flow.json".as_slice()) {
                return graph_error(log, 100, "(#100) Invalid parameter: name must be flow.json");
            }
            let Some(file) = parts.iter().find(|p| p.filename.is_some()) else {
                return graph_error(log, 100, "(#100) The parameter file is required");
            };
            let text = String::from_utf8_lossy(&file.data).into_owned();
            let errors = validate_flow_json(&text);
            flow.insert("validation_errors".into(), Value::Array(errors.clone()));
            if let Some(v) = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("version").cloned())
            {
                flow.insert("json_version".into(), v);
            }
            assets.assets.insert(id.to_string(), file.data.clone());
            ok(json!({ "success": true, "validation_errors": errors }))
        }
        (&Method::POST, "publish") => {
            let errors = flow
                .get("validation_errors")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let why = if status != "DRAFT" {
                Some(format!("Publishing Flow in invalid state: the Flow is {status}, only a DRAFT can be published"))
            } else if !assets.assets.contains_key(id) {
                Some(
                    "Publishing Flow with validation errors: no Flow JSON was uploaded".to_string(),
                )
            } else if errors > 0 {
                Some(format!(
                    "Publishing Flow with validation errors: {errors} to fix"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return graph_error(log, 139002, &format!("(#139002) {why}"));
            }
            flow.insert("status".into(), json!("PUBLISHED"));
            ok(json!({ "success": true }))
        }
        (&Method::POST, "deprecate") => {
            if status != "PUBLISHED" {
                let why = if status == "DEPRECATED" {
                    "Flow is already deprecated"
                } else {
                    "Can't deprecate unpublished Flow"
                };
                return graph_error(log, 139003, &format!("(#139003) {why}"));
            }
            flow.insert("status".into(), json!("DEPRECATED"));
            ok(json!({ "success": true }))
        }
        _ => graph_error(
            log,
            100,
            &format!("(#100) Unsupported request: {method} {edge}"),
        ),
    }
}

/// One Flow edge request.
pub(super) struct EdgeRequest<'a> {
    pub(super) method: &'a Method,
    pub(super) id: &'a str,
    pub(super) edge: &'a str,
    pub(super) authorized: bool,
    pub(super) raw: Option<&'a [u8]>,
    /// The sandbox's own address, for download URLs.
    pub(super) base_url: &'a str,
}

/// Whether a `GET /{flow-id}` asks for the preview or a metric (answered here, not by
/// `account`).
pub(super) fn is_preview_or_metric(query: Option<&str>) -> bool {
    fields_param(query).is_some_and(|f| f.starts_with("preview") || f.starts_with("metric"))
}

fn fields_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "fields")
        .map(|(_, v)| v.into_owned())
}

/// `GET /{flow-id}?fields=preview.invalidate(B)` and `?fields=metric.name(…)…`.
pub(super) fn preview_or_metric(
    account: &Mutex<Account>,
    assets: &Mutex<FlowAssets>,
    id: &str,
    query: Option<&str>,
    authorized: bool,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(log, 190, UNAUTHORIZED);
    }
    if account
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .flows_mut()
        .get(id)
        .is_none()
    {
        return no_such_flow(log, id);
    }
    let fields = fields_param(query).unwrap_or_default();
    if let Some(rest) = fields.strip_prefix("preview") {
        let invalidate = rest.contains("invalidate(true)");
        let mut assets = assets.lock().unwrap_or_else(PoisonError::into_inner);
        let n = assets.previews.entry(id.to_string()).or_insert(1);
        if invalidate {
            *n += 1;
        }
        let expires = chrono::Utc::now() + chrono::Duration::days(30);
        return ok(json!({
            "preview": {
                "preview_url": format!("https://business.facebook.com/wa/manage/flows/{id}/preview/?token=sandbox-{id}-{n}"),
                "expires_at": expires.format("%Y-%m-%dT%H:%M:%S+0000").to_string(),
            },
            "id": id,
        }));
    }
    match metric(&fields) {
        Ok(v) => ok(json!({ "id": id, "metric": v })),
        Err(why) => graph_error(log, 100, &format!("(#100) {why}")),
    }
}

/// The argument of `key(…)` in a metrics field.
fn arg<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    let start = fields.find(&format!("{key}("))? + key.len() + 1;
    let end = fields[start..].find(')')? + start;
    Some(&fields[start..end])
}

/// Sample data points of a metric, one per day between `since` and `until` (three days by
/// default; one for `LIFETIME`).
fn metric(fields: &str) -> Result<Value, String> {
    let name = arg(fields, "name").ok_or("metric.name(…) is required")?;
    let granularity = arg(fields, "granularity")
        .ok_or("metric.granularity(…) is required")?
        .to_ascii_uppercase();
    let data: Value = match name {
        "ENDPOINT_REQUEST_COUNT" => json!([{ "key": "value", "value": 315 }]),
        "ENDPOINT_REQUEST_ERROR" => json!([
            { "key": "timeout_error", "value": 5 },
            { "key": "unexpected_http_status_code", "value": 10 }
        ]),
        "ENDPOINT_REQUEST_ERROR_RATE" => json!([{ "key": "value", "value": 0.05 }]),
        "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL" => json!([
            { "key": "1", "value": 280 }, { "key": "2", "value": 30 }, { "key": "10+", "value": 5 }
        ]),
        "ENDPOINT_AVAILABILITY" => json!([
            { "key": "succeeded", "value": 142 }, { "key": "failed", "value": 2 }
        ]),
        other => return Err(format!("Invalid metric name {other:?}")),
    };
    if !matches!(granularity.as_str(), "DAY" | "HOUR" | "LIFETIME") {
        return Err(format!(
            "Invalid granularity {granularity:?}: DAY, HOUR or LIFETIME"
        ));
    }
    let parse = |k: &str| -> Result<Option<chrono::NaiveDate>, String> {
        arg(fields, k)
            .map(|d| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|_| format!("{k}({d}) is not a YYYY-MM-DD date"))
            })
            .transpose()
    };
    let until = parse("until")?.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let since = parse("since")?.unwrap_or(until - chrono::Duration::days(2));
    let days: Vec<chrono::NaiveDate> = if granularity == "LIFETIME" {
        vec![since]
    } else {
        since
            .iter_days()
            .take_while(|d| *d <= until)
            .take(90)
            .collect()
    };
    let points: Vec<Value> = days
        .iter()
        .map(|d| json!({ "timestamp": format!("{d}T08:00:00+0000"), "data": data }))
        .collect();
    Ok(json!({ "granularity": granularity, "name": name, "data_points": points }))
}

/// `GET /_sandbox/flow-assets/{id}`: the uploaded `flow.json` (the CDN of the download URL).
pub(super) fn download(assets: &Mutex<FlowAssets>, id: &str) -> Resp {
    let assets = assets.lock().unwrap_or_else(PoisonError::into_inner);
    match assets.assets.get(id) {
        Some(bytes) => bytes_response(StatusCode::OK, "application/json", bytes.clone()),
        None => json_response(StatusCode::NOT_FOUND, &json!({ "error": "no such asset" })),
    }
}

/// One field of a multipart/form-data body.
struct Field {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

/// The fields of a multipart/form-data body; the boundary is read from its first line.
fn multipart_fields(body: &[u8]) -> Result<Vec<Field>, String> {
    let first_end = find(body, b"\r\n").ok_or("not multipart/form-data")?;
    let delimiter = &body[..first_end];
    if !delimiter.starts_with(b"--") || delimiter.len() < 3 {
        return Err("not multipart/form-data".into());
    }
    let mut fields = Vec::new();
    let mut rest = &body[first_end + 2..];
    loop {
        let head_end = find(rest, b"\r\n\r\n").ok_or("a part has no headers")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let after = &rest[head_end + 4..];
        let mut close = b"\r\n".to_vec();
        close.extend_from_slice(delimiter);
        let data_end = find(after, &close).ok_or("a part is not closed")?;
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .ok_or("a part has no Content-Disposition")?;
        let param = |key: &str| {
            let pat = format!("{key}=\"");
            disposition.find(&pat).and_then(|i| {
                let v = &disposition[i + pat.len()..];
                v.find('"').map(|j| v[..j].to_string())
            })
        };
        fields.push(Field {
            name: param("name").ok_or("a part has no name")?,
            filename: param("filename"),
            data: after[..data_end].to_vec(),
        });
        rest = &after[data_end + close.len()..];
        if rest.starts_with(b"--") {
            return Ok(fields);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a delimiter is not followed by a line end")?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// 1-based line and column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A validation error at `offset..offset+len` of `text`, in Meta's shape.
fn error_at(text: &str, code: &str, message: &str, offset: usize, len: usize, path: &str) -> Value {
    let (ls, cs) = line_col(text, offset);
    let (le, ce) = line_col(text, offset + len);
    json!({
        "error": code,
        "error_type": "FLOW_JSON_ERROR",
        "message": message,
        "line_start": ls, "line_end": le, "column_start": cs, "column_end": ce,
        "pointers": [{ "line_start": ls, "line_end": le, "column_start": cs, "column_end": ce, "path": path }]
    })
}

/// What Meta's static validation would say of an uploaded Flow JSON, for the problems the
/// sandbox knows: a syntax error, no `version`, a routing model naming an unknown screen, a
/// screen no route reaches.
pub(super) fn validate_flow_json(text: &str) -> Vec<Value> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, col) = (e.line(), e.column());
            return vec![json!({
                "error": "INVALID_FLOW_JSON",
                "error_type": "JSON_SYNTAX_ERROR",
                "message": format!("Flow JSON is not valid: {e}"),
                "line_start": line, "line_end": line, "column_start": col, "column_end": col + 1,
                "pointers": []
            })];
        }
    };
    let mut errors = Vec::new();
    if v.get("version").is_none() {
        errors.push(error_at(
            text,
            "MISSING_FLOW_JSON_VERSION",
            "Flow JSON version is not specified.",
            0,
            1,
            "",
        ));
    }
    let screens: Vec<String> = v
        .get("screens")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|s| s.get("id")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let Some(routing) = v.get("routing_model").and_then(Value::as_object) else {
        return errors;
    };
    let routing_at = text.find("\"routing_model\"").unwrap_or(0);
    for (from, tos) in routing {
        for name in std::iter::once(from.as_str()).chain(
            tos.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        ) {
            if !screens.iter().any(|s| s == name) {
                let quoted = format!("\"{name}\"");
                let at = text[routing_at..]
                    .find(&quoted)
                    .map_or(routing_at, |i| routing_at + i);
                errors.push(error_at(
                    text,
                    "INVALID_ROUTING_MODEL",
                    &format!("Invalid screens found in the routing model: {name}."),
                    at,
                    quoted.len(),
                    &format!("routing_model.{from}"),
                ));
            }
        }
    }
    let inbound: Vec<&str> = routing
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let entry = screens
        .iter()
        .find(|s| routing.contains_key(s.as_str()) && !inbound.contains(&s.as_str()));
    let mut reached: Vec<&str> = entry.map(|e| vec![e.as_str()]).unwrap_or_default();
    let mut i = 0;
    while i < reached.len() {
        for t in routing
            .get(reached[i])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !reached.contains(&t) {
                reached.push(t);
            }
        }
        i += 1;
    }
    for (idx, s) in screens.iter().enumerate() {
        if entry.is_some() && !reached.contains(&s.as_str()) {
            let quoted = format!("\"{s}\"");
            let at = text.find(&quoted).unwrap_or(0);
            errors.push(error_at(
                text,
                "INVALID_ROUTING_MODEL",
                &format!("Screens not connected: no route reaches screen {s}."),
                at,
                quoted.len(),
                &format!("screens[{idx}].id"),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_point_at_the_line_and_column() {
        let text = "{\n  \"version\": \"7.2\",\n  \"screens\": [,]\n}";
        let errs = validate_flow_json(text);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0]["error"], "INVALID_FLOW_JSON");
        assert_eq!(errs[0]["line_start"], 3);
    }

    #[test]
    fn an_unknown_screen_in_the_routing_model_is_pointed_at() {
        let text = "{\n\"version\": \"7.2\",\n\"routing_model\": {\n  \"A\": [\"GHOST\"]\n},\n\"screens\": [{\"id\": \"A\"}]\n}";
        let errs = validate_flow_json(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0]["error"], "INVALID_ROUTING_MODEL");
        assert_eq!(errs[0]["line_start"], 4);
        assert_eq!(errs[0]["column_start"], 9);
    }

    #[test]
    fn multipart_fields_are_read() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nflow.json\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"flow.json\"\r\nContent-Type: application/json\r\n\r\n{}\r\n--XyZ--\r\n";
        let f = multipart_fields(body).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].data, b"flow.json");
        assert_eq!(f[1].filename.as_deref(), Some("flow.json"));
        assert_eq!(f[1].data, b"{}");
    }

    #[test]
    fn metrics_have_one_point_per_day() {
        let m = metric("metric.name(ENDPOINT_REQUEST_COUNT).granularity(DAY).since(2024-01-28).until(2024-01-30)").unwrap();
        assert_eq!(m["data_points"].as_array().unwrap().len(), 3);
        assert_eq!(m["data_points"][0]["timestamp"], "2024-01-28T08:00:00+0000");
        assert!(metric("metric.name(NOPE).granularity(DAY)").is_err());
    }
}
