//! The agent program run in process against the real public API on
//! loopback TLS: its replies, acks, tool calls against a real MCP server,
//! touches, spans and shutdown.

mod support;
mod upstream;

use std::time::Duration;

use agyn_agent::{
    AgentConfig, AgentError, HookAddress, HookEvent, INTERRUPTED_OUTPUT, reply_request_id,
};
use agyn_api_tracing::opentelemetry::proto::trace::v1::status::StatusCode;
use agyn_client::{into_error, runners, threads};
use agyn_runners::WorkloadStatus;
use agyn_store::{Backend, on_both_backends};
use support::{
    McpToolServer, RunningAgent, TempDir, World, attribute, captured_logs, rule, text, tool_call,
};

async fn reply_is_sent_and_acked(backend: Backend) {
    let world = World::start(backend).await;
    let model = world
        .scripted_model(vec![rule("", vec![text("Echo: {{input}}")])])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("reply");
    let first = world.send(&setup.thread, "first question").await;

    let agent = RunningAgent::start(world.settings(&setup, &workload, &state.0));
    let replies = world.wait_for_replies(&setup, 1).await;
    assert!(
        replies[0].body.starts_with("Echo: @"),
        "{}",
        replies[0].body
    );
    assert!(
        replies[0].body.ends_with(": first question"),
        "{}",
        replies[0].body
    );
    wait_until_acked(&world, &workload, &setup.thread).await;

    // Polling is off in the tests, so only the notification can start this
    // turn.
    world.send(&setup.thread, "second question").await;
    let replies = world.wait_for_replies(&setup, 2).await;
    assert!(
        replies[1].body.ends_with(": second question"),
        "{}",
        replies[1].body
    );
    wait_until_acked(&world, &workload, &setup.thread).await;

    let trace_id = uuid::Uuid::parse_str(&workload.id)
        .unwrap()
        .as_bytes()
        .to_vec();
    let invocation = world
        .wait_for_span(
            &workload,
            "invocation.message of the first message",
            |span| {
                span.name == "invocation.message"
                    && attribute(span, "agyn.thread.message.id").as_deref() == Some(&first.meta.id)
                    && span.end_time_unix_nano > 0
            },
        )
        .await;
    assert_eq!(invocation.trace_id, trace_id);
    assert_eq!(
        attribute(&invocation, "agyn.message.text").as_deref(),
        Some("first question")
    );
    assert_eq!(
        attribute(&invocation, "agyn.message.role").as_deref(),
        Some("user")
    );
    let call = world
        .wait_for_span(&workload, "an ended llm.call", |span| {
            span.name == "llm.call" && span.end_time_unix_nano > 0
        })
        .await;
    assert_eq!(call.trace_id, trace_id);
    assert_eq!(
        attribute(&call, "gen_ai.request.model").as_deref(),
        Some(model.as_str())
    );
    assert_eq!(attribute(&call, "gen_ai.system").as_deref(), Some("openai"));
    assert_eq!(
        attribute(&call, "gen_ai.response.finish_reason").as_deref(),
        Some("stop")
    );
    assert!(attribute(&call, "gen_ai.usage.output_tokens").is_some());

    assert!(agent.stop().await.is_ok());
    let logs = captured_logs();
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a private key reached the log"
    );
    assert!(
        !logs.contains(&workload.key_pem),
        "the workload key reached the log"
    );
    assert!(
        !logs.contains(&world.owner_token),
        "a token reached the log"
    );
}

on_both_backends!(reply_is_sent_and_acked);

