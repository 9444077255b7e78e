//! LocalRunner against real `/bin/sh` processes in a temporary runner
//! directory.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::error::Code;
use agyn_runner::{LocalRunner, Runner};
use support::*;

use pb::ContainerStatus::{
    CONTAINER_STATUS_RUNNING as RUNNING, CONTAINER_STATUS_TERMINATED as TERMINATED,
    CONTAINER_STATUS_WAITING as WAITING,
};
use pb::RunnerWorkloadStatus as Status;

/// A main container that exits 0 on SIGTERM.
const GRACEFUL: &str = "trap 'exit 0' TERM; while true; do sleep 0.1; done";

/// A main container that ignores SIGTERM, as do the `sleep` processes it
/// starts, because ignored signals are inherited.
const STUBBORN: &str = "trap '' TERM; while true; do sleep 0.1; done";

fn open(dir: &std::path::Path) -> LocalRunner {
    LocalRunner::new(dir, "runner-test", "1.2.3", dir.join("fake-agyn")).unwrap()
}

#[tokio::test]
async fn ready_reports_identity() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let ready = runner.ready().await.unwrap();
    assert_eq!(ready.status, "ok");
    assert_eq!(ready.runner_id, "runner-test");
    assert_eq!(ready.version, "1.2.3");
    assert!(ready.capabilities.is_empty());
}

