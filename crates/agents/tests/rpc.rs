//! AgentsGateway and AgentsService over Connect on HTTP/2 loopback, on
//! SQLite and PostgreSQL.
//!
//! The test server mounts both services behind a stand-in for the
//! gateway's authentication: the bearer value `user:<id>` makes the caller
//! that user, `agent:<id>` that agent's workload, and `component:<name>`
//! that platform component. Responses are checked as Connect JSON, the
//! form clients read.

mod support;

use std::sync::Arc;

use agyn_agents::Availability;
use agyn_agents::service::{AgentsGatewayRpc, AgentsRpc};
use agyn_api_agents::agynio::api::agents::v1::{
    self as pb, AgentsGatewayClient, AgentsServiceClient,
};
use agyn_core::Caller;
use agyn_store::{Backend, on_both_backends};
use connectrpc::ErrorCode;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use pb::__buffa::oneof::create_env_request::{Source as EnvSource, Target as EnvTarget};
use pb::__buffa::oneof::list_envs_request::Target as ListTarget;
use serde_json::Value;
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
        Some(("agent", id)) => Some(agent_caller(id)),
        Some(("component", "orchestrator")) => Some(Caller::Component("orchestrator")),
        Some(("component", "secrets")) => Some(Caller::Component("secrets")),
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
            .add_service(Arc::new(AgentsGatewayRpc::new(w.agents.clone())))
            .add_service(Arc::new(AgentsRpc::new(w.agents.clone())));
        let app = axum::Router::new()
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address }
    }

    fn gateway(&self) -> AgentsGatewayClient<HttpClient> {
        AgentsGatewayClient::new(
            HttpClient::plaintext_http2_only(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    fn internal(&self) -> AgentsServiceClient<HttpClient> {
        AgentsServiceClient::new(
            HttpClient::plaintext_http2_only(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }
}

fn bearer(value: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {value}"))
}

fn as_user(caller: &Caller) -> CallOptions {
    bearer(&format!("user:{}", id(caller)))
}

fn json(message: &impl serde::Serialize) -> Value {
    serde_json::to_value(message).unwrap()
}

/// Returns whether a JSON field is absent or equal to its type's default,
/// which is how an unset proto3 field reads.
fn is_unset(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Bool(flag)) => !flag,
        Some(Value::String(text)) => text.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

fn create_request(org: &str, nickname: &str) -> pb::CreateAgentRequest {
    pb::CreateAgentRequest {
        organization_id: org.to_string(),
        name: "Reviewer".into(),
        nickname: Some(nickname.into()),
        configuration: r#"{"system_prompt":"Be brief"}"#.into(),
        image: "ghcr.io/agynio/agent:1".into(),
        capabilities: vec!["gpu".into()],
        availability: pb::AgentAvailability::AGENT_AVAILABILITY_INTERNAL.into(),
        ..Default::default()
    }
}

async fn gateway_redacts_configuration(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;
    let gateway = server.gateway();

    let created = gateway
        .create_agent_with_options(create_request(&org, "reviewer"), as_user(&owner))
        .await
        .unwrap()
        .into_owned();
    let agent_id = created.agent.meta.id.clone();
    let full = json(&created);
    assert_eq!(
        full["agent"]["configuration"],
        r#"{"system_prompt":"Be brief"}"#
    );
    assert_eq!(full["agent"]["idleTimeout"], "300s");
    assert_eq!(full["agent"]["availability"], "AGENT_AVAILABILITY_INTERNAL");
    assert!(is_unset(full["agent"].get("configRedacted")), "{full}");

    let seen = gateway
        .get_agent_with_options(
            pb::GetAgentRequest {
                id: agent_id.clone(),
                ..Default::default()
            },
            as_user(&member),
        )
        .await
        .unwrap()
        .into_owned();
    let redacted = json(&seen);
    assert_eq!(redacted["agent"]["configRedacted"], true);
    assert_eq!(redacted["agent"]["nickname"], "reviewer");
    for field in [
        "configuration",
        "image",
        "idleTimeout",
        "capabilities",
        "model",
    ] {
        assert!(
            is_unset(redacted["agent"].get(field)),
            "{field}: {redacted}"
        );
    }

    let error = gateway
        .create_agent_with_options(create_request(&org, "reviewer"), as_user(&owner))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::AlreadyExists);
    let no_fields = gateway
        .update_agent_with_options(
            pb::UpdateAgentRequest {
                id: agent_id.clone(),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap_err();
    assert_eq!(no_fields.code, ErrorCode::InvalidArgument);

    let cleared = gateway
        .update_agent_with_options(
            pb::UpdateAgentRequest {
                id: agent_id.clone(),
                capabilities: pb::StringList::default().into(),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap()
        .into_owned();
    assert!(cleared.agent.capabilities.is_empty());
}

async fn env_secret_values_never_returned(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();
    let secret = w.secret(&owner, &org, "token", "rpc-secret-value").await;
    let gateway = server.gateway();

    let created = gateway
        .create_env_with_options(
            pb::CreateEnvRequest {
                name: "API_TOKEN".into(),
                target: Some(EnvTarget::AgentId(agent_id.clone())),
                source: Some(EnvSource::SecretId(secret.clone())),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap()
        .into_owned();
    let created = json(&created);
    assert_eq!(created["env"]["secretId"], secret.as_str());
    assert_eq!(created["env"]["agentId"], agent_id.as_str());

    let listed = gateway
        .list_envs_with_options(
            pb::ListEnvsRequest {
                target: Some(ListTarget::AgentId(agent_id.clone())),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap()
        .into_owned();
    let bundle = server
        .internal()
        .get_agent_bundle_with_options(
            pb::GetAgentBundleRequest {
                agent_id: agent_id.clone(),
                ..Default::default()
            },
            bearer("component:orchestrator"),
        )
        .await
        .unwrap()
        .into_owned();
    for body in [
        created.to_string(),
        json(&listed).to_string(),
        json(&bundle).to_string(),
    ] {
        assert!(!body.contains("rpc-secret-value"), "{body}");
        assert!(body.contains(&secret), "{body}");
    }

    let missing_target = gateway
        .list_envs_with_options(pb::ListEnvsRequest::default(), as_user(&owner))
        .await
        .unwrap_err();
    assert_eq!(missing_target.code, ErrorCode::InvalidArgument);

    let references = server
        .internal()
        .count_secret_references_with_options(
            pb::CountSecretReferencesRequest {
                secret_id: secret.clone(),
                ..Default::default()
            },
            bearer("component:secrets"),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(references.env_ids.len(), 1);
}

async fn agent_workload_reads_own_config(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let agent_id = agent.agent.id.clone();
    let gateway = server.gateway();
    gateway
        .create_skill_with_options(
            pb::CreateSkillRequest {
                agent_id: agent_id.clone(),
                name: "Style".into(),
                body: "Use short sentences".into(),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap();

    let workload = bearer(&format!("agent:{agent_id}"));
    let own = gateway
        .get_agent_with_options(
            pb::GetAgentRequest {
                id: agent_id.clone(),
                ..Default::default()
            },
            workload.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    assert!(!own.agent.config_redacted);
    let skills = gateway
        .list_skills_with_options(
            pb::ListSkillsRequest {
                agent_id: agent_id.clone(),
                ..Default::default()
            },
            workload,
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(skills.skills.len(), 1);
    assert_eq!(skills.skills[0].body, "Use short sentences");
}

async fn internal_methods_reject_identities(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let internal = server.internal();
    let request = pb::ResolveAgentIdentityRequest {
        identity_id: agent.agent.id.clone(),
        ..Default::default()
    };

    let error = internal
        .resolve_agent_identity_with_options(request.clone(), as_user(&owner))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);
    let resolved = internal
        .resolve_agent_identity_with_options(request, bearer("component:orchestrator"))
        .await
        .unwrap()
        .into_owned();
    assert_eq!(resolved.agent_id, agent.agent.id);
    assert_eq!(resolved.organization_id, org);

    let unauthenticated = server
        .gateway()
        .list_agents_with_options(
            pb::ListAgentsRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code, ErrorCode::Unauthenticated);
}

async fn roles_over_gateway(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;
    let agent = w.agent(&owner, &org, Availability::Private).await;
    let gateway = server.gateway();

    let set = gateway
        .set_agent_role_with_options(
            pb::SetAgentRoleRequest {
                agent_id: agent.agent.id.clone(),
                identity_id: id(&member),
                role: pb::AgentRole::AGENT_ROLE_MAINTAINER.into(),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap()
        .into_owned();
    let set = json(&set);
    assert_eq!(set["assignment"]["role"], "AGENT_ROLE_MAINTAINER");
    assert_eq!(set["assignment"]["identityType"], "IDENTITY_TYPE_USER");

    let mine = gateway
        .list_my_agent_roles_with_options(
            pb::ListMyAgentRolesRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            as_user(&member),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(mine.assignments.len(), 1);
    assert_eq!(mine.assignments[0].agent_id, agent.agent.id);

    let unspecified = gateway
        .set_agent_role_with_options(
            pb::SetAgentRoleRequest {
                agent_id: agent.agent.id.clone(),
                identity_id: id(&member),
                ..Default::default()
            },
            as_user(&owner),
        )
        .await
        .unwrap_err();
    assert_eq!(unspecified.code, ErrorCode::InvalidArgument);
    let denied = gateway
        .list_agent_roles_with_options(
            pb::ListAgentRolesRequest {
                agent_id: agent.agent.id.clone(),
                ..Default::default()
            },
            as_user(&member),
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code, ErrorCode::PermissionDenied);
}

on_both_backends!(
    roles_over_gateway,
    gateway_redacts_configuration,
    env_secret_values_never_returned,
    agent_workload_reads_own_config,
    internal_methods_reject_identities,
);
