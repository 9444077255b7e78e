//! Volume reconciliation: compares the provisioned volume records of each
//! enrolled runner with its named volumes, moves the records on
//! (ACTIVE, DELETED, FAILED), deprovisions disks whose definition is gone
//! or whose time to live ran out, and removes orphans.

use std::collections::{HashMap, HashSet};

use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
use agyn_core::Result;
use agyn_core::error::Code;
use agyn_core::time::now_micros;
use agyn_runner::Runner;
use agyn_runners::{
    ListSort, PageRequest, RunnerRecord, VolumeChanges, VolumeFilter, VolumeRecord, VolumeStatus,
    WorkloadFilter, WorkloadStatus,
};

use crate::decide::NON_TERMINAL;
use crate::{ORCHESTRATOR, Orchestrator};

/// Degrade reason when a thread's disk vanished from its runner.
const VOLUME_LOST: &str = "volume_lost";

impl Orchestrator {
    /// Reconciles the volumes of every enrolled runner once. A runner
    /// whose calls fail is skipped for this pass.
    pub async fn volume_pass(&self) {
        let runners = match self.enrolled_runners().await {
            Ok(runners) => runners,
            Err(error) => {
                tracing::warn!(%error, "Failed to list runners for volume reconciliation");
                return;
            }
        };
        for runner in runners {
            if let Err(error) = self.reconcile_volumes(&runner).await {
                tracing::warn!(runner_id = %runner.id, %error, "Volume reconciliation skipped the runner for this pass");
            }
        }
    }

    async fn reconcile_volumes(&self, runner: &RunnerRecord) -> Result<()> {
        let client = self.connect(runner)?;
        // Read the runner first, so that a volume recorded after this
        // listing is not taken for an orphan.
        let present: HashMap<String, runner_pb::VolumeSummary> = client
            .list_volumes()
            .await?
            .into_iter()
            .map(|volume| (volume.persistent_name.clone(), volume))
            .collect();
        let records = self.runner_volumes(&runner.id).await?;
        let recorded: HashSet<&str> = records
            .iter()
            .map(|record| record.persistent_name.as_str())
            .collect();
        for record in &records {
            let observed = present.get(&record.persistent_name);
            self.reconcile_volume(client.as_ref(), record, observed)
                .await?;
        }
        for (name, volume) in &present {
            if volume.volume_id_label.is_empty() || recorded.contains(name.as_str()) {
                continue;
            }
            tracing::warn!(persistent_name = %name, runner_id = %runner.id, "Removing an orphan volume that has no live record");
            remove_volume(client.as_ref(), name).await?;
        }
        Ok(())
    }

    async fn reconcile_volume(
        &self,
        client: &dyn Runner,
        record: &VolumeRecord,
        observed: Option<&runner_pb::VolumeSummary>,
    ) -> Result<()> {
        match (record.status, observed) {
            (VolumeStatus::Provisioning, Some(observed)) => {
                let changes = VolumeChanges {
                    status: Some(VolumeStatus::Active),
                    instance_id: Some(observed.instance_id.clone()),
                    ..VolumeChanges::default()
                };
                self.update_volume(record, &changes).await;
            }
            (VolumeStatus::Provisioning, None) => {
                if self.creator_failed(record).await? {
                    self.update_volume(record, &status(VolumeStatus::Failed))
                        .await;
                }
            }
            (VolumeStatus::Active, Some(_)) => {
                if let Some(reason) = self.deprovision_reason(record).await? {
                    tracing::info!(provisioned_volume_id = %record.id, reason, "Deprovisioning a volume");
                    if self
                        .update_volume(record, &status(VolumeStatus::Deprovisioning))
                        .await
                    {
                        remove_volume(client, &record.persistent_name).await?;
                    }
                }
            }
            (VolumeStatus::Active, None) => {
                tracing::warn!(provisioned_volume_id = %record.id, thread_id = %record.thread_id, "Volume missing on its runner");
                if self
                    .update_volume(record, &status(VolumeStatus::Failed))
                    .await
                {
                    self.degrade(&record.thread_id, VOLUME_LOST).await?;
                }
            }
            (VolumeStatus::Deprovisioning, Some(_)) => {
                remove_volume(client, &record.persistent_name).await?;
            }
            (VolumeStatus::Deprovisioning, None) => {
                self.update_volume(record, &status(VolumeStatus::Deleted))
                    .await;
            }
            (VolumeStatus::Deleted | VolumeStatus::Failed, _) => {}
        }
        Ok(())
    }

