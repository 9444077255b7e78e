//! Apps end to end against the real binary. An app is created, installed
//! and enrolled, and then calls the gateway with its client certificate
//! over mutual TLS within the permissions it declared. Users reach it
//! through the app proxy, and it loses its access when it is uninstalled.

mod support;

use std::collections::BTreeMap;

use agyn_api_apps::agynio::api::apps::v1::{AppsGatewayClient, EnrollAppRequest};
use axum::extract::Request;
use axum::response::IntoResponse as _;
use connectrpc::ErrorCode;
use connectrpc::client::{ClientConfig, HttpClient};
use serde_json::{Value, json};
use support::{Server, connect_json, tls_client};

const APPS: &str = "agynio.api.apps.v1.AppsGateway";
const THREADS: &str = "agynio.api.threads.v1.ThreadsGateway";

/// Starts a server on SQLite, or on a fresh PostgreSQL database.
async fn start(postgres: bool) -> Server {
    if postgres {
        let url = support::fresh_postgres_url().await;
        Server::start_with(&["--database-url".to_string(), url])
    } else {
        Server::start()
    }
}

/// Starts a test app on 127.0.0.1 that replies 200 with the path, headers
/// and body of each request as JSON, and returns its endpoint.
async fn start_test_app() -> String {
    async fn echo(request: Request) -> axum::response::Response {
        let path = request.uri().path().to_string();
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
        });
        ([("content-type", "application/json")], reply.to_string()).into_response()
    }
    let router = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/rpc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    endpoint
}

