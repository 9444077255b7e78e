//! Provisioned volumes and the organization purge on SQLite and
//! PostgreSQL.

mod support;

use std::collections::HashSet;

use agyn_core::Caller;
use agyn_core::error::Code;
use agyn_core::id::new_id;
use agyn_orgs::ResourceCleaner;
use agyn_runners::{
    ListSort, NewRunner, NewVolume, NewWorkload, NewWorkloadVolume, PageRequest, RunnerRecord,
    RunnersCleaner, SortField, VolumeChanges, VolumeFilter, VolumeStatus, WorkloadChanges,
    WorkloadStatus,
};
use agyn_store::{Backend, on_both_backends};
use support::*;

use VolumeStatus::{Active, Deleted, Deprovisioning, Failed, Provisioning};

const ALL_STATUSES: [VolumeStatus; 5] = [Provisioning, Active, Deprovisioning, Deleted, Failed];

fn to(status: VolumeStatus) -> VolumeChanges {
    VolumeChanges {
        status: Some(status),
        ..VolumeChanges::default()
    }
}

/// Returns the moves that bring a new PROVISIONING volume to `status`.
fn path_to(status: VolumeStatus) -> Vec<VolumeStatus> {
    match status {
        Provisioning => vec![],
        Active => vec![Active],
        Deprovisioning => vec![Active, Deprovisioning],
        Deleted => vec![Active, Deprovisioning, Deleted],
        Failed => vec![Failed],
    }
}

fn new_volume(org: &str, runner: &RunnerRecord, thread: &str, volume: &str) -> NewVolume {
    NewVolume {
        id: new_id(),
        volume_id: volume.to_string(),
        thread_id: thread.to_string(),
        runner_id: runner.id.clone(),
        agent_id: new_id(),
        organization_id: org.to_string(),
        size: "10Gi".to_string(),
    }
}

