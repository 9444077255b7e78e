//! `GET /files/{id}/content?exp=..&sig=..`: downloads through signed
//! links, with single `Range` requests.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::range::ByteRange;
use super::{connect_error_response, percent_encode};
use crate::Files;
use crate::model::FileRecord;

#[derive(Deserialize)]
pub(super) struct LinkQuery {
    exp: Option<String>,
    sig: Option<String>,
}

pub(super) async fn download(
    State(files): State<Files>,
    Path(id): Path<String>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
) -> Response {
    let expires_at = match verify_link(&files, &id, link) {
        Ok(expires_at) => expires_at,
        Err(message) => return forbidden(message),
    };
    let record = match files.load(&id).await {
        Ok(record) => record,
        Err(error) => return connect_error_response(error),
    };

    let size = record.size_bytes as u64;
    let requested = match headers.get(header::RANGE) {
        Some(value) => ByteRange::parse(value.as_bytes(), size),
        None => ByteRange::Full,
    };
    let (status, bytes) = match requested {
        ByteRange::Full => (StatusCode::OK, 0..size),
        ByteRange::Single(range) => (StatusCode::PARTIAL_CONTENT, range),
        ByteRange::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let stream = match files.read_range(&record, bytes.clone()).await {
        Ok(stream) => stream,
        Err(error) => return connect_error_response(error),
    };

    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let max_age = expires_at - unix_seconds();
    set_content_headers(response.headers_mut(), &record, max_age);
    set_length_headers(response.headers_mut(), &bytes, size, status);
    response
}

/// Checks the signature, then the expiry, and returns the expiry in Unix
/// seconds, or the message of the 403 response.
fn verify_link(files: &Files, id: &str, link: LinkQuery) -> Result<i64, &'static str> {
    let expires_at = match (link.exp, link.sig) {
        (Some(exp), Some(sig)) => exp
            .parse::<i64>()
            .ok()
            .filter(|expires_at| files.download_key.verify(id, *expires_at, &sig)),
        _ => None,
    };
    let Some(expires_at) = expires_at else {
        tracing::info!(file_id = %id, "Download link rejected: invalid signature");
        return Err("invalid signature");
    };
    if expires_at <= unix_seconds() {
        tracing::info!(file_id = %id, expires_at, "Download link rejected: expired");
        return Err("link expired");
    }
    Ok(expires_at)
}

fn unix_seconds() -> i64 {
    agyn_core::time::now_micros() / 1_000_000
}

fn set_content_headers(headers: &mut HeaderMap, record: &FileRecord, max_age: i64) {
    insert(headers, header::CONTENT_TYPE, &record.content_type);
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        percent_encode(&record.filename)
    );
    insert(headers, header::CONTENT_DISPOSITION, &disposition);
    insert(headers, header::ETAG, &format!("\"{}\"", record.sha256));
    insert(
        headers,
        header::CACHE_CONTROL,
        &format!("private, max-age={max_age}"),
    );
    insert(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    insert(headers, header::ACCEPT_RANGES, "bytes");
}

fn set_length_headers(headers: &mut HeaderMap, bytes: &Range<u64>, size: u64, status: StatusCode) {
    let length = bytes.end - bytes.start;
    insert(headers, header::CONTENT_LENGTH, &length.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {}-{}/{size}", bytes.start, bytes.end - 1);
        insert(headers, header::CONTENT_RANGE, &content_range);
    }
}

/// Inserts a header. Values come from validated metadata, so a value that
/// is not a valid header is skipped.
fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
