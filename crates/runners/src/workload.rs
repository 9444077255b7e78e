//! Workload records. Each operation states its authorization rule first.

use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, Page};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};

use crate::model::{
    AgentState, ListSort, NewWorkload, NewWorkloadVolume, PageRequest, ResolvedCredential,
    SortField, VolumeRecord, VolumeStatus, WorkloadChanges, WorkloadFilter, WorkloadRecord,
    WorkloadStatus,
};
use crate::store::sort_order;
use crate::store::workloads::{self, Scope};
use crate::{Runners, names, no_fields, optional_org, require_component, validate};

fn invalid_transition(from: WorkloadStatus, to: WorkloadStatus) -> Error {
    Error::failed_precondition(format!(
        "invalid transition {} -> {}",
        from.name(),
        to.name()
    ))
}

fn workload_terminal() -> Error {
    Error::failed_precondition("workload is terminal").with_reason("WORKLOAD_TERMINAL")
}

fn pair_taken(thread_id: &str, agent_id: &str) -> Error {
    Error::already_exists(format!(
        "thread {thread_id} already has a non-terminal workload for agent {agent_id}"
    ))
}

/// Returns the canonical ids of a filter list, naming the offending entry.
pub(crate) fn parse_ids(field: &str, ids: &[String]) -> Result<Vec<String>> {
    ids.iter()
        .enumerate()
        .map(|(index, id)| parse_id(&format!("{field}[{index}]"), id))
        .collect()
}

/// Validates a workload filter and returns it with canonical ids.
fn canonical_filter(filter: &WorkloadFilter) -> Result<WorkloadFilter> {
    Ok(WorkloadFilter {
        agent_ids: parse_ids("filter.agent_id_in", &filter.agent_ids)?,
        runner_ids: parse_ids("filter.runner_id_in", &filter.runner_ids)?,
        thread_ids: parse_ids("filter.thread_id_in", &filter.thread_ids)?,
        statuses: filter.statuses.clone(),
        started_after: filter.started_after,
        started_before: filter.started_before,
    })
}

/// Parses the page of a workload list named `list`, binding its token to
/// the caller, the scope (an organization or thread id), every filter
/// value and the sort.
fn workload_page(
    list: &str,
    caller: &Caller,
    scope: &str,
    filter: &WorkloadFilter,
    sort: ListSort,
    page: PageRequest<'_>,
) -> Result<Page> {
    let mut fingerprint = Fingerprint::new(list).with(&caller_key(caller)).with(scope);
    for (label, ids) in [
        ("agent", &filter.agent_ids),
        ("runner", &filter.runner_ids),
        ("thread", &filter.thread_ids),
    ] {
        fingerprint = fingerprint.with(label);
        for id in ids {
            fingerprint = fingerprint.with(id);
        }
    }
    fingerprint = fingerprint.with("status");
    for status in &filter.statuses {
        fingerprint = fingerprint.with(status.name());
    }
    let bound = |value: Option<i64>| value.map_or_else(String::new, |value| value.to_string());
    let fingerprint = fingerprint
        .with(&bound(filter.started_after))
        .with(&bound(filter.started_before))
        .with(match sort.field {
            SortField::Created => "created",
            SortField::Status => "status",
        });
    Page::parse(page.size, page.token, sort_order(sort), fingerprint)
}

/// Returns the key that binds a page token to its caller.
pub(crate) fn caller_key(caller: &Caller) -> String {
    match caller {
        Caller::Identity { identity_id, .. } => identity_id.clone(),
        Caller::Component(name) => format!("component:{name}"),
    }
}

/// Returns whether a runner report changed what `workload.updated`
/// announces of the containers: the set of names, or a status, reason or
/// restart count.
fn containers_changed(before: &[pb::Container], after: &[pb::Container]) -> bool {
    if before.len() != after.len() {
        return true;
    }
    after.iter().any(|new| {
        before
            .iter()
            .find(|old| old.name == new.name)
            .is_none_or(|old| {
                old.status != new.status
                    || old.reason != new.reason
                    || old.restart_count != new.restart_count
            })
    })
}

