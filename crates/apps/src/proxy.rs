//! The app proxy: `POST /apps/{installation_slug}/{method}` forwards an
//! authenticated caller's request to the installed app's endpoint.
//!
//! The proxy never parses the payload. It streams the request body to
//! `{endpoint}/{method}` and the app's response back, and it sets the
//! caller identity headers itself, from the authenticated caller only.
//! Errors of the proxy itself carry a Connect error JSON body.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::{Caller, IdentityKind};
use agyn_store::sqlx::{self, Row};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use connectrpc::{ConnectError, ErrorCode};
use futures::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::Apps;
use crate::validate;

/// Largest request body the proxy forwards.
pub const MAX_BODY_BYTES: u64 = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum wait for the app's response headers.
const RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);

const ORGANIZATION_HEADER: &str = "x-agyn-organization-id";
const REQUEST_ID_HEADER: &str = "x-request-id";

/// Request headers copied from the caller to the app. Every other caller
/// header, such as `Authorization` and any `x-identity-*`, is dropped.
const FORWARDED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("connect-protocol-version"),
];

/// Response headers that describe one connection and are not relayed.
const HOP_BY_HOP_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// State of the proxy route.
#[derive(Clone)]
pub struct AppProxy {
    inner: Arc<Inner>,
}

struct Inner {
    apps: Apps,
    authorizer: Authorizer,
    client: reqwest::Client,
}

impl AppProxy {
    /// Builds the proxy. `tls` is the client configuration for `https`
    /// endpoints, which presents the `gateway` component certificate and
    /// decides which server certificates are trusted. Without it, `https`
    /// endpoints are reached without a client certificate and verified
    /// against the operating system's roots. `http` endpoints never get a
    /// client certificate.
    pub fn new(apps: Apps, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
        }
        let client = builder
            .build()
            .expect("the HTTP client configuration is valid");
        Self {
            inner: Arc::new(Inner {
                authorizer: Authorizer::new(apps.db().clone()),
                apps,
                client,
            }),
        }
    }

    /// Builds the router with the proxy route. The gateway's
    /// authentication must run before it and attach the [`Caller`].
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/apps/{installation_slug}/{method}", post(forward))
            .with_state(self)
    }
}

/// Builds a proxy error with a Connect error JSON body.
fn error_response(code: ErrorCode, status: StatusCode, message: impl Into<String>) -> Response {
    connect_response(ConnectError::new(code, message).with_http_status(status))
}

