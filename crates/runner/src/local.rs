//! [`LocalRunner`]: the built-in runner, which runs each container of a
//! workload as a child process of the runner, without isolation.
//!
//! On disk, under the runner directory:
//!
//! | Path | Content |
//! |---|---|
//! | `workloads/<workload_id>/manifest.json` | the spec without secret values, pids, states, times |
//! | `workloads/<workload_id>/root/` | the workload's file system root; each mount path `P` is a symlink `root/P` to its volume |
//! | `workloads/<workload_id>/logs/<container>.log` | stdout and stderr of the container, appended by the process itself |
//! | `workloads/<workload_id>/volumes/<name>/` | ephemeral volumes, deleted on stop |
//! | `volumes/<persistent_name>/` | named volumes, kept until RemoveVolume |
//! | `volumes/<persistent_name>.json` | the labels a named volume was created with |
//!
//! Each container is the leader of its own process group, so stopping it
//! signals everything it started. A new runner on the same directory
//! adopts the processes that still run (see [`LocalRunner::new`]).

mod logs;
mod manifest;
mod process;
mod spec;
mod supervise;
mod volumes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::{Error, Result};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{LogStream, Runner, RunnerFuture};
use manifest::{ContainerState, Manifest, VolumeKind};

/// Time a stopped workload's logs are kept. Older workloads are deleted
/// when a runner opens the directory and before every StartWorkload.
pub const LOG_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Maximum wait for the exit of processes that were sent SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Reason of a container whose process ended while no runner watched it,
/// so that its exit code is unknown (the Kubernetes reason for the same
/// case).
const STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

/// Locks a mutex and ignores poisoning, so one panicking watcher does not
/// stop the runner. The manifest it guards may then be partly updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One workload known to the runner.
pub(crate) struct Workload {
    dir: PathBuf,
    state: Mutex<Manifest>,
    /// Bumped after every state change.
    changes: watch::Sender<u64>,
    /// Serializes StopWorkload and RemoveWorkload of this workload.
    lifecycle: tokio::sync::Mutex<()>,
    /// Set by RemoveWorkload, after which the manifest is no longer written.
    removed: AtomicBool,
}

impl Workload {
    fn new(dir: PathBuf, manifest: Manifest) -> Self {
        Self {
            dir,
            state: Mutex::new(manifest),
            changes: watch::Sender::new(0),
            lifecycle: tokio::sync::Mutex::new(()),
            removed: AtomicBool::new(false),
        }
    }

    fn snapshot(&self) -> Manifest {
        lock(&self.state).clone()
    }

