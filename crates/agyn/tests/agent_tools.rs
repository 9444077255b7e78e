//! Tool use with real processes: `agyn serve` with its built-in runner, a
//! scripted model that calls a tool, and a real MCP server that the
//! orchestrator runs as a sidecar of the agent's workload. The tool's
//! result must reach the agent's reply, and the run's trace must contain
//! the `tool.execution` span.
//!
//! The MCP servers come from the test virtual environment that
//! tests/python/venv.sh creates: the reference `mcp-server-time` from PyPI
//! over stdio (through the MCP stdio bridge of `agyn launch`), and
//! tests/python/mcp_tool_server.py over streamable HTTP.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use support::{Server, connect_json};

/// Maximum wait for the agent's reply, which includes the workload start
/// and the MCP handshake of its sidecar.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Maximum wait for a span, which the agent exports in batches every 2 s.
const SPAN_TIMEOUT: Duration = Duration::from_secs(20);

/// `agyn serve` whose built-in runner's workload processes are killed
/// when the test ends, because they outlive a killed server.
struct Platform {
    server: Server,
}

impl Platform {
    fn start() -> Self {
        let args = [
            "--orchestrator-poll-interval",
            "1s",
            "--orchestrator-reconcile-interval",
            "1s",
        ];
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        Self {
            server: Server::start_with(&args),
        }
    }
}