fn connect_response(error: ConnectError) -> Response {
    let mut response = Response::new(Body::from(error.to_json()));
    *response.status_mut() = error.http_status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn forward(
    State(proxy): State<AppProxy>,
    Path((slug, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    match proxy.forward(&slug, &method, request).await {
        Ok(response) | Err(response) => response,
    }
}

impl AppProxy {
    async fn forward(
        &self,
        slug: &str,
        method: &str,
        request: Request,
    ) -> Result<Response, Response> {
        let caller = Caller::from_extensions(request.extensions())
            .map_err(|_| {
                error_response(
                    ErrorCode::Unauthenticated,
                    StatusCode::UNAUTHORIZED,
                    "missing credential",
                )
            })?
            .clone();
        let Caller::Identity {
            identity_id, kind, ..
        } = &caller
        else {
            return Err(error_response(
                ErrorCode::PermissionDenied,
                StatusCode::FORBIDDEN,
                "permission denied: the app proxy serves identities only",
            ));
        };
        let named_org = named_organization(&request);
        let org_id = self.organization(named_org, identity_id, *kind).await?;
        self.require_can_read(identity_id, &org_id).await?;

        let not_installed = || {
            error_response(
                ErrorCode::NotFound,
                StatusCode::NOT_FOUND,
                format!("app {slug:?} is not installed"),
            )
        };
        if validate::slug("installation_slug", slug).is_err() {
            return Err(not_installed());
        }
        let routed = self
            .inner
            .apps
            .route(&org_id, slug)
            .await
            .map_err(internal)?;
        let Some((installation, app)) = routed else {
            return Err(not_installed());
        };
        if !validate::is_proxy_method(method) {
            return Err(error_response(
                ErrorCode::InvalidArgument,
                StatusCode::BAD_REQUEST,
                "method: must match ^[A-Za-z][A-Za-z0-9_]{0,127}$",
            ));
        }
        if app.endpoint.is_empty() {
            return Err(error_response(
                ErrorCode::Unavailable,
                StatusCode::BAD_GATEWAY,
                "app has no endpoint",
            ));
        }
        if declared_length(request.headers()).is_some_and(|length| length > MAX_BODY_BYTES) {
            return Err(too_large());
        }

        let url = format!("{}/{method}", app.endpoint.trim_end_matches('/'));
        let mut headers = HeaderMap::new();
        for name in &FORWARDED_HEADERS {
            if let Some(value) = request.headers().get(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let identity = [
            ("x-identity-id", identity_id.as_str()),
            ("x-identity-type", kind.as_str()),
            ("x-app-installation-id", installation.id.as_str()),
            ("x-organization-id", org_id.as_str()),
        ];
        for (name, value) in identity {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("ids and kinds are header-safe"),
            );
        }
        headers.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            request_id(request.headers()),
        );

        let oversized = Arc::new(AtomicBool::new(false));
        let body = limited_body(request.into_body(), oversized.clone());
        let sent = self
            .inner
            .client
            .post(&url)
            .headers(headers)
            .body(body)
            .send();
        let response = match tokio::time::timeout(RESPONSE_HEADERS_TIMEOUT, sent).await {
            Err(_) => {
                tracing::warn!(
                    app_id = %app.id,
                    installation_id = %installation.id,
                    "App did not send response headers in time"
                );
                return Err(error_response(
                    ErrorCode::DeadlineExceeded,
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "app sent no response headers within {} s",
                        RESPONSE_HEADERS_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(Err(_)) if oversized.load(Ordering::SeqCst) => return Err(too_large()),
            Ok(Err(error)) => {
                tracing::warn!(
                    app_id = %app.id,
                    installation_id = %installation.id,
                    error = %error.without_url(),
                    "App request failed"
                );
                return Err(error_response(
                    ErrorCode::Unavailable,
                    StatusCode::BAD_GATEWAY,
                    "app endpoint could not be reached",
                ));
            }
            Ok(Ok(response)) => response,
        };
        Ok(relay(response))
    }

    /// Returns the organization of the call: the one the request names,
    /// else an agent caller's own organization.
    async fn organization(
        &self,
        named: Option<String>,
        identity_id: &str,
        kind: IdentityKind,
    ) -> Result<String, Response> {
        let org_id = match named {
            Some(id) => Some(id),
            None if kind == IdentityKind::Agent => self.agent_organization(identity_id).await?,
            None => None,
        };
        let Some(org_id) = org_id else {
            return Err(error_response(
                ErrorCode::InvalidArgument,
                StatusCode::BAD_REQUEST,
                "organization_id: required",
            ));
        };
        agyn_core::id::parse_id("organization_id", &org_id).map_err(|error| {
            error_response(
                ErrorCode::InvalidArgument,
                StatusCode::BAD_REQUEST,
                error.message(),
            )
        })
    }

    async fn agent_organization(&self, agent_id: &str) -> Result<Option<String>, Response> {
        let row = sqlx::query("SELECT organization_id FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(self.inner.apps.db().pool())
            .await
            .map_err(|error| internal(error.into()))?;
        row.map(|row| row.try_get("organization_id"))
            .transpose()
            .map_err(|error| internal(error.into()))
    }

    async fn require_can_read(&self, identity_id: &str, org_id: &str) -> Result<(), Response> {
        let allowed = self
            .inner
            .authorizer
            .check(
                &ObjectRef::identity(identity_id),
                "can_read",
                &agyn_orgs::org_object(org_id),
            )
            .await
            .map_err(internal)?;
        if !allowed {
            return Err(error_response(
                ErrorCode::PermissionDenied,
                StatusCode::FORBIDDEN,
                "permission denied: can_read on organization",
            ));
        }
        Ok(())
    }
}

/// Returns the organization id of the `X-Agyn-Organization-Id` header,
/// else of the `organization_id` query parameter. An empty value counts as
/// absent.
fn named_organization(request: &Request) -> Option<String> {
    let from_header = request
        .headers()
        .get(ORGANIZATION_HEADER)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let from_query = || {
        request.uri().query().and_then(|query| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| *name == "organization_id")
                .map(|(_, value)| value.to_string())
        })
    };
    from_header.or_else(from_query).filter(|id| !id.is_empty())
}

fn too_large() -> Response {
    error_response(
        ErrorCode::ResourceExhausted,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Converts a storage error into the proxy's error shape. The conversion
/// logs internal errors with a reference that the message names.
fn internal(error: agyn_core::Error) -> Response {
    connect_response(ConnectError::from(error))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Returns the caller's `x-request-id` when it is a short visible ASCII
/// value, or a new UUID.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID_HEADER)
        .filter(|value| {
            let bytes = value.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is header-safe")
        })
}

/// Streams `body` to the app and fails the stream once it passes
/// [`MAX_BODY_BYTES`], setting `oversized`.
fn limited_body(body: Body, oversized: Arc<AtomicBool>) -> reqwest::Body {
    let mut sent: u64 = 0;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk: Bytes = chunk.map_err(std::io::Error::other)?;
        sent += chunk.len() as u64;
        if sent > MAX_BODY_BYTES {
            oversized.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("request body too large"));
        }
        Ok(chunk)
    });
    reqwest::Body::wrap_stream(stream)
}

/// Relays the app's status, end-to-end headers and body as it arrives.
fn relay(upstream: reqwest::Response) -> Response {
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    for name in HOP_BY_HOP_HEADERS {
        headers.remove(name);
    }
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