async fn volume_transitions(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    let allowed: HashSet<(VolumeStatus, VolumeStatus)> = [
        (Provisioning, Provisioning),
        (Provisioning, Active),
        (Provisioning, Failed),
        (Active, Active),
        (Active, Deprovisioning),
        (Active, Failed),
        (Deprovisioning, Deprovisioning),
        (Deprovisioning, Deleted),
        (Deprovisioning, Failed),
    ]
    .into_iter()
    .collect();
    for from in ALL_STATUSES {
        for next in ALL_STATUSES {
            let input = new_volume(&org, &runner, &new_id(), &new_id());
            let volume = w
                .runners
                .create_provisioned_volume(&orchestrator(), &input)
                .await
                .unwrap();
            for step in path_to(from) {
                w.runners
                    .update_provisioned_volume(&orchestrator(), &volume.id, &to(step))
                    .await
                    .unwrap();
            }
            let result = w
                .runners
                .update_provisioned_volume(&orchestrator(), &volume.id, &to(next))
                .await;
            if allowed.contains(&(from, next)) {
                let updated = result.unwrap_or_else(|error| {
                    panic!("{} -> {} failed: {error:?}", from.name(), next.name())
                });
                assert_eq!(updated.status, next);
                assert_eq!(updated.removed_at.is_some(), next.is_terminal());
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

async fn volume_records(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let participant = w.user("participant").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    let thread = new_id();
    w.join_thread(&thread, &participant).await;
    let definition = w.volume_definition(&org, "workspace").await;

    let input = new_volume(&org, &runner, &thread, &definition);
    let volume = w
        .runners
        .create_provisioned_volume(&orchestrator(), &input)
        .await
        .unwrap();
    assert_eq!(volume.status, Provisioning);
    assert_eq!(volume.persistent_name, format!("agyn-vol-{}", volume.id));
    assert_eq!(volume.size, "10Gi");
    assert_eq!(volume.volume_name, "workspace");
    let events = w.events.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "volume.updated");
    assert_eq!(events[0].room, format!("organization:{org}"));

    assert_error(
        w.runners
            .create_provisioned_volume(&orchestrator(), &input)
            .await,
        Code::AlreadyExists,
        &format!("provisioned volume {} already exists", volume.id),
    );
    assert_error(
        w.runners
            .create_provisioned_volume(
                &orchestrator(),
                &new_volume(&org, &runner, &thread, &definition),
            )
            .await,
        Code::AlreadyExists,
        &format!(
            "thread {thread} already has a non-terminal provisioned volume of volume {definition}"
        ),
    );
    assert_eq!(
        failure(w.runners.create_provisioned_volume(&owner, &input).await).code(),
        Code::PermissionDenied
    );

    let active = w
        .runners
        .update_provisioned_volume(
            &orchestrator(),
            &volume.id,
            &VolumeChanges {
                instance_id: Some("vol-1".into()),
                ..to(Active)
            },
        )
        .await
        .unwrap();
    assert_eq!(active.instance_id, "vol-1");
    assert_eq!(w.events.take().len(), 1);
    w.runners
        .update_provisioned_volume(
            &orchestrator(),
            &volume.id,
            &VolumeChanges {
                instance_id: Some("vol-2".into()),
                ..VolumeChanges::default()
            },
        )
        .await
        .unwrap();
    assert!(w.events.take().is_empty(), "no status change, no event");
    assert_error(
        w.runners
            .update_provisioned_volume(&orchestrator(), &volume.id, &VolumeChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );

    for reader in [owner.clone(), participant.clone()] {
        assert_eq!(
            w.runners
                .get_volume(&reader, &volume.id)
                .await
                .unwrap()
                .instance_id,
            "vol-2"
        );
    }
    assert_error(
        w.runners.get_volume(&outsider, &volume.id).await,
        Code::PermissionDenied,
        "permission denied: can_view_volumes on organization",
    );

    w.runners
        .update_provisioned_volume(&orchestrator(), &volume.id, &to(Failed))
        .await
        .unwrap();
    let second = w
        .runners
        .create_provisioned_volume(
            &orchestrator(),
            &new_volume(&org, &runner, &thread, &definition),
        )
        .await
        .unwrap();
    let elsewhere = w
        .runners
        .create_provisioned_volume(
            &orchestrator(),
            &new_volume(&org, &runner, &new_id(), &definition),
        )
        .await
        .unwrap();

    let page = PageRequest::default();
    let (by_thread, _) = w
        .runners
        .list_volumes_by_thread(&participant, &thread, page)
        .await
        .unwrap();
    let ids: Vec<&str> = by_thread.iter().map(|record| record.id.as_str()).collect();
    assert_eq!(ids, vec![second.id.as_str(), volume.id.as_str()]);
    assert!(
        by_thread
            .iter()
            .all(|record| record.volume_name == "workspace")
    );
    assert_eq!(
        failure(
            w.runners
                .list_volumes_by_thread(&outsider, &thread, page)
                .await
        )
        .code(),
        Code::PermissionDenied
    );

    let filter = VolumeFilter {
        statuses: vec![Provisioning],
        volume_ids: vec![definition.clone()],
        ..VolumeFilter::default()
    };
    let (provisioning, _) = w
        .runners
        .list_volumes(&owner, &org, &filter, ListSort::default(), page)
        .await
        .unwrap();
    let ids: Vec<&str> = provisioning
        .iter()
        .map(|record| record.id.as_str())
        .collect();
    assert_eq!(ids, vec![elsewhere.id.as_str(), second.id.as_str()]);
    let by_status = ListSort {
        field: SortField::Status,
        ascending: false,
    };
    let (sorted, _) = w
        .runners
        .list_volumes(&owner, &org, &VolumeFilter::default(), by_status, page)
        .await
        .unwrap();
    assert_eq!(
        sorted[0].id, volume.id,
        "FAILED sorts first when descending"
    );
    let (first_page, token) = w
        .runners
        .list_volumes(
            &owner,
            &org,
            &VolumeFilter::default(),
            by_status,
            PageRequest { size: 2, token: "" },
        )
        .await
        .unwrap();
    let (last_page, end) = w
        .runners
        .list_volumes(
            &owner,
            &org,
            &VolumeFilter::default(),
            by_status,
            PageRequest {
                size: 2,
                token: &token,
            },
        )
        .await
        .unwrap();
    assert_eq!(first_page.len(), 2);
    assert_eq!(last_page.len(), 1);
    assert!(end.is_empty());
    let walked: Vec<String> = first_page
        .into_iter()
        .chain(last_page)
        .map(|record| record.id)
        .collect();
    let expected: Vec<String> = sorted.into_iter().map(|record| record.id).collect();
    assert_eq!(walked, expected);
    assert_eq!(
        failure(
            w.runners
                .list_volumes(
                    &participant,
                    &org,
                    &VolumeFilter::default(),
                    by_status,
                    page
                )
                .await
        )
        .code(),
        Code::PermissionDenied
    );
    let (internal, _) = w
        .runners
        .list_volumes_internal(
            &orchestrator(),
            "",
            &VolumeFilter::default(),
            by_status,
            page,
        )
        .await
        .unwrap();
    assert_eq!(internal.len(), 3);
}

async fn workload_creates_its_volumes(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    let thread = new_id();
    let definition = new_id();
    let key = new_id();
    let input = NewWorkload {
        provisioned_volumes: vec![NewWorkloadVolume {
            id: key.clone(),
            volume_id: definition.clone(),
            size: "1Gi".into(),
        }],
        ..new_workload(&new_id(), &org, &runner.id, &thread, &new_id())
    };
    let (workload, volumes) = w
        .runners
        .create_workload(&orchestrator(), &input)
        .await
        .unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].id, key);
    assert_eq!(volumes[0].thread_id, thread);
    assert_eq!(volumes[0].agent_id, workload.agent_id);
    assert_eq!(volumes[0].runner_id, runner.id);
    assert_eq!(volumes[0].status, Provisioning);
    let events = w.events.take();
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "workload.updated",
            "workload.updated",
            "workload.updated",
            "volume.updated"
        ]
    );

    // The second workload's volume conflicts, so neither record is kept.
    w.runners
        .update_workload(
            &orchestrator(),
            &workload.id,
            &WorkloadChanges {
                status: Some(WorkloadStatus::Failed),
                ..WorkloadChanges::default()
            },
        )
        .await
        .unwrap();
    let retry = NewWorkload {
        provisioned_volumes: vec![NewWorkloadVolume {
            id: new_id(),
            volume_id: definition.clone(),
            size: "1Gi".into(),
        }],
        ..new_workload(&new_id(), &org, &runner.id, &thread, &workload.agent_id)
    };
    assert_eq!(
        failure(w.runners.create_workload(&orchestrator(), &retry).await).code(),
        Code::AlreadyExists
    );
    assert_eq!(
        failure(w.runners.get_workload(&owner, &retry.id).await).code(),
        Code::NotFound
    );

    let failed = NewWorkload {
        failure_reason: Some(agyn_runners::FailureReason::ConfigInvalid),
        ..retry.clone()
    };
    assert_error(
        w.runners.create_workload(&orchestrator(), &failed).await,
        Code::InvalidArgument,
        "provisioned_volumes: must be empty when failure_reason is set",
    );
}

