//! Shared setup: a platform database with users and organizations, the
//! event bus, the tracing service over them, and an in-process server on
//! loopback that mounts TracingGateway, TracingService, the OTLP gRPC
//! TraceService and `POST /v1/traces`.
//!
//! The server authenticates like a small stand-in for the gateway: the
//! bearer value `user:<id>` makes the caller that user, `agent:<id>` an
//! agent with an API token, `workload:<id>:<workload id>` an agent with a
//! workload certificate, and `component:<name>` a platform component.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agyn_api_tracing::agynio::api::tracing::v1::{
    self as pb, TracingGatewayClient, TracingServiceClient,
};
use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::{
    ExportTraceServiceRequest, TraceServiceClient,
};
use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value;
use agyn_api_tracing::opentelemetry::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue,
};
use agyn_api_tracing::opentelemetry::proto::resource::v1::Resource;
use agyn_api_tracing::opentelemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::{Caller, CredentialKind, Error, IdentityKind, Result};
use agyn_events::{Events, EventsConfig};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, Role};
use agyn_store::{Backend, Db};
use agyn_tracing::service::{TraceServiceRpc, TracingGatewayRpc, TracingRpc};
use agyn_tracing::{
    AgentIdentity, MessageThread, StreamTiming, TraceDirectory, Tracing, WorkloadState,
};
use agyn_users::Users;
use connectrpc::Protocol;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};

pub struct World {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub events: Events,
    pub authorizer: Authorizer,
    pub directory: Arc<Directory>,
    pub tracing: Tracing,
}

impl World {
    pub async fn new(backend: Backend) -> Self {
        Self::with_timing(backend, StreamTiming::default()).await
    }

    pub async fn with_timing(backend: Backend, timing: StreamTiming) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let events = Events::start(db.clone(), EventsConfig::default()).unwrap();
        let directory = Arc::new(Directory::default());
        let tracing = Tracing::new(
            db.clone(),
            Arc::new(events.clone()),
            Arc::new(events.clone()),
            directory.clone(),
        )
        .with_stream_timing(timing);
        Self {
            users: Users::new(db.clone()),
            orgs: Organizations::new(db.clone(), Vec::new()),
            authorizer: Authorizer::new(db.clone()),
            db,
            events,
            directory,
            tracing,
        }
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("tracing|{name}"),
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

    /// Makes `member` an ACTIVE member (not an owner) of `org`.
    pub async fn join(&self, org: &str, owner: &Caller, member: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &MembershipInput {
                    organization_id: org,
                    identity_id: id(member),
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

    /// Registers an agent identity of `org` and returns its caller with
    /// an API token credential.
    pub fn agent(&self, org: &str) -> Caller {
        let identity_id = new_id();
        let agent_id = new_id();
        self.directory.agents.lock().unwrap().insert(
            identity_id.clone(),
            AgentIdentity {
                agent_id,
                organization_id: org.to_string(),
            },
        );
        agent_caller(&identity_id, None)
    }

    /// Creates a message in a new thread of `org`, with `participants`
    /// able to read the thread. Returns the message id.
    pub async fn message(&self, org: &str, participants: &[&Caller]) -> String {
        let thread_id = new_id();
        let message_id = new_id();
        let tuples: Vec<Tuple> = participants
            .iter()
            .map(|participant| {
                Tuple::new(
                    ObjectRef::identity(id(participant)),
                    "participant",
                    ObjectRef::new("thread", &thread_id),
                )
            })
            .collect();
        self.authorizer.write(&tuples, &[]).await.unwrap();
        self.directory.messages.lock().unwrap().insert(
            message_id.clone(),
            MessageThread {
                thread_id,
                organization_id: org.to_string(),
            },
        );
        message_id
    }

    /// Registers a workload of `org` that `readers` may read.
    pub fn workload(&self, org: &str, readers: &[&Caller]) -> String {
        let workload_id = new_id();
        self.directory.workloads.lock().unwrap().insert(
            workload_id.clone(),
            WorkloadRecord {
                organization_id: org.to_string(),
                readers: readers
                    .iter()
                    .map(|reader| id(reader).to_string())
                    .collect(),
                terminal: false,
            },
        );
        workload_id
    }

    pub fn finish_workload(&self, workload_id: &str) {
        self.directory
            .workloads
            .lock()
            .unwrap()
            .get_mut(workload_id)
            .unwrap()
            .terminal = true;
    }

    /// Counts the stored rows of a trace.
    pub async fn span_rows(&self, trace_id: &[u8]) -> i64 {
        let row = agyn_store::sqlx::query("SELECT COUNT(*) AS n FROM spans WHERE trace_id = $1")
            .bind(hex(trace_id))
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        agyn_store::sqlx::Row::try_get(&row, "n").unwrap()
    }

    /// Returns the resource attribute keys stored with the first span of
    /// `trace_id`.
    pub async fn stored_resource_keys(&self, trace_id: &[u8]) -> Vec<String> {
        use base64::Engine as _;
        use buffa::Message as _;
        let row = agyn_store::sqlx::query("SELECT resource_pb FROM spans WHERE trace_id = $1")
            .bind(hex(trace_id))
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        let encoded: String = agyn_store::sqlx::Row::try_get(&row, "resource_pb").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let resource = Resource::decode_from_slice(&bytes).unwrap();
        resource
            .attributes
            .iter()
            .map(|attribute| attribute.key.clone())
            .collect()
    }
}

/// A workload as the runners service would report it.
pub struct WorkloadRecord {
    pub organization_id: String,
    pub readers: Vec<String>,
    pub terminal: bool,
}

/// Agents, messages and workloads that the agents, threads and runners
/// services would return.
#[derive(Default)]
pub struct Directory {
    pub agents: Mutex<HashMap<String, AgentIdentity>>,
    pub messages: Mutex<HashMap<String, MessageThread>>,
    pub workloads: Mutex<HashMap<String, WorkloadRecord>>,
}

impl TraceDirectory for Directory {
    fn resolve_agent<'a>(
        &'a self,
        identity_id: &'a str,
    ) -> agyn_tracing::Lookup<'a, Option<AgentIdentity>> {
        Box::pin(async move { Ok(self.agents.lock().unwrap().get(identity_id).cloned()) })
    }