#[tokio::test]
async fn start_inspect_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let started = runner
        .start_workload(workload("wl-graceful", shell("main", GRACEFUL)))
        .await
        .unwrap();
    assert!(!started.instance_id.is_empty());

    let running = wait_status(
        &runner,
        "wl-graceful",
        Status::RUNNER_WORKLOAD_STATUS_RUNNING,
    )
    .await;
    assert_eq!(running.instance_id, started.instance_id);
    assert_eq!(
        running.labels.get("agyn.workload_id").map(String::as_str),
        Some("wl-graceful")
    );
    let main = container(&running, "main");
    assert_eq!(main.status.as_known(), Some(RUNNING));
    assert_eq!(main.image, "example.com/unused:1");
    assert_eq!(
        main.role.as_known(),
        Some(pb::ContainerRole::CONTAINER_ROLE_MAIN)
    );
    assert!(main.started_at.is_set());
    assert!(!main.finished_at.is_set());
    let pid = recorded_pid(dir.path(), "wl-graceful", "main");
    assert!(process_alive(pid));

    let begun = Instant::now();
    stop(&runner, "wl-graceful", 10).await;
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    let stopped = inspect(&runner, "wl-graceful").await;
    assert_eq!(
        stopped.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_STOPPED)
    );
    let main = container(&stopped, "main");
    assert_eq!(main.status.as_known(), Some(TERMINATED));
    assert_eq!(main.exit_code, 0);
    assert_eq!(main.reason, "Completed");
    assert!(main.finished_at.is_set());
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn stop_kills_term_ignoring_process() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    runner
        .start_workload(workload("wl-stubborn", shell("main", STUBBORN)))
        .await
        .unwrap();
    wait_status(
        &runner,
        "wl-stubborn",
        Status::RUNNER_WORKLOAD_STATUS_RUNNING,
    )
    .await;
    let pid = recorded_pid(dir.path(), "wl-stubborn", "main");

    let begun = Instant::now();
    stop(&runner, "wl-stubborn", 1).await;
    let elapsed = begun.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    let stopped = inspect(&runner, "wl-stubborn").await;
    let main = container(&stopped, "main");
    assert_eq!(main.status.as_known(), Some(TERMINATED));
    assert_eq!(main.exit_code, 128 + 9);
    assert_eq!(main.reason, "Error");
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn stop_checks_timeout_and_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let error = runner
        .stop_workload(pb::StopWorkloadRequest {
            workload_id: "wl-any".to_string(),
            timeout_sec: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    stop(&runner, "wl-unknown", 0).await;
    runner
        .remove_workload(pb::RemoveWorkloadRequest {
            workload_id: "wl-unknown".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let error = runner
        .inspect_workload(pb::InspectWorkloadRequest {
            workload_id: "wl-unknown".to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
}

#[tokio::test]
async fn failed_init_blocks_main() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut request = workload("wl-init", shell("main", "touch \"$AGYN_ROOT/main-ran\""));
    request.init_containers = vec![
        shell("first", "sleep 0.3; touch \"$AGYN_ROOT/first-ran\""),
        shell("second", "exit 3"),
    ];
    let started = runner.start_workload(request).await.unwrap();
    assert_eq!(
        started.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_STARTING)
    );
    let main = started
        .containers
        .iter()
        .find(|c| c.name == "main")
        .unwrap();
    assert_eq!(main.status.as_known(), Some(WAITING));
    assert_eq!(main.reason, "PodInitializing");

    let failed = wait_status(&runner, "wl-init", Status::RUNNER_WORKLOAD_STATUS_FAILED).await;
    let first = container(&failed, "first");
    assert_eq!(first.status.as_known(), Some(TERMINATED));
    assert_eq!(first.reason, "Completed");
    assert_eq!(
        first.role.as_known(),
        Some(pb::ContainerRole::CONTAINER_ROLE_INIT)
    );
    let second = container(&failed, "second");
    assert_eq!(second.status.as_known(), Some(TERMINATED));
    assert_eq!(second.reason, "Error");
    assert_eq!(second.exit_code, 3);
    let main = container(&failed, "main");
    assert_eq!(main.status.as_known(), Some(WAITING));
    assert!(!main.started_at.is_set());

    let root = workload_dir(dir.path(), "wl-init").join("root");
    assert!(root.join("first-ran").exists());
    assert!(!root.join("main-ran").exists());
}

#[tokio::test]
async fn init_containers_run_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut request = workload(
        "wl-order",
        shell("main", "cat \"$AGYN_ROOT/order\"; echo main"),
    );
    request.init_containers = vec![
        shell("one", "sleep 0.2; echo one >> \"$AGYN_ROOT/order\""),
        shell("two", "echo two >> \"$AGYN_ROOT/order\""),
    ];
    runner.start_workload(request).await.unwrap();
    let done = wait_terminated(&runner, "wl-order", "main").await;
    assert_eq!(
        done.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_STOPPED)
    );
    assert_eq!(container(&done, "main").reason, "Completed");
    let log = read_logs(&runner, "wl-order", "main", false, 0).await;
    assert_eq!(log, "one\ntwo\nmain\n");
}

#[tokio::test]
async fn port_placeholders_become_free_ports() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", "echo \"$HTTP_PORT $1\"");
    main.command.push("sh".to_string());
    main.command.push("--mcp=${port:mcp}".to_string());
    main.env = vec![env("HTTP_PORT", "${port:http}")];
    let mut request = workload("wl-ports", main);
    request.ports = ["http", "mcp"]
        .into_iter()
        .map(|name| pb::PortSpec {
            name: name.to_string(),
            preferred: 8080,
            ..Default::default()
        })
        .collect();
    runner.start_workload(request).await.unwrap();
    wait_terminated(&runner, "wl-ports", "main").await;

    let log = read_logs(&runner, "wl-ports", "main", false, 0).await;
    let (http, mcp) = log.trim().split_once(' ').unwrap();
    let http: u16 = http.parse().unwrap();
    let mcp: u16 = mcp.strip_prefix("--mcp=").unwrap().parse().unwrap();
    assert_ne!(http, 0);
    assert_ne!(mcp, 0);
    assert_ne!(http, mcp);
}