/// Validates the volumes of a CreateWorkload request and returns their
/// canonical ids.
fn canonical_volumes(volumes: &[NewWorkloadVolume]) -> Result<Vec<NewWorkloadVolume>> {
    let mut seen = std::collections::HashSet::new();
    let mut canonical = Vec::with_capacity(volumes.len());
    for (index, volume) in volumes.iter().enumerate() {
        let field = format!("provisioned_volumes[{index}]");
        let id = parse_id(&format!("{field}.id"), &volume.id)?;
        let volume_id = parse_id(&format!("{field}.volume_id"), &volume.volume_id)?;
        validate::short_text(&format!("{field}.size"), &volume.size)?;
        if !seen.insert(volume_id.clone()) {
            return Err(Error::invalid_field(
                &format!("{field}.volume_id"),
                &format!("volume {volume_id} is listed twice"),
            ));
        }
        canonical.push(NewWorkloadVolume {
            id,
            volume_id,
            size: volume.size.clone(),
        });
    }
    Ok(canonical)
}

impl Runners {
    /// CreateWorkload: orchestrator only. Creates the record STARTING with
    /// agent state PROCESSING (or directly FAILED when a failure reason is
    /// given) together with its provisioned volumes, in one transaction. A
    /// duplicate id or a second non-terminal workload of the (thread,
    /// agent) pair gives `already_exists`.
    pub async fn create_workload(
        &self,
        caller: &Caller,
        input: &NewWorkload,
    ) -> Result<(WorkloadRecord, Vec<VolumeRecord>)> {
        require_component(caller, "CreateWorkload", &["orchestrator"])?;
        let id = parse_id("id", &input.id)?;
        let thread_id = parse_id("thread_id", &input.thread_id)?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let failed = input.failure_reason.is_some();
        let runner_id = if input.runner_id.is_empty() && failed {
            String::new()
        } else {
            parse_id("runner_id", &input.runner_id)?
        };
        if input.credential_id.is_empty() && !failed {
            return Err(Error::invalid_field(
                "credential_id",
                "is required unless failure_reason is set",
            ));
        }
        validate::short_text("credential_id", &input.credential_id)?;
        if !failed && !input.failure_message.is_empty() {
            return Err(Error::invalid_field(
                "failure_message",
                "must be empty unless failure_reason is set",
            ));
        }
        validate::failure_message("failure_message", &input.failure_message)?;
        if failed && !input.provisioned_volumes.is_empty() {
            return Err(Error::invalid_field(
                "provisioned_volumes",
                "must be empty when failure_reason is set",
            ));
        }
        validate::containers("containers", &input.containers)?;
        if input.allocated_cpu_millicores < 0 {
            return Err(Error::invalid_field(
                "allocated_cpu_millicores",
                "must not be negative",
            ));
        }
        if input.allocated_ram_bytes < 0 {
            return Err(Error::invalid_field(
                "allocated_ram_bytes",
                "must not be negative",
            ));
        }
        let new_volumes = canonical_volumes(&input.provisioned_volumes)?;
        self.require_active_org(&org_id).await?;

        let now = now_micros();
        let record = WorkloadRecord {
            id: id.clone(),
            runner_id: runner_id.clone(),
            runner_name: String::new(),
            thread_id: thread_id.clone(),
            agent_id: agent_id.clone(),
            agent_name: String::new(),
            organization_id: org_id.clone(),
            status: if failed {
                WorkloadStatus::Failed
            } else {
                WorkloadStatus::Starting
            },
            agent_state: AgentState::Processing,
            containers: input.containers.clone(),
            instance_id: String::new(),
            credential_id: input.credential_id.clone(),
            last_activity_at: now,
            started_at: None,
            removed_at: failed.then_some(now),
            failure_reason: input.failure_reason,
            failure_message: input.failure_message.clone(),
            allocated_cpu_millicores: input.allocated_cpu_millicores,
            allocated_ram_bytes: input.allocated_ram_bytes,
            created_at: now,
            updated_at: now,
        };
        let volume_records: Vec<VolumeRecord> = new_volumes
            .iter()
            .map(|volume| VolumeRecord {
                id: volume.id.clone(),
                volume_id: volume.volume_id.clone(),
                volume_name: String::new(),
                thread_id: thread_id.clone(),
                agent_id: agent_id.clone(),
                runner_id: runner_id.clone(),
                organization_id: org_id.clone(),
                size: volume.size.clone(),
                persistent_name: format!("agyn-vol-{}", volume.id),
                instance_id: String::new(),
                status: VolumeStatus::Provisioning,
                removed_at: None,
                attachments: Vec::new(),
                created_at: now,
                updated_at: now,
            })
            .collect();

        let mut tx = self.db.begin_write().await?;
        if !runner_id.is_empty() {
            self.lock_runner_for(&mut tx, &runner_id, &org_id).await?;
        }
        if workloads::by_id(&mut tx, &id).await?.is_some() {
            return Err(Error::already_exists(format!(
                "workload {id} already exists"
            )));
        }
        if !failed
            && workloads::active_for_pair(&mut tx, &thread_id, &agent_id)
                .await?
                .is_some()
        {
            return Err(pair_taken(&thread_id, &agent_id));
        }
        match workloads::insert(&mut tx, &record).await {
            Err(error) if error.is_unique_violation() => {
                return Err(pair_taken(&thread_id, &agent_id));
            }
            other => other?,
        }
        for volume in &volume_records {
            self.insert_volume_in(&mut tx, volume).await?;
        }
        match tx.commit().await {
            Ok(()) => {}
            Err(error) if agyn_store::is_unique_violation(&error) => {
                return Err(pair_taken(&thread_id, &agent_id));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(
            workload_id = %id,
            thread_id = %thread_id,
            agent_id = %agent_id,
            runner_id = %runner_id,
            status = record.status.name(),
            volumes = volume_records.len(),
            "Workload created"
        );
        self.publish_workload(&record);
        for volume in &volume_records {
            self.publish_volume(volume);
        }
        let mut records = [record];
        self.resolve_names(&mut records).await?;
        let [record] = records;
        let mut volume_records = volume_records;
        let mut connection = self.db.pool().acquire().await?;
        names::resolve_volumes(&mut connection, &mut volume_records).await?;
        Ok((record, volume_records))
    }

    /// UpdateWorkload: orchestrator only. Status moves are guarded, and a
    /// STOPPED or FAILED record never changes again. Entering STOPPED or
    /// FAILED sets `removed_at` and revokes the workload certificate in
    /// the same transaction. Entering RUNNING sets `started_at` and resets
    /// `last_activity_at`.
    pub async fn update_workload(
        &self,
        caller: &Caller,
        id: &str,
        changes: &WorkloadChanges,
    ) -> Result<WorkloadRecord> {
        require_component(caller, "UpdateWorkload", &["orchestrator"])?;
        let id = parse_id("id", id)?;
        if changes.status.is_none()
            && changes.containers.is_none()
            && changes.instance_id.is_none()
            && changes.removed_at.is_none()
            && changes.failure_reason.is_none()
            && changes.failure_message.is_none()
        {
            return Err(no_fields());
        }
        let failing = changes.status == Some(WorkloadStatus::Failed);
        if changes.failure_reason.is_some() && !failing {
            return Err(Error::invalid_field(
                "failure_reason",
                "is accepted only with status WORKLOAD_STATUS_FAILED",
            ));
        }
        if let Some(message) = &changes.failure_message {
            if !failing {
                return Err(Error::invalid_field(
                    "failure_message",
                    "is accepted only with status WORKLOAD_STATUS_FAILED",
                ));
            }
            validate::failure_message("failure_message", message)?;
        }
        if let Some(containers) = &changes.containers {
            validate::containers("containers.values", containers)?;
        }
        if let Some(instance_id) = &changes.instance_id {
            validate::short_text("instance_id", instance_id)?;
        }

        let mut tx = self.db.begin_write().await?;
        let mut record = workloads::lock(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("workload", &id))?;
        let before = record.clone();
        if let Some(next) = changes.status {
            if !record.status.can_move_to(next) {
                return Err(invalid_transition(record.status, next));
            }
        } else if record.status.is_terminal() {
            return Err(workload_terminal());
        }
        let now = now_micros();
        if let Some(next) = changes.status {
            if next == WorkloadStatus::Running && before.status != WorkloadStatus::Running {
                record.started_at.get_or_insert(now);
                record.last_activity_at = now;
            }
            if next.is_terminal() {
                record.removed_at = Some(changes.removed_at.unwrap_or(now));
                if next == WorkloadStatus::Failed {
                    record.failure_reason = changes.failure_reason;
                    record.failure_message = changes.failure_message.clone().unwrap_or_default();
                }
                if !record.credential_id.is_empty() {
                    self.pki
                        .revoke_serial_in(&mut tx, &record.credential_id)
                        .await?;
                }
            }
            record.status = next;
        }
        if let Some(containers) = &changes.containers {
            record.containers = containers.clone();
        }
        if let Some(instance_id) = &changes.instance_id {
            record.instance_id = instance_id.clone();
        }
        record.updated_at = now.max(record.updated_at);
        workloads::update(&mut tx, &record).await?;
        tx.commit().await?;

        let status_changed = before.status != record.status;
        if status_changed {
            tracing::info!(
                workload_id = %id,
                from = before.status.name(),
                to = record.status.name(),
                "Workload status changed"
            );
        }
        if status_changed || containers_changed(&before.containers, &record.containers) {
            self.publish_workload(&record);
        }
        let mut records = [record];
        self.resolve_names(&mut records).await?;
        let [record] = records;
        Ok(record)
    }

    /// GetWorkload: `not_found` first, then `can_view_workloads` on the
    /// workload's organization, `can_read` on its thread, or the caller is
    /// its agent.
    pub async fn get_workload(&self, caller: &Caller, id: &str) -> Result<WorkloadRecord> {
        let id = parse_id("id", id)?;
        let record = self.workload_or_not_found(&id).await?;
        self.authorize_record_read(
            caller,
            "can_view_workloads",
            &record.organization_id,
            &record.thread_id,
            Some(&record.agent_id),
        )
        .await?;
        let mut records = [record];
        self.resolve_names(&mut records).await?;
        let [record] = records;
        Ok(record)
    }

    /// ListWorkloads: `can_view_workloads` on the organization.
    pub async fn list_workloads(
        &self,
        caller: &Caller,
        organization_id: &str,
        filter: &WorkloadFilter,
        sort: ListSort,
        page: PageRequest<'_>,
    ) -> Result<(Vec<WorkloadRecord>, String)> {
        let org_id = parse_id("organization_id", organization_id)?;
        let filter = canonical_filter(filter)?;
        let page = workload_page(
            "agynio.api.runners.v1.ListWorkloads",
            caller,
            &org_id,
            &filter,
            sort,
            page,
        )?;
        self.authorize_org_list(caller, &org_id, "can_view_workloads")
            .await?;
        self.list_workloads_in(Scope::Organization(Some(&org_id)), &filter, sort, &page)
            .await
    }

    /// ListWorkloadsInternal: orchestrator and chat. Lists one
    /// organization, or every organization when `organization_id` is empty.
    pub async fn list_workloads_internal(
        &self,
        caller: &Caller,
        organization_id: &str,
        filter: &WorkloadFilter,
        sort: ListSort,
        page: PageRequest<'_>,
    ) -> Result<(Vec<WorkloadRecord>, String)> {
        require_component(caller, "ListWorkloadsInternal", &["orchestrator", "chat"])?;
        let org_id = optional_org(Some(organization_id))?;
        let filter = canonical_filter(filter)?;
        let page = workload_page(
            "agynio.api.runners.v1.ListWorkloadsInternal",
            caller,
            org_id.as_deref().unwrap_or(""),
            &filter,
            sort,
            page,
        )?;
        self.list_workloads_in(Scope::Organization(org_id.as_deref()), &filter, sort, &page)
            .await
    }

    /// ListWorkloadsByThread: `can_read` on the thread. Newest first by
    /// `(created_at DESC, id DESC)`. An empty `statuses` keeps every status.
    pub async fn list_workloads_by_thread(
        &self,
        caller: &Caller,
        thread_id: &str,
        agent_id: Option<&str>,
        statuses: &[WorkloadStatus],
        page: PageRequest<'_>,
    ) -> Result<(Vec<WorkloadRecord>, String)> {
        let thread_id = parse_id("thread_id", thread_id)?;
        let agent_id = agent_id.map(|id| parse_id("agent_id", id)).transpose()?;
        let filter = WorkloadFilter {
            agent_ids: agent_id.into_iter().collect(),
            statuses: statuses.to_vec(),
            ..WorkloadFilter::default()
        };
        let sort = ListSort::default();
        let page = workload_page(
            "agynio.api.runners.v1.ListWorkloadsByThread",
            caller,
            &thread_id,
            &filter,
            sort,
            page,
        )?;
        self.authorize_thread_read(caller, &thread_id).await?;
        self.list_workloads_in(Scope::Thread(&thread_id), &filter, sort, &page)
            .await
    }

    async fn list_workloads_in(
        &self,
        scope: Scope<'_>,
        filter: &WorkloadFilter,
        sort: ListSort,
        page: &Page,
    ) -> Result<(Vec<WorkloadRecord>, String)> {
        let mut connection = self.db.pool().acquire().await?;
        let (mut records, token) =
            workloads::list(&mut connection, scope, filter, sort, page).await?;
        names::resolve_workloads(&mut connection, &mut records).await?;
        Ok((records, token))
    }

    /// TouchWorkload: the caller is the workload's agent, and a caller with
    /// a workload certificate presents this workload's one. A STARTING or
    /// RUNNING workload gets `last_activity_at = now` and PROCESSING, with
    /// `workload.updated` only when the agent state changed. A STOPPING or
    /// terminal workload gives `failed_precondition`.
    pub async fn touch_workload(&self, caller: &Caller, id: &str) -> Result<()> {
        let Caller::Identity {
            identity_id,
            workload_id,
            ..
        } = caller
        else {
            return Err(Error::permission_denied(
                "permission denied: only the workload's agent may touch it",
            ));
        };
        let id = parse_id("id", id)?;

        if workload_id.as_deref().is_some_and(|own| own != id) {
            return Err(Error::permission_denied(format!(
                "permission denied: the workload certificate is for workload {}, not {id}",
                workload_id.as_deref().unwrap_or_default()
            )));
        }

        let mut tx = self.db.begin_write().await?;
        let mut record = workloads::lock(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("workload", &id))?;
        if record.agent_id != *identity_id {
            return Err(Error::permission_denied(
                "permission denied: only the workload's agent may touch it",
            ));
        }
        match record.status {
            WorkloadStatus::Starting | WorkloadStatus::Running => {}
            WorkloadStatus::Stopping => {
                return Err(Error::failed_precondition("workload is stopping"));
            }
            WorkloadStatus::Stopped | WorkloadStatus::Failed => return Err(workload_terminal()),
        }

        let now = now_micros().max(record.updated_at);
        workloads::record_activity(&mut tx, &id, now).await?;
        tx.commit().await?;

        if record.agent_state != AgentState::Processing {
            record.agent_state = AgentState::Processing;
            record.last_activity_at = now;
            self.publish_workload(&record);
        }
        Ok(())
    }

    /// ResolveWorkloadCredential: gateway only. Maps a workload
    /// certificate serial to its workload.
    pub async fn resolve_workload_credential(
        &self,
        caller: &Caller,
        credential_id: &str,
    ) -> Result<ResolvedCredential> {
        require_component(caller, "ResolveWorkloadCredential", &["gateway"])?;
        validate::required_text("credential_id", credential_id)?;
        let mut connection = self.db.pool().acquire().await?;
        let record = workloads::by_credential(&mut connection, credential_id)
            .await?
            .ok_or_else(|| Error::not_found("workload credential", credential_id))?;
        Ok(ResolvedCredential {
            workload_id: record.id,
            agent_id: record.agent_id,
            status: record.status,
        })
    }

    pub(crate) async fn workload_or_not_found(&self, id: &str) -> Result<WorkloadRecord> {
        let mut connection = self.db.pool().acquire().await?;
        workloads::by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("workload", id))
    }

    /// Locks runner `runner_id` for a new workload or volume of
    /// organization `org_id`, so that DeleteRunner cannot remove it before
    /// the record commits. The runner must be a cluster runner or belong
    /// to that organization.
    pub(crate) async fn lock_runner_for(
        &self,
        connection: &mut agyn_store::sqlx::AnyConnection,
        runner_id: &str,
        org_id: &str,
    ) -> Result<()> {
        let runner = crate::store::runners::lock(connection, self.db.backend(), runner_id)
            .await?
            .ok_or_else(|| Error::not_found("runner", runner_id))?;
        if runner
            .organization_id
            .as_deref()
            .is_some_and(|runner_org| runner_org != org_id)
        {
            return Err(Error::failed_precondition(format!(
                "runner {runner_id} belongs to another organization than {org_id}"
            )));
        }
        Ok(())
    }

    async fn resolve_names(&self, records: &mut [WorkloadRecord]) -> Result<()> {
        let mut connection = self.db.pool().acquire().await?;
        names::resolve_workloads(&mut connection, records).await
    }
}