    fn message_thread<'a>(
        &'a self,
        message_id: &'a str,
    ) -> agyn_tracing::Lookup<'a, Option<MessageThread>> {
        Box::pin(async move { Ok(self.messages.lock().unwrap().get(message_id).cloned()) })
    }

    fn read_workload<'a>(
        &'a self,
        caller: &'a Caller,
        workload_id: &'a str,
    ) -> agyn_tracing::Lookup<'a, WorkloadState> {
        Box::pin(async move {
            let workloads = self.workloads.lock().unwrap();
            let Some(workload) = workloads.get(workload_id) else {
                return Err(Error::not_found("workload", workload_id));
            };
            let allowed = match caller {
                Caller::Component(_) => true,
                Caller::Identity { identity_id, .. } => workload.readers.contains(identity_id),
            };
            if !allowed {
                return Err(Error::permission_denied(
                    "permission denied: can_view_workloads on organization",
                ));
            }
            Ok(WorkloadState {
                terminal: workload.terminal,
            })
        })
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

pub fn agent_caller(id: &str, workload_id: Option<&str>) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::Agent,
        workload_id: workload_id.map(str::to_string),
        credential: if workload_id.is_some() {
            CredentialKind::Certificate
        } else {
            CredentialKind::ApiToken
        },
    }
}

pub fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Returns the bearer value that makes the test server authenticate
/// `caller`.
pub fn bearer_of(caller: &Caller) -> String {
    match caller {
        Caller::Identity {
            identity_id,
            kind: IdentityKind::Agent,
            workload_id: Some(workload_id),
            ..
        } => format!("workload:{identity_id}:{workload_id}"),
        Caller::Identity {
            identity_id,
            kind: IdentityKind::Agent,
            ..
        } => format!("agent:{identity_id}"),
        Caller::Identity { identity_id, .. } => format!("user:{identity_id}"),
        Caller::Component(name) => format!("component:{name}"),
    }
}

pub fn options(caller: &Caller) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {}", bearer_of(caller)))
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
        Some(("agent", id)) => Some(agent_caller(id, None)),
        Some(("workload", rest)) => rest
            .split_once(':')
            .map(|(id, workload_id)| agent_caller(id, Some(workload_id))),
        Some(("component", "orchestrator")) => Some(Caller::Component("orchestrator")),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

pub struct Server {
    pub address: String,
}