async fn organization_purge(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("admin").await;
    let org = w.org(&owner, "Acme").await;
    let kept = w.org(&owner, "Kept").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    let (kept_runner, _) = w.runner(&owner, &kept, "edge").await;
    let cluster = w
        .runners
        .register_runner(
            &admin,
            &NewRunner {
                name: "shared".into(),
                ..NewRunner::default()
            },
        )
        .await
        .unwrap()
        .runner;
    let workload = w.workload(&org, &cluster.id, &new_id(), &new_id()).await;
    let volume = w
        .runners
        .create_provisioned_volume(
            &orchestrator(),
            &new_volume(&org, &runner, &workload.thread_id, &new_id()),
        )
        .await
        .unwrap();
    w.workload(&kept, &kept_runner.id, &new_id(), &new_id())
        .await;

    let cleaner = RunnersCleaner::new(w.db.clone(), w.pki.clone());
    assert_eq!(cleaner.step(), "runners");
    assert_eq!(
        failure(cleaner.delete_organization_resources(&org).await).code(),
        Code::FailedPrecondition
    );
    w.runners
        .update_workload(
            &orchestrator(),
            &workload.id,
            &WorkloadChanges {
                status: Some(WorkloadStatus::Failed),
                ..WorkloadChanges::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        failure(cleaner.delete_organization_resources(&org).await).code(),
        Code::FailedPrecondition,
        "an ACTIVE volume still blocks the purge"
    );
    w.runners
        .update_provisioned_volume(&orchestrator(), &volume.id, &to(Failed))
        .await
        .unwrap();

    assert_eq!(
        failure(
            w.runners
                .delete_organization_resources(&orchestrator(), &org)
                .await
        )
        .code(),
        Code::PermissionDenied
    );
    w.runners
        .delete_organization_resources(&Caller::Component("organizations"), &org)
        .await
        .unwrap();
    cleaner.delete_organization_resources(&org).await.unwrap();

    assert_eq!(w.count("workloads", &org).await, 0);
    assert_eq!(w.count("provisioned_volumes", &org).await, 0);
    assert_eq!(w.count("runners", &org).await, 0);
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &runner.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(w.count("workloads", &kept).await, 1);
    assert_eq!(w.count("runners", &kept).await, 1);
    assert!(w.runners.get_runner(&admin, &cluster.id).await.is_ok());
}

on_both_backends!(
    volume_transitions,
    volume_records,
    workload_creates_its_volumes,
    organization_purge,
);