#[tokio::test]
async fn undeclared_port_placeholder_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", "true");
    main.env = vec![env(
        "SECRET_URL",
        "https://user:hunter2@example.com:${port:api}",
    )];
    let error = runner
        .start_workload(workload("wl-bad-port", main))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("api"), "{}", error.message());
    assert!(!error.message().contains("hunter2"), "{}", error.message());
    assert!(runner.list_workloads().await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_specs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut no_main = workload("wl-no-main", shell("main", "true"));

    no_main.main = Default::default();
    let mut duplicate = workload("wl-duplicate", shell("main", "true"));
    duplicate.sidecars = vec![shell("main", "true")];

    let mut unknown_volume = shell("main", "true");
    unknown_volume.mounts = vec![mount("missing", "/data")];

    let mut relative_mount = shell("main", "true");
    relative_mount.mounts = vec![mount("data", "data")];
    let mut relative_request = workload("wl-relative", relative_mount);
    relative_request.volumes = vec![ephemeral("data")];

    let mut unknown_inline = shell("main", "true");
    unknown_inline.inline_file_paths = vec!["/etc/missing".to_string()];

    let mut empty_command = shell("main", "true");
    empty_command.command.clear();

    let cases = [
        (
            "bad workload id",
            workload("../escape", shell("main", "true")),
        ),
        ("missing main", no_main),
        ("duplicate container", duplicate),
        (
            "unknown volume",
            workload("wl-unknown-volume", unknown_volume),
        ),
        ("relative mount path", relative_request),
        ("unknown inline file", workload("wl-inline", unknown_inline)),
        ("empty command", workload("wl-empty", empty_command)),
    ];
    for (case, request) in cases {
        let error = runner.start_workload(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{case}: {error:?}");
    }
    assert!(runner.list_workloads().await.unwrap().is_empty());
}

#[tokio::test]
async fn required_capability_fails_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut request = workload("wl-gpu", shell("main", "true"));
    request.capabilities = vec!["gpu".to_string()];
    let error = runner.start_workload(request).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("gpu"), "{}", error.message());
}

#[tokio::test]
async fn mount_and_inline_paths_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell(
        "main",
        "mkdir -p \"$DATA_DIR\"; echo written > \"$DATA_DIR/out\"; cat \"$TOKEN_FILE\"; echo; pwd; echo \"$1\"; \
         echo \"$HOME\"; echo \"$AGYN_ROOT\"; echo \"$OTHER\"",
    );
    main.command.push("sh".to_string());
    main.command.push("/data/arg".to_string());
    main.working_dir = "/data".to_string();
    main.mounts = vec![mount("data", "/data")];
    main.inline_file_paths = vec!["/etc/agyn/token".to_string()];
    main.env = vec![
        env("DATA_DIR", "/data/sub"),
        env("TOKEN_FILE", "/etc/agyn/token"),
        env("OTHER", "/database"),
    ];
    let mut request = workload("wl-paths", main);
    request.volumes = vec![ephemeral("data")];
    request
        .inline_files
        .insert("/etc/agyn/token".to_string(), b"token-contents".to_vec());
    runner.start_workload(request).await.unwrap();
    let done = wait_terminated(&runner, "wl-paths", "main").await;
    assert_eq!(container(&done, "main").exit_code, 0, "{done:?}");

    let workload = workload_dir(dir.path(), "wl-paths");
    let root = workload.join("root");
    let log = read_logs(&runner, "wl-paths", "main", false, 0).await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "token-contents");
    let pwd = std::path::Path::new(lines[1]).canonicalize().unwrap();
    assert_eq!(pwd, workload.join("volumes/data").canonicalize().unwrap());
    assert_eq!(lines[2], root.join("data/arg").display().to_string());
    assert_eq!(lines[3], root.join("home").display().to_string());
    assert_eq!(lines[4], root.display().to_string());
    assert_eq!(lines[5], "/database");

    let link = std::fs::read_link(root.join("data")).unwrap();
    assert_eq!(link, workload.join("volumes/data"));
    let written = std::fs::read_to_string(workload.join("volumes/data/sub/out")).unwrap();
    assert_eq!(written, "written\n");
}

