//! Workload records on SQLite and PostgreSQL: creation rules, the
//! non-terminal pair index, every status transition, terminal effects,
//! touches, events, reads, filtered and sorted pages, and credential
//! resolution.

mod support;

use std::collections::HashSet;

use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::Caller;
use agyn_core::error::Code;
use agyn_core::id::new_id;
use agyn_runners::{
    AgentState, FailureReason, ListSort, NewWorkload, PageRequest, RunnerRecord, SortField,
    WorkloadChanges, WorkloadFilter, WorkloadStatus,
};
use agyn_store::sqlx;
use agyn_store::{Backend, on_both_backends};
use support::*;

use WorkloadStatus::{Failed, Running, Starting, Stopped, Stopping};

const ALL_STATUSES: [WorkloadStatus; 5] = [Starting, Running, Stopping, Stopped, Failed];

/// Builds an update that only moves the status.
fn to(status: WorkloadStatus) -> WorkloadChanges {
    WorkloadChanges {
        status: Some(status),
        ..WorkloadChanges::default()
    }
}

/// Returns the moves that bring a new STARTING workload to `status`.
fn path_to(status: WorkloadStatus) -> Vec<WorkloadStatus> {
    match status {
        Starting => vec![],
        Running => vec![Running],
        Stopping => vec![Stopping],
        Stopped => vec![Stopping, Stopped],
        Failed => vec![Failed],
    }
}

struct Fixture {
    w: World,
    owner: Caller,
    org: String,
    runner: RunnerRecord,
}

async fn fixture(backend: Backend) -> Fixture {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    Fixture {
        w,
        owner,
        org,
        runner,
    }
}

async fn every_transition(backend: Backend) {
    let f = fixture(backend).await;
    let allowed: HashSet<(WorkloadStatus, WorkloadStatus)> = [
        (Starting, Starting),
        (Starting, Running),
        (Starting, Failed),
        (Starting, Stopping),
        (Running, Running),
        (Running, Stopping),
        (Running, Failed),
        (Stopping, Stopping),
        (Stopping, Stopped),
    ]
    .into_iter()
    .collect();
    for from in ALL_STATUSES {
        for next in ALL_STATUSES {
            let workload =
                f.w.workload(&f.org, &f.runner.id, &new_id(), &new_id())
                    .await;
            for step in path_to(from) {
                f.w.runners
                    .update_workload(&orchestrator(), &workload.id, &to(step))
                    .await
                    .unwrap();
            }
            let result =
                f.w.runners
                    .update_workload(&orchestrator(), &workload.id, &to(next))
                    .await;
            if allowed.contains(&(from, next)) {
                let updated = result.unwrap_or_else(|error| {
                    panic!("{} -> {} failed: {error:?}", from.name(), next.name())
                });
                assert_eq!(updated.status, next);
            } else {
                assert_error(
                    result,
                    Code::FailedPrecondition,
                    &format!("invalid transition {} -> {}", from.name(), next.name()),
                );
            }
        }
    }
}

