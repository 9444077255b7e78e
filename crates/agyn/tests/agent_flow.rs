//! The main flow with real processes: `agyn serve` with its built-in
//! runner and a scripted model. A message to an agent makes the
//! orchestrator start a workload whose `agyn agent` replies in the thread.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ConnectStream, Server, connect_json};

/// Short orchestrator timings, so that a test observes idle stops, retries and
/// degradation in seconds instead of minutes.
fn fast_orchestrator() -> Vec<String> {
    [
        "--orchestrator-poll-interval",
        "1s",
        "--orchestrator-reconcile-interval",
        "1s",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect()
}

async fn call(server: &Server, token: &str, method: &str, body: Value) -> Value {
    let (status, response) = try_call(server, token, method, body).await;
    assert_eq!(status, 200, "{method}: {response}");
    response
}

async fn try_call(server: &Server, token: &str, method: &str, body: Value) -> (u16, Value) {
    connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        method,
        body,
        Some(token),
    )
    .await
}

fn id(value: &Value, object: &str) -> String {
    value[object]["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {object}.meta.id in {value}"))
        .to_string()
}

/// An organization with a scripted model and an agent that uses it.
struct Fixture {
    org_id: String,
    agent_id: String,
}

/// Creates the organization, the scripted provider and model, and the
/// agent with `idle_timeout`.
async fn fixture(server: &Server, script: Value, idle_timeout: &str) -> Fixture {
    let token = &server.admin_token;
    let org = call(
        server,
        token,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Agent flow"}),
    )
    .await;
    let org_id = id(&org, "organization");
    let provider = call(
        server,
        token,
        "agynio.api.llm.v1.LLMGateway/CreateProvider",
        json!({"organizationId": org_id, "name": "scripted", "script": script}),
    )
    .await;
    let model = call(
        server,
        token,
        "agynio.api.llm.v1.LLMGateway/CreateModel",
        json!({"organizationId": org_id, "name": "Scripted", "providerId": id(&provider, "provider"),
               "remoteName": "scripted-1"}),
    )
    .await;
    let agent = call(
        server,
        token,
        "agynio.api.agents.v1.AgentsGateway/CreateAgent",
        json!({"organizationId": org_id, "name": "Helper", "nickname": "helper",
               "availability": "AGENT_AVAILABILITY_INTERNAL", "model": id(&model, "model"),
               "configuration": "{\"system_prompt\": \"Be brief.\"}",
               "idleTimeout": idle_timeout}),
    )
    .await;
    Fixture {
        org_id,
        agent_id: id(&agent, "agent"),
    }
}

async fn conversation(server: &Server, fixture: &Fixture) -> String {
    let conversation = call(
        server,
        &server.admin_token,
        "agynio.api.chat.v1.ChatGateway/CreateConversation",
        json!({"organizationId": fixture.org_id, "participantIds": [fixture.agent_id]}),
    )
    .await;
    id(&conversation, "conversation")
}

async fn send(server: &Server, thread_id: &str, body: &str) -> String {
    let sent = call(
        server,
        &server.admin_token,
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": thread_id, "body": body}),
    )
    .await;
    id(&sent, "message")
}

async fn messages(server: &Server, thread_id: &str) -> Vec<Value> {
    let page = call(
        server,
        &server.admin_token,
        "agynio.api.threads.v1.ThreadsGateway/GetMessages",
        json!({"threadId": thread_id, "pageSize": 100}),
    )
    .await;
    page["messages"].as_array().cloned().unwrap_or_default()
}

async fn workloads(server: &Server, thread_id: &str) -> Vec<Value> {
    let page = call(
        server,
        &server.admin_token,
        "agynio.api.runners.v1.RunnersGateway/ListWorkloadsByThread",
        json!({"threadId": thread_id}),
    )
    .await;
    page["workloads"].as_array().cloned().unwrap_or_default()
}

/// Polls `check` every 200 ms until it returns a value or `timeout`
/// passes; the panic names `what` and the server log.
async fn wait_for<T, F, Fut>(server: &Server, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; server log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits on `stream` for a `message.created` envelope of `thread_id` sent
/// by `sender_id`, and returns its message id.
async fn next_message_from(
    stream: &mut ConnectStream,
    server: &Server,
    thread_id: &str,
    sender_id: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(next) = stream.next(left).await else {
            panic!(
                "no message from {sender_id} within {timeout:?}; server log:\n{}",
                server.log()
            );
        };
        let message = next.unwrap_or_else(|end| panic!("the stream ended: {end}"));
        let envelope = &message["envelope"];
        if envelope["event"] == "message.created"
            && envelope["payload"]["thread_id"] == thread_id
            && envelope["payload"]["sender_id"] == sender_id
        {
            return envelope["payload"]["message_id"]
                .as_str()
                .unwrap()
                .to_string();
        }
    }
}

fn echo_script() -> Value {
    json!({"rules": [
        {"whenInputContains": "hello", "steps": [{"text": "Hello! You wrote: {{input}}"}]},
        {"steps": [{"text": "I only answer hello."}]}
    ]})
}

