//! The app proxy over HTTP/2 loopback, forwarding to test apps that run on
//! 127.0.0.1 over plain HTTP and over TLS with client certificates, on
//! SQLite and PostgreSQL.
//!
//! A stand-in for the gateway's authentication turns the bearer value
//! `user:<id>` or `agent:<id>` into the request's caller.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agyn_apps::{AppChanges, AppProxy, InstallationChanges, InstallationRecord, Visibility};
use agyn_core::Caller;
use agyn_pki::{ClientAuth, KeySource, ServerCertificate, Subject};
use agyn_store::{Backend, on_both_backends};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::*;
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// Maps the test bearer values to callers, in place of the gateway.
async fn authenticate(mut request: Request, next: axum::middleware::Next) -> Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let parts: Vec<&str> = bearer.as_deref().unwrap_or_default().split(':').collect();
    let caller = match parts.as_slice() {
        ["user", id] => Some(user_caller(id)),
        ["agent", id] => Some(agent_caller(id)),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

/// Starts the proxy router on 127.0.0.1 and returns its base URL.
async fn start_proxy(proxy: AppProxy) -> String {
    let app = proxy
        .router()
        .layer(axum::middleware::from_fn(authenticate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// State of the test app: the release of the second chunk of `Stream`.
#[derive(Clone, Default)]
struct TestApp {
    release: Arc<Notify>,
}

/// Replies 201 with the request's path, headers and body as JSON, and a
/// header of its own.
async fn echo(request: Request) -> Response {
    let path = request.uri().path().to_string();
    let peer = request
        .extensions()
        .get::<PeerUri>()
        .map(|peer| peer.0.clone())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let reply = json!({
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "peer": peer,
    });
    (
        axum::http::StatusCode::CREATED,
        [
            ("x-app-header", "yes"),
            ("content-type", "application/json"),
        ],
        reply.to_string(),
    )
        .into_response()
}

/// Sends `first`, then `second` once the test has read the first chunk
/// through the proxy.
async fn stream(State(app): State<TestApp>) -> Response {
    let release = app.release.clone();
    let chunks = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("first")) })
        .chain(futures::stream::once(async move {
            release.notified().await;
            Ok(Bytes::from("second"))
        }));
    Body::from_stream(chunks).into_response()
}

fn test_app(state: TestApp) -> axum::Router {
    axum::Router::new()
        .route("/api/Stream", axum::routing::post(stream))
        .route("/api/{method}", axum::routing::post(echo))
        .with_state(state)
}

/// Starts the test app over plain HTTP and returns its endpoint.
async fn start_app(state: TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/api/", listener.local_addr().unwrap());
    let router = test_app(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    endpoint
}

/// The first URI subject alternative name of the client certificate a
/// TLS peer presented.
#[derive(Clone)]
struct PeerUri(String);

/// Starts the test app over TLS with a server certificate from the
/// platform CA, requiring a client certificate from it, and returns its
/// endpoint.
async fn start_tls_app(w: &World) -> String {
    let config = w
        .pki
        .server_config(
            &ServerCertificate::Issue {
                hostnames: vec!["127.0.0.1".to_string()],
            },
            ClientAuth::Required,
        )
        .await
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}/api", listener.local_addr().unwrap());
    let router = test_app(TestApp::default());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| first_uri(leaf.as_ref()))
                    .unwrap_or_default();
                let service = hyper::service::service_fn(move |mut request: Request<_>| {
                    request.extensions_mut().insert(PeerUri(peer.clone()));
                    router.clone().oneshot(request.map(Body::new))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    endpoint
}

fn first_uri(der: &[u8]) -> String {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).unwrap();
    let names = certificate.subject_alternative_name().unwrap().unwrap();
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

async fn json_body(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// An organization with an owner, a member, an app with `endpoint`
/// installed as `bot`, and the proxy in front of it.
struct Setup {
    w: World,
    proxy: String,
    org: String,
    owner: Caller,
    member: Caller,
    installation: InstallationRecord,
}

async fn setup(backend: Backend, endpoint: Option<String>) -> Setup {
    let w = World::new(backend).await;
    let proxy = start_proxy(AppProxy::new(w.apps.clone(), None)).await;
    setup_with(w, proxy, endpoint).await
}

async fn setup_with(w: World, proxy: String, endpoint: Option<String>) -> Setup {
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let member = w.user("member").await;
    w.join(&org, &owner, &member).await;
    let app = w
        .app(&owner, &org, "bot", Visibility::Internal, &[])
        .await
        .app;
    if let Some(endpoint) = endpoint {
        w.apps
            .update_app(
                &owner,
                &app.id,
                &AppChanges {
                    endpoint: Some(endpoint),
                    ..AppChanges::default()
                },
            )
            .await
            .unwrap();
    }
    let installation = w.install(&owner, &app.id, &org).await;
    Setup {
        w,
        proxy,
        org,
        owner,
        member,
        installation,
    }
}

/// Returns the status and the Connect error JSON of a failed proxy call.
async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    (status, json_body(response).await)
}

async fn proxy_forwards_with_platform_headers(backend: Backend) {
    let endpoint = start_app(TestApp::default()).await;
    let s = setup(backend, Some(endpoint)).await;

    let response = client()
        .post(format!(
            "{}/apps/bot/Echo?organization_id={}",
            s.proxy, s.org
        ))
        .header("authorization", format!("Bearer user:{}", id(&s.member)))
        .header("content-type", "application/proto")
        .header("accept", "application/json")
        .header("connect-protocol-version", "1")
        .header("x-identity-id", "00000000-0000-0000-0000-000000000000")
        .header("x-identity-type", "platform")
        .header("x-app-installation-id", "forged")
        .header("x-organization-id", "forged")
        .header("x-custom", "dropped")
        .header("x-request-id", "req-42")
        .body("hello app")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["x-app-header"], "yes");
    let seen = json_body(response).await;
    assert_eq!(seen["path"], "/api/Echo");
    assert_eq!(seen["body"], "hello app");
    let headers = &seen["headers"];
    assert_eq!(headers["content-type"], "application/proto");
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["connect-protocol-version"], "1");
    assert_eq!(headers["x-identity-id"], id(&s.member));
    assert_eq!(headers["x-identity-type"], "user");
    assert_eq!(headers["x-app-installation-id"], s.installation.id.as_str());
    assert_eq!(headers["x-organization-id"], s.org.as_str());
    assert_eq!(headers["x-request-id"], "req-42");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(headers.get("x-custom").is_none(), "{headers}");

    // The organization header works as well as the query parameter, and a
    // request id is made up when the caller sent none.
    let response = client()
        .post(format!("{}/apps/bot/Echo", s.proxy))
        .header("authorization", format!("Bearer user:{}", id(&s.owner)))
        .header("x-agyn-organization-id", &s.org)
        .body("second")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let seen = json_body(response).await;
    assert_eq!(seen["headers"]["x-identity-id"], id(&s.owner));
    let request_id = seen["headers"]["x-request-id"].as_str().unwrap();
    assert!(uuid_like(request_id), "{request_id}");

    // An agent caller defaults to its own organization.
    let agent = s.w.agent(&s.org, "helper").await;
    agyn_authz::Authorizer::new(s.w.db.clone())
        .write(
            &[agyn_authz::Tuple::new(
                agyn_authz::ObjectRef::identity(&agent),
                "member",
                agyn_authz::ObjectRef::new("organization", &s.org),
            )],
            &[],
        )
        .await
        .unwrap();
    let response = client()
        .post(format!("{}/apps/bot/Echo", s.proxy))
        .header("authorization", format!("Bearer agent:{agent}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let seen = json_body(response).await;
    assert_eq!(seen["headers"]["x-identity-type"], "agent");
    assert_eq!(seen["headers"]["x-organization-id"], s.org.as_str());
}

fn uuid_like(value: &str) -> bool {
    value.len() == 36 && value.chars().filter(|c| *c == '-').count() == 4
}

async fn proxy_error_shapes(backend: Backend) {
    let endpoint = start_app(TestApp::default()).await;
    let s = setup(backend, Some(endpoint)).await;
    let member = format!("Bearer user:{}", id(&s.member));
    let url = |path: &str| format!("{}/apps/{path}?organization_id={}", s.proxy, s.org);

    let (status, body) = error_of(client().post(url("bot/Echo")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated");

    let missing_org = client()
        .post(format!("{}/apps/bot/Echo", s.proxy))
        .header("authorization", &member)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(missing_org).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "organization_id: required");

    let outsider = s.w.user("outsider").await;
    let rejected = client()
        .post(url("bot/Echo"))
        .header("authorization", format!("Bearer user:{}", id(&outsider)))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(rejected).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "permission_denied");

    let unknown = client()
        .post(url("nope/Echo"))
        .header("authorization", &member)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(unknown).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "app \"nope\" is not installed");

    let bad_method = client()
        .post(url("bot/bad-method"))
        .header("authorization", &member)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(bad_method).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "method: must match ^[A-Za-z][A-Za-z0-9_]{0,127}$"
    );

    let too_large = client()
        .post(url("bot/Echo"))
        .header("authorization", &member)
        .body(vec![b'x'; (4 << 20) + 1])
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(too_large).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "resource_exhausted");

    // A streamed body without Content-Length is cut off at the limit too.
    let chunks = futures::stream::iter(
        (0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1 << 20]))),
    );
    let streamed = client()
        .post(url("bot/Echo"))
        .header("authorization", &member)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(streamed).await;
    assert_eq!(status, 413);
    assert_eq!(body["message"], "request body is larger than 4194304 bytes");

    // A body of exactly 4 MiB passes.
    let at_limit = client()
        .post(url("bot/Echo"))
        .header("authorization", &member)
        .body(vec![b'x'; 4 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status().as_u16(), 201);

    let set_endpoint = |endpoint: &str| AppChanges {
        endpoint: Some(endpoint.to_string()),
        ..AppChanges::default()
    };
    s.w.apps
        .update_app(&s.owner, &s.installation.app_id, &set_endpoint(""))
        .await
        .unwrap();
    let no_endpoint = client()
        .post(url("bot/Echo"))
        .header("authorization", &member)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(no_endpoint).await;
    assert_eq!(status, 502);
    assert_eq!(body["message"], "app has no endpoint");

    // A port that nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    s.w.apps
        .update_app(
            &s.owner,
            &s.installation.app_id,
            &set_endpoint(&closed_endpoint),
        )
        .await
        .unwrap();
    let unreachable = client()
        .post(url("bot/Echo"))
        .header("authorization", &member)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(unreachable).await;
    assert_eq!(status, 502);
    assert_eq!(body["message"], "app endpoint could not be reached");
}

