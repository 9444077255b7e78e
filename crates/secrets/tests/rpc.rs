//! SecretsGateway and SecretsService over Connect on loopback, on SQLite
//! and PostgreSQL.
//!
//! The test server mounts both services behind a stand-in for the
//! gateway's authentication: the bearer value `user:<id>` makes the caller
//! that user, and `component:<name>` makes it that platform component.
//! Reads are sent as plain Connect JSON requests, so the checks see the
//! exact response bytes.

mod support;

use std::sync::Arc;

use agyn_api_secrets::agynio::api::secrets::v1::{
    self as pb, SecretsGatewayClient, SecretsServiceClient,
};
use agyn_core::Caller;
use agyn_secrets::service::{SecretsGatewayRpc, SecretsRpc};
use agyn_store::{Backend, on_both_backends};
use connectrpc::ErrorCode;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use pb::__buffa::oneof::create_image_pull_secret_request::Source as ImagePullSource;
use pb::__buffa::oneof::create_secret_request::Source as SecretSource;
use pb::__buffa::oneof::secret_provider_config::Backend as ConfigBackend;
use serde_json::{Value, json};
use support::*;

struct Server {
    address: String,
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
    let caller = match bearer.as_deref().and_then(|value| value.split_once(':')) {
        Some(("user", id)) => Some(user_caller(id)),
        Some(("component", "orchestrator")) => Some(Caller::Component("orchestrator")),
        Some(("component", "agents")) => Some(Caller::Component("agents")),
        Some(("component", "organizations")) => Some(Caller::Component("organizations")),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

impl Server {
    async fn start(w: &World) -> Self {
        let router = connectrpc::Router::new()
            .add_service(Arc::new(SecretsGatewayRpc::new(w.secrets.clone())))
            .add_service(Arc::new(SecretsRpc::new(w.secrets.clone())));
        let app = axum::Router::new()
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address }
    }

    fn gateway(&self) -> SecretsGatewayClient<HttpClient> {
        SecretsGatewayClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    fn internal(&self) -> SecretsServiceClient<HttpClient> {
        SecretsServiceClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    /// Sends a Connect JSON request to `SecretsGateway/<method>` and
    /// returns the HTTP status and the raw body.
    async fn gateway_json(&self, bearer: &str, method: &str, body: Value) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/agynio.api.secrets.v1.SecretsGateway/{method}",
                self.address
            ))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bearer}"))
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

fn bearer(value: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {value}"))
}

fn user_bearer(caller: &Caller) -> String {
    format!("user:{}", id(caller))
}

/// Asserts that no canary text appears in `text`.
#[track_caller]
fn assert_no_canary(text: &str, what: &str) {
    assert!(
        !text.contains(&canary()),
        "{what} contains a secret: {text}"
    );
}

async fn reads_never_return_values(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let gateway = server.gateway();
    let auth = bearer(&user_bearer(&owner));
    let mut written = Vec::new();

    let provider = gateway
        .create_secret_provider_with_options(
            pb::CreateSecretProviderRequest {
                organization_id: org.clone(),
                name: "vault".into(),
                provider_type: pb::SecretProviderType::SECRET_PROVIDER_TYPE_VAULT.into(),
                config: pb::SecretProviderConfig {
                    backend: Some(ConfigBackend::Vault(Box::new(pb::VaultConfig {
                        address: "https://vault.example.com".into(),
                        token: canary_with("token"),
                        ..Default::default()
                    }))),
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    written.push(serde_json::to_string(&provider).unwrap());
    let provider_id = provider.secret_provider.meta.id.clone();
    let local = gateway
        .create_secret_with_options(
            pb::CreateSecretRequest {
                organization_id: org.clone(),
                name: "api-key".into(),
                source: Some(SecretSource::Value(canary_with("value"))),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    written.push(serde_json::to_string(&local).unwrap());
    let local_id = local.secret.meta.id.clone();
    let remote_secret = gateway
        .create_secret_with_options(
            pb::CreateSecretRequest {
                organization_id: org.clone(),
                name: "db".into(),
                source: Some(SecretSource::Remote(Box::new(pb::RemoteRef {
                    secret_provider_id: provider_id.clone(),
                    remote_name: "secret/app/db".into(),
                    ..Default::default()
                }))),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    let remote_id = remote_secret.secret.meta.id.clone();
    let pull = gateway
        .create_image_pull_secret_with_options(
            pb::CreateImagePullSecretRequest {
                organization_id: org.clone(),
                registry: "ghcr.io".into(),
                username: "robot".into(),
                source: Some(ImagePullSource::Value(canary_with("password"))),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    written.push(serde_json::to_string(&pull).unwrap());
    let pull_id = pull.image_pull_secret.meta.id.clone();

    // Updates carry new values and return none.
    let updated = gateway
        .update_secret_with_options(
            pb::UpdateSecretRequest {
                id: local_id.clone(),
                value: Some(canary_with("value-2")),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    written.push(serde_json::to_string(&updated).unwrap());
    let updated = gateway
        .update_secret_provider_with_options(
            pb::UpdateSecretProviderRequest {
                id: provider_id.clone(),
                config: Some(pb::SecretProviderConfig {
                    backend: Some(ConfigBackend::Vault(Box::new(pb::VaultConfig {
                        address: "https://vault2.example.com".into(),
                        token: canary_with("token-2"),
                        ..Default::default()
                    }))),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    written.push(serde_json::to_string(&updated).unwrap());
    let updated = gateway
        .update_image_pull_secret_with_options(
            pb::UpdateImagePullSecretRequest {
                id: pull_id.clone(),
                value: Some(canary_with("password-2")),
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    written.push(serde_json::to_string(&updated).unwrap());
    for response in &written {
        assert_no_canary(response, "a write response");
    }

    let user = user_bearer(&owner);
    let reads = [
        ("GetSecretProvider", json!({"id": provider_id})),
        ("ListSecretProviders", json!({"organizationId": org})),
        ("GetSecret", json!({"id": local_id})),
        ("GetSecret", json!({"id": remote_id})),
        ("ListSecrets", json!({"organizationId": org})),
        ("GetImagePullSecret", json!({"id": pull_id})),
        ("ListImagePullSecrets", json!({"organizationId": org})),
    ];
    for (method, request) in reads {
        let (status, body) = server.gateway_json(&user, method, request).await;
        assert_eq!(status, 200, "{method}: {body}");
        assert_no_canary(&body, method);
    }

    // The token reads back as "", and enums use their names.
    let (_, body) = server
        .gateway_json(&user, "GetSecretProvider", json!({"id": provider_id}))
        .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    let read = &body["secretProvider"];
    assert_eq!(read["config"]["vault"]["token"], "");
    assert_eq!(
        read["config"]["vault"]["address"],
        "https://vault2.example.com"
    );
    assert_eq!(read["providerType"], "SECRET_PROVIDER_TYPE_VAULT");
    let (_, body) = server
        .gateway_json(&user, "ListSecrets", json!({"organizationId": org}))
        .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["secrets"][0]["storage"], "SECRET_STORAGE_LOCAL");
    assert_eq!(body["secrets"][1]["storage"], "SECRET_STORAGE_REMOTE");
    assert_eq!(
        body["secrets"][1]["remote"],
        json!({"secretProviderId": provider_id, "remoteName": "secret/app/db"})
    );
    assert_eq!(body["nextPageToken"], "");

    // Errors about a request that carries a value do not repeat it.
    let too_long = format!("{}{}", canary(), "x".repeat(8 * 1024));
    let (status, body) = server
        .gateway_json(
            &user,
            "CreateImagePullSecret",
            json!({"organizationId": org, "registry": "ghcr.io", "username": "u", "value": too_long}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_no_canary(&body, "an error");
    let (status, body) = server
        .gateway_json(
            &user,
            "CreateSecret",
            json!({"organizationId": org, "name": "api-key", "value": canary_with("dup")}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_no_canary(&body, "an error");
}

async fn internal_methods_over_rpc(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let secret_id = w
        .local_secret(&owner, &org, "api-key", &canary_with("value"))
        .await;
    let pull = w
        .secrets
        .create_image_pull_secret(
            &owner,
            &image_pull_secret(&org, "ghcr.io", value(&canary_with("password"))),
        )
        .await
        .unwrap();
    let internal = server.internal();

    let resolved = internal
        .resolve_secret_with_options(
            pb::ResolveSecretRequest {
                id: secret_id.clone(),
                ..Default::default()
            },
            bearer("component:orchestrator"),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(resolved.value, canary_with("value"));
    let credentials = internal
        .resolve_image_pull_secret_with_options(
            pb::ResolveImagePullSecretRequest {
                id: pull.id.clone(),
                ..Default::default()
            },
            bearer("component:orchestrator"),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(credentials.registry, "ghcr.io");
    assert_eq!(credentials.username, "robot");
    assert_eq!(credentials.password, canary_with("password"));

    let error = internal
        .resolve_secret_with_options(
            pb::ResolveSecretRequest {
                id: secret_id.clone(),
                ..Default::default()
            },
            bearer(&user_bearer(&owner)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);
    assert_eq!(
        error.message.as_deref(),
        Some("permission denied: ResolveSecret is only for platform components")
    );
    let unknown = agyn_core::id::new_id();
    let error = internal
        .resolve_secret_with_options(
            pb::ResolveSecretRequest {
                id: unknown.clone(),
                ..Default::default()
            },
            bearer("component:orchestrator"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);

    let exists = internal
        .secret_exists_with_options(
            pb::SecretExistsRequest {
                id: secret_id.clone(),
                ..Default::default()
            },
            bearer("component:agents"),
        )
        .await
        .unwrap()
        .into_owned();
    assert!(exists.exists);
    assert_eq!(exists.organization_id, org);
    let missing = internal
        .image_pull_secret_exists_with_options(
            pb::ImagePullSecretExistsRequest {
                id: unknown,
                ..Default::default()
            },
            bearer("component:agents"),
        )
        .await
        .unwrap()
        .into_owned();
    assert!(!missing.exists);
    assert_eq!(missing.organization_id, "");

    internal
        .delete_organization_resources_with_options(
            pb::DeleteOrganizationResourcesRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            bearer("component:organizations"),
        )
        .await
        .unwrap();
    assert_eq!(w.count("secrets", &org).await, 0);
    assert_eq!(w.count("image_pull_secrets", &org).await, 0);

    // The gateway serves the same messages, with the same rules.
    let error = server
        .gateway()
        .get_secret_with_options(
            pb::GetSecretRequest {
                id: secret_id,
                ..Default::default()
            },
            bearer(&user_bearer(&owner)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
    let error = server
        .gateway()
        .create_secret_provider_with_options(
            pb::CreateSecretProviderRequest {
                organization_id: org.clone(),
                name: "vault".into(),
                ..Default::default()
            },
            bearer(&user_bearer(&owner)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(
        error.message.as_deref(),
        Some("provider_type: must not be SECRET_PROVIDER_TYPE_UNSPECIFIED")
    );
}

on_both_backends!(reads_never_return_values, internal_methods_over_rpc);
