//! The activity sweep on SQLite and PostgreSQL: only RUNNING workloads
//! whose agent is PROCESSING and inactive since the cutoff become IDLE,
//! each with one `workload.updated`, and a later touch makes them
//! PROCESSING again.

mod support;

use agyn_core::error::Code;
use agyn_runners::{AgentState, WorkloadChanges, WorkloadStatus};
use agyn_store::{Backend, on_both_backends};
use support::*;

fn to(status: WorkloadStatus) -> WorkloadChanges {
    WorkloadChanges {
        status: Some(status),
        ..WorkloadChanges::default()
    }
}

async fn sweep_marks_inactive_running_workloads(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    let agent = w.agent(&org, "Helper").await;
    let thread_a = agyn_core::id::new_id();
    let thread_b = agyn_core::id::new_id();
    let thread_c = agyn_core::id::new_id();

    let running = w.workload(&org, &runner.id, &thread_a, &agent).await;
    w.runners
        .update_workload(&orchestrator(), &running.id, &to(WorkloadStatus::Running))
        .await
        .unwrap();
    let starting = w.workload(&org, &runner.id, &thread_b, &agent).await;
    let later = w.workload(&org, &runner.id, &thread_c, &agent).await;
    let later = w
        .runners
        .update_workload(&orchestrator(), &later.id, &to(WorkloadStatus::Running))
        .await
        .unwrap();
    w.events.take();

    // A cutoff before the last activity of both RUNNING workloads changes
    // nothing.
    let changed = w
        .runners
        .mark_idle_workloads(&orchestrator(), running.created_at - 1)
        .await
        .unwrap();
    assert_eq!(changed, 0);

    // A cutoff after `later`'s last activity catches both RUNNING ones,
    // never the STARTING one.
    let cutoff = later.last_activity_at + 1;
    let changed = w
        .runners
        .mark_idle_workloads(&orchestrator(), cutoff)
        .await
        .unwrap();
    assert_eq!(changed, 2);
    for id in [&running.id, &later.id] {
        let record = w.runners.get_workload(&orchestrator(), id).await.unwrap();
        assert_eq!(record.agent_state, AgentState::Idle, "{id}");
        assert_eq!(record.status, WorkloadStatus::Running, "{id}");
    }
    let record = w
        .runners
        .get_workload(&orchestrator(), &starting.id)
        .await
        .unwrap();
    assert_eq!(record.agent_state, AgentState::Processing);

    let events = w.events.take();
    let announced: Vec<&str> = events
        .iter()
        .filter(|event| event.room == "workloads")
        .map(|event| event.payload["workload_id"].as_str().unwrap())
        .collect();
    assert_eq!(announced.len(), 2, "{events:?}");
    assert!(announced.contains(&running.id.as_str()));
    assert!(announced.contains(&later.id.as_str()));
    assert!(
        events
            .iter()
            .all(|event| event.payload["agent_state"] == "WORKLOAD_AGENT_STATE_IDLE")
    );

    // A second sweep finds nothing left to change.
    let changed = w
        .runners
        .mark_idle_workloads(&orchestrator(), cutoff)
        .await
        .unwrap();
    assert_eq!(changed, 0);

    // A touch makes the agent PROCESSING again.
    w.runners
        .touch_workload(&agent_caller(&agent, Some(&running.id)), &running.id)
        .await
        .unwrap();
    let record = w
        .runners
        .get_workload(&orchestrator(), &running.id)
        .await
        .unwrap();
    assert_eq!(record.agent_state, AgentState::Processing);
}

async fn sweep_is_for_the_orchestrator(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let error = failure(w.runners.mark_idle_workloads(&owner, 0).await);
    assert_eq!(error.code(), Code::PermissionDenied);
    let error = failure(
        w.runners
            .mark_idle_workloads(&agyn_core::Caller::Component("chat"), 0)
            .await,
    );
    assert_eq!(error.code(), Code::PermissionDenied);
}

on_both_backends!(
    sweep_marks_inactive_running_workloads,
    sweep_is_for_the_orchestrator
);
