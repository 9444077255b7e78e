//! Provisioned volume records. Each operation states its authorization
//! rule first.

use agyn_core::id::parse_id;
use agyn_core::page::{Fingerprint, Page};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};
use agyn_store::sqlx::AnyConnection;

use crate::model::{
    ListSort, NewVolume, PageRequest, SortField, VolumeChanges, VolumeFilter, VolumeRecord,
    VolumeStatus,
};
use crate::store::sort_order;
use crate::store::volumes::{self, Scope};
use crate::workload::{caller_key, parse_ids};
use crate::{Runners, names, no_fields, optional_org, require_component, validate};

/// Validates a volume filter and returns it with canonical ids.
fn canonical_filter(filter: &VolumeFilter) -> Result<VolumeFilter> {
    Ok(VolumeFilter {
        statuses: filter.statuses.clone(),
        runner_ids: parse_ids("filter.runner_id_in", &filter.runner_ids)?,
        thread_ids: parse_ids("filter.thread_id_in", &filter.thread_ids)?,
        volume_ids: parse_ids("filter.volume_id_in", &filter.volume_ids)?,
    })
}

/// Parses the page of a volume list named `list`, binding its token to the
/// caller, the scope (an organization or thread id), every filter value
/// and the sort.
fn volume_page(
    list: &str,
    caller: &Caller,
    scope: &str,
    filter: &VolumeFilter,
    sort: ListSort,
    page: PageRequest<'_>,
) -> Result<Page> {
    let mut fingerprint = Fingerprint::new(list)
        .with(&caller_key(caller))
        .with(scope)
        .with("status");
    for status in &filter.statuses {
        fingerprint = fingerprint.with(status.name());
    }
    for (label, ids) in [
        ("runner", &filter.runner_ids),
        ("thread", &filter.thread_ids),
        ("volume", &filter.volume_ids),
    ] {
        fingerprint = fingerprint.with(label);
        for id in ids {
            fingerprint = fingerprint.with(id);
        }
    }
    let fingerprint = fingerprint.with(match sort.field {
        SortField::Created => "created",
        SortField::Status => "status",
    });
    Page::parse(page.size, page.token, sort_order(sort), fingerprint)
}

