//! Internal methods for platform components: identity resolution, the
//! orchestrator's bundle, reference counts for the secrets service, and
//! the organization purge.

use agyn_core::id::parse_id;
use agyn_core::{Caller, Error, Result};
use agyn_store::Backend;
use agyn_store::sqlx::Executor;

use crate::model::AgentBundle;
use crate::store::{agents, attachments, envs, hooks, init_scripts, mcps, skills, volumes};
use crate::{Agents, require_component};

impl Agents {
    /// ResolveAgentIdentity (internal): the agent and organization of an
    /// identity; `not_found` when the identity is not an agent.
    pub async fn resolve_agent_identity(
        &self,
        caller: &Caller,
        identity_id: &str,
    ) -> Result<(String, String)> {
        require_component(caller, "ResolveAgentIdentity")?;
        let id = parse_id("identity_id", identity_id)?;
        let agent = self.agent_or_not_found(&id).await?;
        Ok((agent.id, agent.organization_id))
    }

    /// GetAgentBundle (internal): the agent with its full configuration and
    /// every sub-resource, read in one snapshot. Env secret ids are not
    /// resolved.
    pub async fn get_agent_bundle(&self, caller: &Caller, agent_id: &str) -> Result<AgentBundle> {
        require_component(caller, "GetAgentBundle")?;
        let agent_id = parse_id("agent_id", agent_id)?;
        let mut tx = self.db.begin_read().await?;
        if self.db.backend() == Backend::Postgres {
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await?;
        }
        let agent = agents::by_id(&mut tx, &agent_id)
            .await?
            .ok_or_else(|| Error::not_found("agent", &agent_id))?;
        let bundle = AgentBundle {
            mcps: mcps::all_of_agent(&mut tx, &agent_id).await?,
            skills: skills::all_of_agent(&mut tx, &agent_id).await?,
            hooks: hooks::all_of_agent(&mut tx, &agent_id).await?,
            envs: envs::all_of_agent(&mut tx, &agent_id).await?,
            init_scripts: init_scripts::all_of_agent(&mut tx, &agent_id).await?,
            volume_attachments: attachments::volumes_of_agent(&mut tx, &agent_id).await?,
            volumes: volumes::attached_to_agent(&mut tx, &agent_id).await?,
            image_pull_secret_attachments: attachments::image_pulls_of_agent(&mut tx, &agent_id)
                .await?,
            agent,
        };
        tx.commit().await?;
        Ok(bundle)
    }

    /// CountSecretReferences (internal): the ids of the envs that read the
    /// secret.
    pub async fn count_secret_references(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<Vec<String>> {
        require_component(caller, "CountSecretReferences")?;
        let secret_id = parse_id("secret_id", secret_id)?;
        secret_references(&self.db, &secret_id).await
    }

    /// CountImagePullSecretReferences (internal): the ids of the
    /// attachments of the image pull secret.
    pub async fn count_image_pull_secret_references(
        &self,
        caller: &Caller,
        image_pull_secret_id: &str,
    ) -> Result<Vec<String>> {
        require_component(caller, "CountImagePullSecretReferences")?;
        let secret_id = parse_id("image_pull_secret_id", image_pull_secret_id)?;
        image_pull_secret_references(&self.db, &secret_id).await
    }

    /// DeleteOrganizationResources (internal): deletes every agent of the
    /// organization as DeleteAgent does, then every volume definition.
    /// Idempotent.
    pub async fn delete_organization_resources(
        &self,
        caller: &Caller,
        organization_id: &str,
    ) -> Result<()> {
        require_component(caller, "DeleteOrganizationResources")?;
        let org_id = parse_id("organization_id", organization_id)?;
        self.deleter().delete_organization(&org_id).await
    }
}

/// Returns the ids of the envs that read secret `secret_id`.
pub(crate) async fn secret_references(db: &agyn_store::Db, secret_id: &str) -> Result<Vec<String>> {
    let mut connection = db.pool().acquire().await?;
    envs::ids_by_secret(&mut connection, secret_id).await
}

/// Returns the ids of the attachments of image pull secret `secret_id`.
pub(crate) async fn image_pull_secret_references(
    db: &agyn_store::Db,
    secret_id: &str,
) -> Result<Vec<String>> {
    let mut connection = db.pool().acquire().await?;
    attachments::IMAGE_PULL_SECRETS
        .ids_by_resource(&mut connection, secret_id)
        .await
}
