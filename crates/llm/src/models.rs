//! Model operations, independent of the RPC layer. Each operation states
//! its authorization rule first.
//!
//! Access to a model follows the tuple `organization:<o> org model:<m>`,
//! written with the model and deleted with it: organization readers hold
//! `can_use` and organization managers `can_manage`.

use agyn_authz::Tuple;
use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::text::display_name;
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};
use agyn_store::sqlx::AnyConnection;

use crate::store::{self, ModelRecord, StoredProvider};
use crate::validate::{MODEL_NAME_MAX_CHARS, REMOTE_NAME_MAX_CHARS};
use crate::{Llm, WRITE_ATTEMPTS, keys, model_object, org_object, write_conflict};

const CREATE_SCOPE: &str = "llm.CreateModel";

/// Request of CreateModel.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewModel<'a> {
    pub organization_id: &'a str,
    pub name: &'a str,
    pub provider_id: &'a str,
    pub remote_name: &'a str,
    pub request_id: &'a str,
}

/// Request of UpdateModel: `None` leaves a field unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelUpdate<'a> {
    pub name: Option<&'a str>,
    pub provider_id: Option<&'a str>,
    pub remote_name: Option<&'a str>,
}

impl Llm {
    /// CreateModel: `can_manage` on the organization, which must be active.
    /// The provider must belong to the organization. The model and its
    /// `org` tuple commit together, and a repeat with the same
    /// `request_id` returns the model that the first call created.
    pub async fn create_model(&self, caller: &Caller, input: &NewModel<'_>) -> Result<ModelRecord> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", input.organization_id)?;
        let name = display_name("name", input.name, MODEL_NAME_MAX_CHARS)?;
        let provider_id = parse_id("provider_id", input.provider_id)?;
        let remote_name = display_name("remote_name", input.remote_name, REMOTE_NAME_MAX_CHARS)?;
        keys::validate(input.request_id)?;
        self.ensure_organization_active(&org_id).await?;
        self.require(caller_id, "can_manage", &org_object(&org_id))
            .await?;

        let fingerprint =
            keys::fingerprint([CREATE_SCOPE, &org_id, name, &provider_id, remote_name]);
        for _ in 0..WRITE_ATTEMPTS {
            let mut tx = self.db.begin_write().await?;
            if let Some(id) = keys::replayed(
                &mut tx,
                CREATE_SCOPE,
                caller_id,
                input.request_id,
                &fingerprint,
            )
            .await?
            {
                tx.commit().await?;
                return self.model_or_not_found(&id).await;
            }
            let provider = self
                .provider_in_organization(&mut tx, &provider_id, &org_id)
                .await?;
            let now = now_micros();
            let model = ModelRecord {
                id: new_id(),
                organization_id: org_id.clone(),
                name: name.to_string(),
                provider_id: provider_id.clone(),
                remote_name: remote_name.to_string(),
                protocol: provider.record.protocol,
                created_at: now,
                updated_at: now,
            };
            let inserted = async {
                store::insert_model(&mut tx, &model).await?;
                self.authorizer
                    .write_in(
                        &mut tx,
                        &[Tuple::new(
                            org_object(&org_id),
                            "org",
                            model_object(&model.id),
                        )],
                        &[],
                    )
                    .await?;
                keys::record(
                    &mut tx,
                    CREATE_SCOPE,
                    caller_id,
                    input.request_id,
                    &fingerprint,
                    &model.id,
                )
                .await
            }
            .await;
            match inserted {
                Ok(()) => {}
                // A concurrent call recorded the same key first: start
                // over and return what it created.
                Err(error) if error.is_unique_violation() => continue,
                Err(error) => return Err(error),
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(error) if agyn_store::is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
            tracing::info!(
                model_id = %model.id,
                organization_id = %org_id,
                provider_id = %provider_id,
                "Model created"
            );
            return Ok(model);
        }
        Err(write_conflict())
    }

    /// GetModel: `can_use` on the model. Component callers skip the check:
    /// the internal listener admits only the agents component, which checks
    /// that a model exists and belongs to an agent's organization.
    pub async fn get_model(&self, caller: &Caller, id: &str) -> Result<ModelRecord> {
        let id = parse_id("id", id)?;
        let model = self.model_or_not_found(&id).await?;
        if let Caller::Identity { identity_id, .. } = caller {
            self.require(identity_id, "can_use", &model_object(&id))
                .await?;
        }
        Ok(model)
    }

    /// ListModels: `can_read` on the organization. Ordered by
    /// `(created_at, id)`, optionally only the models of one provider.
    pub async fn list_models(
        &self,
        caller: &Caller,
        organization_id: &str,
        provider_id: Option<&str>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ModelRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let org_id = parse_id("organization_id", organization_id)?;
        let provider_id = provider_id
            .map(|id| parse_id("provider_id", id))
            .transpose()?;
        let fingerprint = Fingerprint::new("agynio.api.llm.v1.ListModels")
            .with(caller_id)
            .with(&org_id)
            .with(provider_id.as_deref().unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        self.require(caller_id, "can_read", &org_object(&org_id))
            .await?;
        let mut connection = self.db.pool().acquire().await?;
        store::list_models(&mut connection, &org_id, provider_id.as_deref(), &page).await
    }

    /// UpdateModel: `can_manage` on the model, whose organization must be
    /// active. A new provider must belong to the model's organization.
    pub async fn update_model(
        &self,
        caller: &Caller,
        id: &str,
        update: &ModelUpdate<'_>,
    ) -> Result<ModelRecord> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        if update.name.is_none() && update.provider_id.is_none() && update.remote_name.is_none() {
            return Err(Error::invalid_argument("no fields to update"));
        }
        let name = update
            .name
            .map(|name| display_name("name", name, MODEL_NAME_MAX_CHARS))
            .transpose()?;
        let remote_name = update
            .remote_name
            .map(|remote| display_name("remote_name", remote, REMOTE_NAME_MAX_CHARS))
            .transpose()?;
        let provider_id = update
            .provider_id
            .map(|provider| parse_id("provider_id", provider))
            .transpose()?;
        let current = self.model_or_not_found(&id).await?;
        self.require(caller_id, "can_manage", &model_object(&id))
            .await?;
        self.ensure_organization_active(&current.organization_id)
            .await?;

        let mut tx = self.db.begin_write().await?;
        let provider = match &provider_id {
            Some(provider_id) => Some(
                self.provider_in_organization(&mut tx, provider_id, &current.organization_id)
                    .await?,
            ),
            None => None,
        };
        let mut model = store::model_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("model", &id))?;
        if let Some(name) = name {
            model.name = name.to_string();
        }
        if let Some(remote_name) = remote_name {
            model.remote_name = remote_name.to_string();
        }
        if let Some(provider) = provider {
            model.provider_id = provider.record.id;
            model.protocol = provider.record.protocol;
        }
        model.updated_at = now_micros().max(model.updated_at);
        store::update_model(&mut tx, &model).await?;
        tx.commit().await?;
        tracing::info!(
            model_id = %id,
            organization_id = %model.organization_id,
            provider_id = %model.provider_id,
            "Model updated"
        );
        Ok(model)
    }

