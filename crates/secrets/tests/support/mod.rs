//! Shared setup: a platform database with users and organizations, the
//! secrets service over it, a stand-in for the agents service's reference
//! checks, and a small Vault KV version 2 server on loopback.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agyn_core::{Caller, CredentialKind, Error, IdentityKind, Result, Secret};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, ResourceCleaner, Role};
use agyn_pki::MasterKey;
use agyn_secrets::{
    NewImagePullSecret, NewSecret, NewSecretProvider, ProviderType, RemoteRef,
    SecretProviderRecord, SecretReferences, Secrets, SecretsCleaner, Source, VaultSettings,
};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use agyn_users::Users;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Returns the value that tests store as a token, secret value and
/// password. It must never appear in a response, a log line or an error. AGYN_TEST_CANARY
/// overrides it.
pub fn canary() -> String {
    std::env::var("AGYN_TEST_CANARY").unwrap_or_else(|_| "agyn-canary-7c1f0e9b4d2a".to_string())
}

/// Returns a distinct secret that contains the canary, such as
/// `<canary>-token`.
pub fn canary_with(suffix: &str) -> String {
    format!("{}-{suffix}", canary())
}

pub struct World {
    pub db: Db,
    pub key: MasterKey,
    pub users: Users,
    pub orgs: Organizations,
    pub secrets: Secrets,
    pub agents: Arc<AgentReferences>,
}

impl World {
    pub async fn new(backend: Backend) -> Self {
        Self::build(backend, false).await
    }

    /// Builds a world whose secrets service checks [`AgentReferences`]
    /// before deletes.
    pub async fn with_references(backend: Backend) -> Self {
        Self::build(backend, true).await
    }

    async fn build(backend: Backend, references: bool) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let cleaners: Vec<Arc<dyn ResourceCleaner>> =
            vec![Arc::new(SecretsCleaner::new(db.clone()))];
        let orgs = Organizations::new(db.clone(), cleaners);
        let key = MasterKey::generate();
        let agents = Arc::new(AgentReferences::default());
        let mut secrets = Secrets::new(db.clone(), key.clone(), orgs.clone());
        if references {
            secrets = secrets.with_references(agents.clone());
        }
        Self {
            users: Users::new(db.clone()),
            db,
            key,
            orgs,
            secrets,
            agents,
        }
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("secrets|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        user_caller(&user.id)
    }

    pub async fn admin(&self, name: &str) -> Caller {
        let admin = self.user(name).await;
        self.users
            .set_cluster_admin(id(&admin), true, "admin")
            .await
            .unwrap();
        admin
    }

    pub async fn org(&self, owner: &Caller, name: &str) -> String {
        self.orgs
            .create_organization(owner, name, None, "")
            .await
            .unwrap()
            .id
    }

    /// Makes `who` an ACTIVE member (not an owner) of `org`.
    pub async fn join(&self, org: &str, owner: &Caller, who: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &MembershipInput {
                    organization_id: org,
                    identity_id: id(who),
                    role: Some(Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap();
        self.orgs
            .accept_membership(who, &invitation.id)
            .await
            .unwrap();
    }

    pub async fn provider(
        &self,
        who: &Caller,
        org: &str,
        name: &str,
        address: &str,
        token: &str,
    ) -> SecretProviderRecord {
        self.secrets
            .create_secret_provider(who, &vault_provider(org, name, address, token))
            .await
            .unwrap()
    }

    pub async fn local_secret(&self, who: &Caller, org: &str, name: &str, value: &str) -> String {
        self.secrets
            .create_secret(who, &local_secret(org, name, value))
            .await
            .unwrap()
            .id
    }

    pub async fn remote_secret(
        &self,
        who: &Caller,
        org: &str,
        name: &str,
        provider_id: &str,
        remote_name: &str,
    ) -> String {
        self.secrets
            .create_secret(who, &remote_secret(org, name, provider_id, remote_name))
            .await
            .unwrap()
            .id
    }

    /// Returns one column of one row as text (NULL as `None`).
    pub async fn column(&self, table: &str, column: &str, id: &str) -> Option<String> {
        let sql = format!("SELECT {column} AS value FROM {table} WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.try_get("value").unwrap()
    }

    /// Counts the rows of `table` owned by `org`.
    pub async fn count(&self, table: &str, org: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE organization_id = $1");
        let row = sqlx::query(&sql)
            .bind(org)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.try_get("n").unwrap()
    }
}

pub fn user_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

pub fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

pub fn orchestrator() -> Caller {
    Caller::Component("orchestrator")
}

pub fn vault_provider(org: &str, name: &str, address: &str, token: &str) -> NewSecretProvider {
    NewSecretProvider {
        organization_id: org.to_string(),
        name: name.to_string(),
        description: String::new(),
        provider_type: Some(ProviderType::Vault),
        vault: Some(VaultSettings {
            address: address.to_string(),
            token: Secret::new(token.to_string()),
        }),
        request_id: String::new(),
    }
}

pub fn local_secret(org: &str, name: &str, value: &str) -> NewSecret {
    NewSecret {
        organization_id: org.to_string(),
        name: name.to_string(),
        description: String::new(),
        source: Some(Source::Value(Secret::new(value.to_string()))),
        request_id: String::new(),
    }
}

pub fn remote_secret(org: &str, name: &str, provider_id: &str, remote_name: &str) -> NewSecret {
    NewSecret {
        organization_id: org.to_string(),
        name: name.to_string(),
        description: String::new(),
        source: Some(Source::Remote(remote(provider_id, remote_name))),
        request_id: String::new(),
    }
}

pub fn image_pull_secret(org: &str, registry: &str, source: Source) -> NewImagePullSecret {
    NewImagePullSecret {
        organization_id: org.to_string(),
        description: String::new(),
        registry: registry.to_string(),
        username: "robot".to_string(),
        source: Some(source),
        request_id: String::new(),
    }
}

pub fn remote(provider_id: &str, remote_name: &str) -> RemoteRef {
    RemoteRef {
        secret_provider_id: provider_id.to_string(),
        remote_name: remote_name.to_string(),
    }
}

pub fn value(text: &str) -> Source {
    Source::Value(Secret::new(text.to_string()))
}

/// Asserts the code and message of an error.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T>,
    code: agyn_core::error::Code,
    message: &str,
) {
    let error = result.expect_err("the call should fail");
    assert_eq!(error.code(), code, "{error:?}");
    assert_eq!(error.message(), message, "{error:?}");
}

/// Returns the error of a call that should fail.
#[track_caller]
pub fn failure<T: std::fmt::Debug>(result: Result<T>) -> Error {
    result.expect_err("the call should fail")
}

/// The reference checks of the agents service: env ids by secret and
/// attachment ids by image pull secret. `fail` makes every check fail.
#[derive(Default)]
pub struct AgentReferences {
    pub envs: Mutex<HashMap<String, Vec<String>>>,
    pub attachments: Mutex<HashMap<String, Vec<String>>>,
    pub fail: AtomicBool,
}

impl AgentReferences {
    fn lookup(&self, table: &Mutex<HashMap<String, Vec<String>>>, id: &str) -> Result<Vec<String>> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::unavailable("agents service unreachable"));
        }
        Ok(table.lock().unwrap().get(id).cloned().unwrap_or_default())
    }
}