impl Drop for Platform {
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

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Returns `bin/<program>` of the test virtual environment
/// (`AGYN_TEST_VENV`, default `.venv-tests` in the repository root).
fn venv_program(program: &str) -> PathBuf {
    let venv = std::env::var("AGYN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repository().join(".venv-tests"));
    let path = venv.join("bin").join(program);
    assert!(
        path.exists(),
        "{} is missing; run tests/python/venv.sh",
        path.display()
    );
    path
}

async fn call(server: &Server, method: &str, body: Value) -> Value {
    let (status, response) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        method,
        body,
        Some(&server.admin_token),
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

/// An MCP server definition of CreateMcp.
struct McpDefinition {
    name: &'static str,
    transport: &'static str,
    command: String,
}

/// A thread between the admin and an agent with one MCP server.
struct Fixture {
    agent_id: String,
    thread_id: String,
}

/// Creates an organization, a scripted model that follows `script`, an
/// agent using it with `mcp`, and a conversation with the agent.
async fn fixture(server: &Server, script: Value, mcp: McpDefinition) -> Fixture {
    let org = call(
        server,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Agent tools"}),
    )
    .await;
    let org_id = id(&org, "organization");

    let provider = call(
        server,
        "agynio.api.llm.v1.LLMGateway/CreateProvider",
        json!({"organizationId": org_id, "name": "scripted", "script": script}),
    )
    .await;
    let model = call(
        server,
        "agynio.api.llm.v1.LLMGateway/CreateModel",
        json!({"organizationId": org_id, "name": "Scripted", "providerId": id(&provider, "provider"),
               "remoteName": "scripted-1"}),
    )
    .await;
    let agent = call(
        server,
        "agynio.api.agents.v1.AgentsGateway/CreateAgent",
        json!({"organizationId": org_id, "name": "Tool user", "nickname": "tools",
               "availability": "AGENT_AVAILABILITY_INTERNAL", "model": id(&model, "model"),
               "configuration": "{\"system_prompt\": \"Use your tools.\"}",
               "idleTimeout": "60s"}),
    )
    .await;
    let agent_id = id(&agent, "agent");

    call(
        server,
        "agynio.api.agents.v1.AgentsGateway/CreateMcp",
        json!({"agentId": agent_id, "name": mcp.name, "command": mcp.command,
               "transport": mcp.transport, "toolTimeout": "30s"}),
    )
    .await;

    let conversation = call(
        server,
        "agynio.api.chat.v1.ChatGateway/CreateConversation",
        json!({"organizationId": org_id, "participantIds": [agent_id]}),
    )
    .await;
    Fixture {
        agent_id,
        thread_id: id(&conversation, "conversation"),
    }
}

/// Builds a script whose rule for `trigger` calls `tool` with `arguments`,
/// then replies with `reply_prefix` and the tool's output.
fn tool_script(trigger: &str, tool: &str, arguments: Value, reply_prefix: &str) -> Value {
    json!({"rules": [
        {"whenInputContains": trigger, "steps": [
            {"toolCall": {"name": tool, "argumentsJson": arguments.to_string()}},
            {"text": format!("{reply_prefix}{{{{tool_output}}}}")}
        ]},
        {"steps": [{"text": "No tool for this message."}]}
    ]})
}

/// Sends `body` to the thread and returns the body of the agent's reply
/// once GetMessages lists it.
async fn ask(server: &Server, fixture: &Fixture, body: &str) -> String {
    call(
        server,
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": fixture.thread_id, "body": body}),
    )
    .await;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let page = call(
            server,
            "agynio.api.threads.v1.ThreadsGateway/GetMessages",
            json!({"threadId": fixture.thread_id, "pageSize": 100}),
        )
        .await;
        let reply = page["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|message| message["senderId"] == fixture.agent_id.as_str());
        if let Some(reply) = reply {
            return reply["body"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no reply within {REPLY_TIMEOUT:?}; server log:\n{}\nworkload logs:\n{}",
            server.log(),
            workload_logs(&server.data_dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Returns the container logs of every workload of the built-in runner,
/// for failure messages.
fn workload_logs(data_dir: &Path) -> String {
    let mut text = String::new();
    let Ok(workloads) = std::fs::read_dir(data_dir.join("runner/workloads")) else {
        return text;
    };
    for workload in workloads.flatten() {
        let Ok(logs) = std::fs::read_dir(workload.path().join("logs")) else {
            continue;
        };
        for log in logs.flatten() {
            let content = std::fs::read_to_string(log.path()).unwrap_or_default();
            text.push_str(&format!("--- {}\n{content}\n", log.path().display()));
        }
    }
    text
}

/// Returns the id of the thread's only workload.
async fn workload_id(server: &Server, thread_id: &str) -> String {
    let page = call(
        server,
        "agynio.api.runners.v1.RunnersGateway/ListWorkloadsByThread",
        json!({"threadId": thread_id}),
    )
    .await;
    let workloads = page["workloads"].as_array().cloned().unwrap_or_default();
    assert_eq!(workloads.len(), 1, "one workload: {workloads:?}");
    workloads[0]["meta"]["id"].as_str().unwrap().to_string()
}

/// Returns the 16 bytes of a UUID in text form, which are the trace id
/// of the workload's spans.
fn uuid_bytes(uuid: &str) -> Vec<u8> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    assert_eq!(hex.len(), 32, "not a UUID: {uuid}");
    (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Returns the value of string attribute `key` of an OTLP JSON span.
fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|attribute| attribute["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// Waits until the trace of workload `workload_id` contains an ended
/// `tool.execution` span, and returns that span.
async fn tool_span(server: &Server, workload_id: &str) -> Value {
    let trace_id = STANDARD.encode(uuid_bytes(workload_id));
    let deadline = Instant::now() + SPAN_TIMEOUT;
    loop {
        let (status, trace) = connect_json(
            &reqwest::Client::new(),
            &server.base_url(),
            "agynio.api.tracing.v1.TracingGateway/GetTrace",
            json!({"traceId": trace_id}),
            Some(&server.admin_token),
        )
        .await;
        // A trace without spans yet is NOT_FOUND.
        assert!(status == 200 || status == 404, "GetTrace: {status} {trace}");
        let spans: Vec<Value> = trace["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|resource| {
                resource["scopeSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
            .collect();
        // The agent exports the span when the call starts, with end time 0,
        // and again with the output when the call has finished.
        let ended = spans.iter().find(|span| {
            span["name"] == "tool.execution"
                && span["endTimeUnixNano"]
                    .as_str()
                    .is_some_and(|end| end != "0")
        });
        if let Some(span) = ended {
            return span.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no ended tool.execution span in trace {workload_id} within {SPAN_TIMEOUT:?}: {trace}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn stdio_mcp_server_result_reaches_reply() {
    let platform = Platform::start();
    let server = &platform.server;
    // Asia/Tokyo has no daylight saving time, so noon UTC is 21:00 there
    // on every date.
    let arguments = json!({"source_timezone": "UTC", "time": "12:00",
                           "target_timezone": "Asia/Tokyo"});
    let script = tool_script(
        "tokyo",
        "time__convert_time",
        arguments,
        "The time server said: ",
    );
    let mcp = McpDefinition {
        name: "time",
        transport: "MCP_TRANSPORT_STDIO",
        command: format!(
            "exec '{}' --local-timezone UTC",
            venv_program("mcp-server-time").display()
        ),
    };
    let fixture = fixture(server, script, mcp).await;

    let body = ask(server, &fixture, "What time is noon UTC in Tokyo?").await;
    assert!(body.starts_with("The time server said: "), "{body}");
    // The server's JSON result, as convert_time of mcp-server-time 2026.10.19
    // formats it.
    assert!(body.contains("\"timezone\": \"Asia/Tokyo\""), "{body}");
    assert!(body.contains("T21:00:00+09:00"), "{body}");
    assert!(body.contains("\"time_difference\": \"+9.0h\""), "{body}");

    let workload_id = workload_id(server, &fixture.thread_id).await;
    let span = tool_span(server, &workload_id).await;
    assert_eq!(
        attribute(&span, "agyn.tool.name"),
        Some("time__convert_time")
    );
    let input = attribute(&span, "agyn.tool.input").unwrap_or_default();
    assert!(input.contains("Asia/Tokyo"), "{span}");
    let output = attribute(&span, "agyn.tool.output").unwrap_or_default();
    assert!(output.contains("T21:00:00+09:00"), "{span}");
    assert_eq!(attribute(&span, "error.type"), None, "{span}");
}

#[tokio::test]
async fn http_mcp_server_result_reaches_reply() {
    let platform = Platform::start();
    let server = &platform.server;
    let script = tool_script("add", "calc__add", json!({"a": 19, "b": 23}), "The sum is ");
    // The server listens on the port that the runner allocates, which the
    // sidecar receives as MCP_PORT.
    let mcp = McpDefinition {
        name: "calc",
        transport: "MCP_TRANSPORT_HTTP",
        command: format!(
            "exec '{}' '{}' \"$MCP_PORT\"",
            venv_program("python").display(),
            repository()
                .join("tests/python/mcp_tool_server.py")
                .display()
        ),
    };
    let fixture = fixture(server, script, mcp).await;

    let body = ask(server, &fixture, "Please add 19 and 23.").await;
    assert_eq!(body, "The sum is 42");

    let workload_id = workload_id(server, &fixture.thread_id).await;
    let span = tool_span(server, &workload_id).await;
    assert_eq!(attribute(&span, "agyn.tool.name"), Some("calc__add"));
    assert_eq!(attribute(&span, "agyn.tool.output"), Some("42"));
    assert_eq!(attribute(&span, "error.type"), None, "{span}");
}