#[tokio::test]
async fn agyn_program_maps_to_executable() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-agyn");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake agyn $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runner = open(dir.path());
    let main = pb::ContainerSpec {
        name: "main".to_string(),
        command: vec!["agyn".to_string(), "agent".to_string(), "run".to_string()],
        ..Default::default()
    };
    runner
        .start_workload(workload("wl-agyn", main))
        .await
        .unwrap();
    wait_terminated(&runner, "wl-agyn", "main").await;
    let log = read_logs(&runner, "wl-agyn", "main", false, 0).await;
    assert_eq!(log, "fake agyn agent run\n");
}

#[tokio::test]
async fn spawn_failure_is_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let main = pb::ContainerSpec {
        name: "main".to_string(),
        command: vec!["/nonexistent/program".to_string()],
        ..Default::default()
    };
    let started = runner
        .start_workload(workload("wl-missing", main))
        .await
        .unwrap();
    assert!(!started.instance_id.is_empty());
    let failed = wait_status(&runner, "wl-missing", Status::RUNNER_WORKLOAD_STATUS_FAILED).await;
    let main = container(&failed, "main");
    assert_eq!(main.status.as_known(), Some(TERMINATED));
    assert_eq!(main.reason, "StartError");
    assert!(
        main.message.contains("/nonexistent/program"),
        "{}",
        main.message
    );
}

#[tokio::test]
async fn inline_file_private_until_stop() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", GRACEFUL);
    main.inline_file_paths = vec!["/run/secrets/key".to_string()];
    let mut request = workload("wl-inline", main);
    request
        .inline_files
        .insert("/run/secrets/key".to_string(), b"private".to_vec());
    runner.start_workload(request).await.unwrap();
    wait_status(&runner, "wl-inline", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;

    let path = workload_dir(dir.path(), "wl-inline").join("root/run/secrets/key");
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"private");

    stop(&runner, "wl-inline", 5).await;
    assert!(!path.exists());
}

