//! The runner registry. Each operation states its authorization rule
//! first.

use std::collections::BTreeMap;

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use agyn_pki::CertificateKind;

use crate::model::{NewRunner, RegisteredRunner, RunnerChanges, RunnerRecord, RunnerStatus};
use crate::store::runners::{self, Scope};
use crate::{Runners, no_fields, optional_org, require_component, token, validate};

/// Most ids a REFERENCED error lists.
const MAX_REFERENCED_IDS: i64 = 10;

/// Returns the `already_exists` error of a runner name used twice in one
/// scope.
fn name_taken(name: &str, org_id: Option<&str>) -> Error {
    match org_id {
        Some(org_id) => Error::already_exists(format!(
            "runner name {name:?} is already used in organization {org_id}; choose another name"
        )),
        None => Error::already_exists(format!(
            "runner name {name:?} is already used by a cluster runner; choose another name"
        )),
    }
}

impl Runners {
    /// RegisterRunner: an organization runner needs `can_manage` on the
    /// organization, which must be active, and a cluster runner needs
    /// cluster admin. Only a component may register a built-in runner. The row and
    /// the runner identity are written in one transaction.
    pub async fn register_runner(
        &self,
        caller: &Caller,
        input: &NewRunner,
    ) -> Result<RegisteredRunner> {
        if input.builtin && !matches!(caller, Caller::Component(_)) {
            return Err(Error::permission_denied(
                "permission denied: only a platform component may register a built-in runner",
            ));
        }
        let org_id = optional_org(input.organization_id.as_deref())?;
        let name = validate::runner_name(&input.name)?;
        validate::labels("labels", &input.labels)?;
        validate::capabilities("capabilities", &input.capabilities)?;
        let endpoint = input.endpoint.as_deref().unwrap_or_default();
        if !endpoint.is_empty() {
            validate::endpoint("endpoint", endpoint)?;
        }
        self.authorize_runner_write(caller, org_id.as_deref())
            .await?;

        let now = now_micros();
        let record = RunnerRecord {
            id: new_id(),
            organization_id: org_id.clone(),
            name: name.to_string(),
            status: RunnerStatus::Pending,
            labels: input.labels.clone(),
            capabilities: input.capabilities.clone(),
            endpoint: endpoint.to_string(),
            builtin: input.builtin,
            enrolled_at: None,
            last_seen_at: None,
            created_at: now,
            updated_at: now,
        };
        let service_token = token::generate();
        self.insert_runner(&record, &token::token_hash(service_token.expose()))
            .await?;
        tracing::info!(
            runner_id = %record.id,
            organization_id = org_id.as_deref().unwrap_or(""),
            builtin = record.builtin,
            "Runner registered"
        );
        Ok(RegisteredRunner {
            runner: record,
            service_token,
        })
    }

