//! HTTP routes: `POST /files` for browsers, which cannot stream a request
//! body over Connect, and `GET /files/{id}/content?exp=..&sig=..` for
//! signed download links.

mod download;
mod range;

use agyn_core::{Caller, Error};
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use connectrpc::ConnectError;
use futures::TryStreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::Files;
use crate::model::UploadMetadata;

/// Header that carries the percent-encoded file name of `POST /files`.
pub const FILENAME_HEADER: &str = "x-agyn-filename";

/// Header that names the organization of `POST /files`.
pub const ORGANIZATION_HEADER: &str = "x-agyn-organization-id";

impl Files {
    /// Builds the HTTP routes `POST /files` and `GET /files/{id}/content`.
    /// The upload route needs an [`agyn_core::Caller`] in the request
    /// extensions. The download route ignores it, because the link's
    /// signature is the credential.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/files", post(upload))
            .route("/files/{id}/content", get(download::download))
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
    organization_id: Option<String>,
    #[serde(default)]
    request_id: String,
}

async fn upload(
    State(files): State<Files>,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> Response {
    match upload_body(&files, query, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(code = ?error.code(), message = %error.message(), "File upload rejected");
            connect_error_response(error)
        }
    }
}

async fn upload_body(
    files: &Files,
    query: UploadQuery,
    request: Request,
) -> Result<Response, Error> {
    let caller = Caller::from_extensions(request.extensions())?.clone();
    let metadata = upload_metadata(request.headers(), query)?;
    let chunks = request
        .into_body()
        .into_data_stream()
        .map_err(|_| Error::invalid_argument("the request body ended before it was complete"));
    let record = files.upload_file(&caller, &metadata, chunks).await?;

    let info = crate::service::file_to_proto(&record);
    let body = serde_json::to_vec(&info)
        .map_err(|error| Error::internal("encoding the file info failed", error))?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Reads the upload description from the headers, falling back to the
/// query parameters. `Content-Length` becomes the declared size, so an
/// oversized body is rejected before it is read.
fn upload_metadata(headers: &HeaderMap, query: UploadQuery) -> Result<UploadMetadata, Error> {
    let filename = match headers.get(FILENAME_HEADER) {
        Some(value) => percent_decode(value.as_bytes()).ok_or_else(|| {
            Error::invalid_field(FILENAME_HEADER, "must be percent-encoded UTF-8")
        })?,
        None => query.filename.ok_or_else(|| {
            Error::invalid_field(
                "filename",
                "is required: send the X-Agyn-Filename header or the filename query parameter",
            )
        })?,
    };
    let organization_id = match headers.get(ORGANIZATION_HEADER) {
        Some(value) => Some(header_text(value, ORGANIZATION_HEADER)?),
        None => query.organization_id,
    };
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) => header_text(value, "content_type")?,
        None => String::new(),
    };
    let size_bytes = match headers.get(header::CONTENT_LENGTH) {
        Some(value) => header_text(value, "Content-Length")?
            .parse::<i64>()
            .map_err(|_| Error::invalid_field("Content-Length", "must be a number"))?,
        None => 0,
    };
    Ok(UploadMetadata {
        filename,
        content_type,
        size_bytes,
        organization_id,
        request_id: query.request_id,
    })
}

fn header_text(value: &HeaderValue, field: &str) -> Result<String, Error> {
    value
        .to_str()
        .map(str::to_string)
        .map_err(|_| Error::invalid_field(field, "must be visible ASCII"))
}

/// Renders `error` as a Connect error JSON body with its HTTP status, and
/// 413 for a file above the limit.
pub(super) fn connect_error_response(error: Error) -> Response {
    let too_large = error.reason() == Some("FILE_TOO_LARGE");
    let connect = ConnectError::from(error);
    let status = if too_large {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        connect.http_status()
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        connect.to_json(),
    )
        .into_response()
}

/// Encodes `value` for an RFC 8187 `filename*` parameter: every byte
/// outside the unreserved `attr-char` set becomes `%XX`.
pub(super) fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes `%XX` escapes and returns the text, or `None` for a malformed
/// escape or bytes that are not UTF-8.
fn percent_decode(value: &[u8]) -> Option<String> {
    let mut decoded = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = (*bytes.next()? as char).to_digit(16)?;
            let low = (*bytes.next()? as char).to_digit(16)?;
            decoded.push((high * 16 + low) as u8);
        } else {
            decoded.push(byte);
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_encoding_round_trip() {
        let name = "отчёт 100%.txt";
        let encoded = percent_encode(name);
        assert!(encoded.is_ascii());
        assert!(!encoded.contains(' '));
        assert_eq!(percent_decode(encoded.as_bytes()).as_deref(), Some(name));
    }

    #[test]
    fn percent_decode_rejects_bad_escapes() {
        assert_eq!(percent_decode(b"a%2"), None);
        assert_eq!(percent_decode(b"a%zz"), None);
        assert_eq!(percent_decode(b"%ff"), None);
    }
}
