//! The runner registry on SQLite and PostgreSQL: registration rules,
//! reads and lists, updates, the delete guard, enrollment, liveness status
//! and the built-in runner.

mod support;

use std::collections::BTreeMap;

use agyn_core::Secret;
use agyn_core::error::Code;
use agyn_core::id::new_id;
use agyn_core::{Caller, IdentityKind};
use agyn_pki::{CertificateKind, PeerError};
use agyn_runners::{
    Enrollment, NewRunner, NewVolume, RunnerChanges, RunnerStatus, VolumeChanges, VolumeStatus,
    WorkloadChanges, WorkloadStatus,
};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, on_both_backends};
use support::*;

const ENDPOINT: &str = "https://runner.example.com:8443";

fn org_runner(org: &str, name: &str) -> NewRunner {
    NewRunner {
        name: name.to_string(),
        organization_id: Some(org.to_string()),
        ..NewRunner::default()
    }
}

fn cluster_runner(name: &str) -> NewRunner {
    NewRunner {
        name: name.to_string(),
        ..NewRunner::default()
    }
}

async fn register_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let admin = w.admin("admin").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;

    let cases: Vec<(NewRunner, &str)> = vec![
        (
            NewRunner {
                organization_id: Some("nope".into()),
                ..org_runner(&org, "r")
            },
            "organization_id: must be a UUID",
        ),
        (org_runner(&org, "  "), "name: must not be empty"),
        (
            org_runner(&org, &"x".repeat(65)),
            "name: must be at most 64 characters",
        ),
        (
            NewRunner {
                labels: BTreeMap::from([("Zone".to_string(), "a".to_string())]),
                ..org_runner(&org, "r")
            },
            "labels: key \"Zone\" must match ^[a-z0-9][a-z0-9._/-]{0,62}$",
        ),
        (
            NewRunner {
                capabilities: vec!["GPU".into()],
                ..org_runner(&org, "r")
            },
            "capabilities: \"GPU\" must match ^[a-z0-9][a-z0-9_-]{0,31}$",
        ),
        (
            NewRunner {
                endpoint: Some("http://runner:8443".into()),
                ..org_runner(&org, "r")
            },
            "endpoint: must be an https://host:port URL",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.runners.register_runner(&owner, &input).await,
            Code::InvalidArgument,
            message,
        );
    }

    let builtin = NewRunner {
        builtin: true,
        ..cluster_runner("local")
    };
    assert_eq!(
        failure(w.runners.register_runner(&admin, &builtin).await).code(),
        Code::PermissionDenied
    );
    assert_eq!(
        failure(
            w.runners
                .register_runner(&member, &org_runner(&org, "r"))
                .await
        )
        .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        failure(
            w.runners
                .register_runner(&owner, &cluster_runner("shared"))
                .await
        )
        .code(),
        Code::PermissionDenied
    );

    let registered = w
        .runners
        .register_runner(&owner, &org_runner(&org, "edge"))
        .await
        .unwrap();
    let token = registered.service_token.expose();
    assert!(token.starts_with("agynsvc_"), "{token}");
    assert_eq!(token.len(), "agynsvc_".len() + 44);
    assert_eq!(registered.runner.status, RunnerStatus::Pending);
    assert_eq!(
        registered.runner.service_name(),
        format!("runner-{}", registered.runner.id)
    );
    let row = sqlx::query("SELECT token_hash FROM runners WHERE id = $1")
        .bind(&registered.runner.id)
        .fetch_one(w.db.pool())
        .await
        .unwrap();
    let stored: String = row.try_get("token_hash").unwrap();
    assert_eq!(stored, agyn_users::tokens::hash(token));
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &registered.runner.id)
            .await
            .unwrap(),
        Some(IdentityKind::Runner)
    );

    assert_error(
        w.runners
            .register_runner(&owner, &org_runner(&org, "edge"))
            .await,
        Code::AlreadyExists,
        &format!("runner name \"edge\" is already used in organization {org}; choose another name"),
    );
    let other = w.org(&owner, "Other").await;
    w.runners
        .register_runner(&owner, &org_runner(&other, "edge"))
        .await
        .unwrap();
    w.runners
        .register_runner(&admin, &cluster_runner("edge"))
        .await
        .unwrap();
    assert_error(
        w.runners
            .register_runner(&admin, &cluster_runner("edge"))
            .await,
        Code::AlreadyExists,
        "runner name \"edge\" is already used by a cluster runner; choose another name",
    );
    let component = w
        .runners
        .register_runner(&Caller::Component("bootstrap"), &builtin)
        .await
        .unwrap();
    assert!(component.runner.builtin);
}

