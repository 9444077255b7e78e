//! Leader failover with real processes: two `agyn serve` replicas on one
//! fresh PostgreSQL database and one Redis. Replica A leads, replica B
//! hosts the built-in runner. After A is killed with SIGKILL, B takes the
//! leader lock, and its orchestrator starts the agent workloads that reply
//! to messages sent through B.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, connect_json};

/// The line a replica logs when it becomes the leader.
const LEADER_LINE: &str = "This replica is the leader";

/// Maximum wait for the agent's reply, which includes the workload start.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("AGYN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A replica whose built-in runner's workload processes are killed when
/// the test ends, because they outlive a killed server.
struct Replica {
    server: Server,
}

impl Drop for Replica {
    fn drop(&mut self) {
        kill_workload_processes(&self.server.data_dir);
    }
}

/// Sends SIGKILL to the process group of every container process that the
/// built-in runner recorded under `data_dir` and that is still the same
/// process (same start time in `/proc/<pid>/stat`).
fn kill_workload_processes(data_dir: &Path) {
    let Ok(workloads) = std::fs::read_dir(data_dir.join("runner/workloads")) else {
        return;
    };
    for workload in workloads.flatten() {
        let Ok(text) = std::fs::read_to_string(workload.path().join("manifest.json")) else {
            continue;
        };
        let Ok(manifest) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for container in manifest["containers"].as_array().into_iter().flatten() {
            let (Some(pid), Some(ticks)) = (
                container["pid"].as_i64(),
                container["process_start_ticks"].as_u64(),
            ) else {
                continue;
            };
            if process_start_ticks(pid) == Some(ticks) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// Returns field 22 of `/proc/<pid>/stat`, the start time in clock ticks.
fn process_start_ticks(pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 is the command name in parentheses, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn leads(server: &Server) -> bool {
    server.log().contains(LEADER_LINE)
}

/// Polls `condition` every 100 ms for up to `timeout` and returns whether
/// it became true.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

async fn call(server: &Server, token: &str, method: &str, body: Value) -> Value {
    let (status, response) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        method,
        body,
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{method}: {response}");
    response
}

fn id(value: &Value, object: &str) -> String {
    value[object]["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {object}.meta.id in {value}"))
        .to_string()
}

/// An organization with an agent on a scripted model.
struct Fixture {
    org_id: String,
    agent_id: String,
}

/// Creates the organization, the scripted provider and model, and the
/// agent through `server`.
async fn fixture(server: &Server, token: &str) -> Fixture {
    let org = call(
        server,
        token,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Failover"}),
    )
    .await;
    let org_id = id(&org, "organization");
    let script = json!({"rules": [{"steps": [{"text": "Received: {{input}}"}]}]});
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
               "configuration": "{}", "idleTimeout": "60s"}),
    )
    .await;
    Fixture {
        org_id,
        agent_id: id(&agent, "agent"),
    }
}

/// Creates a conversation with the agent through `server`, sends `body`
/// there and returns the thread id.
async fn converse(server: &Server, token: &str, fixture: &Fixture, body: &str) -> String {
    let conversation = call(
        server,
        token,
        "agynio.api.chat.v1.ChatGateway/CreateConversation",
        json!({"organizationId": fixture.org_id, "participantIds": [fixture.agent_id]}),
    )
    .await;
    let thread_id = id(&conversation, "conversation");
    call(
        server,
        token,
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": thread_id, "body": body}),
    )
    .await;
    thread_id
}

