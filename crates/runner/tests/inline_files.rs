//! Inline files under the mount path of a volume, as the orchestrator
//! places the workload certificate and the init scripts under the
//! `agyn-bin` volume.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::error::Code;
use agyn_runner::{LocalRunner, Runner};
use support::*;

use pb::RunnerWorkloadStatus as Status;

/// A main container that exits 0 on SIGTERM.
const GRACEFUL: &str = "trap 'exit 0' TERM; while true; do sleep 0.1; done";

fn open(dir: &std::path::Path) -> LocalRunner {
    LocalRunner::new(dir, "runner-test", "1.2.3", dir.join("fake-agyn")).unwrap()
}

#[tokio::test]
async fn inline_file_lands_in_ephemeral_volume() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell(
        "main",
        &format!(
            "cat \"$SCRIPT\" > \"$AGYN_ROOT/seen\"; ls \"$TOOLS\" > \"$AGYN_ROOT/listed\"; {GRACEFUL}"
        ),
    );
    main.mounts = vec![mount("agyn-bin", "/agyn-bin")];
    main.inline_file_paths = vec!["/agyn-bin/init/main/001.sh".to_string()];
    main.env = vec![
        env("SCRIPT", "/agyn-bin/init/main/001.sh"),
        env("TOOLS", "/agyn-bin"),
    ];
    let mut request = workload("wl-bin", main);
    request.volumes = vec![ephemeral("agyn-bin")];
    request.inline_files.insert(
        "/agyn-bin/init/main/001.sh".to_string(),
        b"echo from init".to_vec(),
    );
    request
        .inline_files
        .insert("/etc/agyn/outside".to_string(), b"outside".to_vec());
    runner.start_workload(request).await.unwrap();
    wait_status(&runner, "wl-bin", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;

    let workload = workload_dir(dir.path(), "wl-bin");
    let in_volume = workload.join("volumes/agyn-bin/init/main/001.sh");
    let metadata = std::fs::metadata(&in_volume).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(&in_volume).unwrap(), b"echo from init");
    let outside = workload.join("root/etc/agyn/outside");
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside");

    let root = workload.join("root");
    wait_for(&runner, "wl-bin", "the container to read the file", |_| {
        root.join("listed").exists()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(root.join("seen")).unwrap(),
        "echo from init"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("listed")).unwrap(),
        "init\n"
    );

    stop(&runner, "wl-bin", 5).await;
    assert!(!in_volume.exists());
    assert!(!workload.join("volumes/agyn-bin").exists());
    assert!(!outside.exists());
}

#[tokio::test]
async fn inline_file_in_named_volume_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", "true");
    main.mounts = vec![mount("data", "/data")];
    let mut request = workload("wl-named", main);
    request.volumes = vec![named("data", "agyn-vol-data", "vol-data")];
    request
        .inline_files
        .insert("/data/config.toml".to_string(), b"x".to_vec());
    let error = runner.start_workload(request).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error
            .message()
            .contains("inline_files[\"/data/config.toml\"]"),
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("named volume"),
        "{}",
        error.message()
    );
    assert!(runner.list_workloads().await.unwrap().is_empty());
    assert!(!dir.path().join("volumes/agyn-vol-data").exists());
}

#[tokio::test]
async fn inline_file_at_mount_path_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", "true");
    main.mounts = vec![mount("agyn-bin", "/agyn-bin")];
    let mut request = workload("wl-at-mount", main);
    request.volumes = vec![ephemeral("agyn-bin")];
    request
        .inline_files
        .insert("/agyn-bin".to_string(), b"x".to_vec());
    let error = runner.start_workload(request).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("is a mount path"),
        "{}",
        error.message()
    );
}