impl Server {
    pub async fn start(world: &World) -> Self {
        let router = connectrpc::Router::new()
            .add_service(Arc::new(TracingGatewayRpc::new(world.tracing.clone())))
            .add_service(Arc::new(TracingRpc::new(world.tracing.clone())))
            .add_service(Arc::new(TraceServiceRpc::new(world.tracing.clone())));
        let app = agyn_tracing::http::otlp_router(world.tracing.clone())
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address }
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::new(self.address.parse().unwrap()).with_protocol(Protocol::Grpc)
    }

    pub fn gateway(&self) -> TracingGatewayClient<HttpClient> {
        TracingGatewayClient::new(HttpClient::plaintext_http2_only(), self.config())
    }

    pub fn internal(&self) -> TracingServiceClient<HttpClient> {
        TracingServiceClient::new(HttpClient::plaintext_http2_only(), self.config())
    }

    pub fn otlp(&self) -> TraceServiceClient<HttpClient> {
        TraceServiceClient::new(HttpClient::plaintext_http2_only(), self.config())
    }

    /// Posts `body` to `/v1/traces` and returns the status, content type
    /// and body.
    pub async fn post_traces(
        &self,
        bearer: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String, Vec<u8>) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/traces", self.address))
            .header("content-type", content_type)
            .body(body);
        if let Some(bearer) = bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            status,
            content_type,
            response.bytes().await.unwrap().to_vec(),
        )
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns the trace id of a run: the bytes of its workload UUID.
pub fn trace_of(workload_id: &str) -> Vec<u8> {
    uuid::Uuid::parse_str(workload_id)
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Returns a random trace id.
pub fn random_trace() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// Returns span id `n` (big-endian, never all zeros for n > 0).
pub fn span_id(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: AnyValue {
            value: Some(Value::StringValue(value.to_string())),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    }
}

pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: AnyValue {
            value: Some(Value::IntValue(value)),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    }
}

/// Builds a span. `end` 0 means in progress.
pub fn span(trace_id: &[u8], n: u64, name: &str, start: u64, end: u64) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id(n),
        name: name.to_string(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

/// Marks a span as failed with `message`.
pub fn failed(mut span: Span, message: &str) -> Span {
    span.status = Status {
        code:
            agyn_api_tracing::opentelemetry::proto::trace::v1::status::StatusCode::STATUS_CODE_ERROR
                .into(),
        message: message.to_string(),
        ..Default::default()
    }
    .into();
    span
}

/// Wraps spans in one resource with `attributes` and one scope.
pub fn request(attributes: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(attributes, spans)],
        ..Default::default()
    }
}

/// Wraps spans in one resource of organization `org` and one scope.
pub fn org_request(org: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    request(vec![text("agyn.organization.id", org)], spans)
}

pub fn resource_spans(attributes: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Resource {
            attributes,
            ..Default::default()
        }
        .into(),
        scope_spans: vec![ScopeSpans {
            scope: InstrumentationScope {
                name: "agyn-test".to_string(),
                version: "1".to_string(),
                ..Default::default()
            }
            .into(),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Returns every span of the envelopes, in order.
pub fn spans_of(resource_spans: &[ResourceSpans]) -> Vec<Span> {
    resource_spans
        .iter()
        .flat_map(|resource| resource.scope_spans.iter())
        .flat_map(|scope| scope.spans.iter().cloned())
        .collect()
}

/// Returns the string value of attribute `key`.
pub fn attribute_text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let values: Vec<String> = attributes
        .iter()
        .filter(|attribute| attribute.key == key)
        .filter_map(
            |attribute| match attribute.value.as_option()?.value.as_ref()? {
                Value::StringValue(text) => Some(text.clone()),
                _ => None,
            },
        )
        .collect();
    assert!(
        values.len() <= 1,
        "attribute {key} appears {} times",
        values.len()
    );
    values.into_iter().next()
}

/// Exports `request` as `caller` straight through the service.
pub async fn export(
    world: &World,
    caller: &Caller,
    request: ExportTraceServiceRequest,
) -> Result<i64> {
    let response = world.tracing.export(caller, request).await?;
    Ok(response
        .partial_success
        .as_option()
        .map_or(0, |partial| partial.rejected_spans))
}

/// Builds the ListSpans request of an organization with a filter.
pub fn list_request(org: &str, filter: pb::SpanFilter) -> pb::ListSpansRequest {
    pb::ListSpansRequest {
        organization_id: org.to_string(),
        filter: filter.into(),
        ..Default::default()
    }
}

/// Lists the first page of `org`'s spans matching `filter` as `caller`,
/// in response order.
pub async fn listed_spans(
    world: &World,
    caller: &Caller,
    org: &str,
    filter: pb::SpanFilter,
) -> Vec<Span> {
    let (envelopes, _) = world
        .tracing
        .list_spans(caller, &list_request(org, filter))
        .await
        .unwrap();
    spans_of(&envelopes)
}
