//! The tower layer in front of the ConnectRPC service: request ids, the
//! `/api` prefix, identity-header hygiene, authentication, routing of
//! methods that are not built yet, and one log line per request.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use agyn_core::{Caller, CredentialKind, Error, IdentityKind};
use agyn_pki::{PeerCertificate, Pki};
use agyn_users::Users;
use connectrpc::{ConnectError, ConnectRpcBody};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};

use crate::auth::Authenticator;
use crate::policy;

/// Listener that a [`GatewayLayer`] guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Public: clients authenticate with a credential.
    Public,
    /// Internal: platform components, each authenticated by its
    /// certificate and checked against the method's allow-list. A
    /// component may forward the identity it acts for in `x-identity-id`
    /// and `x-identity-type`.
    Internal,
}

/// Headers that only the gateway may set. They are removed from every
/// public request before anything reads headers.
const IDENTITY_HEADERS: &[&str] = &["x-workload-id", "x-organization-id"];
const IDENTITY_HEADER_PREFIX: &str = "x-identity-";
const REQUEST_ID: &str = "x-request-id";
/// Header the app proxy sets on every request it forwards to an app.
const APP_PROXY_HEADER: &str = "x-app-installation-id";

/// Methods that need no credential: gRPC health and reflection, and
/// runner and app enrollment, which authenticate by their service token.
fn is_anonymous(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
        || path == "/agynio.api.runners.v1.RunnersGateway/EnrollRunner"
        || path == "/agynio.api.apps.v1.AppsGateway/EnrollApp"
}

/// Public methods that belong to no gateway service: OTLP trace ingest.
const PUBLIC_NON_GATEWAY_METHODS: &[&str] =
    &["/opentelemetry.proto.collector.trace.v1.TraceService/Export"];

#[derive(Clone)]
pub struct GatewayLayer {
    shared: Arc<Shared>,
}

struct Shared {
    listener: Listener,
    authenticator: Authenticator,
    pki: Pki,
    users: Users,
    /// Every gateway method, mapped to whether its handler is built.
    gateway_methods: HashMap<&'static str, bool>,
    /// Every procedure path the router serves.
    implemented: HashSet<String>,
}

impl GatewayLayer {
    /// `implemented` lists the procedure paths the router serves; other
    /// gateway methods return `unimplemented` naming the method.
    pub fn new(
        listener: Listener,
        authenticator: Authenticator,
        pki: Pki,
        users: Users,
        implemented: Vec<String>,
    ) -> Self {
        let implemented: HashSet<String> = implemented
            .into_iter()
            .map(|path| format!("/{}", path.trim_start_matches('/')))
            .collect();
        let gateway_methods = agyn_api::GATEWAY_METHODS
            .iter()
            .map(|(path, ..)| *path)
            .chain(PUBLIC_NON_GATEWAY_METHODS.iter().copied())
            .map(|path| (path, implemented.contains(path)))
            .collect();
        Self {
            shared: Arc::new(Shared {
                listener,
                authenticator,
                pki,
                users,
                gateway_methods,
                implemented,
            }),
        }
    }

    /// Authenticates a public request outside the RPC stack, as `GET /me`
    /// does, by the same rules as gateway methods.
    pub async fn authenticate(
        &self,
        peer: Option<PeerCertificate>,
        headers: &HeaderMap,
    ) -> Result<Caller, Error> {
        self.shared.public_caller(peer, headers).await
    }

    pub fn layer<S>(&self, inner: S) -> GatewayService<S> {
        GatewayService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct GatewayService<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<B>> for GatewayService<S>
where
    S: tower::Service<Request<B>, Response = Response<ConnectRpcBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    type Response = Response<ConnectRpcBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness and leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let started = Instant::now();
            let request_id = request_id(request.headers());
            strip_api_prefix(&mut request);
            let path = request.uri().path().to_string();
            let caller = match shared.admit(&mut request, &path).await {
                Ok(caller) => caller,
                Err(error) => {
                    let mut response = error_response(error, request.headers());
                    // Read the body the client is still sending, so that an
                    // HTTP/1.1 connection stays usable for its next request
                    // instead of being reset under the client's write.
                    drain(request.into_body()).await;
                    finish(&mut response, &request_id, &path, None, started);
                    return Ok(response);
                }
            };
            let logged = caller.as_ref().map(LoggedCaller::of);
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            let mut response = inner.call(request).await?;
            finish(&mut response, &request_id, &path, logged.as_ref(), started);
            Ok(response)
        })
    }
}