    /// Applies `change` to the manifest, writes it to disk and wakes the
    /// waiters. A failed write is logged, and the state in memory stays
    /// current.
    fn update<R>(&self, change: impl FnOnce(&mut Manifest) -> R) -> R {
        let result = {
            let mut state = lock(&self.state);
            let result = change(&mut state);
            let written = if self.removed.load(Ordering::SeqCst) {
                Ok(())
            } else {
                state.write(&self.dir)
            };
            if let Err(error) = written {
                tracing::warn!(
                    workload_id = %state.workload_id,
                    %error,
                    "Failed to write the workload manifest"
                );
            }
            result
        };
        self.changes.send_modify(|version| *version += 1);
        result
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Returns whether container `name` exited, or never started and never
    /// will because the workload stopped or failed.
    fn container_done(&self, name: &str) -> bool {
        let state = lock(&self.state);
        let Some(container) = state.container(name) else {
            return true;
        };
        container.is_terminated()
            || (!container.is_running() && (state.stopped || state.failure.is_some()))
    }

    /// Waits until no container runs, or until `timeout` passes. Returns
    /// whether every container stopped.
    async fn wait_all_exited(&self, timeout: Duration) -> bool {
        let mut changes = self.subscribe();
        let wait = async {
            loop {
                if !lock(&self.state).any_running() {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Runner settings that do not change.
struct Settings {
    dir: PathBuf,
    runner_id: String,
    version: String,
    agyn_executable: PathBuf,
    /// `PATH` for containers whose spec sets none: the runner's own.
    path_env: String,
}

/// The built-in runner. Dropping it stops watching the processes but
/// leaves them running, so a new runner on the same directory adopts them.
pub struct LocalRunner {
    settings: Settings,
    workloads: Mutex<HashMap<String, Arc<Workload>>>,
    /// Watchers of the processes. Dropping the set aborts them.
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunner")
            .field("dir", &self.settings.dir)
            .field("runner_id", &self.settings.runner_id)
            .finish_non_exhaustive()
    }
}

impl LocalRunner {
    /// Opens the runner directory `dir`, creating it when absent, and
    /// adopts the workloads recorded there.
    ///
    /// A recorded process that is still alive with the recorded start
    /// time is watched again. One that is gone is reported TERMINATED
    /// with reason `ContainerStatusUnknown`, because its exit code was
    /// never seen. A workload whose init containers were still running
    /// fails with reason `RunnerRestarted`, because the plan to start its
    /// main container lived only in the old runner's memory. Workloads that
    /// stopped more than [`LOG_RETENTION`] ago are deleted.
    ///
    /// `agyn_executable` is the program run for a container whose argv[0]
    /// is `agyn`. Must be called within a Tokio runtime, which runs the
    /// process watchers.
    pub fn new(
        dir: impl Into<PathBuf>,
        runner_id: impl Into<String>,
        version: impl Into<String>,
        agyn_executable: impl Into<PathBuf>,
    ) -> Result<Self> {
        let settings = Settings {
            dir: dir.into(),
            runner_id: runner_id.into(),
            version: version.into(),
            agyn_executable: agyn_executable.into(),
            path_env: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_string()),
        };
        for sub in ["workloads", "volumes"] {
            let path = settings.dir.join(sub);
            process::create_private_dir(&path).map_err(|error| {
                Error::unavailable(format!("failed to create {}: {error}", path.display()))
            })?;
        }
        let runner = Self {
            settings,
            workloads: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        };
        runner.adopt_all()?;
        Ok(runner)
    }

    fn workloads_dir(&self) -> PathBuf {
        self.settings.dir.join("workloads")
    }

    fn workload(&self, workload_id: &str) -> Option<Arc<Workload>> {
        lock(&self.workloads).get(workload_id).cloned()
    }

    fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Reads every manifest under `workloads/` and adopts what still runs.
    fn adopt_all(&self) -> Result<()> {
        let dir = self.workloads_dir();
        let entries = std::fs::read_dir(&dir).map_err(|error| {
            Error::unavailable(format!("failed to read {}: {error}", dir.display()))
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let manifest = match Manifest::read(&path) {
                Ok(manifest) => manifest,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "Skipped a workload directory without a readable manifest");
                    continue;
                }
            };
            if is_expired(&manifest) {
                tracing::info!(workload_id = %manifest.workload_id, "Deleting a workload stopped longer than the log retention");
                if let Err(error) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(workload_id = %manifest.workload_id, %error, "Failed to delete an expired workload");
                }
                continue;
            }
            let workload_id = manifest.workload_id.clone();
            let workload = Arc::new(Workload::new(path, manifest));
            self.adopt(&workload);
            lock(&self.workloads).insert(workload_id, workload);
        }
        Ok(())
    }

    fn adopt(&self, workload: &Arc<Workload>) {
        let now = agyn_core::time::now_micros();
        let adopted = workload.update(|manifest| {
            let mut adopted = Vec::new();
            for container in &mut manifest.containers {
                if !container.is_running() {
                    continue;
                }
                let alive = container
                    .pid
                    .is_some_and(|pid| process::is_same_process(pid, container.process_start_ticks));
                if alive {
                    adopted.push((
                        container.name.clone(),
                        container.pid.unwrap_or_default(),
                        container.process_start_ticks,
                    ));
                } else {
                    container.state = ContainerState::Terminated {
                        exit_code: -1,
                        reason: STATUS_UNKNOWN.to_string(),
                        message: "the process ended while no runner watched it, so its exit code is unknown".to_string(),
                    };
                    container.finished_at = Some(now);
                }
            }
            let initializing = manifest
                .main()
                .is_some_and(|main| matches!(main.state, ContainerState::Waiting { .. }));
            if initializing && !manifest.stopped && manifest.failure.is_none() {
                manifest.failure = Some(manifest::Failure {
                    reason: "RunnerRestarted".to_string(),
                    message: "the runner restarted before the main container started; \
                              remove the workload and start it again"
                        .to_string(),
                });
            }
            adopted
        });
        for (name, pid, ticks) in adopted {
            tracing::info!(workload_id = %workload.snapshot().workload_id, container = %name, pid, "Adopted a running container");
            let workload = workload.clone();
            self.spawn_task(async move {
                process::wait_adopted(pid, ticks).await;
                workload.update(|manifest| {
                    if let Some(container) = manifest.container_mut(&name) {
                        container.state = ContainerState::Terminated {
                            exit_code: -1,
                            reason: STATUS_UNKNOWN.to_string(),
                            message: "the process was adopted after a runner restart, so its exit code is unknown".to_string(),
                        };
                        container.finished_at = Some(agyn_core::time::now_micros());
                    }
                });
            });
        }
    }

    /// Deletes the workloads that stopped more than [`LOG_RETENTION`] ago.
    fn prune_expired(&self) {
        let mut workloads = lock(&self.workloads);
        let expired: Vec<String> = workloads
            .iter()
            .filter(|(_, workload)| is_expired(&workload.snapshot()))
            .map(|(workload_id, _)| workload_id.clone())
            .collect();
        for workload_id in expired {
            let Some(workload) = workloads.remove(&workload_id) else {
                continue;
            };
            workload.removed.store(true, Ordering::SeqCst);
            tracing::info!(%workload_id, "Deleting a workload stopped longer than the log retention");
            if let Err(error) = std::fs::remove_dir_all(&workload.dir) {
                tracing::warn!(%workload_id, %error, "Failed to delete an expired workload");
            }
        }
    }

    fn start(&self, request: pb::StartWorkloadRequest) -> Result<pb::StartWorkloadResponse> {
        if let Some(capability) = request.capabilities.first() {
            return Err(Error::failed_precondition(format!(
                "capability {capability:?} is not offered; the local runner offers no capabilities"
            )));
        }
        spec::check_name("workload_id", &request.workload_id)?;
        self.prune_expired();

        let mut workloads = lock(&self.workloads);
        if let Some(existing) = workloads.get(&request.workload_id) {
            return Ok(start_response(&existing.snapshot()));
        }

        let dir = self.workloads_dir().join(&request.workload_id);
        let layout = spec::Layout {
            runner_dir: &self.settings.dir,
            workload_dir: &dir,
            agyn_executable: &self.settings.agyn_executable,
            path_env: &self.settings.path_env,
        };
        let plan = spec::plan(&request, &layout)?;
        if let Err(error) = supervise::prepare(&plan, &layout, &request) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::unavailable(format!(
                "failed to prepare the directory of workload {}: {error}",
                request.workload_id
            )));
        }

        let workload = Arc::new(Workload::new(dir, plan.manifest));
        workload.update(|_| ());
        tracing::info!(
            workload_id = %request.workload_id,
            containers = plan.launches.len(),
            "Starting a workload"
        );
        let response = start_response(&workload.snapshot());
        workloads.insert(request.workload_id.clone(), workload.clone());
        drop(workloads);
        self.spawn_task(supervise::run(workload, plan.launches));
        Ok(response)
    }