impl Runners {
    /// CreateProvisionedVolume: orchestrator only. Creates the record in
    /// status PROVISIONING.
    pub async fn create_provisioned_volume(
        &self,
        caller: &Caller,
        input: &NewVolume,
    ) -> Result<VolumeRecord> {
        require_component(caller, "CreateProvisionedVolume", &["orchestrator"])?;
        let id = parse_id("id", &input.id)?;
        let volume_id = parse_id("volume_id", &input.volume_id)?;
        let thread_id = parse_id("thread_id", &input.thread_id)?;
        let runner_id = parse_id("runner_id", &input.runner_id)?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        validate::short_text("size", &input.size)?;
        self.require_active_org(&org_id).await?;

        let now = now_micros();
        let record = VolumeRecord {
            persistent_name: format!("agyn-vol-{id}"),
            id,
            volume_id,
            volume_name: String::new(),
            thread_id,
            agent_id,
            runner_id,
            organization_id: org_id,
            size: input.size.clone(),
            instance_id: String::new(),
            status: VolumeStatus::Provisioning,
            removed_at: None,
            attachments: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin_write().await?;
        self.lock_runner_for(&mut tx, &record.runner_id, &record.organization_id)
            .await?;
        self.insert_volume_in(&mut tx, &record).await?;
        tx.commit().await?;

        tracing::info!(
            provisioned_volume_id = %record.id,
            volume_id = %record.volume_id,
            thread_id = %record.thread_id,
            runner_id = %record.runner_id,
            "Provisioned volume created"
        );
        self.publish_volume(&record);
        self.with_volume_name(record).await
    }

    /// UpdateProvisionedVolume: orchestrator only. PROVISIONING may become
    /// ACTIVE, ACTIVE may become DEPROVISIONING, DEPROVISIONING may become
    /// DELETED, and any non-terminal status may become FAILED. A DELETED or
    /// FAILED record never changes again. Entering DELETED or FAILED sets
    /// `removed_at`.
    pub async fn update_provisioned_volume(
        &self,
        caller: &Caller,
        id: &str,
        changes: &VolumeChanges,
    ) -> Result<VolumeRecord> {
        require_component(caller, "UpdateProvisionedVolume", &["orchestrator"])?;
        let id = parse_id("id", id)?;
        if changes.status.is_none() && changes.instance_id.is_none() && changes.removed_at.is_none()
        {
            return Err(no_fields());
        }
        if let Some(instance_id) = &changes.instance_id {
            validate::short_text("instance_id", instance_id)?;
        }

        let mut tx = self.db.begin_write().await?;
        let mut record = volumes::lock(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("provisioned volume", &id))?;
        let previous = record.status;
        match changes.status {
            Some(next) if !previous.can_move_to(next) => {
                return Err(Error::failed_precondition(format!(
                    "invalid transition {} -> {}",
                    previous.name(),
                    next.name()
                )));
            }
            None if previous.is_terminal() => {
                return Err(Error::failed_precondition(format!(
                    "provisioned volume {id} is {} and cannot change",
                    previous.name()
                )));
            }
            _ => {}
        }

        let now = now_micros();
        if let Some(next) = changes.status {
            if next.is_terminal() {
                record.removed_at = Some(changes.removed_at.unwrap_or(now));
            }
            record.status = next;
        }
        if let Some(instance_id) = &changes.instance_id {
            record.instance_id = instance_id.clone();
        }
        record.updated_at = now.max(record.updated_at);
        volumes::update(&mut tx, &record).await?;
        tx.commit().await?;

        if previous != record.status {
            tracing::info!(
                provisioned_volume_id = %id,
                from = previous.name(),
                to = record.status.name(),
                "Provisioned volume status changed"
            );
            self.publish_volume(&record);
        }
        self.with_volume_name(record).await
    }

    /// GetVolume: `not_found` first, then `can_view_volumes` on the
    /// volume's organization or `can_read` on its thread.
    pub async fn get_volume(&self, caller: &Caller, id: &str) -> Result<VolumeRecord> {
        let id = parse_id("id", id)?;
        let mut connection = self.db.pool().acquire().await?;
        let record = volumes::by_id(&mut connection, &id)
            .await?
            .ok_or_else(|| Error::not_found("provisioned volume", &id))?;
        drop(connection);
        self.authorize_record_read(
            caller,
            "can_view_volumes",
            &record.organization_id,
            &record.thread_id,
            None,
        )
        .await?;
        self.with_volume_name(record).await
    }

    /// ListVolumes: `can_view_volumes` on the organization.
    pub async fn list_volumes(
        &self,
        caller: &Caller,
        organization_id: &str,
        filter: &VolumeFilter,
        sort: ListSort,
        page: PageRequest<'_>,
    ) -> Result<(Vec<VolumeRecord>, String)> {
        let org_id = parse_id("organization_id", organization_id)?;
        let filter = canonical_filter(filter)?;
        let page = volume_page(
            "agynio.api.runners.v1.ListVolumes",
            caller,
            &org_id,
            &filter,
            sort,
            page,
        )?;
        self.authorize_org_list(caller, &org_id, "can_view_volumes")
            .await?;
        self.list_volumes_in(Scope::Organization(Some(&org_id)), &filter, sort, &page)
            .await
    }

    /// ListVolumesInternal: orchestrator only. Lists one organization, or
    /// every organization when `organization_id` is empty.
    pub async fn list_volumes_internal(
        &self,
        caller: &Caller,
        organization_id: &str,
        filter: &VolumeFilter,
        sort: ListSort,
        page: PageRequest<'_>,
    ) -> Result<(Vec<VolumeRecord>, String)> {
        require_component(caller, "ListVolumesInternal", &["orchestrator"])?;
        let org_id = optional_org(Some(organization_id))?;
        let filter = canonical_filter(filter)?;
        let page = volume_page(
            "agynio.api.runners.v1.ListVolumesInternal",
            caller,
            org_id.as_deref().unwrap_or(""),
            &filter,
            sort,
            page,
        )?;
        self.list_volumes_in(Scope::Organization(org_id.as_deref()), &filter, sort, &page)
            .await
    }

    /// ListVolumesByThread: `can_read` on the thread. Newest first by
    /// `(created_at DESC, id DESC)`.
    pub async fn list_volumes_by_thread(
        &self,
        caller: &Caller,
        thread_id: &str,
        page: PageRequest<'_>,
    ) -> Result<(Vec<VolumeRecord>, String)> {
        let thread_id = parse_id("thread_id", thread_id)?;
        let sort = ListSort::default();
        let filter = VolumeFilter::default();
        let page = volume_page(
            "agynio.api.runners.v1.ListVolumesByThread",
            caller,
            &thread_id,
            &filter,
            sort,
            page,
        )?;
        self.authorize_thread_read(caller, &thread_id).await?;
        self.list_volumes_in(Scope::Thread(&thread_id), &filter, sort, &page)
            .await
    }

    async fn list_volumes_in(
        &self,
        scope: Scope<'_>,
        filter: &VolumeFilter,
        sort: ListSort,
        page: &Page,
    ) -> Result<(Vec<VolumeRecord>, String)> {
        let mut connection = self.db.pool().acquire().await?;
        let (mut records, token) =
            volumes::list(&mut connection, scope, filter, sort, page).await?;
        names::resolve_volumes(&mut connection, &mut records).await?;
        Ok((records, token))
    }

    async fn with_volume_name(&self, record: VolumeRecord) -> Result<VolumeRecord> {
        let mut records = [record];
        let mut connection = self.db.pool().acquire().await?;
        names::resolve_volumes(&mut connection, &mut records).await?;
        let [record] = records;
        Ok(record)
    }

    /// Inserts a provisioned volume inside `connection`'s transaction. A
    /// duplicate id or a second non-terminal record of the (volume,
    /// thread) pair gives `already_exists`.
    pub(crate) async fn insert_volume_in(
        &self,
        connection: &mut AnyConnection,
        record: &VolumeRecord,
    ) -> Result<()> {
        if volumes::by_id(connection, &record.id).await?.is_some() {
            return Err(Error::already_exists(format!(
                "provisioned volume {} already exists",
                record.id
            )));
        }
        let pair_in_use = || {
            Error::already_exists(format!(
                "thread {} already has a non-terminal provisioned volume of volume {}",
                record.thread_id, record.volume_id
            ))
        };
        if volumes::active_for_pair(connection, &record.volume_id, &record.thread_id)
            .await?
            .is_some()
        {
            return Err(pair_in_use());
        }
        match volumes::insert(connection, record).await {
            Err(error) if error.is_unique_violation() => Err(pair_in_use()),
            other => other,
        }
    }
}