impl Shared {
    /// Authenticates the request and checks that its method is built.
    /// Returns the caller to attach, if any.
    async fn admit<B>(
        &self,
        request: &mut Request<B>,
        path: &str,
    ) -> Result<Option<Caller>, Error> {
        let built = self.gateway_methods.get(path).copied();
        let caller = match self.listener {
            Listener::Public => {
                remove_identity_headers(request.headers_mut());
                if is_anonymous(path) {
                    return Ok(None);
                }
                if built.is_none() {
                    return Err(Error::unimplemented(format!("unknown method {path}")));
                }
                let peer = request.extensions().get::<PeerCertificate>().cloned();
                self.public_caller(peer, request.headers()).await?
            }
            Listener::Internal => {
                let peer = request.extensions().get::<PeerCertificate>().cloned();
                self.component_caller(peer, request.headers(), path).await?
            }
        };
        if built == Some(false) {
            let method = path.trim_start_matches('/');
            return Err(Error::unimplemented(format!(
                "{method} is not implemented yet"
            )));
        }
        Ok(Some(caller))
    }
}

impl Shared {
    /// Authenticates a public request. A client certificate decides
    /// alone, and bearer headers are then ignored.
    pub(crate) async fn public_caller(
        &self,
        peer: Option<PeerCertificate>,
        headers: &HeaderMap,
    ) -> Result<Caller, Error> {
        match peer {
            Some(peer) => self.certificate_caller(&peer).await,
            None => self.authenticator.authenticate(headers).await,
        }
    }

    /// Resolves the identity that a client certificate on the public listener acts as.
    async fn certificate_caller(&self, peer: &PeerCertificate) -> Result<Caller, Error> {
        let peer = self.pki.verify_peer(&peer.0).await?;
        let Some((identity_id, kind)) = peer.identity else {
            return Err(Error::unauthenticated(
                "component certificates are accepted only on the internal listener",
            ));
        };
        // A workload certificate needs no state check here: the runners
        // service revokes it when the workload becomes terminal, and
        // verification reads revocations within PEER_CACHE_TTL.
        if let Some(device_id) = &peer.device_id {
            self.users.device_seen(device_id);
        }
        Ok(Caller::Identity {
            identity_id,
            kind,
            workload_id: peer.workload_id,
            credential: CredentialKind::Certificate,
        })
    }

    /// Authenticates an internal request by its component certificate and
    /// checks the method's allow-list.
    async fn component_caller(
        &self,
        peer: Option<PeerCertificate>,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<Caller, Error> {
        let Some(peer) = peer else {
            return Err(Error::unauthenticated(
                "the internal listener requires a client certificate issued by the platform CA",
            ));
        };
        let peer = self.pki.verify_peer(&peer.0).await?;
        let method = path.trim_start_matches('/');
        let Some(component) = peer.component.as_deref().and_then(policy::component) else {
            let kind = peer
                .identity
                .as_ref()
                .map_or("unknown", |(_, kind)| kind.as_str());
            return Err(Error::permission_denied(format!(
                "{kind} certificates cannot call internal methods such as {method}"
            ))
            .with_reason("CALLER_NOT_ALLOWED"));
        };
        if !self.implemented.contains(path) && !is_anonymous(path) {
            return Err(Error::unimplemented(format!("unknown method {path}")));
        }
        // The app proxy presents the gateway certificate to app endpoints,
        // so an app whose endpoint names this listener would otherwise
        // call internal methods as the gateway. Every proxied request
        // carries the installation header.
        if headers.contains_key(APP_PROXY_HEADER) {
            return Err(Error::permission_denied(format!(
                "requests forwarded by the app proxy cannot call internal methods such as {method}"
            ))
            .with_reason("CALLER_NOT_ALLOWED"));
        }
        if !policy::allowed_components(path).contains(&component) {
            return Err(Error::permission_denied(format!(
                "component {component} may not call {method}"
            ))
            .with_reason("CALLER_NOT_ALLOWED"));
        }
        Ok(forwarded_caller(headers, component))
    }
}

/// Reads and discards up to [`crate::MAX_MESSAGE_BYTES`] of a rejected
/// request's body, waiting at most [`DRAIN_TIMEOUT`].
async fn drain<B>(mut body: B)
where
    B: http_body::Body + Unpin,
{
    use http_body_util::BodyExt as _;
    let read = async {
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                total += bytes::Buf::remaining(data);
                if total > crate::MAX_MESSAGE_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

/// How long a rejected request's body may take to arrive.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Returns the caller's `x-request-id` when it is usable, or a new UUID.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("uuid is a valid header")
        })
}