#[tokio::test]
async fn named_volume_outlives_ephemeral() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut writer = shell(
        "main",
        "echo kept > \"$PERSIST/file\"; echo scratch > \"$SCRATCH/file\"",
    );
    writer.mounts = vec![mount("persist", "/persist"), mount("scratch", "/scratch")];
    writer.env = vec![env("PERSIST", "/persist"), env("SCRATCH", "/scratch")];
    let mut first = workload("wl-writer", writer);
    first.volumes = vec![
        named("persist", "agyn-vol-1", "vol-1"),
        ephemeral("scratch"),
    ];
    runner.start_workload(first).await.unwrap();
    wait_terminated(&runner, "wl-writer", "main").await;
    let scratch = workload_dir(dir.path(), "wl-writer").join("volumes/scratch");
    assert!(scratch.join("file").exists());
    stop(&runner, "wl-writer", 1).await;
    assert!(!scratch.exists());
    let named_dir = dir.path().join("volumes/agyn-vol-1");
    assert_eq!(
        std::fs::read_to_string(named_dir.join("file")).unwrap(),
        "kept\n"
    );

    let mut reader = shell("main", "cat \"$PERSIST/file\"");
    reader.mounts = vec![mount("persist", "/persist")];
    reader.env = vec![env("PERSIST", "/persist")];
    let mut second = workload("wl-reader", reader);
    second.volumes = vec![named("persist", "agyn-vol-1", "vol-other")];
    runner.start_workload(second).await.unwrap();
    wait_terminated(&runner, "wl-reader", "main").await;
    assert_eq!(
        read_logs(&runner, "wl-reader", "main", false, 0).await,
        "kept\n"
    );

    let volumes = runner.list_volumes().await.unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].persistent_name, "agyn-vol-1");
    assert_eq!(volumes[0].volume_id_label, "vol-1");
    assert_eq!(volumes[0].instance_id, "agyn-vol-1");

    runner
        .remove_workload(pb::RemoveWorkloadRequest {
            workload_id: "wl-reader".to_string(),
            remove_volumes: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!named_dir.exists());
    assert!(!workload_dir(dir.path(), "wl-reader").exists());
    assert!(runner.list_volumes().await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_volume_in_use_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", GRACEFUL);
    main.mounts = vec![mount("persist", "/persist")];
    let mut request = workload("wl-volume", main);
    request.volumes = vec![named("persist", "agyn-vol-2", "vol-2")];
    runner.start_workload(request).await.unwrap();
    wait_status(&runner, "wl-volume", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;

    let remove = |force| pb::RemoveVolumeRequest {
        persistent_name: "agyn-vol-2".to_string(),
        force,
        ..Default::default()
    };
    let error = runner.remove_volume(remove(false)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    runner.remove_volume(remove(true)).await.unwrap();
    assert!(!dir.path().join("volumes/agyn-vol-2").exists());
    runner.remove_volume(remove(false)).await.unwrap();
    stop(&runner, "wl-volume", 5).await;
}

#[tokio::test]
async fn remove_running_workload_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    runner
        .start_workload(workload("wl-remove", shell("main", GRACEFUL)))
        .await
        .unwrap();
    wait_status(&runner, "wl-remove", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;
    let pid = recorded_pid(dir.path(), "wl-remove", "main");
    let remove = |force| pb::RemoveWorkloadRequest {
        workload_id: "wl-remove".to_string(),
        force,
        ..Default::default()
    };
    let error = runner.remove_workload(remove(false)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(process_alive(pid));
    runner.remove_workload(remove(true)).await.unwrap();
    assert!(!process_alive(pid));
    assert!(!workload_dir(dir.path(), "wl-remove").exists());
    assert!(runner.list_workloads().await.unwrap().is_empty());
}

#[tokio::test]
async fn logs_tail_and_follow() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let script = "for i in 1 2 3 4 5; do echo line-$i; done; echo to-stderr >&2; \
                  while [ ! -e \"$AGYN_ROOT/go\" ]; do sleep 0.05; done; echo late";
    runner
        .start_workload(workload("wl-logs", shell("main", script)))
        .await
        .unwrap();
    wait_status(&runner, "wl-logs", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;
    let log_file = workload_dir(dir.path(), "wl-logs").join("logs/main.log");
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log_file)
        .unwrap()
        .contains("to-stderr")
    {
        assert!(Instant::now() < deadline, "the container wrote no output");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let tail = read_logs(&runner, "wl-logs", "main", false, 2).await;
    assert_eq!(tail, "line-5\nto-stderr\n");
    let all = read_logs(&runner, "wl-logs", "main", false, 0).await;
    assert_eq!(all, "line-1\nline-2\nline-3\nline-4\nline-5\nto-stderr\n");

    let follower = {
        let runner = &runner;
        async move { read_logs(runner, "wl-logs", "main", true, 1).await }
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let root = workload_dir(dir.path(), "wl-logs").join("root");
        std::fs::write(root.join("go"), b"").unwrap();
    };
    let (followed, ()) = tokio::join!(follower, release);
    assert_eq!(followed, "to-stderr\nlate\n");
    let done = inspect(&runner, "wl-logs").await;
    assert_eq!(container(&done, "main").status.as_known(), Some(TERMINATED));
}

#[tokio::test]
async fn logs_reject_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    runner
        .start_workload(workload("wl-log-errors", shell("main", "true")))
        .await
        .unwrap();
    let request =
        |workload_id: &str, container_name: &str, tail_lines| pb::StreamWorkloadLogsRequest {
            workload_id: workload_id.to_string(),
            container_name: container_name.to_string(),
            tail_lines,
            ..Default::default()
        };
    let cases = [
        (request("wl-log-errors", "", 0), Code::InvalidArgument),
        (request("wl-log-errors", "main", -1), Code::InvalidArgument),
        (request("wl-log-errors", "other", 0), Code::NotFound),
        (request("wl-nope", "main", 0), Code::NotFound),
    ];
    for (request, code) in cases {
        let error = match runner.stream_workload_logs(request.clone()).await {
            Ok(_) => panic!("{request:?} succeeded"),
            Err(error) => error,
        };
        assert_eq!(error.code(), code, "{request:?}: {error:?}");
    }
}

#[tokio::test]
async fn start_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let request = workload(
        "wl-twice",
        shell(
            "main",
            "echo started >> \"$AGYN_ROOT/starts\"; trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ),
    );
    let first = runner.start_workload(request.clone()).await.unwrap();
    wait_status(&runner, "wl-twice", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;
    let second = runner.start_workload(request).await.unwrap();
    assert_eq!(first.instance_id, second.instance_id);
    assert_eq!(
        second.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_RUNNING)
    );
    let workloads = runner.list_workloads().await.unwrap();
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0].workload_id, "wl-twice");
    assert_eq!(workloads[0].instance_id, first.instance_id);
    let starts =
        std::fs::read_to_string(workload_dir(dir.path(), "wl-twice").join("root/starts")).unwrap();
    assert_eq!(starts, "started\n");
    stop(&runner, "wl-twice", 5).await;
}

#[tokio::test]
async fn new_runner_adopts_live_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    for workload_id in ["wl-live", "wl-dead"] {
        first
            .start_workload(workload(workload_id, shell("main", GRACEFUL)))
            .await
            .unwrap();
        wait_status(&first, workload_id, Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;
    }
    let instance_id = inspect(&first, "wl-live").await.instance_id;
    drop(first);

    let live = recorded_pid(dir.path(), "wl-live", "main");
    let dead = recorded_pid(dir.path(), "wl-dead", "main");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{dead}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + WAIT;
    while process_alive(dead) {
        assert!(Instant::now() < deadline, "process {dead} survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let second = open(dir.path());
    let adopted = inspect(&second, "wl-live").await;
    assert_eq!(adopted.instance_id, instance_id);
    assert_eq!(
        adopted.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_RUNNING)
    );
    assert_eq!(container(&adopted, "main").status.as_known(), Some(RUNNING));

    let gone = inspect(&second, "wl-dead").await;
    let main = container(&gone, "main");
    assert_eq!(main.status.as_known(), Some(TERMINATED));
    assert_eq!(main.reason, "ContainerStatusUnknown");
    assert!(main.finished_at.is_set());
    assert_ne!(
        gone.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_RUNNING)
    );

    stop(&second, "wl-live", 5).await;
    assert!(!process_alive(live));
    let stopped = inspect(&second, "wl-live").await;
    assert_eq!(
        stopped.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_STOPPED)
    );
    assert_eq!(
        container(&stopped, "main").status.as_known(),
        Some(TERMINATED)
    );
}

