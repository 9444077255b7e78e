//! Agent operations. Each states its authorization rule first.

use agyn_authz::{ObjectRef, Tuple};
use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};

use crate::keys::CreateKey;
use crate::model::{AgentChanges, AgentRecord, AgentView, Availability, NewAgent, Resources};
use crate::store::agents;
use crate::{Agents, agent_object, no_fields, on_unique_violation, validate};

const CREATE_SCOPE: &str = "agents.CreateAgent";

// NOTE: the identity service has no nickname registry yet, so a nickname
// is unique only among the agents of an organization, through the
// `(organization_id, nickname)` key of the agents table.
fn nickname_taken(nickname: &str, org_id: &str) -> Error {
    Error::already_exists(format!(
        "nickname {nickname:?} is already used in organization {org_id}; choose another nickname"
    ))
}

fn model_not_found() -> Error {
    Error::invalid_field("model", "model not found in organization")
}

/// Checks a model field: empty, or the id of a model.
fn model_id(value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    parse_id("model", value)
}

/// Clears the configuration fields of `agent`.
fn redact(mut agent: AgentRecord) -> AgentRecord {
    agent.model = String::new();
    agent.configuration = String::new();
    agent.image = String::new();
    agent.init_image = String::new();
    agent.resources = Resources::default();
    agent.idle_timeout_ms = 0;
    agent.capabilities = Vec::new();
    agent
}

/// `organization:<o> internal_access agent:<a>`, present while the agent
/// is INTERNAL.
fn internal_access(agent: &AgentRecord) -> Tuple {
    Tuple::new(
        agyn_orgs::org_object(&agent.organization_id),
        "internal_access",
        agent_object(&agent.id),
    )
}

/// `identity:<a> member organization:<o>`: the agent is a member of its
/// organization.
pub(crate) fn member_tuple(agent_id: &str, org_id: &str) -> Tuple {
    Tuple::new(
        ObjectRef::identity(agent_id),
        "member",
        agyn_orgs::org_object(org_id),
    )
}

