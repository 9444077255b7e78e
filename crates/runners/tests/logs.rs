//! The StreamWorkloadLogs relay, against a runner that serves fixed log
//! lines through the runner protocol trait.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agyn_core::error::Code;
use agyn_core::id::new_id;
use agyn_runners::{LOG_KEEPALIVE, LogsRequest, WorkloadRecord};
use agyn_store::{Backend, on_both_backends};
use futures::StreamExt as _;
use support::*;

struct Setup {
    w: World,
    owner: agyn_core::Caller,
    org: String,
    workload: WorkloadRecord,
    runner: Arc<FixedLogsRunner>,
    connector: Arc<FixedConnector>,
}

async fn setup(backend: Backend) -> Setup {
    let mut w = World::new(backend).await;
    let runner = Arc::new(FixedLogsRunner {
        lines: vec!["starting\n", "ready\n"],
        ..FixedLogsRunner::default()
    });
    let connector = Arc::new(FixedConnector {
        runner: runner.clone(),
        unreachable: AtomicBool::new(false),
    });
    w.runners = w.runners.clone().with_connector(connector.clone());
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (record, _) = w.runner(&owner, &org, "edge").await;
    let workload = w.workload(&org, &record.id, &new_id(), &new_id()).await;
    Setup {
        w,
        owner,
        org,
        workload,
        runner,
        connector,
    }
}

fn request(workload_id: &str) -> LogsRequest {
    LogsRequest {
        workload_id: workload_id.to_string(),
        container_name: "agent".to_string(),
        ..LogsRequest::default()
    }
}

async fn relay_sends_runner_chunks(backend: Backend) {
    let s = setup(backend).await;
    let stream =
        s.w.runners
            .stream_workload_logs(&s.owner, &request(&s.workload.id))
            .await
            .unwrap();
    let chunks: Vec<Vec<u8>> = stream.map(|chunk| chunk.unwrap().data).collect().await;
    assert_eq!(chunks, vec![b"starting\n".to_vec(), b"ready\n".to_vec()]);

    let tail = LogsRequest {
        tail_lines: 5,
        ..request(&s.workload.id)
    };
    let tailed =
        s.w.runners
            .stream_workload_logs(&s.owner, &tail)
            .await
            .unwrap();
    assert_eq!(tailed.count().await, 2);
    let requests = s.runner.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].workload_id, s.workload.id);
    assert_eq!(requests[0].container_name, "agent");
    assert_eq!(
        requests[0].tail_lines, 1_000,
        "0 asks for the last 1,000 lines"
    );
    assert!(!requests[0].follow);
    assert_eq!(requests[1].tail_lines, 5);
}

async fn log_request_rules(backend: Backend) {
    let s = setup(backend).await;
    let logs = |request: LogsRequest| {
        let runners = s.w.runners.clone();
        let owner = s.owner.clone();
        async move {
            runners
                .stream_workload_logs(&owner, &request)
                .await
                .map(|_| ())
        }
    };
    assert_error(
        logs(LogsRequest {
            container_name: String::new(),
            ..request(&s.workload.id)
        })
        .await,
        Code::InvalidArgument,
        "container_name: is required",
    );
    assert_error(
        logs(LogsRequest {
            tail_lines: -1,
            ..request(&s.workload.id)
        })
        .await,
        Code::InvalidArgument,
        "tail_lines: must not be negative",
    );
    let unknown = new_id();
    assert_error(
        logs(request(&unknown)).await,
        Code::NotFound,
        &format!("workload {unknown} not found"),
    );
    assert_error(
        logs(LogsRequest {
            container_name: "mcp-files".into(),
            ..request(&s.workload.id)
        })
        .await,
        Code::NotFound,
        &format!(
            "container \"mcp-files\" not found in workload {}",
            s.workload.id
        ),
    );

    let member = s.w.user("member").await;
    s.w.join(&s.org, &s.owner, &member).await;
    assert_eq!(
        failure(
            s.w.runners
                .stream_workload_logs(&member, &request(&s.workload.id))
                .await
                .map(|_| ())
        )
        .code(),
        Code::PermissionDenied
    );

    s.runner.logs_gone.store(true, Ordering::SeqCst);
    assert_error(
        logs(request(&s.workload.id)).await,
        Code::NotFound,
        "logs are no longer available",
    );
    s.runner.logs_gone.store(false, Ordering::SeqCst);

    s.connector.unreachable.store(true, Ordering::SeqCst);
    let error = failure(logs(request(&s.workload.id)).await);
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(
        error.message(),
        format!(
            "runner {} is unreachable: connection refused",
            s.workload.runner_id
        )
    );

    let unconnected = agyn_runners::Runners::new(s.w.db.clone(), s.w.orgs.clone(), s.w.pki.clone());
    assert_eq!(
        failure(
            unconnected
                .stream_workload_logs(&s.owner, &request(&s.workload.id))
                .await
                .map(|_| ())
        )
        .code(),
        Code::Unavailable
    );
}

on_both_backends!(relay_sends_runner_chunks, log_request_rules);

/// With `follow`, an idle stream gets an empty chunk every 15 seconds. The
/// clock is paused once the stream is open, so tokio advances it to each
/// timer at once.
#[tokio::test(flavor = "current_thread")]
async fn follow_sends_keepalive_chunks() {
    let s = setup(Backend::Sqlite).await;
    let follow = LogsRequest {
        follow: true,
        ..request(&s.workload.id)
    };
    let mut stream =
        s.w.runners
            .stream_workload_logs(&s.owner, &follow)
            .await
            .unwrap();
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    assert_eq!(stream.next().await.unwrap().unwrap().data, b"starting\n");
    assert_eq!(stream.next().await.unwrap().unwrap().data, b"ready\n");
    assert!(started.elapsed() < Duration::from_secs(1));

    let keepalive = stream.next().await.unwrap().unwrap();
    assert!(keepalive.data.is_empty());
    assert!(started.elapsed() >= LOG_KEEPALIVE);
    let second = stream.next().await.unwrap().unwrap();
    assert!(second.data.is_empty());
    assert!(started.elapsed() >= LOG_KEEPALIVE * 2);
}
