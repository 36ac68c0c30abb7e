//! The Flows API: list, create, read, upload the Flow JSON, publish, deprecate, delete,
//! preview and metrics of the account's Flows. One request each, no policy.
//!
//! Meta's reference: <https://developers.facebook.com/docs/whatsapp/flows/reference/flowsapi>
//! (`GET|POST /{WABA-ID}/flows`, `POST /{FLOW-ID}/assets` as multipart with `name=flow.json`
//! and `asset_type=FLOW_JSON`, whose answer carries `validation_errors` with `line_start`,
//! `line_end`, `column_start`, `column_end` and `pointers`; `POST /{FLOW-ID}/publish`,
//! `/deprecate`, `DELETE /{FLOW-ID}` for a draft, `fields=preview.invalidate(false)`), and the
//! metrics API: <https://developers.facebook.com/documentation/business-messaging/whatsapp/flows/reference/metrics_api>
//! (`fields=metric.name(NAME).granularity(DAY|HOUR|LIFETIME).since(YYYY-MM-DD).until(…)`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{GraphClient, GraphError};

/// The Flow fields `flows list` and `flows get` read.
pub const FLOW_LIST_FIELDS: &str = "id,name,status,categories,validation_errors";

/// The metrics Meta's Flow metrics API knows (`metric.name(…)`).
pub const FLOW_METRICS: [&str; 5] = [
    "ENDPOINT_REQUEST_COUNT",
    "ENDPOINT_REQUEST_ERROR",
    "ENDPOINT_REQUEST_ERROR_RATE",
    "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL",
    "ENDPOINT_AVAILABILITY",
];

/// One entry of a Flow JSON's `validation_errors`, as Meta reports it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ValidationError {
    /// e.g. `INVALID_PROPERTY_VALUE`.
    #[serde(default)]
    pub error: String,
    /// e.g. `FLOW_JSON_ERROR`.
    #[serde(default)]
    pub error_type: String,
    /// A sentence about the problem.
    #[serde(default)]
    pub message: String,
    /// 1-based line of the uploaded file where the problem starts.
    #[serde(default)]
    pub line_start: Option<u64>,
    /// 1-based line where it ends.
    #[serde(default)]
    pub line_end: Option<u64>,
    /// 1-based column where it starts.
    #[serde(default)]
    pub column_start: Option<u64>,
    /// 1-based column where it ends.
    #[serde(default)]
    pub column_end: Option<u64>,
    /// The JSON paths involved, each with its own position.
    #[serde(default)]
    pub pointers: Vec<Value>,
}

/// What an upload of the Flow JSON answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssetUpload {
    /// `success`.
    pub success: bool,
    /// The problems Meta found in the file (the upload is kept, the Flow cannot be published).
    pub validation_errors: Vec<ValidationError>,
}

/// One asset of a Flow (`GET /{FLOW-ID}/assets`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowAsset {
    /// `flow.json`.
    pub name: String,
    /// `FLOW_JSON`.
    pub asset_type: String,
    /// Where to download it (a short-lived CDN URL that needs no token).
    pub download_url: String,
}