#[tokio::test]
async fn manifest_contains_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut main = shell("main", "true");
    main.env = vec![env("API_KEY", "env-secret-5b1d")];
    main.inline_file_paths = vec!["/etc/credentials".to_string()];
    let mut request = workload("wl-secrets", main);
    request
        .inline_files
        .insert("/etc/credentials".to_string(), b"file-secret-9e4a".to_vec());
    request.image_pull_credentials = vec![pb::ImagePullCredential {
        registry: "ghcr.io".to_string(),
        username: "bot".to_string(),
        password: "pull-secret-77c2".to_string(),
        ..Default::default()
    }];
    runner.start_workload(request).await.unwrap();
    wait_terminated(&runner, "wl-secrets", "main").await;

    let manifest =
        std::fs::read_to_string(workload_dir(dir.path(), "wl-secrets").join("manifest.json"))
            .unwrap();
    assert!(manifest.contains("API_KEY"), "{manifest}");
    assert!(!manifest.contains("env-secret-5b1d"), "{manifest}");
    assert!(!manifest.contains("file-secret-9e4a"), "{manifest}");
    assert!(!manifest.contains("pull-secret-77c2"), "{manifest}");
}

#[tokio::test]
async fn follow_ends_for_unstarted_container() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    let mut request = workload("wl-never", shell("main", "echo never"));
    request.init_containers = vec![shell("init", "exit 1")];
    runner.start_workload(request).await.unwrap();
    let log = read_logs(&runner, "wl-never", "main", true, 0).await;
    assert_eq!(log, "");
    let failed = inspect(&runner, "wl-never").await;
    assert_eq!(
        failed.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_FAILED)
    );
}