    async fn stop(&self, workload_id: &str, timeout_sec: i32) -> Result<()> {
        if timeout_sec < 0 {
            return Err(Error::invalid_field("timeout_sec", "must not be negative"));
        }
        let Some(workload) = self.workload(workload_id) else {
            return Ok(());
        };
        let _lifecycle = workload.lifecycle.lock().await;
        stop_locked(&workload, Duration::from_secs(timeout_sec as u64)).await;
        Ok(())
    }

    async fn remove(&self, request: pb::RemoveWorkloadRequest) -> Result<()> {
        let Some(workload) = self.workload(&request.workload_id) else {
            return Ok(());
        };
        let _lifecycle = workload.lifecycle.lock().await;
        let named: Vec<String> = workload
            .snapshot()
            .volumes
            .into_iter()
            .filter(|volume| volume.kind == VolumeKind::Named)
            .map(|volume| volume.persistent_name)
            .collect();
        if request.remove_volumes && !request.force {
            self.check_volumes_unused(&named, &request.workload_id)?;
        }

        if workload.snapshot().any_running() {
            if !request.force {
                return Err(Error::failed_precondition(format!(
                    "workload {} has running containers; stop it first or set force",
                    request.workload_id
                )));
            }
            stop_locked(&workload, Duration::ZERO).await;
        }

        workload.removed.store(true, Ordering::SeqCst);
        lock(&self.workloads).remove(&request.workload_id);
        if let Err(error) = std::fs::remove_dir_all(&workload.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::unavailable(format!(
                "failed to delete the directory of workload {}: {error}",
                request.workload_id
            )));
        }
        if request.remove_volumes {
            for name in &named {
                volumes::remove(&self.settings.dir, name)?;
            }
        }
        tracing::info!(workload_id = %request.workload_id, remove_volumes = request.remove_volumes, "Removed a workload");
        Ok(())
    }

    /// Rejects the removal of named volumes that a running workload other
    /// than `workload_id` mounts.
    fn check_volumes_unused(&self, names: &[String], workload_id: &str) -> Result<()> {
        for name in names {
            if let Some(user) = self.volume_user(name, Some(workload_id)) {
                return Err(Error::failed_precondition(format!(
                    "volume {name} is also mounted by running workload {user}; \
                     stop that workload first or set force"
                )));
            }
        }
        Ok(())
    }

    fn inspect(&self, workload_id: &str) -> Result<pb::InspectWorkloadResponse> {
        let workload = self
            .workload(workload_id)
            .ok_or_else(|| Error::not_found("workload", workload_id))?;
        let manifest = workload.snapshot();
        Ok(pb::InspectWorkloadResponse {
            instance_id: manifest.instance_id.clone(),
            status: manifest.status().into(),
            containers: manifest.containers_proto(),
            labels: manifest.labels.clone().into_iter().collect(),
            ..Default::default()
        })
    }

    fn list(&self) -> Vec<pb::WorkloadSummary> {
        let workloads: Vec<Arc<Workload>> = lock(&self.workloads).values().cloned().collect();
        let mut summaries: Vec<pb::WorkloadSummary> = workloads
            .iter()
            .map(|workload| {
                let manifest = workload.snapshot();
                pb::WorkloadSummary {
                    workload_id: manifest.workload_id.clone(),
                    instance_id: manifest.instance_id.clone(),
                    status: manifest.status().into(),
                    ..Default::default()
                }
            })
            .collect();
        summaries.sort_by(|a, b| a.workload_id.cmp(&b.workload_id));
        summaries
    }

    /// Returns the id of a workload other than `except` that has a running
    /// container and mounts the named volume.
    fn volume_user(&self, persistent_name: &str, except: Option<&str>) -> Option<String> {
        let workloads: Vec<Arc<Workload>> = lock(&self.workloads).values().cloned().collect();
        workloads.iter().find_map(|workload| {
            let manifest = workload.snapshot();
            let uses = Some(manifest.workload_id.as_str()) != except
                && manifest.any_running()
                && manifest
                    .volumes
                    .iter()
                    .any(|volume| volume.persistent_name == persistent_name);
            uses.then_some(manifest.workload_id)
        })
    }

    fn remove_volume(&self, request: &pb::RemoveVolumeRequest) -> Result<()> {
        spec::check_name("persistent_name", &request.persistent_name)?;
        if !volumes::exists(&self.settings.dir, &request.persistent_name) {
            return Ok(());
        }
        if !request.force
            && let Some(user) = self.volume_user(&request.persistent_name, None)
        {
            return Err(Error::failed_precondition(format!(
                "volume {} is mounted by running workload {user}; stop the workload first or set force",
                request.persistent_name
            )));
        }
        volumes::remove(&self.settings.dir, &request.persistent_name)
    }

    async fn logs(&self, request: pb::StreamWorkloadLogsRequest) -> Result<LogStream> {
        if request.container_name.is_empty() {
            return Err(Error::invalid_field("container_name", "is required"));
        }
        if request.tail_lines < 0 {
            return Err(Error::invalid_field("tail_lines", "must not be negative"));
        }
        let workload = self
            .workload(&request.workload_id)
            .ok_or_else(|| Error::not_found("workload", &request.workload_id))?;
        if workload
            .snapshot()
            .container(&request.container_name)
            .is_none()
        {
            return Err(Error::not_found("container", &request.container_name));
        }
        let path = manifest::log_file(&workload.dir, &request.container_name);
        let tail_lines = match request.tail_lines {
            0 => logs::DEFAULT_TAIL_LINES,
            lines => lines as usize,
        };
        logs::stream(
            workload,
            request.container_name,
            path,
            request.follow,
            tail_lines,
        )
        .await
    }
}

