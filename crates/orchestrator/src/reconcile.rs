//! Workload reconciliation: compares the non-terminal records of each
//! enrolled runner with what the runner reports, moves the records on
//! (RUNNING, STOPPED, FAILED), stops what should not run and removes
//! orphans.

use std::collections::HashSet;
use std::time::Duration;

use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
use agyn_api_runners::agynio::api::runners::v1 as runners_pb;
use agyn_core::error::Code;
use agyn_core::time::now_micros;
use agyn_core::{Error, Result};
use agyn_runner::Runner;
use agyn_runners::{
    FailureReason, RunnerRecord, RunnerStatus, WorkloadChanges, WorkloadRecord, WorkloadStatus,
};

use crate::config::OrchestratorConfig;
use crate::decide::micros_to_duration;
use crate::launch::failure_message;
use crate::spec::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::{ORCHESTRATOR, Orchestrator};

use runner_pb::ContainerStatus as Observed;

/// Waiting reasons of an image that cannot be pulled.
const IMAGE_PULL_REASONS: [&str; 2] = ["ImagePullBackOff", "ErrImagePull"];

/// Waiting reasons of a container whose configuration the runtime
/// rejects.
const CONFIG_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
];

/// Restarts after which a main container in `CrashLoopBackOff` counts as
/// crashing.
const CRASHLOOP_RESTARTS: i32 = 3;

/// Extra wait for a StopWorkload response beyond the stop timeout.
const STOP_CALL_SLACK: Duration = Duration::from_secs(10);

/// The step reconciliation takes for one record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Nothing changed.
    Keep,
    /// Store the runner's container states (and instance id).
    Refresh,
    /// Init finished and main runs.
    Running,
    /// Fail the record; stop the workload on the runner when it is there.
    Fail {
        reason: FailureReason,
        message: String,
        stop: bool,
    },
    /// Main exited 0: STOPPING, StopWorkload, STOPPED.
    Finish,
    /// A STOPPING workload still on the runner: stop it again.
    StopAgain,
    /// A STOPPING workload past `stopping_timeout`: remove it by force.
    ForceRemove,
    /// A STOPPING workload the runner no longer has.
    Stopped,
}

fn container_is(container: &runner_pb::RunnerContainer, status: Observed) -> bool {
    container.status.as_known() == Some(status)
}

fn role_is(container: &runner_pb::RunnerContainer, role: runner_pb::ContainerRole) -> bool {
    container.role.as_known() == Some(role)
}

/// Decides what to do with `record` given the runner's view of it
/// (`None` when the runner does not have it), at time `now` (µs).
pub(crate) fn plan(
    record: &WorkloadRecord,
    observed: Option<&runner_pb::InspectWorkloadResponse>,
    now: i64,
    config: &OrchestratorConfig,
) -> Action {
    let age = micros_to_duration(now - record.created_at);
    match (record.status, observed) {
        (WorkloadStatus::Stopping, None) => Action::Stopped,
        (WorkloadStatus::Stopping, Some(_)) => {
            let stopping_for = micros_to_duration(now - record.updated_at);
            if stopping_for > config.stopping_timeout {
                Action::ForceRemove
            } else {
                Action::StopAgain
            }
        }
        (WorkloadStatus::Running, None) => Action::Fail {
            reason: FailureReason::RuntimeLost,
            message: "workload missing on runner".to_string(),
            stop: false,
        },
        (WorkloadStatus::Starting, None) if age > config.start_timeout => start_timeout(config),
        (WorkloadStatus::Starting, None) if age >= config.missing_grace => Action::Fail {
            reason: FailureReason::StartFailed,
            message: "workload missing on runner".to_string(),
            stop: false,
        },
        (WorkloadStatus::Starting, None) => Action::Keep,
        (status, Some(observed)) => plan_present(status, observed, age, config),
        (WorkloadStatus::Stopped | WorkloadStatus::Failed, None) => Action::Keep,
    }
}

fn start_timeout(config: &OrchestratorConfig) -> Action {
    Action::Fail {
        reason: FailureReason::StartTimeout,
        message: format!(
            "workload did not become running within {}s",
            config.start_timeout.as_secs()
        ),
        stop: true,
    }
}

