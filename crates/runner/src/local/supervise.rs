//! The life of a started workload: preparing its directory, running the
//! init containers one after another, then main and the sidecars, and
//! recording every exit.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::ExitStatus;
use std::sync::Arc;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::time::now_micros;

use super::Workload;
use super::manifest::{ContainerState, Failure, Manifest, Role, VolumeKind};
use super::process::{self, Launch, Spawned, create_private_dir};
use super::spec::{Layout, Plan};
use super::volumes;

/// Exit code reported for a container whose process could not be
/// started, as Kubernetes reports for `StartError`.
const START_ERROR_EXIT_CODE: i32 = 128;

/// Creates the workload directory, the volumes, the mount symlinks, the
/// inline files (mode 0600) and an empty log file per container.
pub(crate) fn prepare(
    plan: &Plan,
    layout: &Layout<'_>,
    request: &pb::StartWorkloadRequest,
) -> std::io::Result<()> {
    let root = layout.root();
    create_private_dir(&root.join("home"))?;
    create_private_dir(&layout.logs())?;
    for container in &plan.manifest.containers {
        let path = super::manifest::log_file(layout.workload_dir, &container.name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
    }

    for volume in &plan.manifest.volumes {
        match volume.kind {
            VolumeKind::Ephemeral => create_private_dir(&volume.host_path)?,
            VolumeKind::Named => {
                let labels: BTreeMap<String, String> = request
                    .volumes
                    .iter()
                    .find(|spec| spec.name == volume.name)
                    .map(|spec| {
                        spec.labels
                            .iter()
                            .map(|(key, value)| (key.clone(), value.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                volumes::ensure(layout.runner_dir, &volume.persistent_name, &labels)?;
            }
        }
    }

    for (link, target) in &plan.links {
        if let Some(parent) = link.parent() {
            create_private_dir(parent)?;
        }
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(link)?;
        }
        std::os::unix::fs::symlink(target, link)?;
    }

    for (path, contents) in &plan.inline_files {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents)?;
    }
    Ok(())
}

/// Deletes the ephemeral volumes and the inline files of a stopped
/// workload. Named volumes and logs stay.
pub(crate) fn clean_up(manifest: &Manifest) {
    let ephemeral = manifest
        .volumes
        .iter()
        .filter(|volume| volume.kind == VolumeKind::Ephemeral)
        .map(|volume| (volume.host_path.as_path(), true));
    let inline = manifest
        .inline_files
        .iter()
        .map(|path| (path.as_path(), false));
    for (path, is_dir) in ephemeral.chain(inline) {
        let result = if is_dir {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                workload_id = %manifest.workload_id,
                path = %path.display(),
                %error,
                "Failed to delete a file of a stopped workload"
            ),
        }
    }
}

/// Runs the init containers in order, each to completion, then starts main
/// and the sidecars and records their exits. A failed init container ends
/// the workload before main starts.
pub(crate) async fn run(workload: Arc<Workload>, launches: Vec<Launch>) {
    let roles: Vec<Role> = workload
        .snapshot()
        .containers
        .iter()
        .map(|container| container.role)
        .collect();
    let mut index = 0;
    while index < roles.len() && roles[index] == Role::Init {
        let Some(mut spawned) = start_container(&workload, index, &launches[index]) else {
            return;
        };
        let status = spawned.child.wait().await;
        let exit_code = record_exit(&workload, index, status);
        if exit_code != 0 {
            workload.update(|manifest| {
                if !manifest.stopped {
                    let name = &manifest.containers[index].name;
                    manifest.failure = Some(Failure {
                        reason: "InitContainerFailed".to_string(),
                        message: format!("init container {name} exited with code {exit_code}"),
                    });
                }
            });
            return;
        }
        index += 1;
    }

    let mut exits = Vec::new();
    for (offset, launch) in launches[index..].iter().enumerate() {
        let container = index + offset;
        if let Some(mut spawned) = start_container(&workload, container, launch) {
            let workload = workload.clone();
            exits.push(async move {
                let status = spawned.child.wait().await;
                record_exit(&workload, container, status);
            });
        }
    }
    futures::future::join_all(exits).await;
}

/// Starts container `index` unless the workload was stopped. The spawn
/// runs under the state lock, so a concurrent stop either signals the new
/// process or keeps it from starting.
fn start_container(workload: &Workload, index: usize, launch: &Launch) -> Option<Spawned> {
    workload.update(|manifest| {
        if manifest.stopped {
            return None;
        }
        let workload_id = manifest.workload_id.clone();
        let container = &mut manifest.containers[index];
        let now = now_micros();
        match process::spawn(launch) {
            Ok(spawned) => {
                tracing::info!(%workload_id, container = %container.name, pid = spawned.pid, "Started a container");
                container.state = ContainerState::Running;
                container.pid = Some(spawned.pid);
                container.process_start_ticks = spawned.start_ticks;
                container.started_at = Some(now);
                Some(spawned)
            }
            Err(error) => {
                let message = format!("failed to start {}: {error}", launch.program.display());
                tracing::warn!(%workload_id, container = %container.name, %error, "Failed to start a container");
                container.state = ContainerState::Terminated {
                    exit_code: START_ERROR_EXIT_CODE,
                    reason: "StartError".to_string(),
                    message: message.clone(),
                };
                container.finished_at = Some(now);
                manifest.failure.get_or_insert(Failure {
                    reason: "StartError".to_string(),
                    message,
                });
                None
            }
        }
    })
}

/// Records the exit of container `index` and returns its exit code.
fn record_exit(workload: &Workload, index: usize, status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    let (exit_code, message) = match status {
        Ok(status) => {
            let message = status
                .signal()
                .map(|signal| format!("killed by signal {signal}"))
                .unwrap_or_default();
            (process::exit_code(status), message)
        }
        Err(error) => (-1, format!("failed to wait for the process: {error}")),
    };
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    workload.update(|manifest| {
        let workload_id = manifest.workload_id.clone();
        let container = &mut manifest.containers[index];
        tracing::info!(%workload_id, container = %container.name, exit_code, "Container exited");
        container.state = ContainerState::Terminated {
            exit_code,
            reason: reason.to_string(),
            message,
        };
        container.finished_at = Some(now_micros());
    });
    exit_code
}
