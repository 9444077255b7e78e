//! `POST /enroll`: a device exchanges its one-time enrollment token and a
//! certificate request for its client certificate.
//!
//! Request `{"enrollment_token": "agynenr_…", "csr_pem": "-----BEGIN
//! CERTIFICATE REQUEST-----…"}`; response `{"certificate_pem", "ca_pem",
//! "identity_id", "device_id", "expires_at"}` with `expires_at` in RFC 3339.
//! Errors are `{"error": "…"}`: 401 for an unknown, used or expired token,
//! 400 for a bad request body or certificate request, 429 past 10 calls
//! per minute from one address.

use std::net::SocketAddr;
use std::sync::Arc;

use agyn_core::Secret;
use agyn_core::error::Code;
use agyn_users::Users;
use agyn_users::rate_limit::RateLimiter;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// Largest request body; a certificate request is a few KiB at most.
const MAX_BODY_BYTES: usize = 64 << 10;

/// Calls allowed per minute from one client address.
const CALLS_PER_MINUTE: u32 = 10;

#[derive(Clone)]
pub struct Enrollment {
    users: Users,
    limiter: Arc<RateLimiter>,
}

impl Enrollment {
    pub fn new(users: Users) -> Self {
        Self {
            users,
            limiter: Arc::new(RateLimiter::per_minute(CALLS_PER_MINUTE)),
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Handles `POST /enroll`. The body is parsed here rather than by an
/// extractor so that every malformed body gets the same JSON error shape.
pub async fn enroll(
    State(enrollment): State<Enrollment>,
    request: axum::extract::Request,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_string(),
            |ConnectInfo(peer)| peer.ip().to_string(),
        );
    let started = std::time::Instant::now();
    let response = handle(&enrollment, &address, request).await;
    // No token or certificate request is logged, only the outcome.
    tracing::info!(
        method = "POST /enroll",
        client = %address,
        http_status = response.status().as_u16(),
        duration_us = started.elapsed().as_micros() as u64,
        "Request"
    );
    response
}

async fn handle(
    enrollment: &Enrollment,
    address: &str,
    request: axum::extract::Request,
) -> Response {
    if let Err(retry_after) = enrollment.limiter.check(address) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many enrollment attempts",
        );
        if let Ok(value) = retry_after.to_string().parse() {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
        return response;
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 64 KiB",
        );
    };
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "request body must be a JSON object",
        );
    };
    let field = |name: &str| request.get(name).and_then(|value| value.as_str());
    let Some(token) = field("enrollment_token") else {
        return error(StatusCode::BAD_REQUEST, "enrollment_token: is required");
    };
    let Some(csr_pem) = field("csr_pem") else {
        return error(StatusCode::BAD_REQUEST, "csr_pem: is required");
    };
    match enrollment
        .users
        .enroll_device(&Secret::new(token), csr_pem)
        .await
    {
        Ok(enrolled) => Json(json!({
            "certificate_pem": enrolled.certificate_pem,
            "ca_pem": enrolled.ca_pem,
            "identity_id": enrolled.identity_id,
            "device_id": enrolled.device_id,
            "expires_at": agyn_core::time::rfc3339(enrolled.expires_at),
        }))
        .into_response(),
        Err(failure) => {
            let status = match failure.code() {
                Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                Code::InvalidArgument => StatusCode::BAD_REQUEST,
                Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                // Logs the failure once with a reference for the caller.
                let connect = connectrpc::ConnectError::from(failure);
                return error(
                    status,
                    connect.message.as_deref().unwrap_or("internal error"),
                );
            }
            error(status, failure.message())
        }
    }
}
