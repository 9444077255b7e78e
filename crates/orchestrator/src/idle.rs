//! Stopping what should not run: workloads idle past their agent's idle
//! timeout or whose agent is gone, the activity sweep that marks quiet
//! agents IDLE, and the workloads of runners that stayed offline.

use std::collections::HashMap;

use agyn_core::error::Code;
use agyn_core::time::now_micros;
use agyn_core::{Error, Result};
use agyn_runners::{
    FailureReason, RunnerStatus, WorkloadChanges, WorkloadFilter, WorkloadRecord, WorkloadStatus,
};

use crate::decide::NON_TERMINAL;
use crate::{ORCHESTRATOR, Orchestrator};

impl Orchestrator {
    /// Stops every RUNNING workload idle for longer than its agent's idle
    /// timeout (read live from the agent), and every STARTING or RUNNING
    /// workload whose agent was deleted.
    pub async fn idle_pass(&self) -> Result<()> {
        let filter = WorkloadFilter {
            statuses: vec![WorkloadStatus::Starting, WorkloadStatus::Running],
            ..WorkloadFilter::default()
        };
        let workloads = self.all_workloads(&filter).await?;
        let mut by_agent: HashMap<&str, Vec<&WorkloadRecord>> = HashMap::new();
        for workload in &workloads {
            by_agent
                .entry(workload.agent_id.as_str())
                .or_default()
                .push(workload);
        }
        let now = now_micros();
        let mut stops = Vec::new();
        for (agent_id, workloads) in by_agent {
            let idle_timeout_ms = match self
                .services()
                .agents
                .get_agent_bundle(&ORCHESTRATOR, agent_id)
                .await
            {
                Ok(bundle) => Some(bundle.agent.idle_timeout_ms),
                Err(error) if error.code() == Code::NotFound => None,
                Err(error) => return Err(error),
            };
            for workload in workloads {
                let reason = match idle_timeout_ms {
                    None => "its agent was deleted",
                    Some(timeout_ms) => {
                        let idle_ms = (now - workload.last_activity_at) / 1000;
                        if workload.status != WorkloadStatus::Running || idle_ms <= timeout_ms {
                            continue;
                        }
                        "it was idle longer than its agent's idle timeout"
                    }
                };
                stops.push(self.stop_workload(workload, reason));
            }
        }
        futures::future::join_all(stops).await;
        Ok(())
    }

    /// Moves `workload` to STOPPING, calls StopWorkload on its runner and
    /// records STOPPED once the runner confirms. A runner that fails leaves the
    /// record STOPPING for reconciliation.
    async fn stop_workload(&self, workload: &WorkloadRecord, reason: &str) {
        let stopping = WorkloadChanges {
            status: Some(WorkloadStatus::Stopping),
            ..WorkloadChanges::default()
        };
        if let Err(error) = self
            .services()
            .runners
            .update_workload(&ORCHESTRATOR, &workload.id, &stopping)
            .await
        {
            tracing::info!(workload_id = %workload.id, %error, "Workload changed before it could be stopped");
            return;
        }
        tracing::info!(workload_id = %workload.id, reason, "Stopping a workload");
        let stopped = async {
            let runner = self
                .services()
                .runners
                .get_runner(&ORCHESTRATOR, &workload.runner_id)
                .await?;
            let client = self.connect(&runner)?;
            self.stop_on_runner(client.as_ref(), &workload.id).await
        };
        if let Err(error) = stopped.await {
            tracing::warn!(workload_id = %workload.id, %error, "StopWorkload failed; reconciliation will retry");
            return;
        }
        let changes = WorkloadChanges {
            status: Some(WorkloadStatus::Stopped),
            ..WorkloadChanges::default()
        };
        if let Err(error) = self
            .services()
            .runners
            .update_workload(&ORCHESTRATOR, &workload.id, &changes)
            .await
        {
            tracing::info!(workload_id = %workload.id, %error, "Workload changed before it was recorded stopped");
        }
    }

    /// Marks IDLE the agents of RUNNING workloads that have not touched
    /// them for `keepalive_grace`. Returns how many changed.
    pub async fn activity_sweep(&self) -> Result<usize> {
        let grace =
            i64::try_from(self.inner.config.keepalive_grace.as_micros()).unwrap_or(i64::MAX);
        self.services()
            .runners
            .mark_idle_workloads(&ORCHESTRATOR, now_micros().saturating_sub(grace))
            .await
    }

    /// Probes every enrolled or offline runner, then fails the
    /// non-terminal workloads of runners offline for longer than
    /// `offline_fail_after` with `RUNTIME_LOST`, without calling them.
    pub async fn liveness_pass(&self) -> Result<()> {
        self.inner
            .liveness
            .probe_all(&self.services().runners)
            .await?;
        let limit =
            i64::try_from(self.inner.config.offline_fail_after.as_micros()).unwrap_or(i64::MAX);
        let now = now_micros();
        let mut token = String::new();
        loop {
            let (page, next) = self
                .services()
                .runners
                .list_runners(&ORCHESTRATOR, None, 200, &token)
                .await?;
            for runner in page {
                let silent_since = runner
                    .last_seen_at
                    .or(runner.enrolled_at)
                    .unwrap_or(runner.created_at);
                if runner.status == RunnerStatus::Offline && now - silent_since > limit {
                    self.fail_offline_workloads(&runner.id).await?;
                }
            }
            if next.is_empty() {
                return Ok(());
            }
            token = next;
        }
    }

    async fn fail_offline_workloads(&self, runner_id: &str) -> Result<()> {
        let minutes = self.inner.config.offline_fail_after.as_secs() / 60;
        let filter = WorkloadFilter {
            runner_ids: vec![runner_id.to_string()],
            statuses: NON_TERMINAL.to_vec(),
            ..WorkloadFilter::default()
        };
        for workload in self.all_workloads(&filter).await? {
            // UpdateWorkload rejects STOPPING -> FAILED, and a STOPPING
            // workload was being stopped anyway.
            let changes = if workload.status == WorkloadStatus::Stopping {
                WorkloadChanges {
                    status: Some(WorkloadStatus::Stopped),
                    ..WorkloadChanges::default()
                }
            } else {
                WorkloadChanges {
                    status: Some(WorkloadStatus::Failed),
                    failure_reason: Some(FailureReason::RuntimeLost),
                    failure_message: Some(format!(
                        "runner {runner_id} has been offline for more than {minutes} min"
                    )),
                    ..WorkloadChanges::default()
                }
            };
            match self
                .services()
                .runners
                .update_workload(&ORCHESTRATOR, &workload.id, &changes)
                .await
            {
                Ok(_) => {
                    tracing::warn!(workload_id = %workload.id, runner_id, "Workload lost with its offline runner")
                }
                Err(error) if is_precondition(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn is_precondition(error: &Error) -> bool {
    error.code() == Code::FailedPrecondition
}