impl Agents {
    /// CreateAgent: `can_manage` on the organization, which must be
    /// active. Inserts the agent, registers its identity (type AGENT) and
    /// writes its tuples in one transaction, so a taken nickname leaves
    /// nothing behind. A user creator becomes the agent's owner. A repeat
    /// with the same `request_id` returns the first agent.
    pub async fn create_agent(&self, caller: &Caller, input: &NewAgent) -> Result<AgentView> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let name = validate::agent_name(&input.name)?;
        let nickname = input
            .nickname
            .as_deref()
            .filter(|nickname| !nickname.is_empty())
            .map(validate::nickname)
            .transpose()?;
        let role = validate::text("role", &input.role, validate::ROLE_MAX_CHARS)?;
        let description = validate::description(&input.description)?;
        let availability = input
            .availability
            .ok_or_else(|| Error::invalid_field("availability", "must be INTERNAL or PRIVATE"))?;
        let model = model_id(&input.model)?;
        let configuration = validate::configuration(&input.configuration)?;
        validate::resources("resources", &input.resources)?;
        let idle_timeout_ms = validate::idle_timeout(
            input
                .idle_timeout_ms
                .unwrap_or(validate::IDLE_TIMEOUT_DEFAULT_MS),
        )?;
        validate::capabilities(&input.capabilities)?;
        let idle_timeout_text = idle_timeout_ms.to_string();
        let capabilities_text = input.capabilities.join("\n");
        let resources_text = crate::store::resources_json(&input.resources);
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[
                &org_id,
                name,
                nickname.unwrap_or(""),
                role,
                description,
                availability.as_str(),
                &model,
                configuration,
                &input.image,
                &input.init_image,
                &resources_text,
                &idle_timeout_text,
                &capabilities_text,
            ],
        )?;
        self.authorize_org_write(caller_id, &org_id).await?;

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            drop(tx);
            return self.get_agent(caller, &id).await;
        }
        if !model.is_empty() && !agents::model_in_org(&mut tx, &model, &org_id).await? {
            return Err(model_not_found());
        }
        let now = now_micros();
        let agent = AgentRecord {
            id: new_id(),
            organization_id: org_id.clone(),
            name: name.to_string(),
            nickname: nickname.map(str::to_string),
            role: role.to_string(),
            description: description.to_string(),
            availability,
            model,
            configuration: configuration.to_string(),
            image: input.image.clone(),
            init_image: input.init_image.clone(),
            resources: input.resources.clone(),
            idle_timeout_ms,
            capabilities: input.capabilities.clone(),
            created_at: now,
            updated_at: now,
        };
        agyn_users::identity::register(&mut tx, &agent.id, IdentityKind::Agent, now).await?;
        on_unique_violation(agents::insert(&mut tx, &agent).await, || {
            nickname_taken(nickname.unwrap_or_default(), &org_id)
        })?;
        let mut tuples = vec![
            Tuple::new(
                agyn_orgs::org_object(&org_id),
                "org",
                agent_object(&agent.id),
            ),
            Tuple::new(
                ObjectRef::identity(&agent.id),
                "self",
                agent_object(&agent.id),
            ),
            member_tuple(&agent.id, &org_id),
        ];
        if let Some(user_id) = caller.user_id() {
            tuples.push(Tuple::new(
                ObjectRef::identity(user_id),
                "owner",
                agent_object(&agent.id),
            ));
        }
        if availability == Availability::Internal {
            tuples.push(internal_access(&agent));
        }
        self.authorizer.write_in(&mut tx, &tuples, &[]).await?;
        key.record(&mut tx, &agent.id).await?;
        tx.commit().await?;

        tracing::info!(
            agent_id = %agent.id,
            organization_id = %org_id,
            availability = availability.as_str(),
            "Agent created"
        );
        self.agent_updated(&agent.id, &org_id, agent.updated_at, false);
        self.view_for(caller_id, agent).await
    }

    /// GetAgent: `can_view` on the agent. The configuration is redacted
    /// without `can_read_config`.
    pub async fn get_agent(&self, caller: &Caller, id: &str) -> Result<AgentView> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let agent = self.agent_or_not_found(&id).await?;
        self.require(caller_id, "can_view", &agent_object(&id))
            .await?;
        self.view_for(caller_id, agent).await
    }

    /// ListAgents: `can_read` on the organization; every agent whatever its
    /// availability, each redacted without `can_read_config`.
    pub async fn list_agents(
        &self,
        caller: &Caller,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<AgentView>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let fingerprint = Fingerprint::new("agynio.api.agents.v1.ListAgents")
            .with(caller_id)
            .with(&org_id);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.authorize_org_read(caller_id, &org_id).await?;
        let mut connection = self.db.pool().acquire().await?;
        let (records, next_page_token) = agents::list(&mut connection, &org_id, &page).await?;
        drop(connection);
        let mut views = Vec::with_capacity(records.len());
        for record in records {
            views.push(self.view_for(caller_id, record).await?);
        }
        Ok((views, next_page_token))
    }

    /// UpdateAgent: `can_edit_config` on the agent, plus `can_delete` when
    /// `availability` changes; the organization must be active. A nickname
    /// of "" removes the handle, and a taken one fails with
    /// `already_exists` without changing anything.
    pub async fn update_agent(
        &self,
        caller: &Caller,
        id: &str,
        changes: &AgentChanges,
    ) -> Result<AgentView> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let changes = checked_changes(changes)?;
        let current = self.agent_or_not_found(&id).await?;
        let object = agent_object(&id);
        self.require(caller_id, "can_edit_config", &object).await?;
        if changes.availability.is_some() {
            self.require(caller_id, "can_delete", &object).await?;
        }
        self.require_active(&current.organization_id).await?;

        let mut tx = self.db.begin_write().await?;
        let before = agents::by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("agent", &id))?;
        let mut agent = before.clone();
        apply_changes(&mut agent, &changes);
        if changes
            .model
            .as_deref()
            .is_some_and(|model| !model.is_empty())
            && !agents::model_in_org(&mut tx, &agent.model, &agent.organization_id).await?
        {
            return Err(model_not_found());
        }
        agent.updated_at = now_micros().max(before.updated_at + 1);
        on_unique_violation(agents::update(&mut tx, &agent).await, || {
            nickname_taken(
                agent.nickname.as_deref().unwrap_or_default(),
                &agent.organization_id,
            )
        })?;
        match (before.availability, agent.availability) {
            (Availability::Private, Availability::Internal) => {
                self.authorizer
                    .write_in(&mut tx, &[internal_access(&agent)], &[])
                    .await?;
            }
            (Availability::Internal, Availability::Private) => {
                self.authorizer
                    .write_in(&mut tx, &[], &[internal_access(&agent)])
                    .await?;
            }
            _ => {}
        }
        tx.commit().await?;

        tracing::info!(
            agent_id = %agent.id,
            organization_id = %agent.organization_id,
            "Agent updated"
        );
        self.agent_updated(&agent.id, &agent.organization_id, agent.updated_at, false);
        self.view_for(caller_id, agent).await
    }

    /// DeleteAgent: `can_delete` on the agent; the organization must be
    /// active. Deletes the agent with its MCP servers, skills, hooks, envs,
    /// init scripts and attachments, every tuple on `agent:<id>`, its
    /// organization member tuple, its nickname and its identity, in one
    /// transaction. Volume definitions stay.
    pub async fn delete_agent(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let agent = self.agent_or_not_found(&id).await?;
        self.require(caller_id, "can_delete", &agent_object(&id))
            .await?;
        self.require_active(&agent.organization_id).await?;
        self.deleter().delete_agent(&id).await
    }

    /// Returns `agent` as the identity `caller_id` may see it.
    pub(crate) async fn view_for(&self, caller_id: &str, agent: AgentRecord) -> Result<AgentView> {
        let full = self
            .allowed(caller_id, "can_read_config", &agent_object(&agent.id))
            .await?;
        Ok(if full {
            AgentView {
                agent,
                config_redacted: false,
            }
        } else {
            AgentView {
                agent: redact(agent),
                config_redacted: true,
            }
        })
    }

    pub(crate) async fn agent_or_not_found(&self, id: &str) -> Result<AgentRecord> {
        let mut connection = self.db.pool().acquire().await?;
        agents::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("agent", id))
    }
}