#[tokio::test]
async fn remove_volumes_spares_busy_volume() {
    let dir = tempfile::tempdir().unwrap();
    let runner = open(dir.path());
    for (workload_id, script) in [("wl-done", "true"), ("wl-busy", GRACEFUL)] {
        let mut main = shell("main", script);
        main.mounts = vec![mount("shared", "/shared")];
        let mut request = workload(workload_id, main);
        request.volumes = vec![named("shared", "agyn-vol-shared", "vol-shared")];
        runner.start_workload(request).await.unwrap();
    }
    wait_terminated(&runner, "wl-done", "main").await;
    wait_status(&runner, "wl-busy", Status::RUNNER_WORKLOAD_STATUS_RUNNING).await;

    let remove = |force| pb::RemoveWorkloadRequest {
        workload_id: "wl-done".to_string(),
        force,
        remove_volumes: true,
        ..Default::default()
    };
    let error = runner.remove_workload(remove(false)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("wl-busy"), "{}", error.message());
    assert!(workload_dir(dir.path(), "wl-done").exists());
    assert!(dir.path().join("volumes/agyn-vol-shared").exists());

    stop(&runner, "wl-busy", 5).await;
    runner.remove_workload(remove(false)).await.unwrap();
    assert!(!dir.path().join("volumes/agyn-vol-shared").exists());
}

#[tokio::test]
async fn expired_workloads_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    for workload_id in ["wl-old", "wl-recent"] {
        first
            .start_workload(workload(workload_id, shell("main", "true")))
            .await
            .unwrap();
        wait_terminated(&first, workload_id, "main").await;
    }
    drop(first);

    let manifest_path = workload_dir(dir.path(), "wl-old").join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let two_days = 2 * 24 * 60 * 60 * 1_000_000_i64;
    let finished = manifest["containers"][0]["finished_at"].as_i64().unwrap();
    manifest["containers"][0]["finished_at"] = (finished - two_days).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let second = open(dir.path());
    let workloads = second.list_workloads().await.unwrap();
    let ids: Vec<&str> = workloads.iter().map(|w| w.workload_id.as_str()).collect();
    assert_eq!(ids, ["wl-recent"]);
    assert!(!workload_dir(dir.path(), "wl-old").exists());
}

#[tokio::test]
async fn restart_during_init_fails_workload() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let mut request = workload("wl-restart-init", shell("main", "true"));
    request.init_containers = vec![shell("init", GRACEFUL)];
    first.start_workload(request).await.unwrap();
    wait_for(&first, "wl-restart-init", "init to run", |response| {
        container(response, "init").status.as_known() == Some(RUNNING)
    })
    .await;
    drop(first);

    let second = open(dir.path());
    let failed = inspect(&second, "wl-restart-init").await;
    assert_eq!(
        failed.status.as_known(),
        Some(Status::RUNNER_WORKLOAD_STATUS_FAILED)
    );
    assert_eq!(container(&failed, "init").status.as_known(), Some(RUNNING));
    assert_eq!(container(&failed, "main").status.as_known(), Some(WAITING));
    let pid = recorded_pid(dir.path(), "wl-restart-init", "init");
    let repeated = second
        .start_workload(workload("wl-restart-init", shell("main", "true")))
        .await
        .unwrap();
    assert_eq!(repeated.failure.reason, "RunnerRestarted");

    stop(&second, "wl-restart-init", 5).await;
    assert!(!process_alive(pid));
    let stopped = inspect(&second, "wl-restart-init").await;
    assert_eq!(
        container(&stopped, "init").status.as_known(),
        Some(TERMINATED)
    );
    assert_eq!(container(&stopped, "main").status.as_known(), Some(WAITING));
}
