//! Runner selection: the runner that has the thread's volumes, or else
//! the least loaded enrolled runner that the agent's organization may use,
//! that offers every capability the agent needs and that this replica can
//! call.

use agyn_agents::AgentRecord;
use agyn_core::Result;
use agyn_core::error::Code;
use agyn_runners::{
    ListSort, PageRequest, RunnerRecord, RunnerStatus, VolumeChanges, VolumeFilter, VolumeRecord,
    VolumeStatus, WorkloadFilter,
};

use crate::assemble::Blocked;
use crate::decide::NON_TERMINAL;
use crate::{ORCHESTRATOR, Orchestrator, Pair};

/// Degrade reason when the runner holding a thread's volumes is gone.
const RUNNER_DEPROVISIONED: &str = "runner_deprovisioned";

/// Page size of the lists read here.
const PAGE: i32 = 200;

/// The runner a workload goes to, with the thread's non-terminal
/// provisioned volumes (all on that runner).
pub(crate) struct Placement {
    pub runner: RunnerRecord,
    pub thread_volumes: Vec<VolumeRecord>,
}

/// The outcome of the search for the least loaded runner.
enum RunnerSearch {
    Found(RunnerRecord),
    /// Only runners that this replica cannot call qualify; the reason is
    /// the connection error of the last one.
    Unreachable(String),
    /// No enrolled runner qualifies.
    None,
}

impl Orchestrator {
    /// Selects the runner of the next workload of `pair`.
    pub(crate) async fn select_runner(
        &self,
        pair: &Pair,
        agent: &AgentRecord,
    ) -> Result<Placement, Blocked> {
        let thread_volumes = self
            .thread_volumes(pair)
            .await
            .map_err(|error| Blocked::from_error("provisioned volumes", &error))?;
        if let Some(volume) = thread_volumes.first() {
            let runner = self
                .pinned_runner(&volume.runner_id, &thread_volumes)
                .await?;
            return Ok(Placement {
                runner,
                thread_volumes,
            });
        }
        let search = self
            .least_loaded_runner(pair, agent)
            .await
            .map_err(|error| Blocked::from_error("runners", &error))?;
        let runner = match search {
            RunnerSearch::Found(runner) => runner,
            RunnerSearch::Unreachable(reason) => {
                return Err(Blocked::Transient(format!(
                    "no runner that organization {} may use is reachable from this replica: \
                     {reason}",
                    pair.organization_id
                )));
            }
            RunnerSearch::None => {
                return Err(Blocked::Transient(format!(
                    "no enrolled runner of organization {} or of the cluster offers the \
                     capabilities [{}]",
                    pair.organization_id,
                    agent.capabilities.join(", ")
                )));
            }
        };
        Ok(Placement {
            runner,
            thread_volumes,
        })
    }