#[tokio::test]
async fn message_gets_reply_and_idle_workload_stops() {
    let server = Server::start_with(&fast_orchestrator());
    let fixture = fixture(&server, echo_script(), "30s").await;
    let thread_id = conversation(&server, &fixture).await;
    let mut stream = ConnectStream::open(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.notifications.v1.NotificationsGateway/Subscribe",
        json!({"rooms": ["thread_participant:me"]}),
        &server.admin_token,
    )
    .await;
    let ready = stream.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(ready.get("ready").is_some(), "first message: {ready}");

    send(&server, &thread_id, "hello there").await;
    let reply_id = next_message_from(
        &mut stream,
        &server,
        &thread_id,
        &fixture.agent_id,
        Duration::from_secs(60),
    )
    .await;
    let listed = messages(&server, &thread_id).await;
    let reply = listed
        .iter()
        .find(|message| message["meta"]["id"] == reply_id.as_str())
        .unwrap_or_else(|| panic!("reply {reply_id} not in GetMessages: {listed:?}"));
    // The agent prefixes each user message with its sender, and the script
    // echoes the whole input.
    let body = reply["body"].as_str().unwrap();
    assert!(body.starts_with("Hello! You wrote: @"), "{body}");
    assert!(body.ends_with(": hello there"), "{body}");
    assert_eq!(reply["senderId"], fixture.agent_id.as_str());

    let first = workloads(&server, &thread_id).await;
    assert_eq!(first.len(), 1, "one workload for the pair: {first:?}");
    let first_id = first[0]["meta"]["id"].as_str().unwrap().to_string();

    // The agent stops touching once it has replied; after the 30 s idle
    // timeout the orchestrator stops the workload.
    wait_for(
        &server,
        "the idle workload to stop",
        Duration::from_secs(90),
        || {
            let server = &server;
            let thread_id = &thread_id;
            async move {
                let listed = workloads(server, thread_id).await;
                (listed[0]["status"] == "WORKLOAD_STATUS_STOPPED").then_some(())
            }
        },
    )
    .await;

    // A second message starts a new workload, which replies too.
    send(&server, &thread_id, "hello again").await;
    next_message_from(
        &mut stream,
        &server,
        &thread_id,
        &fixture.agent_id,
        Duration::from_secs(60),
    )
    .await;
    let listed = messages(&server, &thread_id).await;
    let body = listed.last().unwrap()["body"].as_str().unwrap();
    assert!(body.ends_with(": hello again"), "{body}");
    let second = workloads(&server, &thread_id).await;
    assert_eq!(second.len(), 2, "a new workload: {second:?}");
    assert_ne!(second[0]["meta"]["id"], first_id.as_str());
}

#[tokio::test]
async fn concurrent_messages_start_one_workload() {
    let server = Server::start_with(&fast_orchestrator());
    let fixture = fixture(&server, echo_script(), "30s").await;
    let thread_id = conversation(&server, &fixture).await;

    let sends = (0..20).map(|n| {
        let server = &server;
        let thread_id = &thread_id;
        async move { send(server, thread_id, &format!("hello number {n}")).await }
    });
    futures::future::join_all(sends).await;

    // The agent replies, and one workload serves every message.
    wait_for(
        &server,
        "the agent's reply",
        Duration::from_secs(60),
        || {
            let server = &server;
            let thread_id = &thread_id;
            let agent_id = &fixture.agent_id;
            async move {
                let listed = messages(server, thread_id).await;
                listed
                    .iter()
                    .any(|message| message["senderId"] == agent_id.as_str())
                    .then_some(())
            }
        },
    )
    .await;
    let listed = workloads(&server, &thread_id).await;
    assert_eq!(listed.len(), 1, "exactly one workload: {listed:?}");
}

#[tokio::test]
async fn failing_workload_backs_off_then_degrades_thread() {
    // Nothing listens on port 1, so every `agyn agent` exits non-zero
    // once its startup calls have failed.
    let mut args = fast_orchestrator();
    args.extend(
        [
            "--workload-gateway-url",
            "https://127.0.0.1:1",
            "--orchestrator-backoff",
            "1s,2s",
            "--orchestrator-max-attempts",
            "3",
        ]
        .iter()
        .map(|arg| arg.to_string()),
    );
    let server = Server::start_with(&args);
    let fixture = fixture(&server, echo_script(), "30s").await;
    let thread_id = conversation(&server, &fixture).await;
    send(&server, &thread_id, "hello").await;

    // Each attempt lasts while the agent retries the unreachable gateway
    // (about 8 s) and until reconciliation observes its exit.
    let thread = wait_for(
        &server,
        "the thread to degrade",
        Duration::from_secs(180),
        || {
            let server = &server;
            let thread_id = &thread_id;
            async move {
                let thread = call(
                    server,
                    &server.admin_token,
                    "agynio.api.threads.v1.ThreadsGateway/GetThread",
                    json!({"id": thread_id}),
                )
                .await;
                (thread["thread"]["status"] == "THREAD_STATUS_DEGRADED").then_some(thread)
            }
        },
    )
    .await;
    assert_eq!(
        thread["thread"]["degradeReason"],
        "agent_start_failures_exhausted"
    );

    let listed = workloads(&server, &thread_id).await;
    assert_eq!(listed.len(), 3, "one workload per attempt: {listed:?}");
    for workload in &listed {
        assert_eq!(workload["status"], "WORKLOAD_STATUS_FAILED", "{workload}");
    }
    // The attempts are spaced by the backoff: 1 s after the first failure,
    // 2 s after the second.
    let created: Vec<i64> = listed
        .iter()
        .rev()
        .map(|workload| {
            let at = workload["meta"]["createdAt"].as_str().unwrap();
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp_nanos() as i64
                / 1_000_000
        })
        .collect();
    assert!(created[1] - created[0] >= 1_000, "{created:?}");
    assert!(created[2] - created[1] >= 2_000, "{created:?}");

    let (status, refused) = try_call(
        &server,
        &server.admin_token,
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": thread_id, "body": "hello?"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("degraded"),
        "{refused}"
    );
}
