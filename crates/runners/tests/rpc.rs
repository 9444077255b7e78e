//! RunnersGateway and RunnersService over Connect on HTTP/2 loopback, on
//! SQLite and PostgreSQL.
//!
//! The test server mounts both services behind a stand-in for the
//! gateway's authentication: the bearer value `user:<id>` makes the caller
//! that user, `agent:<agent id>:<workload id>` an agent with a workload
//! certificate, and `component:<name>` that platform component. The
//! server records each connection's peer address, as the gateway does,
//! for the EnrollRunner rate limit.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use agyn_api_runners::agynio::api::runners::v1::{
    self as pb, RunnersGatewayClient, RunnersServiceClient,
};
use agyn_core::Caller;
use agyn_core::id::new_id;
use agyn_runners::Runners;
use agyn_runners::service::{RunnersGatewayRpc, RunnersRpc};
use agyn_store::{Backend, on_both_backends};
use connectrpc::ErrorCode;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use serde_json::{Value, json};
use support::*;

struct Server {
    address: String,
}

/// Maps the test bearer values to callers, in place of the gateway.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let parts: Vec<&str> = bearer.as_deref().unwrap_or_default().split(':').collect();
    let caller = match parts.as_slice() {
        ["user", id] => Some(user_caller(id)),
        ["agent", agent, workload] => Some(agent_caller(agent, Some(workload))),
        ["component", "orchestrator"] => Some(Caller::Component("orchestrator")),
        ["component", "gateway"] => Some(Caller::Component("gateway")),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

impl Server {
    async fn start(runners: &Runners) -> Self {
        let router = connectrpc::Router::new()
            .add_service(Arc::new(RunnersGatewayRpc::new(runners.clone())))
            .add_service(Arc::new(RunnersRpc::new(runners.clone())));
        let app = axum::Router::new()
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        Self { address }
    }

    fn gateway(&self) -> RunnersGatewayClient<HttpClient> {
        RunnersGatewayClient::new(
            HttpClient::plaintext_http2_only(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    fn internal(&self) -> RunnersServiceClient<HttpClient> {
        RunnersServiceClient::new(
            HttpClient::plaintext_http2_only(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    /// Sends a Connect JSON request to `RunnersGateway/<method>` and
    /// returns the HTTP status and the decoded body.
    async fn gateway_json(&self, bearer: &str, method: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/agynio.api.runners.v1.RunnersGateway/{method}",
                self.address
            ))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bearer}"))
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }
}

fn bearer(value: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {value}"))
}

fn user_bearer(caller: &Caller) -> String {
    format!("user:{}", id(caller))
}

async fn runner_registration_and_enrollment(backend: Backend) {
    let w = World::new(backend).await;
    let server = Server::start(&w.runners).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let gateway = server.gateway();
    let auth = bearer(&user_bearer(&owner));

    let registered = gateway
        .register_runner_with_options(
            pb::RegisterRunnerRequest {
                name: "edge".into(),
                organization_id: Some(org.clone()),
                capabilities: vec!["gpu".into()],
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    let runner_id = registered.runner.meta.id.clone();
    assert!(registered.service_token.starts_with("agynsvc_"));

    let error = gateway
        .register_runner_with_options(
            pb::RegisterRunnerRequest {
                name: "local".into(),
                builtin: true,
                ..Default::default()
            },
            auth.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);

    let enrolled = gateway
        .enroll_runner(pb::EnrollRunnerRequest {
            service_token: registered.service_token.clone(),
            endpoint: "https://runner.example.com:8443".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_owned();
    assert_eq!(enrolled.identity_id, runner_id);
    assert_eq!(enrolled.service_name, format!("runner-{runner_id}"));
    let identity: Value = serde_json::from_slice(&enrolled.identity_json).unwrap();
    assert_eq!(identity["identity_id"], runner_id.as_str());

    let (status, body) = server
        .gateway_json(&user_bearer(&owner), "GetRunner", json!({"id": runner_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    let runner = &body["runner"];
    assert_eq!(runner["status"], "RUNNER_STATUS_ENROLLED");
    assert_eq!(runner["organizationId"], org.as_str());
    assert_eq!(runner["capabilities"], json!(["gpu"]));
    assert_eq!(runner["serviceName"], format!("runner-{runner_id}"));
    assert_eq!(runner["endpoint"], "https://runner.example.com:8443");
    assert!(runner.get("serviceToken").is_none());
    assert!(runner["enrolledAt"].is_string());

    // The earlier enrollment used one call from this address.
    let wrong = format!("agynsvc_{}", "c".repeat(44));
    for _ in 0..9 {
        let error = gateway
            .enroll_runner(pb::EnrollRunnerRequest {
                service_token: wrong.clone(),
                endpoint: "https://runner.example.com:8443".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthenticated);
        assert_eq!(error.message.as_deref(), Some("invalid service token"));
    }
    let limited = gateway
        .enroll_runner(pb::EnrollRunnerRequest {
            service_token: registered.service_token,
            endpoint: "https://runner.example.com:8443".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(limited.code, ErrorCode::ResourceExhausted);
}

async fn workload_lifecycle_over_rpc(backend: Backend) {
    let mut w = World::new(backend).await;
    let connector = Arc::new(FixedConnector {
        runner: Arc::new(FixedLogsRunner {
            lines: vec!["hello\n"],
            ..FixedLogsRunner::default()
        }),
        unreachable: AtomicBool::new(false),
    });
    w.runners = w.runners.clone().with_connector(connector);
    let server = Server::start(&w.runners).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let (runner, _) = w.runner(&owner, &org, "edge").await;
    let internal = server.internal();
    let gateway = server.gateway();
    let orchestrator = bearer("component:orchestrator");
    let workload_id = new_id();
    let agent_id = new_id();
    let thread_id = new_id();

    let created = internal
        .create_workload_with_options(
            pb::CreateWorkloadRequest {
                id: workload_id.clone(),
                runner_id: runner.id.clone(),
                thread_id: thread_id.clone(),
                agent_id: agent_id.clone(),
                organization_id: org.clone(),
                containers: vec![container(
                    "agent",
                    pb::ContainerStatus::CONTAINER_STATUS_WAITING,
                )],
                credential_id: w.workload_certificate(&agent_id, &workload_id).await,
                ..Default::default()
            },
            orchestrator.clone(),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(
        created.workload.status.as_known(),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_STARTING)
    );
    assert_eq!(created.workload.runner_name, "edge");

    let duplicate = internal
        .create_workload_with_options(
            pb::CreateWorkloadRequest {
                id: new_id(),
                runner_id: runner.id.clone(),
                thread_id: thread_id.clone(),
                agent_id: agent_id.clone(),
                organization_id: org.clone(),
                credential_id: "ab".into(),
                ..Default::default()
            },
            orchestrator.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(duplicate.code, ErrorCode::AlreadyExists);

    let agent = bearer(&format!("agent:{agent_id}:{workload_id}"));
    gateway
        .touch_workload_with_options(
            pb::TouchWorkloadRequest {
                id: workload_id.clone(),
                ..Default::default()
            },
            agent.clone(),
        )
        .await
        .unwrap();

    let stopped = internal
        .update_workload_with_options(
            pb::UpdateWorkloadRequest {
                id: workload_id.clone(),
                status: Some(pb::WorkloadStatus::WORKLOAD_STATUS_STOPPED.into()),
                ..Default::default()
            },
            orchestrator.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(stopped.code, ErrorCode::FailedPrecondition);
    assert_eq!(
        stopped.message.as_deref(),
        Some("invalid transition STARTING -> STOPPED")
    );

    let mut logs = gateway
        .stream_workload_logs_with_options(
            pb::StreamWorkloadLogsRequest {
                workload_id: workload_id.clone(),
                container_name: "agent".into(),
                ..Default::default()
            },
            bearer(&user_bearer(&owner)),
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    while let Some(message) = logs.message().await.unwrap() {
        received.push(message.to_owned_message().chunk.data.clone());
    }
    assert_eq!(received, vec![b"hello\n".to_vec()]);

    internal
        .update_workload_with_options(
            pb::UpdateWorkloadRequest {
                id: workload_id.clone(),
                status: Some(pb::WorkloadStatus::WORKLOAD_STATUS_FAILED.into()),
                failure_reason: Some(
                    pb::WorkloadFailureReason::WORKLOAD_FAILURE_REASON_START_TIMEOUT.into(),
                ),
                failure_message: Some("workload did not become running within 300s".into()),
                ..Default::default()
            },
            orchestrator.clone(),
        )
        .await
        .unwrap();
    let terminal = gateway
        .touch_workload_with_options(
            pb::TouchWorkloadRequest {
                id: workload_id.clone(),
                ..Default::default()
            },
            agent,
        )
        .await
        .unwrap_err();
    assert_eq!(terminal.code, ErrorCode::FailedPrecondition);
    assert_eq!(terminal.message.as_deref(), Some("workload is terminal"));

    let (status, body) = server
        .gateway_json(
            &user_bearer(&owner),
            "ListWorkloads",
            json!({
                "organizationId": org,
                "filter": {"statusIn": ["WORKLOAD_STATUS_FAILED"]},
                "sort": {"field": "WORKLOAD_SORT_FIELD_STATUS", "direction": "SORT_DIRECTION_ASC"},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let listed = &body["workloads"][0];
    assert_eq!(listed["meta"]["id"], workload_id.as_str());
    assert_eq!(listed["status"], "WORKLOAD_STATUS_FAILED");
    assert_eq!(
        listed["failureReason"],
        "WORKLOAD_FAILURE_REASON_START_TIMEOUT"
    );
    assert_eq!(listed["agentState"], "WORKLOAD_AGENT_STATE_PROCESSING");
    assert!(listed["removedAt"].is_string());
    assert_eq!(body["workloads"].as_array().unwrap().len(), 1);

    let resolved = internal
        .resolve_workload_credential_with_options(
            pb::ResolveWorkloadCredentialRequest {
                credential_id: created.workload.credential_id.clone(),
                ..Default::default()
            },
            bearer("component:gateway"),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(resolved.workload_id, workload_id);
    assert_eq!(
        resolved.status.as_known(),
        Some(pb::WorkloadStatus::WORKLOAD_STATUS_FAILED)
    );

    let unknown = gateway
        .get_workload_with_options(
            pb::GetWorkloadRequest {
                id: new_id(),
                ..Default::default()
            },
            bearer(&user_bearer(&owner)),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);
    let logs = gateway
        .stream_workload_logs_with_options(
            pb::StreamWorkloadLogsRequest {
                workload_id: workload_id.clone(),
                ..Default::default()
            },
            bearer(&user_bearer(&owner)),
        )
        .await;
    let error = match logs {
        Err(error) => error,
        Ok(mut stream) => stream.message().await.unwrap_err(),
    };
    assert_eq!(error.code, ErrorCode::InvalidArgument);
}

on_both_backends!(
    runner_registration_and_enrollment,
    workload_lifecycle_over_rpc
);