async fn terminal_effects(backend: Backend) {
    let f = fixture(backend).await;
    let agent = new_id();
    let workload = f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    assert_eq!(workload.status, Starting);
    assert_eq!(workload.agent_state, AgentState::Processing);
    assert_eq!(workload.started_at, None);
    assert_eq!(workload.runner_name, "edge");
    assert_eq!(f.w.revoked_at(&workload.credential_id).await, None);

    let running =
        f.w.runners
            .update_workload(&orchestrator(), &workload.id, &to(Running))
            .await
            .unwrap();
    let started_at = running.started_at.expect("RUNNING sets started_at");
    assert!(running.last_activity_at >= workload.last_activity_at);
    let refreshed =
        f.w.runners
            .update_workload(
                &orchestrator(),
                &workload.id,
                &WorkloadChanges {
                    status: Some(Running),
                    instance_id: Some("instance-1".into()),
                    ..WorkloadChanges::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(refreshed.started_at, Some(started_at));
    assert_eq!(refreshed.instance_id, "instance-1");

    assert_error(
        f.w.runners
            .update_workload(
                &orchestrator(),
                &workload.id,
                &WorkloadChanges {
                    failure_reason: Some(FailureReason::Crashloop),
                    ..to(Stopping)
                },
            )
            .await,
        Code::InvalidArgument,
        "failure_reason: is accepted only with status WORKLOAD_STATUS_FAILED",
    );
    assert_error(
        f.w.runners
            .update_workload(&orchestrator(), &workload.id, &WorkloadChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );

    let failed =
        f.w.runners
            .update_workload(
                &orchestrator(),
                &workload.id,
                &WorkloadChanges {
                    failure_reason: Some(FailureReason::Crashloop),
                    failure_message: Some("main container exited with code 3".into()),
                    ..to(Failed)
                },
            )
            .await
            .unwrap();
    assert_eq!(failed.status, Failed);
    assert!(failed.removed_at.is_some());
    assert_eq!(failed.failure_reason, Some(FailureReason::Crashloop));
    assert_eq!(failed.failure_message, "main container exited with code 3");
    assert_eq!(failed.agent_state, AgentState::Processing);
    assert!(f.w.revoked_at(&workload.credential_id).await.is_some());

    let refresh = WorkloadChanges {
        instance_id: Some("late".into()),
        ..WorkloadChanges::default()
    };
    let error = failure(
        f.w.runners
            .update_workload(&orchestrator(), &workload.id, &refresh)
            .await,
    );
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.reason(), Some("WORKLOAD_TERMINAL"));
    let stored =
        f.w.runners
            .get_workload(&f.owner, &workload.id)
            .await
            .unwrap();
    assert_eq!(stored, failed);

    let other = f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    f.w.runners
        .update_workload(&orchestrator(), &other.id, &to(Stopping))
        .await
        .unwrap();
    let removed_at = 1_764_000_000_000_000;
    let stopped =
        f.w.runners
            .update_workload(
                &orchestrator(),
                &other.id,
                &WorkloadChanges {
                    removed_at: Some(removed_at),
                    ..to(Stopped)
                },
            )
            .await
            .unwrap();
    assert_eq!(stopped.removed_at, Some(removed_at));
    assert_eq!(stopped.failure_reason, None);
    assert!(f.w.revoked_at(&other.credential_id).await.is_some());
}

async fn one_active_workload_per_pair(backend: Backend) {
    let f = fixture(backend).await;
    let thread = new_id();
    let agent = new_id();
    let attempts = (0..8).map(|_| {
        let runners = f.w.runners.clone();
        let input = new_workload(&new_id(), &f.org, &f.runner.id, &thread, &agent);
        tokio::spawn(async move { runners.create_workload(&orchestrator(), &input).await })
    });
    let mut winners = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok((workload, _)) => winners.push(workload),
            Err(error) => {
                assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");
                assert_eq!(
                    error.message(),
                    format!(
                        "thread {thread} already has a non-terminal workload for agent {agent}"
                    )
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");

    let failed_record = NewWorkload {
        failure_reason: Some(FailureReason::ConfigInvalid),
        failure_message: "unknown secret".into(),
        credential_id: String::new(),
        runner_id: String::new(),
        ..new_workload(&new_id(), &f.org, &f.runner.id, &thread, &agent)
    };
    let (config_failure, _) =
        f.w.runners
            .create_workload(&orchestrator(), &failed_record)
            .await
            .unwrap();
    assert_eq!(config_failure.status, Failed);
    assert!(config_failure.removed_at.is_some());

    f.w.runners
        .update_workload(&orchestrator(), &winners[0].id, &to(Failed))
        .await
        .unwrap();
    let (next, _) =
        f.w.runners
            .create_workload(
                &orchestrator(),
                &new_workload(&new_id(), &f.org, &f.runner.id, &thread, &agent),
            )
            .await
            .unwrap();
    assert_eq!(next.status, Starting);
}

async fn concurrent_updates_apply_in_turn(backend: Backend) {
    let f = fixture(backend).await;
    for _ in 0..6 {
        let workload =
            f.w.workload(&f.org, &f.runner.id, &new_id(), &new_id())
                .await;
        f.w.runners
            .update_workload(&orchestrator(), &workload.id, &to(Running))
            .await
            .unwrap();
        // From RUNNING both moves are allowed, but neither may follow the
        // other, so exactly one of two concurrent updates succeeds.
        let moves = [Failed, Stopping].map(|status| {
            let runners = f.w.runners.clone();
            let id = workload.id.clone();
            tokio::spawn(async move {
                runners
                    .update_workload(&orchestrator(), &id, &to(status))
                    .await
            })
        });
        let mut applied = Vec::new();
        for attempt in moves {
            match attempt.await.unwrap() {
                Ok(record) => applied.push(record.status),
                Err(error) => assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}"),
            }
        }
        assert_eq!(applied.len(), 1, "{applied:?}");
        let stored =
            f.w.runners
                .get_workload(&f.owner, &workload.id)
                .await
                .unwrap();
        assert_eq!(stored.status, applied[0]);
    }
}

async fn create_rules(backend: Backend) {
    let f = fixture(backend).await;
    let other_org = f.w.org(&f.owner, "Other").await;
    let (foreign_runner, _) = f.w.runner(&f.owner, &other_org, "foreign").await;
    let base = new_workload(&new_id(), &f.org, &f.runner.id, &new_id(), &new_id());

    let cases: Vec<(NewWorkload, &str)> = vec![
        (
            NewWorkload {
                id: "x".into(),
                ..base.clone()
            },
            "id: must be a UUID",
        ),
        (
            NewWorkload {
                runner_id: String::new(),
                ..base.clone()
            },
            "runner_id: is required",
        ),
        (
            NewWorkload {
                credential_id: String::new(),
                ..base.clone()
            },
            "credential_id: is required unless failure_reason is set",
        ),
        (
            NewWorkload {
                failure_message: "why".into(),
                ..base.clone()
            },
            "failure_message: must be empty unless failure_reason is set",
        ),
        (
            NewWorkload {
                containers: vec![
                    container("agent", pb::ContainerStatus::CONTAINER_STATUS_WAITING),
                    container("agent", pb::ContainerStatus::CONTAINER_STATUS_WAITING),
                ],
                ..base.clone()
            },
            "containers[1].name: container name \"agent\" is used twice",
        ),
        (
            NewWorkload {
                allocated_ram_bytes: -1,
                ..base.clone()
            },
            "allocated_ram_bytes: must not be negative",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            f.w.runners.create_workload(&orchestrator(), &input).await,
            Code::InvalidArgument,
            message,
        );
    }

    for caller in [f.owner.clone(), Caller::Component("chat")] {
        assert_eq!(
            failure(f.w.runners.create_workload(&caller, &base).await).code(),
            Code::PermissionDenied
        );
    }
    let unknown_runner = new_id();
    assert_error(
        f.w.runners
            .create_workload(
                &orchestrator(),
                &NewWorkload {
                    runner_id: unknown_runner.clone(),
                    ..base.clone()
                },
            )
            .await,
        Code::NotFound,
        &format!("runner {unknown_runner} not found"),
    );
    assert_eq!(
        failure(
            f.w.runners
                .create_workload(
                    &orchestrator(),
                    &NewWorkload {
                        runner_id: foreign_runner.id.clone(),
                        ..base.clone()
                    },
                )
                .await
        )
        .code(),
        Code::FailedPrecondition
    );

    f.w.runners
        .create_workload(&orchestrator(), &base)
        .await
        .unwrap();
    assert_error(
        f.w.runners
            .create_workload(
                &orchestrator(),
                &NewWorkload {
                    thread_id: new_id(),
                    ..base.clone()
                },
            )
            .await,
        Code::AlreadyExists,
        &format!("workload {} already exists", base.id),
    );
}

async fn touch_rules(backend: Backend) {
    let f = fixture(backend).await;
    let agent = new_id();
    let workload = f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    f.w.events.take();

    let strangers = [
        agent_caller(&new_id(), None),
        agent_caller(&agent, Some(&new_id())),
        f.owner.clone(),
        orchestrator(),
    ];
    for caller in strangers {
        assert_eq!(
            failure(f.w.runners.touch_workload(&caller, &workload.id).await).code(),
            Code::PermissionDenied,
            "{caller:?}"
        );
    }
    let unknown = new_id();
    assert_error(
        f.w.runners
            .touch_workload(&agent_caller(&agent, None), &unknown)
            .await,
        Code::NotFound,
        &format!("workload {unknown} not found"),
    );

    let agent_with_certificate = agent_caller(&agent, Some(&workload.id));
    f.w.runners
        .touch_workload(&agent_with_certificate, &workload.id)
        .await
        .unwrap();
    let touched =
        f.w.runners
            .get_workload(&agent_with_certificate, &workload.id)
            .await
            .unwrap();
    assert!(touched.last_activity_at >= workload.last_activity_at);
    assert_eq!(touched.agent_state, AgentState::Processing);
    assert!(
        f.w.events.take().is_empty(),
        "a touch that keeps PROCESSING publishes nothing"
    );

    // The activity sweep that marks idle workloads runs in the
    // orchestrator, so the test writes its result directly.
    sqlx::query("UPDATE workloads SET agent_state = 2 WHERE id = $1")
        .bind(&workload.id)
        .execute(f.w.db.pool())
        .await
        .unwrap();
    f.w.runners
        .touch_workload(&agent_with_certificate, &workload.id)
        .await
        .unwrap();
    let events = f.w.events.take();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0].payload["agent_state"],
        "WORKLOAD_AGENT_STATE_PROCESSING"
    );

    f.w.runners
        .update_workload(&orchestrator(), &workload.id, &to(Stopping))
        .await
        .unwrap();
    assert_error(
        f.w.runners
            .touch_workload(&agent_with_certificate, &workload.id)
            .await,
        Code::FailedPrecondition,
        "workload is stopping",
    );
    f.w.runners
        .update_workload(&orchestrator(), &workload.id, &to(Stopped))
        .await
        .unwrap();
    let error = failure(
        f.w.runners
            .touch_workload(&agent_with_certificate, &workload.id)
            .await,
    );
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.message(), "workload is terminal");
    assert_eq!(error.reason(), Some("WORKLOAD_TERMINAL"));

    let crashed = f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    f.w.runners
        .update_workload(&orchestrator(), &crashed.id, &to(Failed))
        .await
        .unwrap();
    let error = failure(
        f.w.runners
            .touch_workload(&agent_caller(&agent, None), &crashed.id)
            .await,
    );
    assert_eq!(error.reason(), Some("WORKLOAD_TERMINAL"));
    let stored =
        f.w.runners
            .get_workload(&f.owner, &crashed.id)
            .await
            .unwrap();
    assert_eq!(stored.status, Failed, "a touch never resurrects a record");
}

