//! `agyn send --wait` and `agyn workloads list` against the real
//! `agyn serve` when an agent cannot run: the thread is degraded, so the
//! wait must end early with the reason, and the workload list must show
//! why the workloads failed.
//!
//! The agent's model is deleted after the agent was created, which the
//! orchestrator records as a FAILED `CONFIG_INVALID` workload without
//! calling a runner, so the servers run without their built-in runner.
//! Without a runner no agent ever replies, so Ctrl-C, the timeout or a
//! stopped gateway ends the wait.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use support::*;

const SCRIPT: &str = r#"{"rules": [{"steps": [{"text": "Hello!"}]}]}"#;

/// Runs `agyn` client commands with a private config directory and no
/// agyn variables from the test's environment.
struct Client {
    root: PathBuf,
}

impl Client {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_agyn"));
        command
            .args(args)
            .env("AGYN_CONFIG_DIR", self.root.join("config"))
            .env("HOME", &self.root)
            .env_remove("AGYN_TOKEN")
            .env_remove("AGYN_GATEWAY_URL")
            .env_remove("AGYN_ORG")
            .env_remove("AGYN_CA_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run agyn")
    }

    /// Starts `agyn send <conversation> hello --wait --timeout <timeout>`
    /// with its output captured.
    fn spawn_send_wait(&self, conversation_id: &str, timeout: &str) -> std::process::Child {
        self.command(&[
            "send",
            conversation_id,
            "hello",
            "--wait",
            "--timeout",
            timeout,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    }

    /// Runs a command with `--json` that must succeed, and returns its
    /// output.
    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.run(&with_json);
        assert_eq!(
            output.status.code(),
            Some(0),
            "agyn {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("agyn {args:?} --json: {error}"))
    }
}

/// Returns `value[resource].meta.id`.
fn id(value: &Value, resource: &str) -> String {
    value[resource]["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {resource} id in {value}"))
        .to_string()
}

fn scratch_root() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = std::env::temp_dir().join(format!("agyn-cli-wait-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// Logs in and creates an organization, a scripted provider, a model and
/// an agent on it, then a conversation with the agent. Returns the model
/// id and the conversation id.
fn set_up_conversation(client: &Client, server: &Server, root: &Path) -> (String, String) {
    let token_file = server.data_dir.join("admin-token");
    client.json(&[
        "login",
        "--gateway",
        &server.base_url(),
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    client.json(&["orgs", "create", "Acme"]);
    let script = root.join("script.json");
    std::fs::write(&script, SCRIPT).unwrap();
    client.json(&[
        "providers",
        "create",
        "--name",
        "demo",
        "--type",
        "scripted",
        "--script-file",
        script.to_str().unwrap(),
    ]);
    let model = client.json(&["models", "create", "--provider", "demo", "--name", "Demo"]);
    client.json(&["agents", "create", "--name", "Helper", "--model", "Demo"]);
    let conversation = client.json(&["conversations", "create", "--with", "Helper"]);
    (id(&model, "model"), id(&conversation, "conversation"))
}

#[tokio::test(flavor = "multi_thread")]
async fn send_wait_stops_on_degraded_thread() {
    let root = scratch_root();
    let server = Server::start_with(
        &[
            "--runner-builtin",
            "false",
            "--orchestrator-poll-interval",
            "1s",
            "--orchestrator-backoff",
            "1s",
            "--orchestrator-max-attempts",
            "1",
        ]
        .map(String::from),
    );
    let client = Client { root: root.clone() };
    let (model_id, conversation_id) = set_up_conversation(&client, &server, &root);
    let (status, deleted) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.llm.v1.LLMGateway/DeleteModel",
        json!({"id": model_id}),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");

    // The first start fails, which exhausts one attempt and degrades the
    // thread long before the timeout.
    let waiting = client.command(&[
        "send",
        &conversation_id,
        "hello",
        "--wait",
        "--timeout",
        "90s",
    ]);
    let output = tokio::task::spawn_blocking(move || {
        let mut waiting = waiting;
        waiting.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "conversation {conversation_id} is degraded (reason agent_start_failures_exhausted)"
        )),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("agyn workloads list --conversation"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("timed out"), "stderr: {stderr}");

    // The table names the failure and its message.
    let output = client.run(&["workloads", "list", "--conversation", &conversation_id]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}");
    assert!(stdout.contains("FAILURE"), "stdout: {stdout}");
    assert!(
        stdout.contains("failed (config_invalid)"),
        "stdout: {stdout}"
    );
    assert!(
        stdout.contains(&format!("model {model_id} of agent")),
        "stdout: {stdout}"
    );

    // The conversation list shows that the thread rejects messages.
    let output = client.run(&["conversations", "list"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&conversation_id))
        .unwrap_or_else(|| panic!("no row for {conversation_id}: {stdout}"));
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect();
    assert_eq!(cells[2], "open (degraded)", "stdout: {stdout}");

    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}

/// Polls the conversation until it contains a message with `body`.
async fn wait_for_message(server: &Server, conversation_id: &str, body: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, messages) = connect_json(
            &reqwest::Client::new(),
            &server.base_url(),
            "agynio.api.threads.v1.ThreadsGateway/GetMessages",
            json!({"threadId": conversation_id}),
            Some(&server.admin_token),
        )
        .await;
        assert_eq!(status, 200, "{messages}");
        let found = messages["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|message| message["body"] == body);
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{body:?} never reached the conversation: {messages}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_wait_ctrl_c_exits_130() {
    let root = scratch_root();
    let server = Server::start_with(&["--runner-builtin", "false"].map(String::from));
    let client = Client { root: root.clone() };
    let (_, conversation_id) = set_up_conversation(&client, &server, &root);

    let waiting = client.spawn_send_wait(&conversation_id, "90s");
    // The handler is installed before the message is sent, so once the
    // message is stored SIGINT reaches it.
    wait_for_message(&server, &conversation_id, "hello").await;
    let killed = Command::new("kill")
        .args(["-INT", &waiting.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let output = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("interrupted"), "stderr: {stderr}");
    assert!(stderr.contains("was sent"), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("`agyn messages {conversation_id}`")),
        "stderr: {stderr}"
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread")]
async fn send_wait_names_unreachable_gateway() {
    let root = scratch_root();
    let mut server = Server::start_with(&["--runner-builtin", "false"].map(String::from));
    let client = Client { root: root.clone() };
    let (_, conversation_id) = set_up_conversation(&client, &server, &root);

    let waiting = client.spawn_send_wait(&conversation_id, "8s");
    wait_for_message(&server, &conversation_id, "hello").await;
    let base_url = server.base_url();
    server.stop();

    let output = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("timed out after 8s"), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("the gateway at {base_url} has been unreachable")),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("was sent"), "stderr: {stderr}");

    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}