/// Parses a `validation_errors` array; entries that are not objects are skipped.
pub fn validation_errors(v: &Value) -> Vec<ValidationError> {
    v.get("validation_errors")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|e| serde_json::from_value(e.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The `fields` value of a metrics request.
pub fn metric_field(
    name: &str,
    granularity: &str,
    since: Option<&str>,
    until: Option<&str>,
) -> String {
    let mut f = format!("metric.name({name}).granularity({granularity})");
    if let Some(s) = since {
        f.push_str(&format!(".since({s})"));
    }
    if let Some(u) = until {
        f.push_str(&format!(".until({u})"));
    }
    f
}

impl GraphClient {
    /// The account's Flows (`GET /{WABA-ID}/flows`), every page.
    pub async fn list_flows(&self, waba_id: &str) -> Result<Vec<Value>, GraphError> {
        self.get_all(&format!("{waba_id}/flows"), &[("fields", FLOW_LIST_FIELDS)])
            .await
    }

    /// Creates a draft Flow (`POST /{WABA-ID}/flows`); its id.
    pub async fn create_flow(
        &self,
        waba_id: &str,
        name: &str,
        categories: &[String],
        endpoint_uri: Option<&str>,
    ) -> Result<String, GraphError> {
        let mut body = json!({ "name": name, "categories": categories });
        if let Some(uri) = endpoint_uri {
            body["endpoint_uri"] = json!(uri);
        }
        let v = self.post_json(&format!("{waba_id}/flows"), &body).await?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| GraphError::InvalidResponse(v.to_string()))
    }

    /// A Flow's fields (`GET /{FLOW-ID}?fields=…`).
    pub async fn flow_fields(&self, flow_id: &str, fields: &str) -> Result<Value, GraphError> {
        self.get_json(flow_id, &[("fields", fields)]).await
    }

    /// Changes a Flow's metadata (`POST /{FLOW-ID}` with `name`, `categories`,
    /// `endpoint_uri`, …).
    pub async fn update_flow(&self, flow_id: &str, changes: &Value) -> Result<(), GraphError> {
        let v = self.post_json(flow_id, changes).await?;
        success(v)
    }

    /// Uploads `json` as the Flow's `flow.json` asset (multipart, as Meta wants).
    pub async fn upload_flow_json(
        &self,
        flow_id: &str,
        json: &[u8],
    ) -> Result<AssetUpload, GraphError> {
        let parts = [
            Part::Text("name", "flow.json"),
            Part::Text("asset_type", "FLOW_JSON"),
            Part::File("file", "flow.json", "application/json", json),
        ];
        let v = self
            .post_multipart(&format!("{flow_id}/assets"), &parts)
            .await?;
        Ok(AssetUpload {
            success: v.get("success").and_then(Value::as_bool) == Some(true),
            validation_errors: validation_errors(&v),
        })
    }

    /// The Flow's assets (`GET /{FLOW-ID}/assets`).
    pub async fn flow_assets(&self, flow_id: &str) -> Result<Vec<FlowAsset>, GraphError> {
        let items = self.get_all(&format!("{flow_id}/assets"), &[]).await?;
        Ok(items
            .iter()
            .filter_map(|a| {
                Some(FlowAsset {
                    name: a.get("name")?.as_str()?.to_string(),
                    asset_type: a.get("asset_type")?.as_str()?.to_string(),
                    download_url: a.get("download_url")?.as_str()?.to_string(),
                })
            })
            .collect())
    }

    /// Downloads an asset. The URL is Meta's CDN's: the access token is not sent there.
    pub async fn download_asset(&self, url: &str) -> Result<Vec<u8>, GraphError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        if !(200..300).contains(&status) {
            return Err(GraphError::Http {
                status,
                snippet: super::snippet(&String::from_utf8_lossy(&bytes)),
            });
        }
        Ok(bytes.to_vec())
    }

    /// Publishes a Flow (`POST /{FLOW-ID}/publish`).
    pub async fn publish_flow(&self, flow_id: &str) -> Result<(), GraphError> {
        let v = self
            .post_json(&format!("{flow_id}/publish"), &json!({}))
            .await?;
        success(v)
    }

    /// Deprecates a published Flow (`POST /{FLOW-ID}/deprecate`).
    pub async fn deprecate_flow(&self, flow_id: &str) -> Result<(), GraphError> {
        let v = self
            .post_json(&format!("{flow_id}/deprecate"), &json!({}))
            .await?;
        success(v)
    }

    /// Deletes a draft Flow (`DELETE /{FLOW-ID}`).
    pub async fn delete_flow(&self, flow_id: &str) -> Result<(), GraphError> {
        let v = self.delete(flow_id, &[]).await?;
        success(v)
    }

    /// The Flow's preview: `{"preview": {"preview_url", "expires_at"}, "id"}`; `invalidate`
    /// asks for a new URL.
    pub async fn flow_preview(&self, flow_id: &str, invalidate: bool) -> Result<Value, GraphError> {
        let field = format!("preview.invalidate({invalidate})");
        self.get_json(flow_id, &[("fields", field.as_str())]).await
    }

    /// One metric of the Flow's endpoint: `{"metric": {"name", "granularity", "data_points"}}`.
    pub async fn flow_metric(
        &self,
        flow_id: &str,
        name: &str,
        granularity: &str,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Value, GraphError> {
        let field = metric_field(name, granularity, since, until);
        self.get_json(flow_id, &[("fields", field.as_str())]).await
    }
}

/// `{"success": true}`, else the answer as an unexpected one.
fn success(v: Value) -> Result<(), GraphError> {
    if v.get("success").and_then(Value::as_bool) == Some(true) {
        Ok(())
    } else {
        Err(GraphError::InvalidResponse(super::snippet(&v.to_string())))
    }
}

/// One part of a multipart/form-data body.
pub(super) enum Part<'a> {
    /// A text field: name, value.
    Text(&'a str, &'a str),
    /// A file: field name, file name, content type, bytes.
    File(&'a str, &'a str, &'a str, &'a [u8]),
}

/// A multipart/form-data body (RFC 7578) and its boundary. The boundary is random, and long
/// enough that a Flow JSON cannot contain it by chance.
pub(super) fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = format!("flowctl-{:032x}", rand::random::<u128>());
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, file, content_type, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_keep_meta_positions() {
        let v = json!({"success": true, "validation_errors": [{
            "error": "INVALID_PROPERTY_VALUE", "error_type": "FLOW_JSON_ERROR",
            "message": "Invalid value found for property 'type'.",
            "line_start": 10, "line_end": 10, "column_start": 21, "column_end": 34,
            "pointers": [{"line_start": 10, "line_end": 10, "column_start": 21, "column_end": 34,
                          "path": "screens[0].layout.children[0].type"}]
        }, "not an object"]});
        let errs = validation_errors(&v);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line_start, Some(10));
        assert_eq!(errs[0].column_start, Some(21));
        assert_eq!(errs[0].pointers.len(), 1);
    }

    #[test]
    fn metric_field_is_meta_syntax() {
        assert_eq!(
            metric_field("ENDPOINT_REQUEST_COUNT", "DAY", Some("2024-01-28"), Some("2024-01-30")),
            "metric.name(ENDPOINT_REQUEST_COUNT).granularity(DAY).since(2024-01-28).until(2024-01-30)"
        );
        assert_eq!(
            metric_field("ENDPOINT_AVAILABILITY", "LIFETIME", None, None),
            "metric.name(ENDPOINT_AVAILABILITY).granularity(LIFETIME)"
        );
    }

    #[test]
    fn multipart_body_has_each_part_and_the_closing_boundary() {
        let (b, body) = multipart(&[
            Part::Text("asset_type", "FLOW_JSON"),
            Part::File("file", "flow.json", "application/json", b"{\"a\":1}"),
        ]);
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{b}\r\n")));
        assert!(text.contains("name=\"asset_type\"\r\n\r\nFLOW_JSON\r\n"));
        assert!(text.contains(
            "filename=\"flow.json\"\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n"
        ));
        assert!(text.ends_with(&format!("--{b}--\r\n")));
    }
}