    /// Returns every PROVISIONING, ACTIVE or DEPROVISIONING volume of the
    /// thread.
    async fn thread_volumes(&self, pair: &Pair) -> Result<Vec<VolumeRecord>> {
        let filter = VolumeFilter {
            statuses: vec![
                VolumeStatus::Provisioning,
                VolumeStatus::Active,
                VolumeStatus::Deprovisioning,
            ],
            thread_ids: vec![pair.thread_id.clone()],
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
                    &pair.organization_id,
                    &filter,
                    ListSort::default(),
                    PageRequest {
                        size: PAGE,
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

    /// Returns the runner that has a thread's volumes when it is
    /// enrolled. An offline one, or one this replica cannot call, is
    /// transient. A missing or pending one fails the volumes and degrades
    /// the thread.
    async fn pinned_runner(
        &self,
        runner_id: &str,
        volumes: &[VolumeRecord],
    ) -> Result<RunnerRecord, Blocked> {
        let runner = match self
            .services()
            .runners
            .get_runner(&ORCHESTRATOR, runner_id)
            .await
        {
            Ok(runner) => Some(runner),
            Err(error) if error.code() == Code::NotFound => None,
            Err(error) => return Err(Blocked::from_error("runner", &error)),
        };
        match runner {
            Some(runner) if runner.status == RunnerStatus::Enrolled => {
                match self.connect(&runner) {
                    Ok(_) => Ok(runner),
                    Err(error) => Err(Blocked::Transient(format!(
                        "runner {runner_id}, which holds the thread's volumes, is not reachable \
                         from this replica: {error}"
                    ))),
                }
            }
            Some(runner) if runner.status == RunnerStatus::Offline => Err(Blocked::Transient(
                format!("runner {runner_id}, which holds the thread's volumes, is offline"),
            )),
            _ => {
                for volume in volumes {
                    let failed = VolumeChanges {
                        status: Some(VolumeStatus::Failed),
                        ..VolumeChanges::default()
                    };
                    if let Err(error) = self
                        .services()
                        .runners
                        .update_provisioned_volume(&ORCHESTRATOR, &volume.id, &failed)
                        .await
                    {
                        return Err(Blocked::from_error(
                            &format!("provisioned volume {}", volume.id),
                            &error,
                        ));
                    }
                }
                Err(Blocked::Degrade(RUNNER_DEPROVISIONED))
            }
        }
    }

    /// Returns the enrolled runner with the fewest non-terminal workloads
    /// among those the organization may use that offer every capability
    /// of the agent and that this replica can call. Ties go to
    /// organization runners, then to the lowest id.
    ///
    /// A runner this replica cannot call, such as a built-in runner of
    /// another replica, is skipped: a workload recorded on it would never
    /// start and would count as a failed attempt of the pair.
    async fn least_loaded_runner(&self, pair: &Pair, agent: &AgentRecord) -> Result<RunnerSearch> {
        let mut best: Option<(usize, bool, RunnerRecord)> = None;
        let mut unreachable: Option<String> = None;
        let mut token = String::new();
        loop {
            let (page, next) = self
                .services()
                .runners
                .list_runners(&ORCHESTRATOR, Some(&pair.organization_id), PAGE, &token)
                .await?;
            for runner in page {
                let offers_all = agent
                    .capabilities
                    .iter()
                    .all(|needed| runner.capabilities.contains(needed));
                if runner.status != RunnerStatus::Enrolled || !offers_all {
                    continue;
                }
                if let Err(error) = self.connect(&runner) {
                    unreachable = Some(error.to_string());
                    continue;
                }
                let load = self.runner_load(&runner.id).await?;
                let cluster_scoped = runner.organization_id.is_none();
                let better = match &best {
                    None => true,
                    Some((best_load, best_cluster, best_runner)) => {
                        (load, cluster_scoped, runner.id.as_str())
                            < (*best_load, *best_cluster, best_runner.id.as_str())
                    }
                };
                if better {
                    best = Some((load, cluster_scoped, runner));
                }
            }
            if next.is_empty() {
                return Ok(match (best, unreachable) {
                    (Some((_, _, runner)), _) => RunnerSearch::Found(runner),
                    (None, Some(reason)) => RunnerSearch::Unreachable(reason),
                    (None, None) => RunnerSearch::None,
                });
            }
            token = next;
        }
    }

    /// Counts the non-terminal workloads on runner `runner_id`.
    async fn runner_load(&self, runner_id: &str) -> Result<usize> {
        Ok(self.runner_workloads(runner_id).await?.len())
    }

    /// Returns every non-terminal workload on runner `runner_id`.
    pub(crate) async fn runner_workloads(
        &self,
        runner_id: &str,
    ) -> Result<Vec<agyn_runners::WorkloadRecord>> {
        let filter = WorkloadFilter {
            runner_ids: vec![runner_id.to_string()],
            statuses: NON_TERMINAL.to_vec(),
            ..WorkloadFilter::default()
        };
        self.all_workloads(&filter).await
    }

    /// Returns every workload matching `filter` in every organization.
    pub(crate) async fn all_workloads(
        &self,
        filter: &WorkloadFilter,
    ) -> Result<Vec<agyn_runners::WorkloadRecord>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self
                .services()
                .runners
                .list_workloads_internal(
                    &ORCHESTRATOR,
                    "",
                    filter,
                    ListSort::default(),
                    PageRequest {
                        size: PAGE,
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
}