    /// DeleteModel: `can_manage` on the model, whose organization must be
    /// active. The model's tuples are deleted with it. Agents that still
    /// reference the model fail at run time with the proxy's 404.
    pub async fn delete_model(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = parse_id("id", id)?;
        let current = self.model_or_not_found(&id).await?;
        self.require(caller_id, "can_manage", &model_object(&id))
            .await?;
        self.ensure_organization_active(&current.organization_id)
            .await?;

        let mut tx = self.db.begin_write().await?;
        if store::model_by_id(&mut tx, &id).await?.is_none() {
            return Err(Error::not_found("model", &id));
        }
        self.authorizer
            .delete_object_in(&mut tx, &model_object(&id), None)
            .await?;
        store::delete_model(&mut tx, &id).await?;
        tx.commit().await?;
        tracing::info!(
            model_id = %id,
            organization_id = %current.organization_id,
            "Model deleted"
        );
        Ok(())
    }

    /// Loads a model, or `not_found`.
    pub(crate) async fn model_or_not_found(&self, id: &str) -> Result<ModelRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::model_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("model", id))
    }

    /// Locks and loads a provider of `org_id` inside a write transaction, so
    /// that a concurrent DeleteProvider counts the model that references it.
    /// Any other provider is `invalid_argument` on `provider_id`.
    async fn provider_in_organization(
        &self,
        connection: &mut AnyConnection,
        provider_id: &str,
        org_id: &str,
    ) -> Result<StoredProvider> {
        store::lock_provider(connection, self.db.backend(), provider_id).await?;
        match store::provider_by_id(connection, provider_id).await? {
            Some(provider) if provider.record.organization_id == org_id => Ok(provider),
            _ => Err(Error::invalid_field(
                "provider_id",
                "provider not found in organization",
            )),
        }
    }
}