/// Enrolls with `service_token` and returns the certificate and key PEM.
async fn enroll(server: &Server, service_token: &str) -> (String, String) {
    let client = AppsGatewayClient::new(
        HttpClient::plaintext_http2_only(),
        ClientConfig::new(server.base_url().parse().unwrap()),
    );
    let enrolled = client
        .enroll_app(EnrollAppRequest {
            service_token: service_token.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    let identity: Value = serde_json::from_slice(&enrolled.identity_json).unwrap();
    assert_eq!(identity["identity_id"], enrolled.identity_id.as_str());
    (
        identity["certificate_pem"].as_str().unwrap().to_string(),
        identity["private_key_pem"].as_str().unwrap().to_string(),
    )
}

async fn app_lifecycle(postgres: bool) {
    let server = start(postgres).await;
    let plain = reqwest::Client::new();
    let base = server.base_url();
    let admin = Some(server.admin_token.as_str());
    let ca_pem = server.admin_credentials().ca_pem;

    let (status, org) = connect_json(
        &plain,
        &base,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Acme"}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{org}");
    let org_id = org["organization"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, me) = connect_json(
        &plain,
        &base,
        "agynio.api.users.v1.UsersGateway/GetMe",
        json!({}),
        admin,
    )
    .await;
    let admin_id = me["user"]["meta"]["id"].as_str().unwrap().to_string();

    let endpoint = start_test_app().await;
    let (status, created) = connect_json(
        &plain,
        &base,
        &format!("{APPS}/CreateApp"),
        json!({
            "organizationId": org_id,
            "slug": "reporter",
            "name": "Reporter",
            "permissions": ["thread:create"],
            "endpoint": endpoint,
        }),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let app_id = created["app"]["meta"]["id"].as_str().unwrap().to_string();
    let service_token = created["serviceToken"].as_str().unwrap().to_string();

    let (status, installed) = connect_json(
        &plain,
        &base,
        &format!("{APPS}/InstallApp"),
        json!({"appId": app_id, "organizationId": org_id}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{installed}");
    let installation_id = installed["installation"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A wrong service token is rejected without any credential.
    let (status, rejected) = connect_json(
        &plain,
        &base,
        &format!("{APPS}/EnrollApp"),
        json!({"serviceToken": format!("agynsvc_{}", "x".repeat(44))}),
        None,
    )
    .await;
    assert_eq!(status, 401, "{rejected}");
    assert_eq!(rejected["message"], "invalid service token");

    let (cert_pem, key_pem) = enroll(&server, &service_token).await;
    let app = tls_client(&ca_pem, Some((&cert_pem, &key_pem)));
    let https = server.https_url();

    // On the public listener the caller is the app itself, which lists
    // where it is installed.
    let (status, listed) = connect_json(
        &app,
        &https,
        &format!("{APPS}/ListInstallations"),
        json!({"appId": app_id}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["installations"][0]["meta"]["id"],
        installation_id.as_str()
    );

    // Within its permissions: a thread in the organization.
    let (status, thread) = connect_json(
        &app,
        &https,
        &format!("{THREADS}/CreateThread"),
        json!({"organizationId": org_id}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{thread}");

    // Outside them: managing apps needs can_manage, and sending into a
    // thread it does not take part in needs thread:write.
    let (status, denied) = connect_json(
        &app,
        &https,
        &format!("{APPS}/CreateApp"),
        json!({"organizationId": org_id, "slug": "other", "name": "Other"}),
        None,
    )
    .await;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(denied["code"], "permission_denied");
    let (status, admin_thread) = connect_json(
        &plain,
        &base,
        &format!("{THREADS}/CreateThread"),
        json!({"organizationId": org_id}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{admin_thread}");
    let admin_thread_id = admin_thread["thread"]["meta"]["id"].as_str().unwrap();
    let (status, denied) = connect_json(
        &app,
        &https,
        &format!("{THREADS}/SendMessage"),
        json!({"threadId": admin_thread_id, "body": "hello"}),
        None,
    )
    .await;
    assert_eq!(status, 403, "{denied}");

    // The proxy forwards to the app's endpoint with identity headers set
    // from the caller's credential, never from the caller's headers.
    let response = plain
        .post(format!("{base}/apps/reporter/Report"))
        .bearer_auth(&server.admin_token)
        .header("x-agyn-organization-id", &org_id)
        .header("x-identity-id", &app_id)
        .header("content-type", "application/json")
        .body(r#"{"period":"week"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/rpc/Report");
    assert_eq!(seen["body"], r#"{"period":"week"}"#);
    assert_eq!(seen["headers"]["x-identity-id"], admin_id.as_str());
    assert_eq!(seen["headers"]["x-identity-type"], "user");
    assert_eq!(
        seen["headers"]["x-app-installation-id"],
        installation_id.as_str()
    );
    assert_eq!(seen["headers"]["x-organization-id"], org_id.as_str());
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    let response = plain
        .post(format!("{base}/apps/reporter/Report"))
        .header("x-agyn-organization-id", &org_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // An app whose endpoint names the internal listener cannot use the
    // proxy's gateway certificate to call internal methods.
    let (status, created) = connect_json(
        &plain,
        &base,
        &format!("{APPS}/CreateApp"),
        json!({
            "organizationId": org_id,
            "slug": "inward",
            "name": "Inward",
            "endpoint": format!("{}/agynio.api.users.v1.UsersService", server.internal_url()),
        }),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let inward_id = created["app"]["meta"]["id"].as_str().unwrap().to_string();
    let (status, installed) = connect_json(
        &plain,
        &base,
        &format!("{APPS}/InstallApp"),
        json!({"appId": inward_id, "organizationId": org_id}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{installed}");
    let response = plain
        .post(format!("{base}/apps/inward/ResolveOrCreateUser"))
        .bearer_auth(&server.admin_token)
        .header("x-agyn-organization-id", &org_id)
        .header("content-type", "application/json")
        .body(r#"{"oidcSubject":"idp|mallory","name":"Mallory","preferredUsername":"mallory"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("app proxy cannot call internal methods"),
        "{text}"
    );
    assert!(
        !server.log().contains("username=mallory"),
        "a user was created"
    );

    // Uninstalled, the app loses its access to the organization at once.
    let (status, _) = connect_json(
        &plain,
        &base,
        &format!("{APPS}/UninstallApp"),
        json!({"id": installation_id}),
        admin,
    )
    .await;
    assert_eq!(status, 200);
    let (status, denied) = connect_json(
        &app,
        &https,
        &format!("{THREADS}/CreateThread"),
        json!({"organizationId": org_id}),
        None,
    )
    .await;
    assert_eq!(status, 403, "{denied}");
    let response = plain
        .post(format!("{base}/apps/reporter/Report"))
        .bearer_auth(&server.admin_token)
        .header("x-agyn-organization-id", &org_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    // A second enrollment revokes the first certificate.
    let (new_cert, new_key) = enroll(&server, &service_token).await;
    let renewed = tls_client(&ca_pem, Some((&new_cert, &new_key)));
    for (client, expected) in [(&renewed, 200), (&app, 401)] {
        let (status, body) = connect_json(
            client,
            &https,
            &format!("{APPS}/GetApp"),
            json!({"id": app_id}),
            None,
        )
        .await;
        assert_eq!(status, expected, "{body}");
    }

    let wrong = AppsGatewayClient::new(
        HttpClient::plaintext_http2_only(),
        ClientConfig::new(base.parse().unwrap()),
    )
    .enroll_app(EnrollAppRequest {
        service_token: "agynsvc_short".to_string(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(wrong.code, ErrorCode::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_lifecycle_sqlite() {
    app_lifecycle(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_lifecycle_postgres() {
    app_lifecycle(true).await;
}
