use super::*;

use runner_pb::ContainerRole::{
    CONTAINER_ROLE_INIT as INIT, CONTAINER_ROLE_MAIN as MAIN, CONTAINER_ROLE_SIDECAR as SIDECAR,
};

const SECOND: i64 = 1_000_000;

fn record(status: WorkloadStatus, created_at: i64) -> WorkloadRecord {
    WorkloadRecord {
        id: "w".to_string(),
        runner_id: "r".to_string(),
        runner_name: String::new(),
        thread_id: "t".to_string(),
        agent_id: "a".to_string(),
        agent_name: String::new(),
        organization_id: "o".to_string(),
        status,
        agent_state: agyn_runners::AgentState::Processing,
        containers: Vec::new(),
        instance_id: String::new(),
        credential_id: String::new(),
        last_activity_at: created_at,
        started_at: None,
        removed_at: None,
        failure_reason: None,
        failure_message: String::new(),
        allocated_cpu_millicores: 0,
        allocated_ram_bytes: 0,
        created_at,
        updated_at: created_at,
    }
}

fn container(
    name: &str,
    role: runner_pb::ContainerRole,
    status: Observed,
    reason: &str,
    exit_code: i32,
) -> runner_pb::RunnerContainer {
    runner_pb::RunnerContainer {
        name: name.to_string(),
        role: role.into(),
        status: status.into(),
        reason: reason.to_string(),
        exit_code,
        ..Default::default()
    }
}

fn observed(containers: Vec<runner_pb::RunnerContainer>) -> runner_pb::InspectWorkloadResponse {
    runner_pb::InspectWorkloadResponse {
        instance_id: "instance".to_string(),
        containers,
        ..Default::default()
    }
}

fn init_done() -> runner_pb::RunnerContainer {
    container(
        "agyn-init",
        INIT,
        Observed::CONTAINER_STATUS_TERMINATED,
        "Completed",
        0,
    )
}

fn main_in(status: Observed, reason: &str, exit_code: i32) -> runner_pb::RunnerContainer {
    container("agent", MAIN, status, reason, exit_code)
}

fn config() -> OrchestratorConfig {
    OrchestratorConfig::default()
}

