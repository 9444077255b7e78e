//! Request checks that run before routing: a per-frame timeout on request
//! bodies, and the rule that a Connect JSON request message is an object.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use connectrpc::{ConnectError, ErrorCode};
use http::{Method, header};
use http_body_util::BodyExt as _;

/// Longest pause allowed between two frames of a request body. A client
/// that stops sending mid-body is cut off instead of holding the request.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Rejects Connect JSON requests whose message is not a JSON object.
///
/// The protobuf JSON mapping encodes a message as an object, but the
/// generated decoders also accept an array and assign its elements to
/// fields by position. This check buffers uncompressed unary JSON bodies
/// (which the Connect handler buffers anyway, up to the same limit) and
/// returns `invalid_argument` when the first value is an array.
pub async fn require_json_objects(request: Request, next: Next) -> Response {
    let unary_json = request.method() == Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"))
        && !request.headers().contains_key(header::CONTENT_ENCODING);
    if !unary_json {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, crate::MAX_MESSAGE_BYTES);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let (code, message) = if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                (
                    ErrorCode::ResourceExhausted,
                    format!(
                        "request message is larger than {} bytes",
                        crate::MAX_MESSAGE_BYTES
                    ),
                )
            } else {
                tracing::debug!(%error, path = parts.uri.path(), "Failed to read a request body");
                (
                    ErrorCode::InvalidArgument,
                    "failed to read the request body".to_string(),
                )
            };
            return connect_error(ConnectError::new(code, message), &parts.headers);
        }
    };
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        return connect_error(
            ConnectError::new(
                ErrorCode::InvalidArgument,
                "request message must be a JSON object",
            ),
            &parts.headers,
        );
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn connect_error(error: ConnectError, headers: &http::HeaderMap) -> Response {
    let (parts, body) = error.into_http_response(headers).into_parts();
    Response::from_parts(parts, axum::body::Body::new(body)).into_response()
}
