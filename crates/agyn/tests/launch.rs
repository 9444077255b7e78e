//! `agyn install`, `agyn launch` with its MCP stdio bridge, and `agyn hook
//! serve`, run as the real binary: on their own, and as the containers of
//! a LocalRunner workload laid out as the orchestrator builds it.
//!
//! The MCP server behind the bridge and the MCP client in front of it are
//! the Python `mcp` package's, from the test virtual environment that
//! tests/python/venv.sh creates.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_runner::{LocalRunner, Runner};
use serde_json::{Value, json};

const AGYN: &str = env!("CARGO_BIN_EXE_agyn");

/// Maximum wait for a process, a port or a workload state.
const WAIT: Duration = Duration::from_secs(30);

/// Protocol revision the test client asks for.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// A directory under the system temporary directory, deleted on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "agyn-launch-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed on drop.
struct Process(Child);

impl Process {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Returns the interpreter of the test virtual environment
/// (`AGYN_TEST_VENV`, default `.venv-tests` in the repository root).
fn venv_python() -> PathBuf {
    let venv = std::env::var("AGYN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repository().join(".venv-tests"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "these tests need the Python mcp package at {}; run tests/python/venv.sh",
        python.display()
    );
    python
}

/// Returns the shell command that starts the stdio MCP server of the
/// bridge tests.
fn mcp_server_command() -> String {
    format!(
        "exec '{}' '{}'",
        venv_python().display(),
        repository()
            .join("crates/launch/tests/mcp_stdio_server.py")
            .display()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `127.0.0.1:port`.
async fn wait_listening(port: u16) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agyn(args: &[&str]) -> Command {
    let mut command = Command::new(AGYN);
    command.args(args);
    command
}

/// A minimal MCP client over streamable HTTP.
struct McpClient {
    url: String,
    http: reqwest::Client,
    session: Option<String>,
}

impl McpClient {
    fn new(url: String) -> Self {
        Self {
            url,
            http: reqwest::Client::new(),
            session: None,
        }
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        request.send().await.unwrap()
    }

    async fn initialize(&mut self) -> Value {
        let request = json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "agyn-launch-test", "version": "1" },
            },
        });
        let response = self.post(&request).await;
        assert_eq!(response.status(), 200);
        self.session = Some(
            response.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let initialized: Value = response.json().await.unwrap();
        let notification = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        assert_eq!(self.post(&notification).await.status(), 202);
        initialized
    }

    async fn request(&self, id: i64, method: &str, params: Value) -> Value {
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self.post(&request).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], id, "{body}");
        body
    }

    /// Runs initialize, tools/list and tools/call of `add`, checking each.
    async fn check_tools(&mut self) {
        let initialized = self.initialize().await;
        assert_eq!(
            initialized["result"]["serverInfo"]["name"],
            "agyn-bridge-test"
        );
        let listed = self.request(2, "tools/list", json!({})).await;
        let names: Vec<&str> = listed["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tool| tool["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"add"), "{listed}");
        let called = self
            .request(
                3,
                "tools/call",
                json!({ "name": "add", "arguments": { "a": 20, "b": 22 } }),
            )
            .await;
        assert_eq!(called["result"]["content"][0]["text"], "42", "{called}");
    }
}