async fn names_resolve_at_read_time(backend: Backend) {
    let f = fixture(backend).await;
    let agent = f.w.agent(&f.org, "Researcher").await;
    let gone = new_id();
    let named = f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    let orphan = f.w.workload(&f.org, &f.runner.id, &new_id(), &gone).await;
    assert_eq!(named.agent_name, "Researcher");
    assert_eq!(named.runner_name, "edge");
    assert_eq!(orphan.agent_name, "", "a deleted agent has no name");

    f.w.runners
        .update_runner(
            &f.owner,
            &f.runner.id,
            &agyn_runners::RunnerChanges {
                name: Some("edge-renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (listed, _) =
        f.w.runners
            .list_workloads(
                &f.owner,
                &f.org,
                &WorkloadFilter::default(),
                ListSort::default(),
                PageRequest::default(),
            )
            .await
            .unwrap();
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|record| (record.runner_name.as_str(), record.agent_name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("edge-renamed", ""), ("edge-renamed", "Researcher")]
    );
}

async fn workload_events(backend: Backend) {
    let f = fixture(backend).await;
    let workload =
        f.w.workload(&f.org, &f.runner.id, &new_id(), &new_id())
            .await;
    let events = f.w.events.take();
    let rooms: Vec<&str> = events.iter().map(|event| event.room.as_str()).collect();
    assert_eq!(
        rooms,
        vec![
            format!("workload:{}", workload.id).as_str(),
            format!("organization:{}", f.org).as_str(),
            "workloads",
        ]
    );
    assert!(events.iter().all(|event| event.event == "workload.updated"));
    assert_eq!(events[0].payload["status"], "WORKLOAD_STATUS_STARTING");
    assert_eq!(events[0].payload["workload_id"], workload.id.as_str());

    let mut message_only = workload.containers.clone();
    message_only[0].message = "still pulling".into();
    f.w.runners
        .update_workload(
            &orchestrator(),
            &workload.id,
            &WorkloadChanges {
                containers: Some(message_only),
                instance_id: Some("i-1".into()),
                ..WorkloadChanges::default()
            },
        )
        .await
        .unwrap();
    assert!(f.w.events.take().is_empty(), "a message change is silent");

    let mut restarted = workload.containers.clone();
    restarted[0].restart_count = 1;
    f.w.runners
        .update_workload(
            &orchestrator(),
            &workload.id,
            &WorkloadChanges {
                containers: Some(restarted),
                ..WorkloadChanges::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        f.w.events.take().len(),
        3,
        "a restart count change publishes"
    );

    let mut running = workload.containers.clone();
    running[0].status = pb::ContainerStatus::CONTAINER_STATUS_RUNNING.into();
    running.push(container(
        "mcp-files",
        pb::ContainerStatus::CONTAINER_STATUS_RUNNING,
    ));
    f.w.runners
        .update_workload(
            &orchestrator(),
            &workload.id,
            &WorkloadChanges {
                containers: Some(running),
                ..to(Running)
            },
        )
        .await
        .unwrap();
    let events = f.w.events.take();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].payload["status"], "WORKLOAD_STATUS_RUNNING");
}

async fn workload_reads(backend: Backend) {
    let f = fixture(backend).await;
    let member = f.w.user("member").await;
    let participant = f.w.user("participant").await;
    let outsider = f.w.user("outsider").await;
    f.w.join(&f.org, &f.owner, &member).await;
    let thread = new_id();
    f.w.join_thread(&thread, &participant).await;
    let agent = new_id();
    let workload = f.w.workload(&f.org, &f.runner.id, &thread, &agent).await;

    let unknown = new_id();
    assert_error(
        f.w.runners.get_workload(&outsider, &unknown).await,
        Code::NotFound,
        &format!("workload {unknown} not found"),
    );
    for reader in [
        f.owner.clone(),
        participant.clone(),
        agent_caller(&agent, None),
        Caller::Component("notifications"),
    ] {
        let read = f.w.runners.get_workload(&reader, &workload.id).await;
        assert_eq!(read.unwrap().id, workload.id, "{reader:?}");
    }
    for stranger in [
        member.clone(),
        outsider.clone(),
        agent_caller(&new_id(), None),
    ] {
        assert_error(
            f.w.runners.get_workload(&stranger, &workload.id).await,
            Code::PermissionDenied,
            "permission denied: can_view_workloads on organization",
        );
    }

    let second_agent = new_id();
    let other =
        f.w.workload(&f.org, &f.runner.id, &thread, &second_agent)
            .await;
    f.w.runners
        .update_workload(&orchestrator(), &other.id, &to(Failed))
        .await
        .unwrap();
    f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    let page = PageRequest::default();
    let (by_thread, token) =
        f.w.runners
            .list_workloads_by_thread(&participant, &thread, None, &[], page)
            .await
            .unwrap();
    let ids: Vec<&str> = by_thread.iter().map(|record| record.id.as_str()).collect();
    assert_eq!(ids, vec![other.id.as_str(), workload.id.as_str()]);
    assert!(token.is_empty());
    let (of_agent, _) =
        f.w.runners
            .list_workloads_by_thread(&participant, &thread, Some(&agent), &[], page)
            .await
            .unwrap();
    assert_eq!(of_agent.len(), 1);
    assert_eq!(of_agent[0].id, workload.id);
    let (failed, _) =
        f.w.runners
            .list_workloads_by_thread(&participant, &thread, None, &[Failed], page)
            .await
            .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, other.id);
    assert_eq!(
        failure(
            f.w.runners
                .list_workloads_by_thread(&outsider, &thread, None, &[], page)
                .await
        )
        .code(),
        Code::PermissionDenied
    );
}