    /// Inserts a runner row and registers its identity in one transaction.
    async fn insert_runner(&self, record: &RunnerRecord, token_hash: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let inserted = runners::insert(&mut tx, record, token_hash).await;
        match inserted {
            Err(error) if error.is_unique_violation() => {
                return Err(name_taken(&record.name, record.organization_id.as_deref()));
            }
            other => other?,
        }
        agyn_users::identity::register(
            &mut tx,
            &record.id,
            IdentityKind::Runner,
            record.created_at,
        )
        .await?;
        match tx.commit().await {
            Ok(()) => Ok(()),
            Err(error) if agyn_store::is_unique_violation(&error) => {
                Err(name_taken(&record.name, record.organization_id.as_deref()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// GetRunner: `can_read` on the organization of an organization
    /// runner. Any caller may read a cluster runner.
    pub async fn get_runner(&self, caller: &Caller, id: &str) -> Result<RunnerRecord> {
        let id = parse_id("id", id)?;
        let record = self.runner_or_not_found(&id).await?;
        self.authorize_runner_read(caller, &record).await?;
        Ok(record)
    }

    /// ListRunners, ordered by `(created_at, id)`. With an organization it
    /// returns that organization's runners and the cluster runners and
    /// needs `can_read`. Without one, cluster admins and components get
    /// every runner and other callers the cluster runners.
    pub async fn list_runners(
        &self,
        caller: &Caller,
        organization_id: Option<&str>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<RunnerRecord>, String)> {
        let org_id = optional_org(organization_id)?;
        let caller_key = match caller {
            Caller::Identity { identity_id, .. } => identity_id.clone(),
            Caller::Component(name) => format!("component:{name}"),
        };
        let fingerprint = Fingerprint::new("agynio.api.runners.v1.ListRunners")
            .with(&caller_key)
            .with(org_id.as_deref().unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let scope = match (&org_id, caller) {
            (Some(org_id), _) => {
                self.authorize_org_list(caller, org_id, "can_read").await?;
                Scope::Organization(org_id)
            }
            (None, Caller::Component(_)) => Scope::All,
            (None, Caller::Identity { identity_id, .. }) => {
                if self.is_cluster_admin(identity_id).await? {
                    Scope::All
                } else {
                    Scope::Cluster
                }
            }
        };
        let mut connection = self.db.pool().acquire().await?;
        runners::list(&mut connection, scope, &page).await
    }

    /// UpdateRunner: as RegisterRunner. Labels and capabilities are
    /// replaced wholesale when present.
    pub async fn update_runner(
        &self,
        caller: &Caller,
        id: &str,
        changes: &RunnerChanges,
    ) -> Result<RunnerRecord> {
        let id = parse_id("id", id)?;
        if changes.name.is_none()
            && changes.labels.is_none()
            && changes.capabilities.is_none()
            && changes.endpoint.is_none()
        {
            return Err(no_fields());
        }
        let name = changes
            .name
            .as_deref()
            .map(validate::runner_name)
            .transpose()?;
        if let Some(labels) = &changes.labels {
            validate::labels("labels", labels)?;
        }
        if let Some(capabilities) = &changes.capabilities {
            validate::capabilities("capabilities", capabilities)?;
        }
        if let Some(endpoint) = &changes.endpoint {
            validate::endpoint("endpoint", endpoint)?;
        }
        let current = self.runner_or_not_found(&id).await?;
        self.authorize_runner_write(caller, current.organization_id.as_deref())
            .await?;
        if current.builtin && changes.endpoint.is_some() {
            return Err(Error::invalid_field(
                "endpoint",
                "a built-in runner is reached in process and takes no endpoint",
            ));
        }

        let mut tx = self.db.begin_write().await?;
        let mut record = runners::lock(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("runner", &id))?;
        if let Some(name) = name {
            record.name = name.to_string();
        }
        if let Some(labels) = &changes.labels {
            record.labels = labels.clone();
        }
        if let Some(capabilities) = &changes.capabilities {
            record.capabilities = capabilities.clone();
        }
        if let Some(endpoint) = &changes.endpoint {
            record.endpoint = endpoint.clone();
        }
        record.updated_at = now_micros().max(record.updated_at);
        let written = runners::update(&mut tx, &record).await;
        let name_in_use = || name_taken(&record.name, record.organization_id.as_deref());
        match written {
            Err(error) if error.is_unique_violation() => return Err(name_in_use()),
            other => other?,
        }
        match tx.commit().await {
            Ok(()) => {}
            Err(error) if agyn_store::is_unique_violation(&error) => return Err(name_in_use()),
            Err(error) => return Err(error.into()),
        }
        tracing::info!(runner_id = %record.id, "Runner updated");
        Ok(record)
    }

    /// DeleteRunner: as RegisterRunner. Fails with `failed_precondition`
    /// (reason `REFERENCED`) while non-terminal workloads or volumes
    /// neither DELETED nor FAILED are on the runner. Otherwise revokes its
    /// certificates, unregisters its identity and deletes the row.
    pub async fn delete_runner(&self, caller: &Caller, id: &str) -> Result<()> {
        let id = parse_id("id", id)?;
        let current = self.runner_or_not_found(&id).await?;
        self.authorize_runner_write(caller, current.organization_id.as_deref())
            .await?;
        if current.builtin && matches!(caller, Caller::Identity { .. }) {
            return Err(Error::failed_precondition(format!(
                "runner {id} is built into agyn serve; turn it off with runner.builtin = false instead"
            )));
        }
        let mut tx = self.db.begin_write().await?;
        if runners::lock(&mut tx, self.db.backend(), &id)
            .await?
            .is_none()
        {
            return Err(Error::not_found("runner", &id));
        }
        let referenced = runners::active_references(&mut tx, &id, MAX_REFERENCED_IDS).await?;
        if !referenced.is_empty() {
            return Err(Error::failed_precondition(format!(
                "runner has active workloads or volumes: {}",
                referenced.join(", ")
            ))
            .with_reason("REFERENCED"));
        }
        self.pki
            .revoke_subject_in(&mut tx, CertificateKind::Runner, &id)
            .await?;
        runners::delete(&mut tx, &id).await?;
        tx.commit().await?;
        tracing::info!(runner_id = %id, "Runner deleted");
        Ok(())
    }

    /// SetRunnerStatus: orchestrator only. Moves an enrolled runner between
    /// ENROLLED and OFFLINE and records the time of a successful probe.
    pub async fn set_runner_status(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<RunnerStatus>,
        last_seen_at: Option<i64>,
    ) -> Result<RunnerRecord> {
        require_component(caller, "SetRunnerStatus", &["orchestrator"])?;
        let id = parse_id("id", id)?;
        let status = match status {
            Some(status @ (RunnerStatus::Enrolled | RunnerStatus::Offline)) => status,
            _ => {
                return Err(Error::invalid_field(
                    "status",
                    "must be RUNNER_STATUS_ENROLLED or RUNNER_STATUS_OFFLINE",
                ));
            }
        };

        let mut tx = self.db.begin_write().await?;
        let mut record = runners::lock(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("runner", &id))?;
        if record.status == RunnerStatus::Pending {
            return Err(Error::failed_precondition(format!(
                "runner {id} has not enrolled yet"
            )));
        }
        let previous = record.status;
        record.status = status;
        if let Some(last_seen_at) = last_seen_at {
            record.last_seen_at = Some(last_seen_at);
        }
        record.updated_at = now_micros().max(record.updated_at);
        runners::update(&mut tx, &record).await?;
        tx.commit().await?;

        if previous != status {
            tracing::info!(
                runner_id = %id,
                from = previous.name(),
                to = status.name(),
                "Runner status changed"
            );
        }
        Ok(record)
    }

    /// Returns the cluster-scoped built-in runner named `name`, creating it
    /// ENROLLED without an endpoint on the first call. Replicas that start
    /// together create it once: the unique cluster name makes all but one
    /// insert fail, and those read the winner's row.
    pub async fn ensure_builtin_runner(&self, name: &str) -> Result<RunnerRecord> {
        let name = validate::runner_name(name)?;
        for _ in 0..2 {
            let mut connection = self.db.pool().acquire().await?;
            if let Some(existing) = runners::cluster_by_name(&mut connection, name).await? {
                if !existing.builtin {
                    return Err(Error::failed_precondition(format!(
                        "cluster runner {name:?} exists and is not built in; rename it or choose \
                         another built-in runner name"
                    )));
                }
                return Ok(existing);
            }
            drop(connection);
            let now = now_micros();
            let record = RunnerRecord {
                id: new_id(),
                organization_id: None,
                name: name.to_string(),
                status: RunnerStatus::Enrolled,
                labels: BTreeMap::new(),
                capabilities: Vec::new(),
                endpoint: String::new(),
                builtin: true,
                enrolled_at: Some(now),
                last_seen_at: None,
                created_at: now,
                updated_at: now,
            };
            // The built-in runner never enrolls, so its token is discarded.
            let unused_token = token::generate();
            match self
                .insert_runner(&record, &token::token_hash(unused_token.expose()))
                .await
            {
                Ok(()) => {
                    tracing::info!(runner_id = %record.id, name, "Built-in runner created");
                    return Ok(record);
                }
                Err(error) if error.code() == agyn_core::error::Code::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::unavailable(format!(
            "built-in runner {name:?} kept conflicting with concurrent writes; retry"
        )))
    }

    pub(crate) async fn runner_or_not_found(&self, id: &str) -> Result<RunnerRecord> {
        let mut connection = self.db.pool().acquire().await?;
        runners::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("runner", id))
    }
}
