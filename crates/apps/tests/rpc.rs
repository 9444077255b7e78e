//! AppsGateway and AppsService over Connect JSON on HTTP/2 loopback, on
//! SQLite and PostgreSQL.
//!
//! The test server mounts both services behind a stand-in for the
//! gateway's authentication: the bearer value `user:<id>` makes the caller
//! that user, `app:<id>` that app and `component:<name>` that platform
//! component. The server records each connection's peer address, as the
//! gateway does, for the EnrollApp rate limit.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use agyn_apps::Apps;
use agyn_apps::service::{AppsGatewayRpc, AppsRpc};
use agyn_core::Caller;
use agyn_store::{Backend, on_both_backends};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use support::*;

struct Server {
    address: String,
    client: reqwest::Client,
}

/// Maps the test bearer values to callers, in place of the gateway.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let parts: Vec<&str> = bearer.as_deref().unwrap_or_default().split(':').collect();
    let caller = match parts.as_slice() {
        ["user", id] => Some(user_caller(id)),
        ["app", id] => Some(app_caller(id)),
        ["component", "gateway"] => Some(Caller::Component("gateway")),
        ["component", "organizations"] => Some(Caller::Component("organizations")),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

impl Server {
    async fn start(apps: &Apps) -> Self {
        let router = connectrpc::Router::new()
            .add_service(Arc::new(AppsGatewayRpc::new(apps.clone())))
            .add_service(Arc::new(AppsRpc::new(apps.clone())));
        let app = axum::Router::new()
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        Self { address, client }
    }

    /// Sends a Connect JSON request to `<service>/<method>` and returns the
    /// HTTP status and the decoded body.
    async fn call(&self, service: &str, bearer: &str, method: &str, body: Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!(
                "{}/agynio.api.apps.v1.{service}/{method}",
                self.address
            ))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
        if !bearer.is_empty() {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn gateway(&self, bearer: &str, method: &str, body: Value) -> (u16, Value) {
        self.call("AppsGateway", bearer, method, body).await
    }

    async fn internal(&self, bearer: &str, method: &str, body: Value) -> (u16, Value) {
        self.call("AppsService", bearer, method, body).await
    }
}

fn user_bearer(caller: &Caller) -> String {
    format!("user:{}", id(caller))
}

async fn app_lifecycle_over_connect(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w.apps).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let bearer = user_bearer(&owner);

    let (status, created) = server
        .gateway(
            &bearer,
            "CreateApp",
            json!({
                "organizationId": org,
                "slug": "reporter",
                "name": "Reporter",
                "visibility": "APP_VISIBILITY_PUBLIC",
                "permissions": ["thread:create"],
                "endpoint": "http://127.0.0.1:9/api"
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let app = &created["app"];
    let app_id = app["meta"]["id"].as_str().unwrap().to_string();
    assert_eq!(app["identityId"], app_id.as_str());
    assert_eq!(app["organizationId"], org.as_str());
    assert_eq!(app["visibility"], "APP_VISIBILITY_PUBLIC");
    assert_eq!(app["permissions"], json!(["thread:create"]));
    assert_eq!(app["endpoint"], "http://127.0.0.1:9/api");
    let token = created["serviceToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("agynsvc_"));

    let (status, fetched) = server
        .gateway(&bearer, "GetApp", json!({"id": app_id}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched["app"], *app);

    let (status, installed) = server
        .gateway(
            &bearer,
            "InstallApp",
            json!({
                "appId": app_id,
                "organizationId": org,
                "configuration": {"channel": "ops", "limit": 3}
            }),
        )
        .await;
    assert_eq!(status, 200, "{installed}");
    let installation = &installed["installation"];
    assert_eq!(installation["slug"], "reporter");
    assert_eq!(installation["appSlug"], "reporter");
    assert_eq!(
        installation["configuration"],
        json!({"channel": "ops", "limit": 3.0})
    );

    let (status, listed) = server
        .gateway(
            &format!("app:{app_id}"),
            "ListInstallations",
            json!({"appId": app_id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["installations"], json!([installation.clone()]));

    let (status, routed) = server
        .internal(
            "component:gateway",
            "GetInstallationBySlug",
            json!({"organizationId": org, "slug": "reporter"}),
        )
        .await;
    assert_eq!(status, 200, "{routed}");
    assert_eq!(routed["installation"], *installation);
    assert_eq!(routed["app"]["endpoint"], "http://127.0.0.1:9/api");
    let (status, rejected) = server
        .internal(
            &bearer,
            "GetInstallationBySlug",
            json!({"organizationId": org, "slug": "reporter"}),
        )
        .await;
    assert_eq!(status, 403, "{rejected}");

    let (status, updated) = server
        .gateway(
            &bearer,
            "UpdateApp",
            json!({"id": app_id, "visibility": "APP_VISIBILITY_UNSPECIFIED"}),
        )
        .await;
    assert_eq!(status, 400, "{updated}");
    assert_eq!(
        updated["message"],
        "visibility: must be APP_VISIBILITY_PUBLIC or APP_VISIBILITY_INTERNAL"
    );
    let (status, updated) = server
        .gateway(&bearer, "UpdateApp", json!({"id": app_id, "endpoint": ""}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["app"]["endpoint"], "", "{updated}");

    let (status, rejected) = server
        .gateway(&bearer, "DeleteApp", json!({"id": app_id}))
        .await;
    assert_eq!(status, 400, "{rejected}");
    assert_eq!(rejected["code"], "failed_precondition");
    let installation_id = installation["meta"]["id"].as_str().unwrap();
    let (status, _) = server
        .gateway(&bearer, "UninstallApp", json!({"id": installation_id}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .gateway(&bearer, "DeleteApp", json!({"id": app_id}))
        .await;
    assert_eq!(status, 200);
    let (status, missing) = server
        .gateway(&bearer, "GetApp", json!({"id": app_id}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(missing["message"], format!("app {app_id} not found"));

    let (status, neither) = server
        .gateway(&bearer, "ListInstallations", json!({}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(neither["message"], "organization_id or app_id is required");
}

async fn enroll_over_connect(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w.apps).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let created = w
        .app(&owner, &org, "bot", agyn_apps::Visibility::Internal, &[])
        .await;

    let (status, rejected) = server
        .gateway(
            "",
            "EnrollApp",
            json!({"serviceToken": format!("agynsvc_{}", "x".repeat(44))}),
        )
        .await;
    assert_eq!(status, 401, "{rejected}");
    assert_eq!(rejected["code"], "unauthenticated");
    assert_eq!(rejected["message"], "invalid service token");

    let (status, enrolled) = server
        .gateway(
            "",
            "EnrollApp",
            json!({"serviceToken": created.service_token.expose()}),
        )
        .await;
    assert_eq!(status, 200, "{enrolled}");
    assert_eq!(enrolled["identityId"], created.app.id.as_str());
    let identity_json = STANDARD
        .decode(enrolled["identityJson"].as_str().unwrap())
        .unwrap();
    let identity: Value = serde_json::from_slice(&identity_json).unwrap();
    let certificate = identity["certificate_pem"].as_str().unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate.as_bytes()).unwrap();
    let parsed = pem.parse_x509().unwrap();
    let uris: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert!(
        uris.iter()
            .any(|uri| uri.contains(&format!("agyn://identity/app/{}", created.app.id))),
        "{uris:?}"
    );
}

on_both_backends!(app_lifecycle_over_connect, enroll_over_connect);
