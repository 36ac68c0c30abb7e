//! Reads of the account's state, for `doctor`: the phone number's profile, a Flow, and the
//! access token's debug info. One request each, no policy; the caller interprets the fields.

use serde_json::Value;

use super::{parse_error, snippet, GraphClient, GraphError};

/// The phone number fields `doctor` reads. `whatsapp_business_manager_messaging_limit`
/// replaced `messaging_limit_tier`, which Meta deprecated:
/// <https://developers.facebook.com/docs/whatsapp/messaging-limits>. `throughput{level}`:
/// <https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput>.
pub const PHONE_NUMBER_FIELDS: &str = "id,display_phone_number,verified_name,quality_rating,throughput{level},whatsapp_business_manager_messaging_limit";

/// The Flow fields `doctor` reads:
/// <https://developers.facebook.com/docs/whatsapp/flows/reference/flowsapi>.
pub const FLOW_FIELDS: &str = "id,name,status,endpoint_uri,validation_errors";

impl GraphClient {
    /// `GET /{version}/{path}` with `query`, as JSON; an error envelope is a [`GraphError`].
    pub(super) async fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let base = format!(
            "{}/{}/{}",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.version.trim_matches('/'),
            path
        );
        let mut url = url::Url::parse(&base)
            .map_err(|e| GraphError::Connect(format!("GRAPH_API_URL: {e}")))?;
        url.query_pairs_mut().extend_pairs(query);
        let req = self
            .http
            .get(url)
            .bearer_auth(self.settings.access_token.expose());
        let (status, text, regain) = self.execute(req).await?;
        if !(200..300).contains(&status) {
            return Err(parse_error(status, &text).with_regain(regain));
        }
        serde_json::from_str(&text).map_err(|_| GraphError::InvalidResponse(snippet(&text)))
    }

    /// The business phone number's profile ([`PHONE_NUMBER_FIELDS`]).
    pub async fn phone_number_profile(&self) -> Result<Value, GraphError> {
        let id = self.settings.phone_number_id.clone();
        self.get_json(&id, &[("fields", PHONE_NUMBER_FIELDS)]).await
    }

    /// A Flow's state ([`FLOW_FIELDS`]).
    pub async fn flow(&self, flow_id: &str) -> Result<Value, GraphError> {
        self.get_json(flow_id, &[("fields", FLOW_FIELDS)]).await
    }

    /// What Graph says about the access token in use: `data.is_valid`, `data.scopes`,
    /// `data.expires_at` (<https://developers.facebook.com/docs/graph-api/reference/debug_token>).
    /// The token is both the subject and the credential; Meta accepts a token debugging
    /// itself. The answer text is redacted like every other.
    pub async fn debug_token(&self) -> Result<Value, GraphError> {
        let token = self.settings.access_token.expose().to_string();
        let v = self
            .get_json("debug_token", &[("input_token", token.as_str())])
            .await?;
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// The most pages an edge listing follows (`paging.next`): a loop guard, far above what an
/// account holds.
const MAX_PAGES: usize = 50;

impl GraphClient {
    /// `{base}/{version}/{path}` with `query`.
    fn versioned_url(&self, path: &str, query: &[(&str, &str)]) -> Result<url::Url, GraphError> {
        let base = format!(
            "{}/{}/{}",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.version.trim_matches('/'),
            path
        );
        let mut url = url::Url::parse(&base)
            .map_err(|e| GraphError::Connect(format!("GRAPH_API_URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends `req` with the token; the answer as JSON, an error envelope as a [`GraphError`].
    async fn json_answer(&self, req: reqwest::RequestBuilder) -> Result<Value, GraphError> {
        let req = req.bearer_auth(self.settings.access_token.expose());
        let (status, text, regain) = self.execute(req).await?;
        if !(200..300).contains(&status) {
            return Err(parse_error(status, &text).with_regain(regain));
        }
        serde_json::from_str(&text).map_err(|_| GraphError::InvalidResponse(snippet(&text)))
    }

    /// Every item of an edge (`data`), following `paging.next`.
    pub(super) async fn get_all(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, GraphError> {
        let mut url = self.versioned_url(path, query)?;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let v = self.json_answer(self.http.get(url.clone())).await?;
            if let Some(data) = v.get("data").and_then(Value::as_array) {
                items.extend(data.iter().cloned());
            }
            // Only a next page on the same host is followed: the token goes with it.
            match v
                .pointer("/paging/next")
                .and_then(Value::as_str)
                .and_then(|n| url::Url::parse(n).ok())
                .filter(|n| n.host_str() == url.host_str())
            {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(items)
    }

    /// `POST /{version}/{path}` with a JSON body.
    pub(super) async fn post_json(&self, path: &str, body: &Value) -> Result<Value, GraphError> {
        let url = self.versioned_url(path, &[])?;
        self.json_answer(self.http.post(url).json(body)).await
    }

    /// `POST /{version}/{path}` with a multipart/form-data body.
    pub(super) async fn post_multipart(
        &self,
        path: &str,
        parts: &[super::flows::Part<'_>],
    ) -> Result<Value, GraphError> {
        let url = self.versioned_url(path, &[])?;
        let (boundary, body) = super::flows::multipart(parts);
        let req = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        self.json_answer(req).await
    }

    /// `DELETE /{version}/{path}` with `query`.
    pub(super) async fn delete(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let url = self.versioned_url(path, query)?;
        self.json_answer(self.http.delete(url)).await
    }
}
