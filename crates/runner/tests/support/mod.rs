//! Builders of workload specs and waits shared by the runner tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_runner::Runner;
use futures::StreamExt as _;

/// Maximum wait for a state the test expects.
pub const WAIT: Duration = Duration::from_secs(15);

/// Builds a container that runs `script` with `/bin/sh -c`.
pub fn shell(name: &str, script: &str) -> pb::ContainerSpec {
    pb::ContainerSpec {
        name: name.to_string(),
        image: "example.com/unused:1".to_string(),
        command: vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()],
        ..Default::default()
    }
}

pub fn env(name: &str, value: &str) -> pb::EnvVar {
    pb::EnvVar {
        name: name.to_string(),
        value: value.to_string(),
        ..Default::default()
    }
}

pub fn mount(volume: &str, path: &str) -> pb::Mount {
    pb::Mount {
        volume: volume.to_string(),
        mount_path: path.to_string(),
        ..Default::default()
    }
}

pub fn ephemeral(name: &str) -> pb::VolumeSpec {
    pb::VolumeSpec {
        name: name.to_string(),
        kind: pb::VolumeKind::VOLUME_KIND_EPHEMERAL.into(),
        ..Default::default()
    }
}

pub fn named(name: &str, persistent_name: &str, volume_id: &str) -> pb::VolumeSpec {
    pb::VolumeSpec {
        name: name.to_string(),
        kind: pb::VolumeKind::VOLUME_KIND_NAMED.into(),
        persistent_name: persistent_name.to_string(),
        labels: [("agyn.volume_id".to_string(), volume_id.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Builds a request with only a main container.
pub fn workload(workload_id: &str, main: pb::ContainerSpec) -> pb::StartWorkloadRequest {
    pb::StartWorkloadRequest {
        workload_id: workload_id.to_string(),
        labels: [("agyn.workload_id".to_string(), workload_id.to_string())]
            .into_iter()
            .collect(),
        main: main.into(),
        ..Default::default()
    }
}

pub async fn inspect(runner: &dyn Runner, workload_id: &str) -> pb::InspectWorkloadResponse {
    runner
        .inspect_workload(pb::InspectWorkloadRequest {
            workload_id: workload_id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
}

pub fn container<'a>(
    response: &'a pb::InspectWorkloadResponse,
    name: &str,
) -> &'a pb::RunnerContainer {
    response
        .containers
        .iter()
        .find(|container| container.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {response:?}"))
}

/// Polls InspectWorkload until `done` holds, and returns that response.
pub async fn wait_for(
    runner: &dyn Runner,
    workload_id: &str,
    description: &str,
    done: impl Fn(&pb::InspectWorkloadResponse) -> bool,
) -> pb::InspectWorkloadResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = inspect(runner, workload_id).await;
        if done(&response) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {description}: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_status(
    runner: &dyn Runner,
    workload_id: &str,
    status: pb::RunnerWorkloadStatus,
) -> pb::InspectWorkloadResponse {
    wait_for(runner, workload_id, &format!("{status:?}"), |response| {
        response.status.as_known() == Some(status)
    })
    .await
}

/// Waits until container `name` is TERMINATED.
pub async fn wait_terminated(
    runner: &dyn Runner,
    workload_id: &str,
    name: &str,
) -> pb::InspectWorkloadResponse {
    wait_for(
        runner,
        workload_id,
        &format!("{name} to terminate"),
        |response| {
            container(response, name).status.as_known()
                == Some(pb::ContainerStatus::CONTAINER_STATUS_TERMINATED)
        },
    )
    .await
}

pub async fn stop(runner: &dyn Runner, workload_id: &str, timeout_sec: i32) {
    runner
        .stop_workload(pb::StopWorkloadRequest {
            workload_id: workload_id.to_string(),
            timeout_sec,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Reads a container's whole log through StreamWorkloadLogs.
pub async fn read_logs(
    runner: &dyn Runner,
    workload_id: &str,
    name: &str,
    follow: bool,
    tail_lines: i32,
) -> String {
    let mut stream = runner
        .stream_workload_logs(pb::StreamWorkloadLogsRequest {
            workload_id: workload_id.to_string(),
            container_name: name.to_string(),
            follow,
            tail_lines,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut output = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("timed out reading logs")
    {
        output.extend_from_slice(&chunk.unwrap().data);
    }
    String::from_utf8(output).unwrap()
}

pub fn workload_dir(runner_dir: &Path, workload_id: &str) -> PathBuf {
    runner_dir.join("workloads").join(workload_id)
}

/// Reads the recorded pid of a container from the manifest.
pub fn recorded_pid(runner_dir: &Path, workload_id: &str, name: &str) -> i32 {
    let manifest =
        std::fs::read(workload_dir(runner_dir, workload_id).join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    manifest["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|container| container["name"] == name)
        .and_then(|container| container["pid"].as_i64())
        .unwrap() as i32
}

/// Returns whether a live, non-zombie process has this pid.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}
