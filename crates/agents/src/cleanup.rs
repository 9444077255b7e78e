//! Deleting agents with everything they own, for DeleteAgent and for the
//! organization purge step `agents`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use agyn_authz::Authorizer;
use agyn_core::Result;
use agyn_core::events::EventSink;
use agyn_core::time::now_micros;
use agyn_orgs::ResourceCleaner;
use agyn_store::Db;
use agyn_store::sqlx;

use crate::agent::member_tuple;
use crate::store::{self, agents};
use crate::{agent_object, publish_agent_updated};

/// Agents deleted per round of the organization purge.
const PURGE_BATCH: i64 = 100;

/// Deletes agents without authorization checks. It needs only the
/// database and the event sink, so the purge can use it before
/// [`agyn_orgs::Organizations`] exists.
#[derive(Clone)]
pub(crate) struct AgentDeleter {
    pub db: Db,
    pub authorizer: Authorizer,
    pub events: Arc<dyn EventSink>,
}

impl AgentDeleter {
    /// Deletes agent `id` with its MCP servers, skills, hooks, envs, init
    /// scripts and attachments (by `ON DELETE CASCADE`), every tuple on
    /// `agent:<id>`, its organization member tuple and its identity, in
    /// one transaction. Then publishes `agent.updated` with `deleted =
    /// true`. Deleting a missing agent succeeds.
    pub(crate) async fn delete_agent(&self, id: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let Some(agent) = agents::by_id(&mut tx, id).await? else {
            return Ok(());
        };
        agents::delete(&mut tx, id).await?;
        self.authorizer
            .delete_object_in(&mut tx, &agent_object(id), None)
            .await?;
        self.authorizer
            .write_in(&mut tx, &[], &[member_tuple(id, &agent.organization_id)])
            .await?;
        agents::delete_identity(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(
            agent_id = %id,
            organization_id = %agent.organization_id,
            "Agent deleted"
        );
        publish_agent_updated(
            self.events.as_ref(),
            id,
            &agent.organization_id,
            now_micros(),
            true,
        );
        Ok(())
    }

    /// Deletes every agent of the organization, then every volume
    /// definition. Idempotent.
    pub(crate) async fn delete_organization(&self, org_id: &str) -> Result<()> {
        let mut deleted_agents = 0usize;
        loop {
            let mut connection = self.db.pool().acquire().await?;
            let ids = agents::ids_of_org(&mut connection, org_id, PURGE_BATCH).await?;
            drop(connection);
            if ids.is_empty() {
                break;
            }
            for id in &ids {
                self.delete_agent(id).await?;
            }
            deleted_agents += ids.len();
        }
        let mut deleted_volumes = 0u64;
        loop {
            let mut tx = self.db.begin_write().await?;
            let batch = sqlx::query(
                "DELETE FROM volumes WHERE id IN \
                 (SELECT id FROM volumes WHERE organization_id = $1 LIMIT $2)",
            )
            .bind(org_id)
            .bind(store::DELETE_BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            deleted_volumes += batch;
            if batch < store::DELETE_BATCH as u64 {
                break;
            }
        }
        tracing::info!(
            organization_id = %org_id,
            agents = deleted_agents,
            volumes = deleted_volumes,
            "Organization agents deleted"
        );
        Ok(())
    }
}

/// Purge step that deletes an organization's agents, as DeleteAgent does,
/// and then its volume definitions. It needs only the database and the
/// event sink, so it can be built before [`agyn_orgs::Organizations`].
pub struct AgentsCleaner {
    deleter: AgentDeleter,
}

impl AgentsCleaner {
    pub fn new(db: Db, events: Arc<dyn EventSink>) -> Self {
        Self {
            deleter: AgentDeleter {
                authorizer: Authorizer::new(db.clone()),
                db,
                events,
            },
        }
    }
}

impl ResourceCleaner for AgentsCleaner {
    fn step(&self) -> &'static str {
        "agents"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.deleter.delete_organization(organization_id))
    }
}
