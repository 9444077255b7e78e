//! The test world: real organizations, users, tuples and an upstream HTTP
//! server on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol};
use agyn_authz::Authorizer;
use agyn_core::error::Code;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_llm::{Llm, LlmCleaner, ModelRecord, NewModel, NewProvider, ProviderRecord};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, ResourceCleaner, Role};
use agyn_pki::MasterKey;
use agyn_store::{Backend, Db};
use agyn_users::Users;
use axum::http::{HeaderMap, StatusCode, Uri};
use bytes::Bytes;
use connectrpc::{CodecFormat, ConnectError, Encodable, HasMessageView, RequestContext};

/// TestModel timeout of the test world, short so that a hanging upstream
/// fails fast.
pub const TEST_TIMEOUT: Duration = Duration::from_millis(500);

pub struct World {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub authz: Authorizer,
    pub llm: Llm,
}

impl World {
    pub async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let cleaners: Vec<Arc<dyn ResourceCleaner>> = vec![Arc::new(LlmCleaner::new(db.clone()))];
        let orgs = Organizations::new(db.clone(), cleaners);
        Self {
            users: Users::new(db.clone()),
            authz: Authorizer::new(db.clone()),
            llm: Llm::new(db.clone(), MasterKey::generate(), orgs.clone())
                .with_test_timeout(TEST_TIMEOUT),
            orgs,
            db,
        }
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("llm|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        Caller::Identity {
            identity_id: user.id,
            kind: IdentityKind::User,
            workload_id: None,
            credential: CredentialKind::ApiToken,
        }
    }

    pub async fn org(&self, owner: &Caller, name: &str) -> String {
        self.orgs
            .create_organization(owner, name, None, "")
            .await
            .unwrap()
            .id
    }

    /// Makes `member` an ACTIVE member of `org`, invited by its owner.
    pub async fn join(&self, org: &str, owner: &Caller, member: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &MembershipInput {
                    organization_id: org,
                    identity_id: member.identity_id().unwrap(),
                    role: Some(Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap();
        self.orgs
            .accept_membership(member, &invitation.id)
            .await
            .unwrap();
    }

    /// Creates a bearer provider of `org` at `endpoint`.
    pub async fn bearer_provider(
        &self,
        owner: &Caller,
        org: &str,
        name: &str,
        endpoint: &str,
        token: &str,
    ) -> ProviderRecord {
        self.llm
            .create_provider(
                owner,
                &NewProvider {
                    organization_id: org,
                    name,
                    endpoint,
                    token,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    /// Creates a provider with an explicit protocol and credential.
    #[allow(clippy::too_many_arguments)]
    pub async fn provider(
        &self,
        owner: &Caller,
        org: &str,
        endpoint: &str,
        protocol: Protocol,
        auth_method: AuthMethod,
        token: &str,
        headers: &[(String, String)],
    ) -> ProviderRecord {
        self.llm
            .create_provider(
                owner,
                &NewProvider {
                    organization_id: org,
                    name: &format!("provider-{}", agyn_core::id::new_id()),
                    endpoint,
                    protocol,
                    auth_method,
                    token,
                    headers,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    pub async fn model(
        &self,
        owner: &Caller,
        org: &str,
        provider_id: &str,
        remote_name: &str,
    ) -> ModelRecord {
        self.llm
            .create_model(
                owner,
                &NewModel {
                    organization_id: org,
                    name: "Test model",
                    provider_id,
                    remote_name,
                    request_id: "",
                },
            )
            .await
            .unwrap()
    }

    /// Returns the number of tuples on `model:<id>`.
    pub async fn model_tuples(&self, model_id: &str) -> i64 {
        let row: (i64,) = agyn_store::sqlx::query_as(
            "SELECT COUNT(*) FROM tuples WHERE object_type = 'model' AND object_id = $1",
        )
        .bind(model_id)
        .fetch_one(self.db.pool())
        .await
        .unwrap();
        row.0
    }
}

pub fn headers(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Asserts an error's code and message.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: agyn_core::Result<T>,
    code: Code,
    message: &str,
) -> agyn_core::Error {
    let error = result.expect_err(message);
    assert_eq!(error.code(), code, "{error}");
    assert_eq!(error.message(), message);
    error
}

/// Builds a request context carrying `caller`, as the gateway does.
pub fn context(caller: &Caller) -> RequestContext {
    let mut extensions = http::Extensions::new();
    extensions.insert(caller.clone());
    RequestContext::new(HeaderMap::new()).with_extensions(extensions)
}

/// Decodes the view of `request` from its encoding `body`.
pub fn view_of<'a, R: HasMessageView>(_request: &R, body: &'a Bytes) -> R::View<'a> {
    R::decode_view(body).expect("an encoded request decodes")
}

/// Encodes a response body as Connect JSON, the form clients read.
pub fn json_of<M>(body: &impl Encodable<M>) -> serde_json::Value {
    let bytes = body
        .encode(CodecFormat::Json)
        .expect("the response encodes");
    serde_json::from_slice(&bytes).expect("the response is JSON")
}

/// Calls one RPC method as `caller` and returns the response as Connect
/// JSON.
#[macro_export]
macro_rules! call {
    ($service:expr, $trait:path, $method:ident, $caller:expr, $request:expr) => {{
        let request = $request;
        let body = bytes::Bytes::from(buffa::Message::encode_to_vec(&request));
        let view = $crate::common::view_of(&request, &body);
        let result = <_ as $trait>::$method(
            &$service,
            $crate::common::context($caller),
            connectrpc::ServiceRequest::from_parts(&view, &body),
        )
        .await;
        result.map(|response| $crate::common::json_of(&response.body))
    }};
}

/// Returns the code of a failed RPC.
pub fn code_of(result: &Result<serde_json::Value, ConnectError>) -> connectrpc::ErrorCode {
    result.as_ref().expect_err("the call fails").code
}

/// One request received by an [`Upstream`].
#[derive(Debug, Clone)]
pub struct Received {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

/// What an [`Upstream`] does with each request.
#[derive(Clone)]
pub enum Behaviour {
    Reply(StatusCode, String),
    /// Never replies within any test timeout.
    Hang,
}

/// An HTTP server on 127.0.0.1 that records every request.
pub struct Upstream {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    pub async fn start(behaviour: Behaviour) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            let behaviour = behaviour.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                log.lock().unwrap().push(Received { uri, headers, body });
                match behaviour {
                    Behaviour::Reply(status, reply) => (status, reply),
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        (StatusCode::OK, String::new())
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    pub async fn replying(reply: serde_json::Value) -> Self {
        Self::start(Behaviour::Reply(StatusCode::OK, reply.to_string())).await
    }

    /// Returns every request received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Returns the one request received so far.
    pub fn only_request(&self) -> Received {
        let received = self.requests();
        assert_eq!(received.len(), 1, "requests: {received:?}");
        received[0].clone()
    }
}

/// Returns a loopback URL on which nothing listens.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}