async fn runner_reads_and_lists(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let outsider = w.user("outsider").await;
    let admin = w.admin("admin").await;
    let org = w.org(&owner, "Acme").await;
    let other = w.org(&outsider, "Other").await;
    let (first, _) = w.runner(&owner, &org, "first").await;
    let (second, _) = w.runner(&owner, &org, "second").await;
    let (foreign, _) = w.runner(&outsider, &other, "foreign").await;
    let cluster = w
        .runners
        .register_runner(&admin, &cluster_runner("shared"))
        .await
        .unwrap()
        .runner;

    assert_eq!(
        w.runners.get_runner(&owner, &first.id).await.unwrap(),
        first
    );
    assert_eq!(
        failure(w.runners.get_runner(&outsider, &first.id).await).code(),
        Code::PermissionDenied
    );
    assert_eq!(
        w.runners.get_runner(&outsider, &cluster.id).await.unwrap(),
        cluster
    );
    let unknown = new_id();
    assert_error(
        w.runners.get_runner(&owner, &unknown).await,
        Code::NotFound,
        &format!("runner {unknown} not found"),
    );

    let (listed, token) = w
        .runners
        .list_runners(&owner, Some(&org), 2, "")
        .await
        .unwrap();
    assert_eq!(listed, vec![first.clone(), second.clone()]);
    let (rest, last) = w
        .runners
        .list_runners(&owner, Some(&org), 2, &token)
        .await
        .unwrap();
    assert_eq!(rest, vec![cluster.clone()]);
    assert!(last.is_empty());
    assert_eq!(
        failure(w.runners.list_runners(&outsider, Some(&org), 0, "").await).code(),
        Code::PermissionDenied
    );
    let token_error = failure(
        w.runners
            .list_runners(&owner, Some(&other), 2, &token)
            .await,
    );
    assert_eq!(token_error.reason(), Some("PAGE_TOKEN_INVALID"));

    let (visible, _) = w.runners.list_runners(&owner, None, 0, "").await.unwrap();
    assert_eq!(visible, vec![cluster.clone()]);
    let (every, _) = w.runners.list_runners(&admin, None, 0, "").await.unwrap();
    assert_eq!(every, vec![first, second, foreign, cluster]);
    let (internal, _) = w
        .runners
        .list_runners(&orchestrator(), None, 0, "")
        .await
        .unwrap();
    assert_eq!(internal, every);
}