/// Walks every page of ListWorkloads and returns the ids in order.
async fn walk(f: &Fixture, filter: &WorkloadFilter, sort: ListSort, page_size: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let (records, next) =
            f.w.runners
                .list_workloads(
                    &f.owner,
                    &f.org,
                    filter,
                    sort,
                    PageRequest {
                        size: page_size,
                        token: &token,
                    },
                )
                .await
                .unwrap();
        ids.extend(records.into_iter().map(|record| record.id));
        if next.is_empty() {
            return ids;
        }
        token = next;
    }
}

async fn list_filters_sort_and_pages(backend: Backend) {
    let f = fixture(backend).await;
    let agents = [new_id(), new_id()];
    let mut created = Vec::new();
    for index in 0..7 {
        let agent = &agents[index % 2];
        let workload = f.w.workload(&f.org, &f.runner.id, &new_id(), agent).await;
        let steps = match index % 3 {
            0 => vec![],
            1 => vec![Running],
            _ => vec![Failed],
        };
        for step in steps {
            f.w.runners
                .update_workload(&orchestrator(), &workload.id, &to(step))
                .await
                .unwrap();
        }
        created.push(
            f.w.runners
                .get_workload(&f.owner, &workload.id)
                .await
                .unwrap(),
        );
    }
    let other_org = f.w.org(&f.owner, "Other").await;
    let (other_runner, _) = f.w.runner(&f.owner, &other_org, "other").await;
    f.w.workload(&other_org, &other_runner.id, &new_id(), &agents[0])
        .await;

    let newest_first: Vec<String> = created
        .iter()
        .rev()
        .map(|record| record.id.clone())
        .collect();
    let all = WorkloadFilter::default();
    assert_eq!(walk(&f, &all, ListSort::default(), 0).await, newest_first);
    assert_eq!(walk(&f, &all, ListSort::default(), 2).await, newest_first);
    let ascending = ListSort {
        field: SortField::Created,
        ascending: true,
    };
    let oldest_first: Vec<String> = created.iter().map(|record| record.id.clone()).collect();
    assert_eq!(walk(&f, &all, ascending, 3).await, oldest_first);

    for ascending in [true, false] {
        let sort = ListSort {
            field: SortField::Status,
            ascending,
        };
        let mut expected = created.clone();
        expected
            .sort_by_key(|record| (record.status.number(), record.created_at, record.id.clone()));
        if !ascending {
            expected.reverse();
        }
        let expected: Vec<String> = expected.into_iter().map(|record| record.id).collect();
        assert_eq!(
            walk(&f, &all, sort, 2).await,
            expected,
            "ascending {ascending}"
        );
    }

    let by_agent = WorkloadFilter {
        agent_ids: vec![agents[1].clone()],
        ..WorkloadFilter::default()
    };
    let expected: Vec<String> = created
        .iter()
        .rev()
        .filter(|record| record.agent_id == agents[1])
        .map(|record| record.id.clone())
        .collect();
    assert_eq!(walk(&f, &by_agent, ListSort::default(), 2).await, expected);

    let by_status = WorkloadFilter {
        statuses: vec![Running, Failed],
        agent_ids: vec![agents[0].clone()],
        ..WorkloadFilter::default()
    };
    let expected: Vec<String> = created
        .iter()
        .rev()
        .filter(|record| record.agent_id == agents[0] && record.status != Starting)
        .map(|record| record.id.clone())
        .collect();
    assert_eq!(walk(&f, &by_status, ListSort::default(), 0).await, expected);

    let by_thread = WorkloadFilter {
        thread_ids: vec![created[3].thread_id.clone(), created[5].thread_id.clone()],
        runner_ids: vec![f.runner.id.clone()],
        ..WorkloadFilter::default()
    };
    assert_eq!(
        walk(&f, &by_thread, ListSort::default(), 0).await,
        vec![created[5].id.clone(), created[3].id.clone()]
    );

    let window = WorkloadFilter {
        started_after: Some(created[2].created_at),
        started_before: Some(created[4].created_at),
        ..WorkloadFilter::default()
    };
    assert_eq!(
        walk(&f, &window, ListSort::default(), 0).await,
        vec![created[3].id.clone(), created[2].id.clone()]
    );

    let (_, token) =
        f.w.runners
            .list_workloads(
                &f.owner,
                &f.org,
                &all,
                ListSort::default(),
                PageRequest { size: 2, token: "" },
            )
            .await
            .unwrap();
    let error = failure(
        f.w.runners
            .list_workloads(
                &f.owner,
                &f.org,
                &by_agent,
                ListSort::default(),
                PageRequest {
                    size: 2,
                    token: &token,
                },
            )
            .await,
    );
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    let bad_filter = WorkloadFilter {
        agent_ids: vec!["nope".into()],
        ..WorkloadFilter::default()
    };
    assert_error(
        f.w.runners
            .list_workloads(
                &f.owner,
                &f.org,
                &bad_filter,
                ListSort::default(),
                PageRequest::default(),
            )
            .await,
        Code::InvalidArgument,
        "filter.agent_id_in[0]: must be a UUID",
    );
    let member = f.w.user("member").await;
    f.w.join(&f.org, &f.owner, &member).await;
    assert_eq!(
        failure(
            f.w.runners
                .list_workloads(
                    &member,
                    &f.org,
                    &all,
                    ListSort::default(),
                    PageRequest::default()
                )
                .await
        )
        .code(),
        Code::PermissionDenied
    );

    let (everywhere, _) =
        f.w.runners
            .list_workloads_internal(
                &orchestrator(),
                "",
                &all,
                ListSort::default(),
                PageRequest::default(),
            )
            .await
            .unwrap();
    assert_eq!(everywhere.len(), created.len() + 1);
    let (chat_view, _) =
        f.w.runners
            .list_workloads_internal(
                &Caller::Component("chat"),
                &f.org,
                &all,
                ListSort::default(),
                PageRequest::default(),
            )
            .await
            .unwrap();
    assert_eq!(chat_view.len(), created.len());
    assert_eq!(
        failure(
            f.w.runners
                .list_workloads_internal(
                    &f.owner,
                    "",
                    &all,
                    ListSort::default(),
                    PageRequest::default()
                )
                .await
        )
        .code(),
        Code::PermissionDenied
    );
}