/// Returns the bodies of the agent's messages in the thread.
async fn replies(server: &Server, token: &str, fixture: &Fixture, thread_id: &str) -> Vec<String> {
    let page = call(
        server,
        token,
        "agynio.api.threads.v1.ThreadsGateway/GetMessages",
        json!({"threadId": thread_id, "pageSize": 100}),
    )
    .await;
    page["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["senderId"] == fixture.agent_id.as_str())
        .map(|message| message["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits for the agent's first reply in the thread and returns its body.
async fn wait_for_reply(
    replica: &Replica,
    token: &str,
    fixture: &Fixture,
    thread_id: &str,
) -> String {
    let server = &replica.server;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        if let Some(reply) = replies(server, token, fixture, thread_id).await.pop() {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "no reply in thread {thread_id} within {REPLY_TIMEOUT:?}; log of B:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn workloads(server: &Server, token: &str, thread_id: &str) -> Vec<Value> {
    let page = call(
        server,
        token,
        "agynio.api.runners.v1.RunnersGateway/ListWorkloadsByThread",
        json!({"threadId": thread_id}),
    )
    .await;
    page["workloads"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn replica_takes_over_and_starts_agents() {
    let args: Vec<String> = [
        "--database-url",
        &support::fresh_postgres_url().await,
        "--redis-url",
        &redis_url(),
        // Both replicas must open the CA stored in the shared database.
        "--master-key",
        &agyn_pki::MasterKey::generate().to_base64(),
        "--orchestrator-poll-interval",
        "1s",
        "--orchestrator-reconcile-interval",
        "1s",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    // Both replicas run on this host, so their built-in runners would
    // share the name local-<hostname>: only B hosts one.
    let mut leader_args = args.clone();
    leader_args.extend(["--runner-builtin".to_string(), "false".to_string()]);
    let mut a = Replica {
        server: Server::start_with(&leader_args),
    };
    assert!(
        wait_until(Duration::from_secs(10), || leads(&a.server)),
        "replica A did not become the leader:\n{}",
        a.server.log()
    );
    let b = Replica {
        server: Server::start_replica(&args),
    };
    assert!(
        b.server.log().contains("Built-in runner started"),
        "{}",
        b.server.log()
    );
    let token = a.server.admin_token.clone();
    let fixture = fixture(&b.server, &token).await;

    // A message sent through B while A leads: A's orchestrator finds the
    // pending pair, and the only runner is the one built into B.
    // NOTE: a leader cannot call a built-in runner of another replica yet,
    // so while A leads this message waits, without a workload record.
    let early_thread = converse(&b.server, &token, &fixture, "sent while A leads").await;
    assert!(
        wait_until(Duration::from_secs(10), || a
            .server
            .log()
            .contains("is reachable from this replica")),
        "A did not try to start the pair:\n{}",
        a.server.log()
    );
    assert!(!leads(&b.server), "B leads while A is alive");
    let early = workloads(&b.server, &token, &early_thread).await;
    assert!(early.is_empty(), "a workload while A leads: {early:?}");

    a.server.signal("KILL");
    assert!(
        a.server.wait_exit(Duration::from_secs(5)).is_some(),
        "replica A survived SIGKILL"
    );
    // Every replica retries the lock every 5 s.
    assert!(
        wait_until(Duration::from_secs(10), || leads(&b.server)),
        "B did not take over within 10 s of the kill:\n{}",
        b.server.log()
    );
    assert!(
        b.server
            .log()
            .contains("Singleton job started on the leader"),
        "{}",
        b.server.log()
    );

    let late_thread = converse(&b.server, &token, &fixture, "sent after the failover").await;
    let reply = wait_for_reply(&b, &token, &fixture, &late_thread).await;
    assert!(
        reply.starts_with("Received: @") && reply.ends_with(": sent after the failover"),
        "{reply}"
    );
    let late = workloads(&b.server, &token, &late_thread).await;
    assert_eq!(late.len(), 1, "one workload: {late:?}");

    // The message that waited for a leader that can call the runner gets
    // a reply too, from the only workload of its thread.
    let reply = wait_for_reply(&b, &token, &fixture, &early_thread).await;
    assert!(reply.ends_with(": sent while A leads"), "{reply}");
    let early = workloads(&b.server, &token, &early_thread).await;
    assert_eq!(early.len(), 1, "one workload: {early:?}");
    assert_ne!(early[0]["status"], "WORKLOAD_STATUS_FAILED", "{early:?}");
}