/// Waits until the agent has acked every message of the thread.
async fn wait_until_acked(world: &World, workload: &support::Workload, thread: &str) {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let unacked = world.unacked(workload, thread).await;
        if unacked.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages stay unacked: {unacked:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stores a message as the workload with the request id of a turn.
async fn store_reply_as_agent(
    world: &World,
    workload: &support::Workload,
    thread: &str,
    body: &str,
    request_id: &str,
) {
    world
        .workload_gateway(workload)
        .threads()
        .send_message(threads::SendMessageRequest {
            thread_id: thread.to_string(),
            body: body.to_string(),
            request_id: request_id.to_string(),
            ..Default::default()
        })
        .await
        .map_err(into_error)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_turn_keeps_one_reply() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule("", vec![text("Fixed reply")])])
        .await;
    let state = TempDir::new("retry");

    // An earlier attempt of the turn stored the same reply and stopped
    // before its ack.
    let same = world.setup(&model, "{}").await;
    let same_workload = world.workload(&same).await;
    let message = world.send(&same.thread, "question").await;
    let request_id = reply_request_id(&same_workload.id, &message.meta.id);
    store_reply_as_agent(
        &world,
        &same_workload,
        &same.thread,
        "Fixed reply",
        &request_id,
    )
    .await;
    let agent = RunningAgent::start(world.settings(&same, &same_workload, &state.0));
    wait_until_acked(&world, &same_workload, &same.thread).await;
    assert!(agent.stop().await.is_ok());
    let replies = world.replies(&same).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].body, "Fixed reply");

    // An earlier attempt stored a different reply under the same key.
    let other = world.setup(&model, "{}").await;
    let other_workload = world.workload(&other).await;
    let message = world.send(&other.thread, "question").await;
    let request_id = reply_request_id(&other_workload.id, &message.meta.id);
    store_reply_as_agent(
        &world,
        &other_workload,
        &other.thread,
        "Earlier reply",
        &request_id,
    )
    .await;
    let agent = RunningAgent::start(world.settings(&other, &other_workload, &state.0));
    wait_until_acked(&world, &other_workload, &other.thread).await;
    assert!(agent.stop().await.is_ok());
    let replies = world.replies(&other).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].body, "Earlier reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_reach_the_reply() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![
            rule(
                "add",
                vec![
                    tool_call("tools__add", r#"{"a": 2, "b": 3}"#),
                    text("The sum is {{tool_output}}"),
                ],
            ),
            rule(
                "fail",
                vec![
                    tool_call("tools__fail", r#"{"message": "boom"}"#),
                    text("Tool said: {{tool_output}}"),
                ],
            ),
        ])
        .await;
    let setup = world.setup(&model, "{}").await;
    world.add_mcp(&setup.agent, "tools", 30).await;
    let mut server = McpToolServer::start(None).await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("tools");
    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.mcp_servers = vec![server.address("tools")];
    let agent = RunningAgent::start(settings);

    world.send(&setup.thread, "please add").await;
    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(replies[0].body, "The sum is 5");
    let tool = world
        .wait_for_span(&workload, "an ended tool.execution", |span| {
            span.name == "tool.execution" && span.end_time_unix_nano > 0
        })
        .await;
    assert_eq!(
        attribute(&tool, "agyn.tool.name").as_deref(),
        Some("tools__add")
    );
    assert_eq!(attribute(&tool, "agyn.tool.output").as_deref(), Some("5"));
    let parent = world
        .wait_for_span(&workload, "the parent llm.call", |span| {
            span.span_id == tool.parent_span_id
        })
        .await;
    assert_eq!(parent.name, "llm.call");
    assert!(
        attribute(&parent, "agyn.llm.tool_calls")
            .unwrap()
            .contains("tools__add")
    );

    world.send(&setup.thread, "now fail").await;
    let replies = world.wait_for_replies(&setup, 2).await;
    assert_eq!(
        replies[1].body,
        "Tool said: ERROR: Error executing tool fail: boom"
    );

    // A restarted server has forgotten the session, which the agent
    // initializes again.
    let port = server.port();
    server.kill();
    let mut server = McpToolServer::start(Some(port)).await;
    world.send(&setup.thread, "add again").await;
    let replies = world.wait_for_replies(&setup, 3).await;
    assert_eq!(replies[2].body, "The sum is 5");

    server.kill();
    world.send(&setup.thread, "add once more").await;
    let replies = world.wait_for_replies(&setup, 4).await;
    assert_eq!(replies[3].body, "The sum is ERROR: tool unavailable");
    wait_until_acked(&world, &workload, &setup.thread).await;
    assert!(agent.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_tool_times_out() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule(
            "",
            vec![
                tool_call("tools__sleep", r#"{"seconds": 30}"#),
                text("Result: {{tool_output}}"),
            ],
        )])
        .await;
    let setup = world.setup(&model, "{}").await;
    world.add_mcp(&setup.agent, "tools", 1).await;
    let server = McpToolServer::start(None).await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("timeout");
    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.mcp_servers = vec![server.address("tools")];
    world.send(&setup.thread, "take a nap").await;
    let agent = RunningAgent::start(settings);

    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(
        replies[0].body,
        "Result: ERROR: tool call timed out after 1s"
    );
    wait_until_acked(&world, &workload, &setup.thread).await;
    let tool = world
        .wait_for_span(&workload, "an ended tool.execution", |span| {
            span.name == "tool.execution" && span.end_time_unix_nano > 0
        })
        .await;
    assert_eq!(attribute(&tool, "error.type").as_deref(), Some("timeout"));
    assert_eq!(tool.status.code, StatusCode::STATUS_CODE_ERROR);
    assert!(agent.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touches_keep_the_workload_processing() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule(
            "",
            vec![
                tool_call("tools__sleep", r#"{"seconds": 4}"#),
                text("Woke up: {{tool_output}}"),
            ],
        )])
        .await;
    let setup = world.setup(&model, "{}").await;
    world.add_mcp(&setup.agent, "tools", 30).await;
    let server = McpToolServer::start(None).await;
    let workload = world.workload(&setup).await;
    world
        .set_workload_status(&workload, WorkloadStatus::Running)
        .await;
    let idle_before = agyn_core::time::now_micros() + 1_000_000;
    let marked = world
        .platform
        .runners
        .mark_idle_workloads(&support::orchestrator(), idle_before)
        .await
        .unwrap();
    assert_eq!(marked, 1);
    assert_eq!(
        world.get_workload(&workload).await.agent_state,
        runners::WorkloadAgentState::WORKLOAD_AGENT_STATE_IDLE
    );

    let state = TempDir::new("touch");
    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.mcp_servers = vec![server.address("tools")];
    settings.timing.touch_interval = Duration::from_millis(500);
    world.send(&setup.thread, "sleep a little").await;
    let agent = RunningAgent::start(settings);

    world
        .wait_for_span(&workload, "a running tool.execution", |span| {
            span.name == "tool.execution" && span.end_time_unix_nano == 0
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The sweep finds no workload untouched for 2 s: the agent keeps
    // touching while the tool runs.
    let idle_before = agyn_core::time::now_micros() - 2_000_000;
    let marked = world
        .platform
        .runners
        .mark_idle_workloads(&support::orchestrator(), idle_before)
        .await
        .unwrap();
    assert_eq!(marked, 0);
    assert_eq!(
        world.get_workload(&workload).await.agent_state,
        runners::WorkloadAgentState::WORKLOAD_AGENT_STATE_PROCESSING
    );
    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(replies[0].body, "Woke up: slept");
    assert!(agent.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_tool_call_keeps_batch() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule(
            "",
            vec![
                tool_call("tools__sleep", r#"{"seconds": 60}"#),
                text("Result: {{tool_output}}"),
            ],
        )])
        .await;
    let setup = world.setup(&model, "{}").await;
    world.add_mcp(&setup.agent, "tools", 120).await;
    let server = McpToolServer::start(None).await;
    let state = TempDir::new("stop");
    let message = world.send(&setup.thread, "a long task").await;

    let first = world.workload(&setup).await;
    let mut settings = world.settings(&setup, &first, &state.0);
    settings.mcp_servers = vec![server.address("tools")];
    let agent = RunningAgent::start(settings);
    world
        .wait_for_span(&first, "a running tool.execution", |span| {
            span.name == "tool.execution" && span.end_time_unix_nano == 0
        })
        .await;
    assert!(agent.stop().await.is_ok());
    assert_eq!(
        world.unacked(&first, &setup.thread).await,
        vec![message.meta.id.clone()]
    );
    assert!(world.replies(&setup).await.is_empty());
    let aborted = world
        .wait_for_span(&first, "the aborted tool.execution", |span| {
            span.name == "tool.execution" && span.end_time_unix_nano > 0
        })
        .await;
    assert_eq!(aborted.status.code, StatusCode::STATUS_CODE_ERROR);

    // The next workload finds the call without its output and sends an
    // interrupted result for it, instead of running the tool again.
    world
        .set_workload_status(&first, WorkloadStatus::Stopping)
        .await;
    world
        .set_workload_status(&first, WorkloadStatus::Stopped)
        .await;
    let second = world.workload(&setup).await;
    let mut settings = world.settings(&setup, &second, &state.0);
    settings.mcp_servers = vec![server.address("tools")];
    let agent = RunningAgent::start(settings);
    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(replies[0].body, format!("Result: {INTERRUPTED_OUTPUT}"));
    wait_until_acked(&world, &second, &setup.thread).await;
    assert!(agent.stop().await.is_ok());
    let journals: Vec<_> = std::fs::read_dir(&state.0).unwrap().collect();
    assert!(
        journals.is_empty(),
        "the journal stays after the ack: {journals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_failures_follow_reply_on_error() {
    let world = World::start(Backend::Sqlite).await;
    // Nothing listens on the port, so the proxy returns 502.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let model = world
        .networked_model(&format!("http://127.0.0.1:{closed_port}"))
        .await;
    let state = TempDir::new("failure");

    let replying = world.setup(&model, "{}").await;
    let workload = world.workload(&replying).await;
    world.send(&replying.thread, "hello").await;
    let agent = RunningAgent::start(world.settings(&replying, &workload, &state.0));
    let replies = world.wait_for_replies(&replying, 1).await;
    assert!(
        replies[0]
            .body
            .starts_with("I could not complete this request: the model service returned HTTP 502"),
        "{}",
        replies[0].body
    );
    wait_until_acked(&world, &workload, &replying.thread).await;
    assert!(agent.stop().await.is_ok());

    let silent = world.setup(&model, r#"{"reply_on_error": false}"#).await;
    let workload = world.workload(&silent).await;
    let message = world.send(&silent.thread, "hello").await;
    let mut settings = world.settings(&silent, &workload, &state.0);
    settings.config = AgentConfig {
        reply_on_error: false,
        ..AgentConfig::default()
    };
    let outcome = RunningAgent::start(settings).finished().await;
    assert!(matches!(outcome, Err(AgentError::Model(_))), "{outcome:?}");
    assert_eq!(
        world.unacked(&workload, &silent.thread).await,
        vec![message.meta.id.clone()]
    );
    assert!(world.replies(&silent).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_thread_is_acked_without_reply() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule("", vec![text("Too late")])])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("closed");
    world.send(&setup.thread, "anyone there?").await;
    world
        .platform
        .threads
        .archive_thread(&setup.thread)
        .await
        .unwrap();

    let agent = RunningAgent::start(world.settings(&setup, &workload, &state.0));
    wait_until_acked(&world, &workload, &setup.thread).await;
    assert!(agent.stop().await.is_ok());
    assert!(world.replies(&setup).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_carries_instructions_history_and_tools() {
    let world = World::start(Backend::Sqlite).await;
    let upstream = upstream::Upstream::start().await;
    // The first request with more than two input items is rejected as too
    // long, so the agent drops the older half of its history.
    upstream.reject_inputs_longer_than(2);
    let model = world.networked_model(&upstream.url).await;
    let configuration = r#"{"system_prompt": "Answer in one line.", "history_messages": 2,
                            "temperature": 0.5}"#;
    let setup = world.setup(&model, configuration).await;
    world
        .gateway
        .agents()
        .create_skill(agyn_client::agents::CreateSkillRequest {
            agent_id: setup.agent.clone(),
            name: "haiku".to_string(),
            description: "Writing haiku".to_string(),
            body: "Use 5-7-5 syllables.".to_string(),
            ..Default::default()
        })
        .await
        .map_err(into_error)
        .unwrap();
    world.add_mcp(&setup.agent, "tools", 30).await;
    let server = McpToolServer::start(None).await;
    let workload = world.workload(&setup).await;

    // Three earlier messages that the agent has already handled.
    let mut old = Vec::new();
    for body in ["old one", "old two", "old three"] {
        old.push(world.send(&setup.thread, body).await.meta.id.clone());
    }
    world
        .workload_gateway(&workload)
        .threads()
        .ack_messages(threads::AckMessagesRequest {
            message_ids: old,
            thread_id: Some(setup.thread.clone()),
            ..Default::default()
        })
        .await
        .map_err(into_error)
        .unwrap();
    world.send(&setup.thread, "new question").await;

    let state = TempDir::new("request");
    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.config = AgentConfig::parse(configuration).unwrap();
    settings.mcp_servers = vec![server.address("tools")];
    let agent = RunningAgent::start(settings);
    let replies = world.wait_for_replies(&setup, 1).await;
    assert!(
        replies[0].body.ends_with(": new question"),
        "{}",
        replies[0].body
    );
    assert!(agent.stop().await.is_ok());

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let texts = |request: &serde_json::Value| -> Vec<String> {
        request["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["content"][0]["text"].as_str().unwrap().to_string())
            .collect()
    };
    let first = texts(&requests[0]);
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first[0].ends_with(": old two"), "{first:?}");
    assert!(first[1].ends_with(": old three"), "{first:?}");
    assert!(first[2].ends_with(": new question"), "{first:?}");
    assert!(first.iter().all(|text| text.starts_with('@')), "{first:?}");
    let second = texts(&requests[1]);
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second[0].ends_with(": old three"), "{second:?}");

    let request = &requests[1];
    assert_eq!(request["model"], "remote-model");
    assert_eq!(request["stream"], true);
    assert_eq!(request["store"], false);
    assert_eq!(request["temperature"], 0.5);
    let instructions = request["instructions"].as_str().unwrap();
    assert!(
        instructions.starts_with("Answer in one line."),
        "{instructions}"
    );
    assert!(instructions.contains("# Skills"), "{instructions}");
    assert!(instructions.contains("## haiku"), "{instructions}");
    assert!(
        instructions.contains("Use 5-7-5 syllables."),
        "{instructions}"
    );
    assert!(instructions.contains("(@helper-"), "{instructions}");
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    for name in [
        "tools__echo",
        "tools__add",
        "tools__sleep",
        "tools__fail",
        "agyn_read_file",
    ] {
        assert!(tools.contains(&name), "{name} missing from {tools:?}");
    }
}

/// Starts the hook server of `agyn hook serve` in process with `function`
/// and returns its `/run` URL.
async fn hook_server(function: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/run", listener.local_addr().unwrap());
    let settings = agyn_launch::hook::HookSettings {
        function: function.to_string(),
        timeout: Duration::from_secs(10),
    };
    tokio::spawn(agyn_launch::hook::serve(
        listener,
        settings,
        std::future::pending(),
    ));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_at_each_event() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule("", vec![text("Hooked reply")])])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("hooks");
    let log = state.0.join("hooks.jsonl");
    let recording = hook_server(&format!(
        "cat >> '{}'; echo >> '{}'",
        log.display(),
        log.display()
    ))
    .await;
    let failing = hook_server("exit 3").await;
    let message = world.send(&setup.thread, "hello hooks").await;

    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.hooks = [
        (HookEvent::WorkloadStart, &recording),
        (HookEvent::TurnStart, &failing),
        (HookEvent::TurnStart, &recording),
        (HookEvent::TurnEnd, &recording),
        (HookEvent::WorkloadStop, &recording),
    ]
    .into_iter()
    .map(|(event, url)| HookAddress {
        event,
        url: url.clone(),
    })
    .collect();
    let agent = RunningAgent::start(settings);
    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(replies[0].body, "Hooked reply");
    assert!(agent.stop().await.is_ok());

    let calls: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let events: Vec<&str> = calls
        .iter()
        .map(|call| call["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["workload_start", "turn_start", "turn_end", "workload_stop"]
    );
    for call in &calls {
        assert_eq!(call["agent_id"], setup.agent.as_str());
        assert_eq!(call["thread_id"], setup.thread.as_str());
        assert_eq!(call["workload_id"], workload.id.as_str());
    }
    assert_eq!(
        calls[1]["message_ids"],
        serde_json::json!([message.meta.id])
    );
    assert_eq!(
        calls[2]["message_ids"],
        serde_json::json!([message.meta.id])
    );
    assert_eq!(calls[2]["reply_message_id"], replies[0].meta.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_file_tool_returns_text() {
    let world = World::start(Backend::Sqlite).await;
    let file = world
        .upload("notes.txt", "text/plain", b"The secret word is tangerine.")
        .await;
    let arguments = serde_json::json!({ "file_id": file }).to_string();
    let model = world
        .scripted_model(vec![rule(
            "",
            vec![
                tool_call("agyn_read_file", &arguments),
                text("Input: {{input}} | File: {{tool_output}}"),
            ],
        )])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("read-file");
    world
        .send_with_files(
            &setup.thread,
            "please read this",
            std::slice::from_ref(&file),
        )
        .await;

    let agent = RunningAgent::start(world.settings(&setup, &workload, &state.0));
    let replies = world.wait_for_replies(&setup, 1).await;
    let reply = &replies[0].body;
    assert!(
        reply.contains(&format!(
            ": please read this\nagyn://file/{file} (notes.txt, text/plain)"
        )),
        "{reply}"
    );
    assert!(
        reply.ends_with("| File: The secret word is tangerine."),
        "{reply}"
    );
    assert!(agent.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_iterations_are_limited() {
    let world = World::start(Backend::Sqlite).await;
    // Past its last step a rule repeats it, so the model never stops
    // calling the tool.
    let model = world
        .scripted_model(vec![rule(
            "",
            vec![tool_call("agyn_read_file", r#"{"file_id": "missing"}"#)],
        )])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("iterations");
    world.send(&setup.thread, "loop forever").await;

    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.config.max_tool_iterations = 2;
    let agent = RunningAgent::start(settings);
    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(replies[0].body, "Stopped after 2 tool iterations.");
    wait_until_acked(&world, &workload, &setup.thread).await;
    assert!(agent.stop().await.is_ok());
    let tool_spans = world
        .spans(&workload)
        .await
        .into_iter()
        .filter(|span| span.name == "tool.execution")
        .count();
    assert_eq!(tool_spans, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reply_is_cut() {
    let world = World::start(Backend::Sqlite).await;
    let reply = format!("{}{{{{input}}}}", "é".repeat(30_000));
    let model = world
        .scripted_model(vec![rule("", vec![text(&reply)])])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("long");
    world.send(&setup.thread, &"x".repeat(20_000)).await;

    let agent = RunningAgent::start(world.settings(&setup, &workload, &state.0));
    let replies = world.wait_for_replies(&setup, 1).await;
    let body = &replies[0].body;
    assert!(body.len() <= 65_536, "{} bytes", body.len());
    assert!(body.len() > 65_530, "{} bytes", body.len());
    assert!(body.ends_with('x'));
    assert!(agent.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_workload_ends_the_run() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule("", vec![text("Never sent")])])
        .await;
    let setup = world.setup(&model, "{}").await;
    let workload = world.workload(&setup).await;
    world
        .set_workload_status(&workload, WorkloadStatus::Stopping)
        .await;
    let state = TempDir::new("stopping");
    let message = world.send(&setup.thread, "hello").await;

    let outcome = RunningAgent::start(world.settings(&setup, &workload, &state.0))
        .finished()
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        world.unacked(&workload, &setup.thread).await,
        vec![message.meta.id.clone()]
    );
    assert!(world.replies(&setup).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_mcp_server_joins_next_turn() {
    let world = World::start(Backend::Sqlite).await;
    let upstream = upstream::Upstream::start().await;
    let model = world.networked_model(&upstream.url).await;
    let setup = world.setup(&model, "{}").await;
    world.add_mcp(&setup.agent, "tools", 30).await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("late");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // The sidecar is not up while the agent starts.
    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.mcp_servers = vec![agyn_agent::McpServerAddress {
        name: "tools".to_string(),
        url: format!("http://127.0.0.1:{port}/mcp"),
    }];
    settings.timing.mcp_connect_window = Duration::from_millis(500);
    let agent = RunningAgent::start(settings);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let _server = McpToolServer::start(Some(port)).await;
    world.send(&setup.thread, "which tools?").await;
    world.wait_for_replies(&setup, 1).await;
    assert!(agent.stop().await.is_ok());
    let requests = upstream.requests();
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"tools__add"), "{tools:?}");
}

/// A server that accepts connections on a loopback port and never
/// responds, like an MCP sidecar whose server hangs. Returns its address.
async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_mcp_server_does_not_stall_turns() {
    let world = World::start(Backend::Sqlite).await;
    let model = world
        .scripted_model(vec![rule("", vec![text("Still here.")])])
        .await;
    let setup = world.setup(&model, "{}").await;
    world.add_mcp(&setup.agent, "stuck", 30).await;
    let workload = world.workload(&setup).await;
    let state = TempDir::new("stuck");
    let address = silent_server().await;

    // Both limits are far below the 30 s each MCP request may take and
    // the 20 s the test waits for each reply.
    let mut settings = world.settings(&setup, &workload, &state.0);
    settings.mcp_servers = vec![agyn_agent::McpServerAddress {
        name: "stuck".to_string(),
        url: format!("http://{address}/mcp"),
    }];
    settings.timing.mcp_connect_window = Duration::from_millis(500);
    settings.timing.mcp_reconnect_limit = Duration::from_millis(500);
    world.send(&setup.thread, "first").await;
    let agent = RunningAgent::start(settings);

    let replies = world.wait_for_replies(&setup, 1).await;
    assert_eq!(replies[0].body, "Still here.");
    wait_until_acked(&world, &workload, &setup.thread).await;

    // The next turn tries the server again and goes on without it.
    world.send(&setup.thread, "second").await;
    let replies = world.wait_for_replies(&setup, 2).await;
    assert_eq!(replies.len(), 2);
    assert!(agent.stop().await.is_ok());
}