fn start_response(manifest: &Manifest) -> pb::StartWorkloadResponse {
    pb::StartWorkloadResponse {
        instance_id: manifest.instance_id.clone(),
        status: manifest.status().into(),
        containers: manifest.containers_proto(),
        failure: manifest.failure_proto(),
        ..Default::default()
    }
}

/// Returns whether a workload has no running container and its last
/// container finished (or the workload was created, when none ran) more
/// than [`LOG_RETENTION`] ago.
fn is_expired(manifest: &Manifest) -> bool {
    if manifest.any_running() {
        return false;
    }
    let last = manifest
        .containers
        .iter()
        .filter_map(|container| container.finished_at)
        .max()
        .unwrap_or(manifest.created_at);
    let retention = LOG_RETENTION.as_micros() as i64;
    agyn_core::time::now_micros() - last > retention
}

/// Stops every container of `workload` and deletes its ephemeral volumes
/// and inline files. The caller holds the workload's lifecycle lock.
async fn stop_locked(workload: &Workload, timeout: Duration) {
    let leaders: Vec<i32> = workload.update(|manifest| {
        manifest.stopped = true;
        manifest
            .containers
            .iter()
            .filter(|container| container.is_running())
            .filter_map(|container| container.pid)
            .collect()
    });
    let workload_id = workload.snapshot().workload_id;
    tracing::info!(%workload_id, processes = leaders.len(), timeout_sec = timeout.as_secs(), "Stopping a workload");
    let first_signal = if timeout.is_zero() {
        rustix::process::Signal::KILL
    } else {
        rustix::process::Signal::TERM
    };
    for &pid in &leaders {
        process::signal_group(pid, first_signal);
    }
    if !workload.wait_all_exited(timeout).await {
        let survivors: Vec<i32> = workload
            .snapshot()
            .containers
            .iter()
            .filter(|container| container.is_running())
            .filter_map(|container| container.pid)
            .collect();
        tracing::info!(%workload_id, processes = survivors.len(), "Sending SIGKILL to containers that outlived the stop timeout");
        for pid in survivors {
            process::signal_group(pid, rustix::process::Signal::KILL);
        }
        if !workload.wait_all_exited(KILL_WAIT).await {
            tracing::warn!(%workload_id, "Containers still run after SIGKILL");
        }
    }
    supervise::clean_up(&workload.snapshot());
}