async fn update_runner_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let outsider = w.user("outsider").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    w.runner(&owner, &org, "taken").await;

    assert_error(
        w.runners
            .update_runner(&owner, &runner.id, &RunnerChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );
    let endpoint = RunnerChanges {
        endpoint: Some("runner.example.com:8443".into()),
        ..RunnerChanges::default()
    };
    assert_error(
        w.runners.update_runner(&owner, &runner.id, &endpoint).await,
        Code::InvalidArgument,
        "endpoint: must be an https://host:port URL",
    );
    let rename = RunnerChanges {
        name: Some("taken".into()),
        ..RunnerChanges::default()
    };
    assert_eq!(
        failure(w.runners.update_runner(&owner, &runner.id, &rename).await).code(),
        Code::AlreadyExists
    );
    assert_eq!(
        failure(
            w.runners
                .update_runner(
                    &outsider,
                    &runner.id,
                    &RunnerChanges {
                        name: Some("mine".into()),
                        ..RunnerChanges::default()
                    }
                )
                .await
        )
        .code(),
        Code::PermissionDenied
    );

    let labels = BTreeMap::from([("zone".to_string(), "eu-1".to_string())]);
    let changes = RunnerChanges {
        name: Some("edge-2".into()),
        labels: Some(labels.clone()),
        capabilities: Some(vec!["gpu".into()]),
        endpoint: Some(ENDPOINT.into()),
    };
    let updated = w
        .runners
        .update_runner(&owner, &runner.id, &changes)
        .await
        .unwrap();
    assert_eq!(updated.name, "edge-2");
    assert_eq!(updated.labels, labels);
    assert_eq!(updated.capabilities, vec!["gpu".to_string()]);
    assert_eq!(updated.endpoint, ENDPOINT);
    let cleared = RunnerChanges {
        labels: Some(BTreeMap::new()),
        ..RunnerChanges::default()
    };
    let updated = w
        .runners
        .update_runner(&owner, &runner.id, &cleared)
        .await
        .unwrap();
    assert!(updated.labels.is_empty());
    assert_eq!(updated.capabilities, vec!["gpu".to_string()]);
    assert_eq!(
        w.runners.get_runner(&owner, &runner.id).await.unwrap(),
        updated
    );
}

async fn delete_runner_guard(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, token) = w.runner(&owner, &org, "edge").await;
    let enrolled = w
        .runners
        .enroll_runner(
            "10.0.0.1",
            &Enrollment {
                service_token: &Secret::new(token),
                endpoint: ENDPOINT,
                csr_pem: None,
            },
        )
        .await
        .unwrap();
    let identity: serde_json::Value =
        serde_json::from_slice(enrolled.identity_json.expose()).unwrap();
    let certificate = certificate_der(identity["certificate_pem"].as_str().unwrap());
    let workload = w.workload(&org, &runner.id, &new_id(), &new_id()).await;

    assert_error(
        w.runners.delete_runner(&owner, &runner.id).await,
        Code::FailedPrecondition,
        &format!("runner has active workloads or volumes: {}", workload.id),
    );
    let error = failure(w.runners.delete_runner(&owner, &runner.id).await);
    assert_eq!(error.reason(), Some("REFERENCED"));

    let stop = WorkloadChanges {
        status: Some(WorkloadStatus::Stopping),
        ..WorkloadChanges::default()
    };
    w.runners
        .update_workload(&orchestrator(), &workload.id, &stop)
        .await
        .unwrap();
    let stopped = WorkloadChanges {
        status: Some(WorkloadStatus::Stopped),
        ..WorkloadChanges::default()
    };
    w.runners
        .update_workload(&orchestrator(), &workload.id, &stopped)
        .await
        .unwrap();
    let volume = w
        .runners
        .create_provisioned_volume(
            &orchestrator(),
            &NewVolume {
                id: new_id(),
                volume_id: new_id(),
                thread_id: workload.thread_id.clone(),
                runner_id: runner.id.clone(),
                agent_id: workload.agent_id.clone(),
                organization_id: org.clone(),
                size: "1Gi".into(),
            },
        )
        .await
        .unwrap();
    assert_error(
        w.runners.delete_runner(&owner, &runner.id).await,
        Code::FailedPrecondition,
        &format!("runner has active workloads or volumes: {}", volume.id),
    );
    w.runners
        .update_provisioned_volume(
            &orchestrator(),
            &volume.id,
            &VolumeChanges {
                status: Some(VolumeStatus::Failed),
                ..VolumeChanges::default()
            },
        )
        .await
        .unwrap();
    w.runners.delete_runner(&owner, &runner.id).await.unwrap();

    assert_eq!(
        failure(w.runners.get_runner(&owner, &runner.id).await).code(),
        Code::NotFound
    );
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &runner.id)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        w.pki.verify_peer(&certificate).await,
        Err(PeerError::Revoked)
    ));
    let history = w.runners.get_workload(&owner, &workload.id).await.unwrap();
    assert_eq!(history.runner_id, runner.id);
    assert_eq!(history.runner_name, "");
}

