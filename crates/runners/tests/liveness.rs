//! Runner liveness: three failed Ready probes make an enrolled runner
//! OFFLINE, and the next successful probe makes it ENROLLED with `last_seen_at`.
//! Pending runners and other replicas' built-in runners are left alone.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agyn_core::Secret;
use agyn_runners::{Enrollment, Liveness, RunnerStatus};
use agyn_store::{Backend, on_both_backends};
use support::*;

async fn offline_after_three_failures(backend: Backend) {
    let mut w = World::new(backend).await;
    let connector = Arc::new(FixedConnector {
        runner: Arc::new(FixedLogsRunner::default()),
        unreachable: AtomicBool::new(true),
    });
    w.runners = w.runners.clone().with_connector(connector.clone());
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (pending, _) = w.runner(&owner, &org, "never-enrolled").await;
    // A built-in runner this process cannot reach belongs to another
    // replica, which probes it itself.
    let elsewhere = w
        .runners
        .ensure_builtin_runner("local-other")
        .await
        .unwrap();
    let (runner, token) = w.runner(&owner, &org, "edge").await;
    w.runners
        .enroll_runner(
            "10.0.0.1",
            &Enrollment {
                service_token: &Secret::new(token),
                endpoint: "https://runner.example.com:8443",
                csr_pem: None,
            },
        )
        .await
        .unwrap();
    let liveness = Liveness::default();
    let status = |id: String| {
        let runners = w.runners.clone();
        async move {
            runners
                .get_runner(&agyn_core::Caller::Component("orchestrator"), &id)
                .await
                .unwrap()
        }
    };

    for round in 1..=2 {
        assert_eq!(liveness.probe_all(&w.runners).await.unwrap(), 0);
        let record = status(runner.id.clone()).await;
        assert_eq!(
            record.status,
            RunnerStatus::Enrolled,
            "after {round} failures"
        );
    }
    assert_eq!(liveness.probe_all(&w.runners).await.unwrap(), 0);
    assert_eq!(
        status(runner.id.clone()).await.status,
        RunnerStatus::Offline
    );
    assert_eq!(status(runner.id.clone()).await.last_seen_at, None);
    assert_eq!(
        status(pending.id.clone()).await.status,
        RunnerStatus::Pending
    );
    assert_eq!(
        status(elsewhere.id.clone()).await.status,
        RunnerStatus::Enrolled
    );

    connector.unreachable.store(false, Ordering::SeqCst);
    assert_eq!(liveness.probe_all(&w.runners).await.unwrap(), 2);
    let back = status(runner.id.clone()).await;
    assert_eq!(back.status, RunnerStatus::Enrolled);
    assert!(back.last_seen_at.is_some());
    assert_eq!(
        status(pending.id.clone()).await.status,
        RunnerStatus::Pending
    );
}

on_both_backends!(offline_after_three_failures);