async fn credential_resolution(backend: Backend) {
    let f = fixture(backend).await;
    let agent = new_id();
    let workload = f.w.workload(&f.org, &f.runner.id, &new_id(), &agent).await;
    let gateway = Caller::Component("gateway");
    let resolved =
        f.w.runners
            .resolve_workload_credential(&gateway, &workload.credential_id)
            .await
            .unwrap();
    assert_eq!(resolved.workload_id, workload.id);
    assert_eq!(resolved.agent_id, agent);
    assert_eq!(resolved.status, Starting);
    f.w.runners
        .update_workload(&orchestrator(), &workload.id, &to(Failed))
        .await
        .unwrap();
    let resolved =
        f.w.runners
            .resolve_workload_credential(&gateway, &workload.credential_id)
            .await
            .unwrap();
    assert_eq!(resolved.status, Failed);

    assert_error(
        f.w.runners
            .resolve_workload_credential(&gateway, "00ff")
            .await,
        Code::NotFound,
        "workload credential 00ff not found",
    );
    assert_eq!(
        failure(
            f.w.runners
                .resolve_workload_credential(&orchestrator(), &workload.credential_id)
                .await
        )
        .code(),
        Code::PermissionDenied
    );
}

on_both_backends!(
    every_transition,
    terminal_effects,
    one_active_workload_per_pair,
    concurrent_updates_apply_in_turn,
    create_rules,
    touch_rules,
    names_resolve_at_read_time,
    workload_events,
    workload_reads,
    list_filters_sort_and_pages,
    credential_resolution,
);
