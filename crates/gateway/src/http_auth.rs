//! Authentication for the plain HTTP routes of the public listener (file
//! downloads, OTLP over HTTP, the app proxy).
//!
//! [`attach_caller`] strips identity headers sent by the client. When the
//! request carries a credential (a bearer token or a client certificate),
//! it authenticates it and inserts the [`Caller`] into the request
//! extensions. The route decides what a
//! missing caller means: a signed download link needs none.

use agyn_core::Caller;
use agyn_core::error::Code;
use agyn_pki::PeerCertificate;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;

use crate::GatewayLayer;

/// Authenticates a request that carries a credential and attaches its
/// caller. An invalid credential gets 401 here, so a route never mistakes
/// it for an anonymous request.
pub(crate) async fn attach_caller(
    State(gateway): State<GatewayLayer>,
    mut request: Request,
    next: Next,
) -> Response {
    crate::layer::remove_identity_headers(request.headers_mut());
    let peer = request.extensions().get::<PeerCertificate>().cloned();
    let has_token = request.headers().contains_key(http::header::AUTHORIZATION);
    if peer.is_none() && !has_token {
        return next.run(request).await;
    }
    match gateway.authenticate(peer, request.headers()).await {
        Ok(caller @ Caller::Identity { .. }) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(Caller::Component(_)) => error_response(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "component certificates are accepted only on the internal listener",
        ),
        Err(error) if error.code() == Code::Unauthenticated => {
            error_response(StatusCode::UNAUTHORIZED, "unauthenticated", error.message())
        }
        Err(error) => {
            tracing::warn!(%error, path = %request.uri().path(), "Failed to authenticate an HTTP request");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "authentication is unavailable; retry later",
            )
        }
    }
}

/// Builds a Connect-style JSON error response with `status`.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}