fn strip_api_prefix<B>(request: &mut Request<B>) {
    let Some(stripped) = request.uri().path().strip_prefix("/api/") else {
        return;
    };
    let mut path_and_query = format!("/{stripped}");
    if let Some(query) = request.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    if let Ok(value) = path_and_query.parse() {
        parts.path_and_query = Some(value);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

pub(crate) fn remove_identity_headers(headers: &mut HeaderMap) {
    let forged: Vec<_> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with(IDENTITY_HEADER_PREFIX) || IDENTITY_HEADERS.contains(&name)
        })
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// Returns the caller of an internal request: the identity the calling
/// component forwarded, or the component itself.
fn forwarded_caller(headers: &HeaderMap, component: &'static str) -> Caller {
    let header = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let identity = header("x-identity-id")
        .and_then(|id| agyn_core::id::parse_id("x-identity-id", id).ok())
        .zip(header("x-identity-type").and_then(IdentityKind::parse));
    match identity {
        Some((identity_id, kind)) => Caller::Identity {
            identity_id,
            kind,
            workload_id: header("x-workload-id").map(str::to_string),
            credential: CredentialKind::Certificate,
        },
        None => Caller::Component(component),
    }
}

fn error_response(error: Error, headers: &HeaderMap) -> Response<ConnectRpcBody> {
    let code = error.code();
    let mut connect = ConnectError::from(error);
    if code == agyn_core::error::Code::Unimplemented {
        // Unknown and unbuilt methods are "not found" routes for Connect
        // clients; gRPC callers still get status 12.
        connect = connect.with_http_status(http::StatusCode::NOT_FOUND);
    }
    let mut response = connect.into_http_response(headers);
    if code == agyn_core::error::Code::Unauthenticated {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The caller fields a request's log line names.
struct LoggedCaller {
    id: String,
    kind: &'static str,
}

impl LoggedCaller {
    fn of(caller: &Caller) -> Self {
        match caller {
            Caller::Identity {
                identity_id, kind, ..
            } => Self {
                id: identity_id.clone(),
                kind: kind.as_str(),
            },
            Caller::Component(name) => Self {
                id: (*name).to_string(),
                kind: "component",
            },
        }
    }
}

/// Echoes the request id and writes the request's log line. Only the
/// method, caller, status and timing are logged, never headers or bodies.
fn finish(
    response: &mut Response<ConnectRpcBody>,
    request_id: &HeaderValue,
    path: &str,
    caller: Option<&LoggedCaller>,
    started: Instant,
) {
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let (caller_id, caller_type) =
        caller.map_or(("", ""), |caller| (caller.id.as_str(), caller.kind));
    tracing::info!(
        method = path,
        caller_id,
        caller_type,
        http_status = response.status().as_u16(),
        grpc_status,
        duration_us = started.elapsed().as_micros() as u64,
        request_id = request_id.to_str().unwrap_or(""),
        "Request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-identity-id", "forged".parse().unwrap());
        headers.insert("x-identity-type", "user".parse().unwrap());
        headers.insert("x-workload-id", "w".parse().unwrap());
        headers.insert("x-organization-id", "o".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        remove_identity_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("content-type"));
    }

    #[test]
    fn api_prefix_is_stripped() {
        let mut request = Request::builder()
            .uri("http://h/api/agynio.api.users.v1.UsersGateway/GetMe?encoding=json")
            .body(())
            .unwrap();
        strip_api_prefix(&mut request);
        assert_eq!(
            request.uri().path(),
            "/agynio.api.users.v1.UsersGateway/GetMe"
        );
        assert_eq!(request.uri().query(), Some("encoding=json"));
    }

    #[test]
    fn forwarded_caller_needs_valid_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            forwarded_caller(&headers, "admin"),
            Caller::Component("admin")
        );
        headers.insert(
            "x-identity-id",
            "0190a2b4-1c2d-7e8f-9a0b-1c2d3e4f5a6b".parse().unwrap(),
        );
        headers.insert("x-identity-type", "user".parse().unwrap());
        let caller = forwarded_caller(&headers, "gateway");
        assert_eq!(
            caller.user_id(),
            Some("0190a2b4-1c2d-7e8f-9a0b-1c2d3e4f5a6b")
        );
    }
}