    /// Returns why an ACTIVE volume should go, if it should: its definition
    /// was deleted, or its time to live ran out. Either needs the thread
    /// to have no non-terminal workload.
    async fn deprovision_reason(&self, record: &VolumeRecord) -> Result<Option<&'static str>> {
        let thread_filter = WorkloadFilter {
            thread_ids: vec![record.thread_id.clone()],
            ..WorkloadFilter::default()
        };
        let active = WorkloadFilter {
            statuses: NON_TERMINAL.to_vec(),
            ..thread_filter.clone()
        };
        if !self
            .newest_workload(&record.organization_id, &active)
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        if record.volume_name.is_empty() {
            return Ok(Some("its volume definition was deleted"));
        }
        let Some(ttl_ms) = self.volume_ttl_ms(record).await? else {
            return Ok(None);
        };
        let newest = self
            .newest_workload(&record.organization_id, &thread_filter)
            .await?;
        let last_used = newest
            .first()
            .and_then(|workload| workload.removed_at)
            .unwrap_or(record.created_at);
        if now_micros() - last_used > ttl_ms.saturating_mul(1000) {
            return Ok(Some("it was unused for longer than its time to live"));
        }
        Ok(None)
    }

    /// Returns the time to live of a volume's definition, read from the
    /// agent that provisioned it.
    ///
    /// NOTE: a definition no longer attached to that agent, or whose agent
    /// was deleted, is not found this way, so its disk is kept until the
    /// definition is deleted.
    async fn volume_ttl_ms(&self, record: &VolumeRecord) -> Result<Option<i64>> {
        match self
            .services()
            .agents
            .get_agent_bundle(&ORCHESTRATOR, &record.agent_id)
            .await
        {
            Ok(bundle) => Ok(bundle
                .volumes
                .iter()
                .find(|volume| volume.id == record.volume_id)
                .and_then(|volume| volume.ttl_ms)),
            Err(error) if error.code() == Code::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Returns whether the workload created together with a PROVISIONING
    /// volume (same pair, same creation time) failed.
    async fn creator_failed(&self, record: &VolumeRecord) -> Result<bool> {
        let filter = WorkloadFilter {
            thread_ids: vec![record.thread_id.clone()],
            agent_ids: vec![record.agent_id.clone()],
            started_after: Some(record.created_at),
            started_before: Some(record.created_at + 1),
            ..WorkloadFilter::default()
        };
        let creators = self
            .newest_workload(&record.organization_id, &filter)
            .await?;
        Ok(creators
            .first()
            .is_some_and(|workload| workload.status == WorkloadStatus::Failed))
    }

    /// Returns the newest workload matching `filter`, if any.
    async fn newest_workload(
        &self,
        organization_id: &str,
        filter: &WorkloadFilter,
    ) -> Result<Vec<agyn_runners::WorkloadRecord>> {
        let (records, _) = self
            .services()
            .runners
            .list_workloads_internal(
                &ORCHESTRATOR,
                organization_id,
                filter,
                ListSort::default(),
                PageRequest { size: 1, token: "" },
            )
            .await?;
        Ok(records)
    }

    /// Returns every non-terminal provisioned volume on runner `runner_id`.
    async fn runner_volumes(&self, runner_id: &str) -> Result<Vec<VolumeRecord>> {
        let filter = VolumeFilter {
            statuses: vec![
                VolumeStatus::Provisioning,
                VolumeStatus::Active,
                VolumeStatus::Deprovisioning,
            ],
            runner_ids: vec![runner_id.to_string()],
            ..VolumeFilter::default()
        };
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self
                .services()
                .runners
                .list_volumes_internal(
                    &ORCHESTRATOR,
                    "",
                    &filter,
                    ListSort::default(),
                    PageRequest {
                        size: 200,
                        token: &token,
                    },
                )
                .await?;
            all.extend(page);
            if next.is_empty() {
                return Ok(all);
            }
            token = next;
        }
    }

    /// Applies `changes`; returns whether they were stored.
    async fn update_volume(&self, record: &VolumeRecord, changes: &VolumeChanges) -> bool {
        match self
            .services()
            .runners
            .update_provisioned_volume(&ORCHESTRATOR, &record.id, changes)
            .await
        {
            Ok(_) => true,
            Err(error) => {
                tracing::info!(provisioned_volume_id = %record.id, %error, "Provisioned volume changed meanwhile; left as it is");
                false
            }
        }
    }
}

fn status(status: VolumeStatus) -> VolumeChanges {
    VolumeChanges {
        status: Some(status),
        ..VolumeChanges::default()
    }
}

/// Removes a named volume. A volume still mounted by a running workload
/// is left for a later pass.
async fn remove_volume(client: &dyn Runner, persistent_name: &str) -> Result<()> {
    match client
        .remove_volume(runner_pb::RemoveVolumeRequest {
            persistent_name: persistent_name.to_string(),
            force: false,
            ..Default::default()
        })
        .await
    {
        Ok(()) => Ok(()),
        Err(error) if error.code() == Code::FailedPrecondition => {
            tracing::info!(persistent_name, %error, "Volume still in use; removing it on a later pass");
            Ok(())
        }
        Err(error) => Err(error),
    }
}