/// Validates the fields of an update and returns them normalized: the
/// name trimmed, the configuration `{}` when empty.
fn checked_changes(changes: &AgentChanges) -> Result<AgentChanges> {
    let AgentChanges {
        name,
        nickname,
        role,
        description,
        availability,
        model,
        configuration,
        image,
        init_image,
        resources,
        idle_timeout_ms,
        capabilities,
    } = changes;
    if name.is_none()
        && nickname.is_none()
        && role.is_none()
        && description.is_none()
        && availability.is_none()
        && model.is_none()
        && configuration.is_none()
        && image.is_none()
        && init_image.is_none()
        && resources.is_none()
        && idle_timeout_ms.is_none()
        && capabilities.is_none()
    {
        return Err(no_fields());
    }

    let name = name
        .as_deref()
        .map(validate::agent_name)
        .transpose()?
        .map(str::to_string);
    if let Some(nickname) = nickname.as_deref().filter(|nickname| !nickname.is_empty()) {
        validate::nickname(nickname)?;
    }
    if let Some(role) = role {
        validate::text("role", role, validate::ROLE_MAX_CHARS)?;
    }
    if let Some(description) = description {
        validate::description(description)?;
    }
    let model = model.as_deref().map(model_id).transpose()?;
    let configuration = configuration
        .as_deref()
        .map(validate::configuration)
        .transpose()?
        .map(str::to_string);
    if let Some(resources) = resources {
        validate::resources("resources", resources)?;
    }
    if let Some(idle_timeout_ms) = idle_timeout_ms {
        validate::idle_timeout(*idle_timeout_ms)?;
    }
    if let Some(capabilities) = capabilities {
        validate::capabilities(capabilities)?;
    }

    Ok(AgentChanges {
        name,
        nickname: nickname.clone(),
        role: role.clone(),
        description: description.clone(),
        availability: *availability,
        model,
        configuration,
        image: image.clone(),
        init_image: init_image.clone(),
        resources: resources.clone(),
        idle_timeout_ms: *idle_timeout_ms,
        capabilities: capabilities.clone(),
    })
}

fn apply_changes(agent: &mut AgentRecord, changes: &AgentChanges) {
    let set = |target: &mut String, value: &Option<String>| {
        if let Some(value) = value {
            *target = value.clone();
        }
    };
    set(&mut agent.name, &changes.name);
    set(&mut agent.role, &changes.role);
    set(&mut agent.description, &changes.description);
    set(&mut agent.model, &changes.model);
    set(&mut agent.configuration, &changes.configuration);
    set(&mut agent.image, &changes.image);
    set(&mut agent.init_image, &changes.init_image);
    if let Some(nickname) = &changes.nickname {
        agent.nickname = (!nickname.is_empty()).then(|| nickname.clone());
    }
    if let Some(availability) = changes.availability {
        agent.availability = availability;
    }
    if let Some(resources) = &changes.resources {
        agent.resources = resources.clone();
    }
    if let Some(idle_timeout_ms) = changes.idle_timeout_ms {
        agent.idle_timeout_ms = idle_timeout_ms;
    }
    if let Some(capabilities) = &changes.capabilities {
        agent.capabilities = capabilities.clone();
    }
}