#[test]
fn install_places_linked_executable() {
    let dir = TempDir::new();
    let target = dir.path().join("agyn-bin");
    for _ in 0..2 {
        let output = agyn(&["install", target.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(output.stderr.is_empty(), "{output:?}");
    }
    let installed = std::fs::metadata(target.join("agyn")).unwrap();
    let original = std::fs::metadata(AGYN).unwrap();
    assert_eq!(installed.ino(), original.ino());
    assert_eq!(installed.mode() & 0o7777, 0o755);

    let output = Command::new(target.join("agyn"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("agyn "));
}

#[test]
fn install_reports_unwritable_directory() {
    let dir = TempDir::new();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let output = agyn(&["install", file.join("sub").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("agyn install: failed to create the directory"),
        "{stderr}"
    );
}

#[test]
fn launch_runs_init_then_execs() {
    let dir = TempDir::new();
    let init = dir.path().join("init");
    std::fs::create_dir(&init).unwrap();
    std::fs::write(init.join("001.sh"), "echo \"first in $(pwd)\"; exit 2").unwrap();
    std::fs::write(init.join("002.sh"), "echo \"second $GREETING\"").unwrap();
    let output: Output = agyn(&["launch", "--", "/bin/sh", "-c", "echo \"main $$\"; exit 6"])
        .env("AGYN_INIT_DIR", &init)
        .env("GREETING", "hello")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let pwd = lines[0].strip_prefix("first in ").unwrap();
    assert_eq!(
        Path::new(pwd).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
    assert_eq!(lines[1], "second hello");
    assert!(lines[2].starts_with("main "), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Init script failed"), "{stderr}");
    assert!(stderr.contains("001.sh"), "{stderr}");
}

#[test]
fn launch_execs_in_place() {
    let dir = TempDir::new();
    let pid_file = dir.path().join("pid");
    let child = agyn(&[
        "launch",
        "--",
        "/bin/sh",
        "-c",
        &format!("echo $$ > '{}'", pid_file.display()),
    ])
    .spawn()
    .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
}

#[test]
fn launch_reports_missing_program() {
    let output = agyn(&["launch", "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/program"), "{stderr}");
}

#[test]
fn launch_rejects_bad_arguments() {
    let output = agyn(&["launch", "--mcp-stdio-bridge", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--port"),
        "{output:?}"
    );

    let output = agyn(&[
        "launch",
        "--mcp-stdio-bridge",
        "--port",
        "0",
        "--path",
        "mcp",
        "--",
        "true",
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --path \"mcp\""), "{stderr}");

    let output = agyn(&["launch"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn bridge_serves_stdio_server() {
    let port = free_port();
    let bridge = Process(
        agyn(&[
            "launch",
            "--mcp-stdio-bridge",
            "--port",
            &port.to_string(),
            "--path",
            "/tools/mcp",
            "--",
            "/bin/sh",
            "-c",
            &mcp_server_command(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_listening(port).await;
    let url = format!("http://127.0.0.1:{port}/tools/mcp");
    McpClient::new(url.clone()).check_tools().await;

    // The Python SDK's own client through the same bridge.
    let output = tokio::process::Command::new(venv_python())
        .arg(repository().join("crates/launch/tests/mcp_http_client.py"))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["tools"],
        json!(["add", "echo", "list_roots", "sleep"])
    );
    assert_eq!(result["text"], json!(["5"]));
    assert_eq!(result["is_error"], false);

    // Python ends on the forwarded SIGTERM, and the bridge exits with its
    // status: 128 + 15.
    assert_eq!(bridge.terminate(), Some(143));
}

#[tokio::test]
async fn hook_serve_runs_function() {
    let dir = TempDir::new();
    let input = dir.path().join("input.json");
    let port = free_port();
    let hook = Process(
        agyn(&[
            "launch",
            "--",
            AGYN,
            "hook",
            "serve",
            "--port",
            &port.to_string(),
        ])
        .env(
            "AGYN_HOOK_FUNCTION",
            format!(
                "cat > '{}'; echo \"ran $HOOK_EVENT\"; [ \"$HOOK_EVENT\" != slow ] || sleep 30",
                input.display()
            ),
        )
        .env("AGYN_HOOK_TIMEOUT", "1")
        .stdin(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_listening(port).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/run");

    let payload = json!({
        "event": "turn_end",
        "agent_id": "agent-1",
        "thread_id": "thread-1",
        "workload_id": "workload-1",
        "message_ids": ["m-1"],
        "reply_message_id": "m-2",
    });
    let response = client.post(&url).json(&payload).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(
        outcome,
        json!({ "exit_code": 0, "timed_out": false, "stdout_tail": "ran turn_end\n", "stderr_tail": "" })
    );
    let received: Value = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
    assert_eq!(received, payload);

    let response = client
        .post(&url)
        .json(&json!({ "event": "slow" }))
        .send()
        .await
        .unwrap();
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["timed_out"], true, "{outcome}");
    assert_eq!(outcome["stdout_tail"], "ran slow\n");

    assert_eq!(hook.terminate(), Some(0));
}

#[test]
fn hook_serve_rejects_bad_timeout() {
    let output = agyn(&["hook", "serve", "--port", "0"])
        .env("AGYN_HOOK_FUNCTION", "true")
        .env("AGYN_HOOK_TIMEOUT", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--timeout"), "{stderr}");

    let output = agyn(&["hook", "serve", "--port", "0"])
        .env_remove("AGYN_HOOK_FUNCTION")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--function"), "{stderr}");
}

fn env(name: &str, value: &str) -> pb::EnvVar {
    pb::EnvVar {
        name: name.to_string(),
        value: value.to_string(),
        ..Default::default()
    }
}

fn agyn_bin_mount() -> pb::Mount {
    pb::Mount {
        volume: "agyn-bin".to_string(),
        mount_path: "/agyn-bin".to_string(),
        read_only: true,
        ..Default::default()
    }
}

fn container(name: &str, command: &[&str], env_vars: Vec<pb::EnvVar>) -> pb::ContainerSpec {
    let mut env_vars = env_vars;
    env_vars.push(env("AGYN_CONTAINER_NAME", name));
    pb::ContainerSpec {
        name: name.to_string(),
        image: "example.com/unused:1".to_string(),
        command: command.iter().map(|arg| arg.to_string()).collect(),
        env: env_vars,
        mounts: vec![agyn_bin_mount()],
        ..Default::default()
    }
}

/// Builds a workload as the orchestrator lays it out: the `agyn-bin`
/// volume, `agyn install` as the init container, a main container started
/// by `agyn launch` with an init script, an MCP sidecar behind the stdio
/// bridge and a hook sidecar.
fn orchestrated_workload(workload_id: &str, main_script: &str) -> pb::StartWorkloadRequest {
    let mut init = container("agyn-init", &["agyn", "install", "/agyn-bin"], Vec::new());
    init.mounts[0].read_only = false;

    let mut main = container(
        "agent",
        &[
            "/agyn-bin/agyn",
            "launch",
            "--",
            "/bin/sh",
            "-c",
            main_script,
        ],
        vec![env("AGYN_INIT_DIR", "/agyn-bin/init/agent")],
    );
    main.inline_file_paths = vec!["/agyn-bin/init/agent/001.sh".to_string()];

    let server = mcp_server_command();
    let mcp = container(
        "mcp-tools",
        &[
            "/agyn-bin/agyn",
            "launch",
            "--mcp-stdio-bridge",
            "--port",
            "${port:mcp-tools}",
            "--path",
            "/mcp",
            "--",
            "/bin/sh",
            "-c",
            &server,
        ],
        vec![env("MCP_PORT", "${port:mcp-tools}")],
    );

    let hook = container(
        "hook-0123abcd",
        &[
            "/agyn-bin/agyn",
            "launch",
            "--",
            "/agyn-bin/agyn",
            "hook",
            "serve",
            "--port",
            "${port:hook-0123abcd}",
        ],
        vec![
            env(
                "AGYN_HOOK_FUNCTION",
                "echo \"hook $HOOK_EVENT in $AGYN_CONTAINER_NAME\"",
            ),
            env("AGYN_HOOK_TIMEOUT", "60"),
            env("HOOK_PORT", "${port:hook-0123abcd}"),
        ],
    );

    pb::StartWorkloadRequest {
        workload_id: workload_id.to_string(),
        labels: [("agyn.workload_id".to_string(), workload_id.to_string())]
            .into_iter()
            .collect(),
        init_containers: vec![init],
        main: main.into(),
        sidecars: vec![mcp, hook],
        volumes: vec![pb::VolumeSpec {
            name: "agyn-bin".to_string(),
            kind: pb::VolumeKind::VOLUME_KIND_EPHEMERAL.into(),
            ..Default::default()
        }],
        ports: ["mcp-tools", "hook-0123abcd"]
            .into_iter()
            .map(|name| pb::PortSpec {
                name: name.to_string(),
                ..Default::default()
            })
            .collect(),
        inline_files: [(
            "/agyn-bin/init/agent/001.sh".to_string(),
            b"echo \"init of $AGYN_CONTAINER_NAME\" > \"$AGYN_ROOT/init-ran\"".to_vec(),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

async fn inspect(runner: &LocalRunner, workload_id: &str) -> pb::InspectWorkloadResponse {
    runner
        .inspect_workload(pb::InspectWorkloadRequest {
            workload_id: workload_id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn container_status<'a>(
    response: &'a pb::InspectWorkloadResponse,
    name: &str,
) -> &'a pb::RunnerContainer {
    response
        .containers
        .iter()
        .find(|container| container.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {response:?}"))
}

fn is_running(response: &pb::InspectWorkloadResponse, name: &str) -> bool {
    container_status(response, name).status.as_known()
        == Some(pb::ContainerStatus::CONTAINER_STATUS_RUNNING)
}

/// Reads the ports the runner allocated from the workload's manifest.
fn allocated_ports(workload_dir: &Path) -> BTreeMap<String, u16> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(workload_dir.join("manifest.json")).unwrap())
            .unwrap();
    serde_json::from_value(manifest["ports"].clone()).unwrap()
}

#[tokio::test]
async fn local_runner_runs_orchestrated_workload() {
    let dir = TempDir::new();
    let runner = LocalRunner::new(dir.path(), "runner-launch", "test", AGYN).unwrap();
    let main_script = "cat \"$AGYN_ROOT/init-ran\"; echo main started; \
                       trap 'exit 0' TERM; while :; do sleep 0.1; done";
    runner
        .start_workload(orchestrated_workload("wl-launch", main_script))
        .await
        .unwrap();

    let deadline = Instant::now() + WAIT;
    let running = loop {
        let response = inspect(&runner, "wl-launch").await;
        if ["agent", "mcp-tools", "hook-0123abcd"]
            .iter()
            .all(|name| is_running(&response, name))
        {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "containers did not start: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let init = container_status(&running, "agyn-init");
    assert_eq!(init.exit_code, 0, "{init:?}");
    assert_eq!(init.reason, "Completed");

    let workload_dir = dir.path().join("workloads/wl-launch");
    let installed = std::fs::metadata(workload_dir.join("volumes/agyn-bin/agyn")).unwrap();
    assert_eq!(installed.ino(), std::fs::metadata(AGYN).unwrap().ino());

    let log_path = workload_dir.join("logs/agent.log");
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("main started") {
            assert!(log.contains("init of agent\nmain started\n"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "main did not start: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ports = allocated_ports(&workload_dir);
    let mcp_port = ports["mcp-tools"];
    wait_listening(mcp_port).await;
    McpClient::new(format!("http://127.0.0.1:{mcp_port}/mcp"))
        .check_tools()
        .await;

    let hook_port = ports["hook-0123abcd"];
    wait_listening(hook_port).await;
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{hook_port}/run"))
        .json(&json!({ "event": "workload_start" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["exit_code"], 0, "{outcome}");
    assert_eq!(
        outcome["stdout_tail"],
        "hook workload_start in hook-0123abcd\n"
    );

    runner
        .stop_workload(pb::StopWorkloadRequest {
            workload_id: "wl-launch".to_string(),
            timeout_sec: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let stopped = inspect(&runner, "wl-launch").await;
    for name in ["agent", "mcp-tools", "hook-0123abcd"] {
        assert_eq!(
            container_status(&stopped, name).status.as_known(),
            Some(pb::ContainerStatus::CONTAINER_STATUS_TERMINATED),
            "{name}: {stopped:?}"
        );
    }
    assert_eq!(container_status(&stopped, "agent").exit_code, 0);
    assert_eq!(container_status(&stopped, "hook-0123abcd").exit_code, 0);
    assert!(!workload_dir.join("volumes/agyn-bin").exists());
}