async fn proxy_streams_response(backend: Backend) {
    let state = TestApp::default();
    let endpoint = start_app(state.clone()).await;
    let s = setup(backend, Some(endpoint)).await;

    let response = client()
        .post(format!(
            "{}/apps/bot/Stream?organization_id={}",
            s.proxy, s.org
        ))
        .header("authorization", format!("Bearer user:{}", id(&s.member)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the first chunk arrives before the app finishes")
        .unwrap()
        .unwrap();
    assert_eq!(first, Bytes::from("first"));
    state.release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"second");
}

async fn proxy_follows_slug_rename(backend: Backend) {
    let endpoint = start_app(TestApp::default()).await;
    let s = setup(backend, Some(endpoint)).await;
    let call = |slug: &str| {
        client()
            .post(format!(
                "{}/apps/{slug}/Echo?organization_id={}",
                s.proxy, s.org
            ))
            .header("authorization", format!("Bearer user:{}", id(&s.member)))
            .send()
    };
    assert_eq!(call("bot").await.unwrap().status().as_u16(), 201);

    s.w.apps
        .update_installation(
            &s.owner,
            &s.installation.id,
            &InstallationChanges {
                slug: Some("renamed".to_string()),
                configuration: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(call("renamed").await.unwrap().status().as_u16(), 201);
    assert_eq!(call("bot").await.unwrap().status().as_u16(), 404);

    s.w.apps
        .uninstall_app(&s.owner, &s.installation.id)
        .await
        .unwrap();
    assert_eq!(call("renamed").await.unwrap().status().as_u16(), 404);
}

async fn proxy_presents_gateway_certificate(backend: Backend) {
    let w = World::new(backend).await;
    let endpoint = start_tls_app(&w).await;
    let issued = w
        .pki
        .issue(
            &Subject::Component {
                name: "gateway".to_string(),
            },
            KeySource::Generate,
        )
        .await
        .unwrap();
    let tls = w
        .pki
        .client_config(
            &issued.certificate_pem,
            issued.private_key_pem.as_ref().unwrap().expose(),
        )
        .unwrap();
    let proxy = start_proxy(AppProxy::new(w.apps.clone(), Some(tls))).await;
    let s = setup_with(w, proxy, Some(endpoint)).await;

    let response = client()
        .post(format!(
            "{}/apps/bot/Echo?organization_id={}",
            s.proxy, s.org
        ))
        .header("authorization", format!("Bearer user:{}", id(&s.member)))
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let seen = json_body(response).await;
    assert_eq!(seen["peer"], "agyn://component/gateway");
    assert_eq!(seen["body"], "over tls");
}

on_both_backends!(
    proxy_forwards_with_platform_headers,
    proxy_error_shapes,
    proxy_streams_response,
    proxy_follows_slug_rename,
    proxy_presents_gateway_certificate,
);
