//! `manifest.json`: the record of one workload on disk.
//!
//! The manifest contains the spec without secret values (env variable names
//! but not their values, inline file paths but not their contents), the
//! pids and start times of the processes, and the container states. It is
//! rewritten atomically (a temporary file, then a rename) on every state
//! change, so a runner that starts on the same directory can adopt the
//! processes.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::time::timestamp;
use serde::{Deserialize, Serialize};

/// File name of the manifest inside a workload directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// Returns the path of a container's log file inside a workload directory.
pub(crate) fn log_file(workload_dir: &Path, container: &str) -> PathBuf {
    workload_dir.join("logs").join(format!("{container}.log"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub workload_id: String,
    pub instance_id: String,
    pub labels: BTreeMap<String, String>,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    /// Set by StopWorkload, after which no container starts.
    pub stopped: bool,
    /// The reason the workload could not start or keep running.
    pub failure: Option<Failure>,
    /// Init containers in spec order, then main, then the sidecars.
    pub containers: Vec<ContainerRecord>,
    pub volumes: Vec<VolumeRecord>,
    /// Host port allocated for each declared port name.
    pub ports: BTreeMap<String, u16>,
    /// Host paths of the inline files, which StopWorkload deletes.
    pub inline_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Init,
    Main,
    Sidecar,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub name: String,
    pub role: Role,
    pub image: String,
    /// The argument vector after port substitution and path rewriting.
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    /// Names of the environment variables; the values may be secret and
    /// are never written to disk.
    pub env_names: Vec<String>,
    pub state: ContainerState,
    pub pid: Option<i32>,
    /// Start time of `pid` in clock ticks after boot (field 22 of
    /// `/proc/<pid>/stat`), which distinguishes the process from a later one
    /// that reuses the pid.
    pub process_start_ticks: Option<u64>,
    /// Microseconds since the Unix epoch.
    pub started_at: Option<i64>,
    /// Microseconds since the Unix epoch.
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum ContainerState {
    Waiting {
        reason: String,
    },
    Running,
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum VolumeKind {
    Ephemeral,
    Named,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VolumeRecord {
    pub name: String,
    pub kind: VolumeKind,
    /// Empty for ephemeral volumes.
    pub persistent_name: String,
    pub host_path: PathBuf,
}

impl ContainerRecord {
    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, ContainerState::Terminated { .. })
    }

    pub fn to_proto(&self) -> pb::RunnerContainer {
        let role = match self.role {
            Role::Init => pb::ContainerRole::CONTAINER_ROLE_INIT,
            Role::Main => pb::ContainerRole::CONTAINER_ROLE_MAIN,
            Role::Sidecar => pb::ContainerRole::CONTAINER_ROLE_SIDECAR,
        };
        let (status, reason, message, exit_code) = match &self.state {
            ContainerState::Waiting { reason } => (
                pb::ContainerStatus::CONTAINER_STATUS_WAITING,
                reason.clone(),
                String::new(),
                0,
            ),
            ContainerState::Running => (
                pb::ContainerStatus::CONTAINER_STATUS_RUNNING,
                String::new(),
                String::new(),
                0,
            ),
            ContainerState::Terminated {
                exit_code,
                reason,
                message,
            } => (
                pb::ContainerStatus::CONTAINER_STATUS_TERMINATED,
                reason.clone(),
                message.clone(),
                *exit_code,
            ),
        };
        pb::RunnerContainer {
            name: self.name.clone(),
            role: role.into(),
            image: self.image.clone(),
            status: status.into(),
            reason,
            message,
            exit_code,
            restart_count: 0,
            started_at: self.started_at.map(timestamp).into(),
            finished_at: self.finished_at.map(timestamp).into(),
            ..Default::default()
        }
    }
}

impl Manifest {
    /// Derives the workload status from the stop flag, the failure and the
    /// container states.
    pub fn status(&self) -> pb::RunnerWorkloadStatus {
        use pb::RunnerWorkloadStatus as Status;
        if self.stopped {
            return Status::RUNNER_WORKLOAD_STATUS_STOPPED;
        }
        if self.failure.is_some() {
            return Status::RUNNER_WORKLOAD_STATUS_FAILED;
        }
        let Some(main) = self.main() else {
            return Status::RUNNER_WORKLOAD_STATUS_FAILED;
        };
        match &main.state {
            ContainerState::Waiting { .. } => Status::RUNNER_WORKLOAD_STATUS_STARTING,
            ContainerState::Running => Status::RUNNER_WORKLOAD_STATUS_RUNNING,
            ContainerState::Terminated { exit_code: 0, .. } => {
                Status::RUNNER_WORKLOAD_STATUS_STOPPED
            }
            ContainerState::Terminated { .. } => Status::RUNNER_WORKLOAD_STATUS_FAILED,
        }
    }

    pub fn main(&self) -> Option<&ContainerRecord> {
        self.containers
            .iter()
            .find(|container| container.role == Role::Main)
    }

    pub fn container(&self, name: &str) -> Option<&ContainerRecord> {
        self.containers
            .iter()
            .find(|container| container.name == name)
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.containers
            .iter_mut()
            .find(|container| container.name == name)
    }

    pub fn containers_proto(&self) -> Vec<pb::RunnerContainer> {
        self.containers
            .iter()
            .map(ContainerRecord::to_proto)
            .collect()
    }

    pub fn any_running(&self) -> bool {
        self.containers.iter().any(ContainerRecord::is_running)
    }

    pub fn failure_proto(
        &self,
    ) -> buffa::MessageField<pb::WorkloadFailure, buffa::Inline<pb::WorkloadFailure>> {
        match &self.failure {
            Some(failure) => pb::WorkloadFailure {
                reason: failure.reason.clone(),
                message: failure.message.clone(),
                ..Default::default()
            }
            .into(),
            None => buffa::MessageField::none(),
        }
    }

    /// Reads `<workload dir>/manifest.json`.
    pub fn read(workload_dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(workload_dir.join(MANIFEST_FILE))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Replaces `<workload dir>/manifest.json` atomically.
    pub fn write(&self, workload_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let temporary = workload_dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, workload_dir.join(MANIFEST_FILE))
    }
}
