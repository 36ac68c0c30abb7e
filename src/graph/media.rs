//! Media of the Cloud API: what a completion message (`nfm_reply`) gives for each file a person
//! attached to a Flow is a media id, fetched in two requests (Meta's "Media" reference,
//! <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media/#download-media>):
//! `GET /{version}/{media-id}` answers `{url, mime_type, sha256, file_size, id}` (the URL is
//! valid for 5 minutes), then `GET url` with the same bearer token answers the file.

use serde::Deserialize;

use super::{parse_error, snippet, GraphClient, GraphError};

/// Where a media file can be downloaded, for a short while.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MediaUrl {
    pub url: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    /// The SHA-256 of the file, as Meta spells it.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Why a download of a media URL gave no file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request failed or the server answered an error status.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The file is larger than allowed.
    #[error("the file is over {0} bytes")]
    TooBig(u64),
}

impl GraphClient {
    /// `GET /{version}/{media-id}?phone_number_id=…`: the file's short-lived URL.
    pub async fn media_url(&self, media_id: &str) -> Result<MediaUrl, GraphError> {
        // The media id comes from a webhook body: encoded, so it stays one path segment.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let url = format!(
            "{}/{}/{}?phone_number_id={}",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.version.trim_matches('/'),
            enc(media_id),
            enc(&self.settings.phone_number_id),
        );
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

    /// Downloads a media URL with the bearer token, reading at most `limit` bytes.
    pub async fn download_media(&self, url: &str, limit: u64) -> Result<Vec<u8>, DownloadError> {
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(self.settings.access_token.expose())
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.text().await.unwrap_or_default();
            let text = crate::secret::redact(&text).into_owned();
            return Err(parse_error(status, &text).into());
        }
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(DownloadError::TooBig(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(DownloadError::TooBig(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