impl SecretReferences for AgentReferences {
    fn secret_references<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>>> + Send + 'a>> {
        Box::pin(async move { self.lookup(&self.envs, secret_id) })
    }

    fn image_pull_secret_references<'a>(
        &'a self,
        image_pull_secret_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>>> + Send + 'a>> {
        Box::pin(async move { self.lookup(&self.attachments, image_pull_secret_id) })
    }
}

/// A Vault KV version 2 server on loopback. It serves
/// `GET /v1/<mount>/data/<path>` for the paths in `entries` (keyed by
/// `<mount>/<path>`) when `X-Vault-Token` equals `token`, with 403 for a
/// wrong token and 404 for an unknown path.
#[derive(Clone)]
pub struct VaultServer {
    pub address: String,
    state: Arc<VaultState>,
}

struct VaultState {
    token: Mutex<String>,
    entries: Mutex<HashMap<String, Value>>,
    /// Raw bodies served instead of an entry, by `<mount>/<path>`.
    raw: Mutex<HashMap<String, String>>,
    delay: Mutex<Duration>,
    requests: AtomicUsize,
    paths: Mutex<Vec<String>>,
}

impl VaultServer {
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(VaultState {
            token: Mutex::new(token.to_string()),
            entries: Mutex::new(HashMap::new()),
            raw: Mutex::new(HashMap::new()),
            delay: Mutex::new(Duration::ZERO),
            requests: AtomicUsize::new(0),
            paths: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/v1/{*rest}", axum::routing::get(read_secret))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, state }
    }

    /// Stores the KV data of `<mount>/<path>`.
    pub fn put(&self, path: &str, data: Value) {
        self.state
            .entries
            .lock()
            .unwrap()
            .insert(path.to_string(), data);
    }

    /// Serves `body` with status 200 for `<mount>/<path>`.
    pub fn put_raw(&self, path: &str, body: &str) {
        self.state
            .raw
            .lock()
            .unwrap()
            .insert(path.to_string(), body.to_string());
    }

    pub fn set_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = token.to_string();
    }

    /// Delays every response by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Returns how many requests arrived.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Returns the decoded paths of every request, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().unwrap().clone()
    }
}

async fn read_secret(
    State(state): State<Arc<VaultState>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.paths.lock().unwrap().push(format!("/v1/{rest}"));
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let expected = state.token.lock().unwrap().clone();
    let token = headers
        .get("x-vault-token")
        .and_then(|value| value.to_str().ok());
    if token != Some(expected.as_str()) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"errors": ["permission denied"]})),
        )
            .into_response();
    }
    let Some((mount, path)) = rest.split_once("/data/") else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []}))).into_response();
    };
    let key = format!("{mount}/{path}");
    if let Some(body) = state.raw.lock().unwrap().get(&key) {
        return (StatusCode::OK, body.clone()).into_response();
    }
    match state.entries.lock().unwrap().get(&key) {
        Some(data) => axum::Json(json!({
            "request_id": "5f4e3d2c-0000-0000-0000-000000000000",
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": {
                "data": data,
                "metadata": {"version": 1, "deletion_time": "", "destroyed": false}
            },
            "wrap_info": null,
            "warnings": null,
            "auth": null
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []}))).into_response(),
    }
}

/// Returns an address where nothing listens: a port that was bound and
/// released.
pub fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}