impl Runner for LocalRunner {
    fn ready(&self) -> RunnerFuture<'_, pb::ReadyResponse> {
        Box::pin(async move {
            Ok(pb::ReadyResponse {
                status: "ok".to_string(),
                runner_id: self.settings.runner_id.clone(),
                version: self.settings.version.clone(),
                capabilities: Vec::new(),
                ..Default::default()
            })
        })
    }

    fn start_workload(
        &self,
        request: pb::StartWorkloadRequest,
    ) -> RunnerFuture<'_, pb::StartWorkloadResponse> {
        Box::pin(async move { self.start(request) })
    }

    fn stop_workload(&self, request: pb::StopWorkloadRequest) -> RunnerFuture<'_, ()> {
        Box::pin(async move { self.stop(&request.workload_id, request.timeout_sec).await })
    }

    fn remove_workload(&self, request: pb::RemoveWorkloadRequest) -> RunnerFuture<'_, ()> {
        Box::pin(self.remove(request))
    }

    fn inspect_workload(
        &self,
        request: pb::InspectWorkloadRequest,
    ) -> RunnerFuture<'_, pb::InspectWorkloadResponse> {
        Box::pin(async move { self.inspect(&request.workload_id) })
    }

    fn list_workloads(&self) -> RunnerFuture<'_, Vec<pb::WorkloadSummary>> {
        Box::pin(async move { Ok(self.list()) })
    }

    fn list_volumes(&self) -> RunnerFuture<'_, Vec<pb::VolumeSummary>> {
        Box::pin(async move { volumes::list(&self.settings.dir) })
    }

    fn remove_volume(&self, request: pb::RemoveVolumeRequest) -> RunnerFuture<'_, ()> {
        Box::pin(async move { self.remove_volume(&request) })
    }

    fn stream_workload_logs(
        &self,
        request: pb::StreamWorkloadLogsRequest,
    ) -> RunnerFuture<'_, LogStream> {
        Box::pin(self.logs(request))
    }
}