/// Plans a STARTING or RUNNING record whose workload the runner has.
fn plan_present(
    status: WorkloadStatus,
    observed: &runner_pb::InspectWorkloadResponse,
    age: Duration,
    config: &OrchestratorConfig,
) -> Action {
    use runner_pb::ContainerRole::{CONTAINER_ROLE_INIT as INIT, CONTAINER_ROLE_MAIN as MAIN};
    let containers = &observed.containers;
    let main = containers.iter().find(|container| role_is(container, MAIN));
    let inits: Vec<&runner_pb::RunnerContainer> = containers
        .iter()
        .filter(|container| role_is(container, INIT))
        .collect();

    if let Some(main) = main {
        if container_is(main, Observed::CONTAINER_STATUS_TERMINATED) {
            if main.exit_code == 0 {
                return Action::Finish;
            }
            return crashloop(main);
        }
        let crash_looping = container_is(main, Observed::CONTAINER_STATUS_WAITING)
            && main.reason == "CrashLoopBackOff"
            && main.restart_count >= CRASHLOOP_RESTARTS;
        if crash_looping {
            return crashloop(main);
        }
    }
    if status != WorkloadStatus::Starting {
        return Action::Refresh;
    }

    let failed_init = inits.iter().find(|init| {
        container_is(init, Observed::CONTAINER_STATUS_TERMINATED) && init.exit_code != 0
    });
    if let Some(init) = failed_init {
        return Action::Fail {
            reason: FailureReason::StartFailed,
            message: format!(
                "init container {} exited with code {}",
                init.name, init.exit_code
            ),
            stop: true,
        };
    }
    let inits_done = inits.iter().all(|init| {
        container_is(init, Observed::CONTAINER_STATUS_TERMINATED) && init.exit_code == 0
    });
    if inits_done && main.is_some_and(|main| container_is(main, Observed::CONTAINER_STATUS_RUNNING))
    {
        return Action::Running;
    }
    if age >= config.start_grace
        && let Some((container, reason)) = waiting_on(containers)
    {
        let detail = if container.message.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {}", container.message)
        };
        let failure = if IMAGE_PULL_REASONS.contains(&reason) {
            FailureReason::ImagePullFailed
        } else {
            FailureReason::ConfigInvalid
        };
        return Action::Fail {
            reason: failure,
            message: format!("container {} is waiting: {detail}", container.name),
            stop: true,
        };
    }
    if age > config.start_timeout {
        return start_timeout(config);
    }
    Action::Refresh
}

/// Returns a container waiting on an image pull or a configuration
/// error, with its reason.
fn waiting_on(
    containers: &[runner_pb::RunnerContainer],
) -> Option<(&runner_pb::RunnerContainer, &str)> {
    containers.iter().find_map(|container| {
        let waiting = container_is(container, Observed::CONTAINER_STATUS_WAITING);
        let reason = container.reason.as_str();
        let known = IMAGE_PULL_REASONS.contains(&reason) || CONFIG_REASONS.contains(&reason);
        (waiting && known).then_some((container, reason))
    })
}

/// Returns the failure of a workload whose main container exited, with
/// the runner's explanation of the exit when it gives one.
fn crashloop(main: &runner_pb::RunnerContainer) -> Action {
    let mut message = format!("main container exited with code {}", main.exit_code);
    if !main.message.is_empty() {
        message = format!("{message}: {}", main.message);
    }
    Action::Fail {
        reason: FailureReason::Crashloop,
        message,
        stop: true,
    }
}

/// Converts the runner's container states into the record's.
pub(crate) fn record_containers(
    containers: &[runner_pb::RunnerContainer],
) -> Vec<runners_pb::Container> {
    containers
        .iter()
        .map(|container| runners_pb::Container {
            name: container.name.clone(),
            role: container.role.to_i32().into(),
            image: container.image.clone(),
            status: container.status.to_i32().into(),
            reason: container.reason.clone(),
            message: failure_message(&container.message),
            exit_code: container.exit_code,
            restart_count: container.restart_count,
            started_at: container.started_at.clone(),
            finished_at: container.finished_at.clone(),
            ..Default::default()
        })
        .collect()
}

