//! Shared setup: a platform database with users and organizations, the
//! secrets and LLM services for references, and the agents service over
//! it with an event sink that records every event.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use agyn_agents::{
    AgentSecretReferences, AgentView, Agents, AgentsCleaner, Availability, NewAgent, Target,
};
use agyn_core::error::Code;
use agyn_core::events::EventSink;
use agyn_core::{Caller, CredentialKind, IdentityKind, Secret};
use agyn_llm::{Llm, NewModel, NewProvider};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, ResourceCleaner, Role};
use agyn_pki::MasterKey;
use agyn_secrets::{NewImagePullSecret, NewSecret, Secrets, SecretsCleaner, Source};
use agyn_store::sqlx;
use agyn_store::{Backend, Db};
use agyn_users::Users;
use serde_json::Value;

/// One published event: room, event name and payload.
#[derive(Debug, Clone)]
pub struct Published {
    pub room: String,
    pub event: &'static str,
    pub payload: Value,
}

/// An event sink that keeps every event in memory.
#[derive(Default)]
pub struct RecordedEvents {
    events: Mutex<Vec<Published>>,
}

impl RecordedEvents {
    pub fn all(&self) -> Vec<Published> {
        self.events.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.events.lock().unwrap().clear();
    }
}

impl EventSink for RecordedEvents {
    fn publish(&self, _source: &'static str, event: &'static str, room: String, payload: Value) {
        self.events.lock().unwrap().push(Published {
            room,
            event,
            payload,
        });
    }
}

pub struct World {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub secrets: Secrets,
    pub llm: Llm,
    pub agents: Agents,
    pub events: Arc<RecordedEvents>,
}

impl World {
    pub async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let events = Arc::new(RecordedEvents::default());
        let cleaners: Vec<Arc<dyn ResourceCleaner>> = vec![
            Arc::new(AgentsCleaner::new(db.clone(), events.clone())),
            Arc::new(SecretsCleaner::new(db.clone())),
        ];
        let orgs = Organizations::new(db.clone(), cleaners);
        let key = MasterKey::generate();
        let secrets = Secrets::new(db.clone(), key.clone(), orgs.clone())
            .with_references(Arc::new(AgentSecretReferences::new(db.clone())));
        let agents =
            Agents::new(db.clone(), orgs.clone(), secrets.clone()).with_events(events.clone());
        Self {
            users: Users::new(db.clone()),
            llm: Llm::new(db.clone(), key, orgs.clone()),
            db,
            orgs,
            secrets,
            agents,
            events,
        }
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("agents|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        user_caller(&user.id)
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

    /// Creates an agent of `org` with the given availability.
    pub async fn agent(&self, owner: &Caller, org: &str, availability: Availability) -> AgentView {
        self.agents
            .create_agent(
                owner,
                &NewAgent {
                    organization_id: org.to_string(),
                    name: "Helper".into(),
                    availability: Some(availability),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    /// Creates an LLM model of `org` and returns its id.
    pub async fn model(&self, owner: &Caller, org: &str) -> String {
        let provider = self
            .llm
            .create_provider(
                owner,
                &NewProvider {
                    organization_id: org,
                    name: "openai",
                    endpoint: "https://llm.example.com/v1",
                    token: "test-token",
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        self.llm
            .create_model(
                owner,
                &NewModel {
                    organization_id: org,
                    name: "Model",
                    provider_id: &provider.id,
                    remote_name: "gpt-test",
                    request_id: "",
                },
            )
            .await
            .unwrap()
            .id
    }

    /// Creates a local secret of `org` whose value is `value`.
    pub async fn secret(&self, owner: &Caller, org: &str, name: &str, value: &str) -> String {
        self.secrets
            .create_secret(
                owner,
                &NewSecret {
                    organization_id: org.to_string(),
                    name: name.to_string(),
                    description: String::new(),
                    source: Some(Source::Value(Secret::new(value.to_string()))),
                    request_id: String::new(),
                },
            )
            .await
            .unwrap()
            .id
    }

    pub async fn image_pull_secret(&self, owner: &Caller, org: &str) -> String {
        self.secrets
            .create_image_pull_secret(
                owner,
                &NewImagePullSecret {
                    organization_id: org.to_string(),
                    description: String::new(),
                    registry: "registry.example.com".into(),
                    username: "robot".into(),
                    source: Some(Source::Value(Secret::new("registry-password".into()))),
                    request_id: String::new(),
                },
            )
            .await
            .unwrap()
            .id
    }

    /// Returns the number of rows of `table` where `column = value`.
    pub async fn count(&self, table: &str, column: &str, value: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
        let row: (i64,) = sqlx::query_as(&sql)
            .bind(value)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.0
    }

    /// Returns the number of tuples whose object or user is `agent:<id>`
    /// or `identity:<id>`.
    pub async fn tuples_of(&self, id: &str) -> i64 {
        let row: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tuples WHERE object_id = $1 OR subject_id = $1")
                .bind(id)
                .fetch_one(self.db.pool())
                .await
                .unwrap();
        row.0
    }

    /// Returns the agent's stored `updated_at`.
    pub async fn updated_at(&self, agent_id: &str) -> i64 {
        let row: (i64,) = sqlx::query_as("SELECT updated_at FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.0
    }

    /// Returns the `agent.updated` events published to `agent:<id>`.
    pub fn agent_events(&self, agent_id: &str) -> Vec<Published> {
        self.events
            .all()
            .into_iter()
            .filter(|event| {
                event.event == "agent.updated" && event.room == format!("agent:{agent_id}")
            })
            .collect()
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

/// Returns the caller of an agent workload acting as agent `id`.
pub fn agent_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::Agent,
        workload_id: Some(agyn_core::id::new_id()),
        credential: CredentialKind::Certificate,
    }
}

pub fn id(caller: &Caller) -> String {
    caller.identity_id().unwrap().to_string()
}

pub fn agent_target(view: &AgentView) -> Target {
    Target::Agent(view.agent.id.clone())
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

/// Asserts an error's code.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: agyn_core::Result<T>,
    code: Code,
) -> agyn_core::Error {
    let error = result.expect_err("the call fails");
    assert_eq!(error.code(), code, "{error}");
    error
}