fn failure_reason(action: &Action) -> Option<FailureReason> {
    match action {
        Action::Fail { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[test]
fn starting_becomes_running_after_init() {
    let record = record(WorkloadStatus::Starting, 0);
    let view = observed(vec![
        init_done(),
        main_in(Observed::CONTAINER_STATUS_RUNNING, "", 0),
        container("mcp-x", SIDECAR, Observed::CONTAINER_STATUS_RUNNING, "", 0),
    ]);
    assert_eq!(
        plan(&record, Some(&view), SECOND, &config()),
        Action::Running
    );
}

#[test]
fn starting_waits_while_init_runs() {
    let record = record(WorkloadStatus::Starting, 0);
    let view = observed(vec![
        container("agyn-init", INIT, Observed::CONTAINER_STATUS_RUNNING, "", 0),
        main_in(Observed::CONTAINER_STATUS_WAITING, "PodInitializing", 0),
    ]);
    assert_eq!(
        plan(&record, Some(&view), SECOND, &config()),
        Action::Refresh
    );
}

#[test]
fn failed_init_is_start_failed() {
    let record = record(WorkloadStatus::Starting, 0);
    let view = observed(vec![
        container(
            "agyn-init",
            INIT,
            Observed::CONTAINER_STATUS_TERMINATED,
            "Error",
            3,
        ),
        main_in(Observed::CONTAINER_STATUS_WAITING, "PodInitializing", 0),
    ]);
    let action = plan(&record, Some(&view), SECOND, &config());
    assert_eq!(
        action,
        Action::Fail {
            reason: FailureReason::StartFailed,
            message: "init container agyn-init exited with code 3".to_string(),
            stop: true,
        }
    );
}

#[test]
fn main_exit_codes_decide_between_finish_and_crashloop() {
    for status in [WorkloadStatus::Starting, WorkloadStatus::Running] {
        let record = record(status, 0);
        let clean = observed(vec![
            init_done(),
            main_in(Observed::CONTAINER_STATUS_TERMINATED, "Completed", 0),
        ]);
        assert_eq!(
            plan(&record, Some(&clean), SECOND, &config()),
            Action::Finish
        );
        let crashed = observed(vec![
            init_done(),
            main_in(Observed::CONTAINER_STATUS_TERMINATED, "Error", 1),
        ]);
        assert_eq!(
            plan(&record, Some(&crashed), SECOND, &config()),
            Action::Fail {
                reason: FailureReason::Crashloop,
                message: "main container exited with code 1".to_string(),
                stop: true,
            }
        );
    }
}

#[test]
fn crashloop_message_keeps_runner_explanation() {
    let record = record(WorkloadStatus::Running, 0);
    let mut main = main_in(Observed::CONTAINER_STATUS_TERMINATED, "StatusUnknown", -1);
    main.message = "the process ended while no runner watched it".to_string();
    let view = observed(vec![init_done(), main]);
    assert_eq!(
        plan(&record, Some(&view), SECOND, &config()),
        Action::Fail {
            reason: FailureReason::Crashloop,
            message: "main container exited with code -1: the process ended while no runner \
                      watched it"
                .to_string(),
            stop: true,
        }
    );
}

#[test]
fn crash_loop_backoff_counts_restarts() {
    let record = record(WorkloadStatus::Running, 0);
    let mut main = main_in(Observed::CONTAINER_STATUS_WAITING, "CrashLoopBackOff", 2);
    main.restart_count = 2;
    let view = observed(vec![init_done(), main.clone()]);
    assert_eq!(
        plan(&record, Some(&view), SECOND, &config()),
        Action::Refresh
    );
    main.restart_count = 3;
    let view = observed(vec![init_done(), main]);
    assert_eq!(
        failure_reason(&plan(&record, Some(&view), SECOND, &config())),
        Some(FailureReason::Crashloop)
    );
}

#[test]
fn waiting_reasons_fail_only_after_start_grace() {
    let config = config();
    let grace = config.start_grace.as_micros() as i64;
    for (reason, expected) in [
        ("ImagePullBackOff", FailureReason::ImagePullFailed),
        ("ErrImagePull", FailureReason::ImagePullFailed),
        ("CreateContainerConfigError", FailureReason::ConfigInvalid),
        ("InvalidImageName", FailureReason::ConfigInvalid),
    ] {
        let record = record(WorkloadStatus::Starting, 0);
        let view = observed(vec![main_in(Observed::CONTAINER_STATUS_WAITING, reason, 0)]);
        assert_eq!(
            plan(&record, Some(&view), grace - 1, &config),
            Action::Refresh,
            "{reason}"
        );
        assert_eq!(
            failure_reason(&plan(&record, Some(&view), grace, &config)),
            Some(expected),
            "{reason}"
        );
    }
}

#[test]
fn watchdog_fails_old_starting_records() {
    let config = config();
    let timeout = config.start_timeout.as_micros() as i64;
    let record = record(WorkloadStatus::Starting, 0);
    let view = observed(vec![
        container("agyn-init", INIT, Observed::CONTAINER_STATUS_RUNNING, "", 0),
        main_in(Observed::CONTAINER_STATUS_WAITING, "PodInitializing", 0),
    ]);
    assert_eq!(
        plan(&record, Some(&view), timeout, &config),
        Action::Refresh
    );
    let action = plan(&record, Some(&view), timeout + 1, &config);
    assert_eq!(
        action,
        Action::Fail {
            reason: FailureReason::StartTimeout,
            message: "workload did not become running within 300s".to_string(),
            stop: true,
        }
    );
    assert_eq!(
        failure_reason(&plan(&record, None, timeout + 1, &config)),
        Some(FailureReason::StartTimeout)
    );
}

#[test]
fn missing_workloads_fail_after_missing_grace() {
    let config = config();
    let grace = config.missing_grace.as_micros() as i64;
    let starting = record(WorkloadStatus::Starting, 0);
    assert_eq!(plan(&starting, None, grace - 1, &config), Action::Keep);
    assert_eq!(
        plan(&starting, None, grace, &config),
        Action::Fail {
            reason: FailureReason::StartFailed,
            message: "workload missing on runner".to_string(),
            stop: false,
        }
    );
    let running = record(WorkloadStatus::Running, 0);
    assert_eq!(
        failure_reason(&plan(&running, None, SECOND, &config)),
        Some(FailureReason::RuntimeLost)
    );
}

#[test]
fn stopping_records_stop_again_then_force_remove() {
    let config = config();
    let timeout = config.stopping_timeout.as_micros() as i64;
    let stopping = record(WorkloadStatus::Stopping, 0);
    let view = observed(vec![main_in(Observed::CONTAINER_STATUS_RUNNING, "", 0)]);
    assert_eq!(
        plan(&stopping, Some(&view), SECOND, &config),
        Action::StopAgain
    );
    assert_eq!(
        plan(&stopping, Some(&view), timeout + 1, &config),
        Action::ForceRemove
    );
    assert_eq!(plan(&stopping, None, SECOND, &config), Action::Stopped);
}

#[test]
fn running_records_refresh_containers() {
    let record = record(WorkloadStatus::Running, 0);
    let view = observed(vec![
        init_done(),
        main_in(Observed::CONTAINER_STATUS_RUNNING, "", 0),
    ]);
    assert_eq!(
        plan(&record, Some(&view), SECOND, &config()),
        Action::Refresh
    );
}