async fn enrollment(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, token) = w.runner(&owner, &org, "edge").await;
    let token = Secret::new(token);
    let enroll = |service_token: &Secret<String>, endpoint: &str, csr_pem: Option<&str>| {
        let runners = w.runners.clone();
        let service_token = Secret::new(service_token.expose().clone());
        let endpoint = endpoint.to_string();
        let csr_pem = csr_pem.map(str::to_string);
        async move {
            runners
                .enroll_runner(
                    "10.0.0.2",
                    &Enrollment {
                        service_token: &service_token,
                        endpoint: &endpoint,
                        csr_pem: csr_pem.as_deref(),
                    },
                )
                .await
        }
    };

    let unknown = Secret::new(format!("agynsvc_{}", "a".repeat(44)));
    for bad in [&unknown, &Secret::new("agyn_notatoken".to_string())] {
        assert_error(
            enroll(bad, ENDPOINT, None).await,
            Code::Unauthenticated,
            "invalid service token",
        );
    }
    assert_error(
        enroll(&token, "", None).await,
        Code::InvalidArgument,
        "endpoint: is required unless the runner is built in",
    );
    assert_error(
        enroll(&token, "http://runner.example.com:8443", None).await,
        Code::InvalidArgument,
        "endpoint: must be an https://host:port URL",
    );

    let first = enroll(&token, ENDPOINT, None).await.unwrap();
    assert_eq!(first.identity_id, runner.id);
    assert_eq!(first.service_name, format!("runner-{}", runner.id));
    let identity: serde_json::Value = serde_json::from_slice(first.identity_json.expose()).unwrap();
    assert_eq!(identity["identity_id"], runner.id.as_str());
    assert!(
        identity["private_key_pem"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert_eq!(identity["ca_pem"], w.pki.ca_certificate_pem());
    assert!(identity["expires_at"].as_str().unwrap().ends_with('Z'));
    let first_der = certificate_der(identity["certificate_pem"].as_str().unwrap());
    let peer = w.pki.verify_peer(&first_der).await.unwrap();
    assert_eq!(peer.kind, CertificateKind::Runner);
    assert_eq!(
        peer.identity,
        Some((runner.id.clone(), IdentityKind::Runner))
    );

    let stored = w.runners.get_runner(&owner, &runner.id).await.unwrap();
    assert_eq!(stored.status, RunnerStatus::Enrolled);
    assert_eq!(stored.endpoint, ENDPOINT);
    assert!(stored.enrolled_at.is_some());

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let second = enroll(&token, ENDPOINT, Some(&csr)).await.unwrap();
    let identity: serde_json::Value =
        serde_json::from_slice(second.identity_json.expose()).unwrap();
    assert!(identity.get("private_key_pem").is_none());
    let second_der = certificate_der(identity["certificate_pem"].as_str().unwrap());
    assert!(w.pki.verify_peer(&second_der).await.is_ok());
    assert!(matches!(
        w.pki.verify_peer(&first_der).await,
        Err(PeerError::Revoked)
    ));
}

async fn enroll_rate_limit(backend: Backend) {
    let w = World::new(backend).await;
    let unknown = Secret::new(format!("agynsvc_{}", "b".repeat(44)));
    let attempt = |address: &'static str| {
        let runners = w.runners.clone();
        let token = Secret::new(unknown.expose().clone());
        async move {
            runners
                .enroll_runner(
                    address,
                    &Enrollment {
                        service_token: &token,
                        endpoint: ENDPOINT,
                        csr_pem: None,
                    },
                )
                .await
        }
    };
    for _ in 0..10 {
        assert_eq!(
            failure(attempt("192.0.2.7").await).code(),
            Code::Unauthenticated
        );
    }
    let limited = failure(attempt("192.0.2.7").await);
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited
            .message()
            .starts_with("too many enrollment attempts from 192.0.2.7"),
        "{limited:?}"
    );
    assert_eq!(
        failure(attempt("192.0.2.8").await).code(),
        Code::Unauthenticated
    );
}

