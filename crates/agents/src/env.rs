//! Environment variable operations. Reads need `can_read_config` and
//! writes `can_edit_config` on the agent that owns the target. A
//! secret-backed env stores and returns only the secret id.

use agyn_core::id::{new_id, parse_id};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::keys::CreateKey;
use crate::model::{EnvChanges, EnvRecord, EnvSource, NewEnv, Target};
use crate::store::{self, envs};
use crate::target::parse_target;
use crate::{Agents, COMPONENT, no_fields, on_unique_violation, validate};

const CREATE_SCOPE: &str = "agents.CreateEnv";

fn name_taken(name: &str, target: &Target) -> Error {
    Error::already_exists(format!(
        "env name {name:?} is already used by {} {}; choose another name",
        target.type_name(),
        target.id()
    ))
}

/// Checks a source's shape: the value's size or the secret id's format.
fn checked_source(source: &EnvSource) -> Result<EnvSource> {
    match source {
        EnvSource::Value(value) => {
            validate::sized("value", value, validate::ENV_VALUE_MAX_BYTES, false)?;
            Ok(EnvSource::Value(value.clone()))
        }
        EnvSource::Secret(secret_id) => Ok(EnvSource::Secret(parse_id("secret_id", secret_id)?)),
    }
}

impl Agents {
    /// Fails unless secret `secret_id` exists in organization `org_id`.
    pub(crate) async fn require_secret_in_org(&self, secret_id: &str, org_id: &str) -> Result<()> {
        let owner = self
            .secrets
            .secret_exists(&Caller::Component(COMPONENT), secret_id)
            .await?;
        match owner {
            None => Err(Error::invalid_field(
                "secret_id",
                &format!("secret {secret_id} not found"),
            )),
            Some(owner) if owner != org_id => Err(Error::invalid_field(
                "secret_id",
                "belongs to another organization",
            )),
            Some(_) => Ok(()),
        }
    }

    /// CreateEnv. The name is unique per target.
    pub async fn create_env(&self, caller: &Caller, input: &NewEnv) -> Result<EnvRecord> {
        let caller_id = caller.identity_id()?;
        let target = parse_target(input.target.as_ref())?;
        let name = validate::env_name(&input.name)?;
        let description = validate::description(&input.description)?;
        let source = input
            .source
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("exactly one of value or secret_id is required"))
            .and_then(checked_source)?;
        let (source_kind, source_text) = match &source {
            EnvSource::Value(value) => ("value", value.as_str()),
            EnvSource::Secret(secret_id) => ("secret", secret_id.as_str()),
        };
        let key = CreateKey::new(
            CREATE_SCOPE,
            caller_id,
            &input.request_id,
            &[
                target.type_name(),
                target.id(),
                name,
                description,
                source_kind,
                source_text,
            ],
        )?;
        let agent = self.target_agent(&target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        if let EnvSource::Secret(secret_id) = &source {
            self.require_secret_in_org(secret_id, &agent.organization_id)
                .await?;
        }

        let mut tx = self.db.begin_write().await?;
        if let Some(id) = key.replayed(&mut tx).await? {
            return envs::by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("env", &id));
        }
        let now = now_micros();
        let env = EnvRecord {
            id: new_id(),
            agent_id: agent.id.clone(),
            target: target.clone(),
            name: name.to_string(),
            description: description.to_string(),
            source,
            created_at: now,
            updated_at: now,
        };
        on_unique_violation(envs::insert(&mut tx, &env).await, || {
            name_taken(name, &target)
        })?;
        key.record(&mut tx, &env.id).await?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(env_id = %env.id, agent_id = %env.agent_id, "Env created");
        Ok(env)
    }

    pub async fn get_env(&self, caller: &Caller, id: &str) -> Result<EnvRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let env = self.env_or_not_found(&id).await?;
        self.authorize_config_read(caller_id, &env.agent_id).await?;
        Ok(env)
    }

    /// ListEnvs: the envs of exactly one target.
    pub async fn list_envs(
        &self,
        caller: &Caller,
        target: Option<&Target>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<EnvRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let (target, page) = self
            .target_list_page(
                caller_id,
                "agynio.api.agents.v1.ListEnvs",
                target,
                page_size,
                page_token,
            )
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        envs::list(&mut connection, &target, &page).await
    }

    /// UpdateEnv. A value or a secret id replaces the source; both at once
    /// fail. The target is immutable.
    pub async fn update_env(
        &self,
        caller: &Caller,
        id: &str,
        changes: &EnvChanges,
    ) -> Result<EnvRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if changes.name.is_none()
            && changes.description.is_none()
            && changes.value.is_none()
            && changes.secret_id.is_none()
        {
            return Err(no_fields());
        }
        let source = match (&changes.value, &changes.secret_id) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_argument(
                    "value and secret_id are exclusive; set at most one",
                ));
            }
            (Some(value), None) => Some(checked_source(&EnvSource::Value(value.clone()))?),
            (None, Some(secret_id)) => Some(checked_source(&EnvSource::Secret(secret_id.clone()))?),
            (None, None) => None,
        };
        let name = changes
            .name
            .as_deref()
            .map(validate::env_name)
            .transpose()?;
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        let current = self.env_or_not_found(&id).await?;
        let agent = self.target_agent(&current.target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        if let Some(EnvSource::Secret(secret_id)) = &source {
            self.require_secret_in_org(secret_id, &agent.organization_id)
                .await?;
        }

        let mut tx = self.db.begin_write().await?;
        let mut env = envs::by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("env", &id))?;
        if let Some(name) = name {
            env.name = name.to_string();
        }
        if let Some(description) = &changes.description {
            env.description = description.clone();
        }
        if let Some(source) = source {
            env.source = source;
        }
        env.updated_at = now_micros().max(env.updated_at);
        on_unique_violation(envs::update(&mut tx, &env).await, || {
            name_taken(&env.name, &env.target)
        })?;
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(env_id = %env.id, agent_id = %env.agent_id, "Env updated");
        Ok(env)
    }

    pub async fn delete_env(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let env = self.env_or_not_found(&id).await?;
        let agent = self.target_agent(&env.target).await?;
        self.authorize_config_write(caller_id, &agent).await?;
        let mut tx = self.db.begin_write().await?;
        if !store::delete_by_id(&mut tx, "agent_envs", &id).await? {
            return Err(Error::not_found("env", &id));
        }
        self.commit_with_bump(tx, &[(agent.id, agent.organization_id)])
            .await?;
        tracing::info!(env_id = %id, agent_id = %env.agent_id, "Env deleted");
        Ok(())
    }

    async fn env_or_not_found(&self, id: &str) -> Result<EnvRecord> {
        let mut connection = self.db.pool().acquire().await?;
        envs::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("env", id))
    }
}