impl Orchestrator {
    /// Reconciles every enrolled runner once. A runner whose calls fail is
    /// skipped for this pass.
    pub async fn reconcile_pass(&self) {
        let runners = match self.enrolled_runners().await {
            Ok(runners) => runners,
            Err(error) => {
                tracing::warn!(%error, "Failed to list runners for reconciliation");
                return;
            }
        };
        for runner in runners {
            if let Err(error) = self.reconcile_runner(&runner).await {
                tracing::warn!(runner_id = %runner.id, %error, "Reconciliation skipped the runner for this pass");
            }
        }
    }

    /// Returns every ENROLLED runner.
    pub(crate) async fn enrolled_runners(&self) -> Result<Vec<RunnerRecord>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self
                .services()
                .runners
                .list_runners(&ORCHESTRATOR, None, 200, &token)
                .await?;
            all.extend(
                page.into_iter()
                    .filter(|runner| runner.status == RunnerStatus::Enrolled),
            );
            if next.is_empty() {
                return Ok(all);
            }
            token = next;
        }
    }

    async fn reconcile_runner(&self, runner: &RunnerRecord) -> Result<()> {
        let client = self.connect(runner)?;
        // The runner is read before the records: a workload recorded after
        // this listing is then not mistaken for an orphan.
        let present: HashSet<String> = client
            .list_workloads()
            .await?
            .into_iter()
            .map(|summary| summary.workload_id)
            .collect();
        let records = self.runner_workloads(&runner.id).await?;
        let recorded: HashSet<&str> = records.iter().map(|record| record.id.as_str()).collect();
        for record in &records {
            let observed = if present.contains(&record.id) {
                inspect(client.as_ref(), &record.id).await?
            } else {
                None
            };
            let action = plan(record, observed.as_ref(), now_micros(), &self.inner.config);
            self.apply(client.as_ref(), record, observed.as_ref(), action)
                .await?;
        }
        let unrecorded: Vec<&String> = present
            .iter()
            .filter(|id| !recorded.contains(id.as_str()))
            .collect();
        for workload_id in unrecorded {
            self.settle_unrecorded(client.as_ref(), workload_id).await?;
        }
        Ok(())
    }

    /// Carries out `action` on `record`. Fails only when a runner call
    /// fails; a record that changed meanwhile is logged and left alone.
    async fn apply(
        &self,
        client: &dyn Runner,
        record: &WorkloadRecord,
        observed: Option<&runner_pb::InspectWorkloadResponse>,
        action: Action,
    ) -> Result<()> {
        let containers = observed.map(|observed| record_containers(&observed.containers));
        let instance_id = observed
            .filter(|_| record.instance_id.is_empty())
            .map(|observed| observed.instance_id.clone());
        let mut changes = WorkloadChanges {
            containers: containers.clone(),
            instance_id,
            ..WorkloadChanges::default()
        };
        match action {
            Action::Keep => return Ok(()),
            Action::Refresh => {
                let unchanged = changes
                    .containers
                    .as_ref()
                    .is_none_or(|containers| *containers == record.containers)
                    && changes.instance_id.is_none();
                if unchanged {
                    return Ok(());
                }
            }
            Action::Running => changes.status = Some(WorkloadStatus::Running),
            Action::Fail {
                reason,
                message,
                stop,
            } => {
                tracing::warn!(
                    workload_id = %record.id,
                    reason = reason.name(),
                    %message,
                    "Workload failed"
                );
                changes.status = Some(WorkloadStatus::Failed);
                changes.failure_reason = Some(reason);
                changes.failure_message = Some(failure_message(&message));
                let recorded = self.update(record, &changes).await;
                if stop && recorded {
                    self.stop_on_runner(client, &record.id).await?;
                }
                return Ok(());
            }
            Action::Finish => {
                changes.status = Some(WorkloadStatus::Stopping);
                if self.update(record, &changes).await {
                    self.stop_on_runner(client, &record.id).await?;
                    self.mark_stopped(record).await;
                }
                return Ok(());
            }
            Action::StopAgain => {
                self.stop_on_runner(client, &record.id).await?;
                self.mark_stopped(record).await;
                return Ok(());
            }
            Action::ForceRemove => {
                tracing::warn!(workload_id = %record.id, "Workload outlived the stopping timeout; removing it by force");
                client
                    .remove_workload(runner_pb::RemoveWorkloadRequest {
                        workload_id: record.id.clone(),
                        force: true,
                        remove_volumes: false,
                        ..Default::default()
                    })
                    .await?;
                self.mark_stopped(record).await;
                return Ok(());
            }
            Action::Stopped => {
                self.mark_stopped(record).await;
                return Ok(());
            }
        }
        self.update(record, &changes).await;
        Ok(())
    }

    /// Applies `changes` to `record`; returns whether they were stored.
    async fn update(&self, record: &WorkloadRecord, changes: &WorkloadChanges) -> bool {
        match self
            .services()
            .runners
            .update_workload(&ORCHESTRATOR, &record.id, changes)
            .await
        {
            Ok(_) => true,
            Err(error) => {
                tracing::info!(workload_id = %record.id, %error, "Workload record changed meanwhile; left as it is");
                false
            }
        }
    }

    async fn mark_stopped(&self, record: &WorkloadRecord) {
        let stopped = WorkloadChanges {
            status: Some(WorkloadStatus::Stopped),
            ..WorkloadChanges::default()
        };
        self.update(record, &stopped).await;
    }

    /// Calls StopWorkload with the stop timeout.
    pub(crate) async fn stop_on_runner(
        &self,
        client: &dyn Runner,
        workload_id: &str,
    ) -> Result<()> {
        let timeout = self.inner.config.stop_timeout;
        let request = runner_pb::StopWorkloadRequest {
            workload_id: workload_id.to_string(),
            timeout_sec: i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX),
            ..Default::default()
        };
        match tokio::time::timeout(timeout + STOP_CALL_SLACK, client.stop_workload(request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(format!(
                "StopWorkload of {workload_id} did not return within {}s",
                (timeout + STOP_CALL_SLACK).as_secs()
            ))),
        }
    }

    /// Handles a workload the runner has without a non-terminal record. A
    /// workload with the platform's label and no record at all is an
    /// orphan, so it is stopped and removed. One whose record is terminal
    /// is stopped if it still runs, and its logs stay on the runner.
    async fn settle_unrecorded(&self, client: &dyn Runner, workload_id: &str) -> Result<()> {
        let Some(observed) = inspect(client, workload_id).await? else {
            return Ok(());
        };
        let record = match self
            .services()
            .runners
            .get_workload(&ORCHESTRATOR, workload_id)
            .await
        {
            Ok(record) => Some(record),
            Err(error) if matches!(error.code(), Code::NotFound | Code::InvalidArgument) => None,
            Err(error) => return Err(error),
        };
        let still_running = matches!(
            observed.status.as_known(),
            Some(
                runner_pb::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_STARTING
                    | runner_pb::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_RUNNING
            )
        );
        match record {
            Some(record) if record.status.is_terminal() && still_running => {
                tracing::info!(
                    workload_id,
                    status = record.status.name(),
                    "Stopping a workload whose record is terminal"
                );
                self.stop_on_runner(client, workload_id).await
            }
            Some(_) => Ok(()),
            None if labels_managed(&observed) => {
                tracing::warn!(
                    workload_id,
                    "Removing an orphan workload that has no record"
                );
                self.stop_on_runner(client, workload_id).await?;
                client
                    .remove_workload(runner_pb::RemoveWorkloadRequest {
                        workload_id: workload_id.to_string(),
                        force: true,
                        remove_volumes: false,
                        ..Default::default()
                    })
                    .await
            }
            None => Ok(()),
        }
    }
}

fn labels_managed(observed: &runner_pb::InspectWorkloadResponse) -> bool {
    observed.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

/// Inspects a workload; `None` when the runner no longer has it.
async fn inspect(
    client: &dyn Runner,
    workload_id: &str,
) -> Result<Option<runner_pb::InspectWorkloadResponse>> {
    match client
        .inspect_workload(runner_pb::InspectWorkloadRequest {
            workload_id: workload_id.to_string(),
            ..Default::default()
        })
        .await
    {
        Ok(observed) => Ok(Some(observed)),
        Err(error) if error.code() == Code::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests;