async fn runner_status_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, token) = w.runner(&owner, &org, "edge").await;

    assert_error(
        w.runners
            .set_runner_status(
                &orchestrator(),
                &runner.id,
                Some(RunnerStatus::Offline),
                None,
            )
            .await,
        Code::FailedPrecondition,
        &format!("runner {} has not enrolled yet", runner.id),
    );
    assert_error(
        w.runners
            .set_runner_status(
                &orchestrator(),
                &runner.id,
                Some(RunnerStatus::Pending),
                None,
            )
            .await,
        Code::InvalidArgument,
        "status: must be RUNNER_STATUS_ENROLLED or RUNNER_STATUS_OFFLINE",
    );
    assert_eq!(
        failure(
            w.runners
                .set_runner_status(&owner, &runner.id, Some(RunnerStatus::Offline), None)
                .await
        )
        .code(),
        Code::PermissionDenied
    );
    w.runners
        .enroll_runner(
            "10.0.0.3",
            &Enrollment {
                service_token: &Secret::new(token),
                endpoint: ENDPOINT,
                csr_pem: None,
            },
        )
        .await
        .unwrap();
    let offline = w
        .runners
        .set_runner_status(
            &orchestrator(),
            &runner.id,
            Some(RunnerStatus::Offline),
            None,
        )
        .await
        .unwrap();
    assert_eq!(offline.status, RunnerStatus::Offline);
    assert_eq!(offline.last_seen_at, None);
    let seen = 1_764_000_000_000_000;
    let back = w
        .runners
        .set_runner_status(
            &orchestrator(),
            &runner.id,
            Some(RunnerStatus::Enrolled),
            Some(seen),
        )
        .await
        .unwrap();
    assert_eq!(back.status, RunnerStatus::Enrolled);
    assert_eq!(back.last_seen_at, Some(seen));
}

async fn builtin_runner_is_created_once(backend: Backend) {
    let w = World::new(backend).await;
    let calls = (0..4).map(|_| {
        let runners = w.runners.clone();
        tokio::spawn(async move { runners.ensure_builtin_runner("local").await })
    });
    let mut ids = Vec::new();
    for call in calls {
        let runner = call.await.unwrap().unwrap();
        assert!(runner.builtin);
        assert_eq!(runner.status, RunnerStatus::Enrolled);
        assert_eq!(runner.organization_id, None);
        assert_eq!(runner.endpoint, "");
        ids.push(runner.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let again = w.runners.ensure_builtin_runner("local").await.unwrap();
    assert_eq!(again.id, ids[0]);
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &again.id)
            .await
            .unwrap(),
        Some(IdentityKind::Runner)
    );

    let admin = w.admin("admin").await;
    w.runners
        .register_runner(&admin, &cluster_runner("remote"))
        .await
        .unwrap();
    assert_eq!(
        failure(w.runners.ensure_builtin_runner("remote").await).code(),
        Code::FailedPrecondition
    );

    // The built-in runner takes no endpoint and cannot be deleted by a
    // user, because the process that hosts it keeps running it.
    let changes = RunnerChanges {
        endpoint: Some("https://runner.example.com:8443".to_string()),
        ..RunnerChanges::default()
    };
    let refused = failure(w.runners.update_runner(&admin, &again.id, &changes).await);
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = failure(w.runners.delete_runner(&admin, &again.id).await);
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("runner.builtin"),
        "{}",
        refused.message()
    );
}

on_both_backends!(
    register_rules,
    runner_reads_and_lists,
    update_runner_rules,
    delete_runner_guard,
    enrollment,
    enroll_rate_limit,
    runner_status_rules,
    builtin_runner_is_created_once,
);
