//! The command-line client against the real `agyn serve`: the real binary
//! logs in with the admin token, configures a scripted provider, a model
//! and an agent, talks to the agent, and reports the gateway's errors.
//!
//! The server runs without its built-in runner, so no workload can start
//! and agents never reply: `send --wait` must time out. A reply comes
//! only from an installed app that writes into the conversation.

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use agyn_api_apps::agynio::api::apps::v1::{AppsGatewayClient, EnrollAppRequest};
use connectrpc::client::{ClientConfig, HttpClient};
use serde_json::{Value, json};
use support::*;

/// An id that no resource has.
const UNKNOWN_ID: &str = "01900000-0000-7000-8000-000000000000";

const SCRIPT: &str = r#"{"rules": [
  {"whenInputContains": "hello", "steps": [{"text": "Hello! You wrote: {{input}}"}]},
  {"steps": [{"text": "I only answer hello."}]}
]}"#;

/// Removes directories when dropped, after the server that used them. A
/// failed test keeps them for inspection.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Exit status and output of one run of the binary.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `agyn` client commands with a private config directory and no
/// agyn variables from the test's environment.
struct Client {
    root: PathBuf,
    config_dir: PathBuf,
    gateway: String,
    /// Every stdout and stderr so far, searched for the token at the end.
    transcript: Mutex<String>,
}

impl Client {
    fn new(root: &Path, server: &Server) -> Self {
        Self {
            root: root.to_path_buf(),
            // Not created yet: login must create it with mode 0700.
            config_dir: root.join("config").join("agyn"),
            gateway: server.base_url(),
            transcript: Mutex::new(String::new()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_agyn"));
        command
            .args(args)
            .env("AGYN_CONFIG_DIR", &self.config_dir)
            .env("HOME", &self.root)
            .env_remove("AGYN_TOKEN")
            .env_remove("AGYN_GATEWAY_URL")
            .env_remove("AGYN_ORG")
            .env_remove("AGYN_CA_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args), None)
    }

    fn run_command(&self, mut command: Command, stdin: Option<&str>) -> Run {
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agyn");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let run = Run {
            status: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        let mut transcript = self.transcript.lock().unwrap();
        transcript.push_str(&run.stdout);
        transcript.push_str(&run.stderr);
        run
    }

    /// Runs a command that must succeed.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.status,
            Some(0),
            "agyn {args:?} failed:\nstdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
        run
    }

    /// Runs a command with `--json` that must succeed and print one JSON
    /// document, and returns it.
    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let run = self.ok(&with_json);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "agyn {args:?} --json printed {lines:?}");
        serde_json::from_str(lines[0])
            .unwrap_or_else(|error| panic!("agyn {args:?} --json: {error}: {}", lines[0]))
    }

    /// Runs a command that must fail with `status`, and returns its
    /// standard error.
    fn fails(&self, args: &[&str], status: i32) -> String {
        let run = self.run(args);
        assert_eq!(
            run.status,
            Some(status),
            "agyn {args:?}: expected exit status {status}:\nstdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
        run.stderr
    }

    fn credentials_path(&self) -> PathBuf {
        self.config_dir.join("credentials.json")
    }
}

fn scratch_root(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = std::env::temp_dir().join(format!("agyn-cli-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn start_server() -> Server {
    Server::start_with(&["--runner-builtin".to_string(), "false".to_string()])
}

/// Logs in with the admin token and runs the setup that every
/// conversation needs: an organization, a scripted provider, a model and
/// an agent. Returns the organization id and the agent id.
fn set_up_agent(client: &Client, server: &Server) -> (String, String) {
    let token_file = server.data_dir.join("admin-token");
    client.ok(&[
        "login",
        "--gateway",
        &client.gateway,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let org = client.json(&["orgs", "create", "Acme CLI"]);
    let script_path = client.root.join("script.json");
    std::fs::write(&script_path, SCRIPT).unwrap();
    let script_path = script_path.to_str().unwrap();
    client.ok(&[
        "providers",
        "create",
        "--name",
        "demo",
        "--type",
        "scripted",
        "--script-file",
        script_path,
    ]);
    client.ok(&["models", "create", "--provider", "demo", "--name", "Demo"]);
    let agent = client.json(&["agents", "create", "--name", "Helper", "--model", "Demo"]);
    (id(&org, "organization"), id(&agent, "agent"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn id(value: &Value, resource: &str) -> String {
    let id = value[resource]["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {resource}.meta.id in {value}"));
    assert_eq!(id.len(), 36, "{resource} id {id:?}");
    id.to_string()
}

#[test]
fn login_rejects_bad_token() {
    let root = scratch_root("bad-token");
    let mut cleanup = Cleanup(vec![root.clone()]);
    let server = start_server();
    cleanup.0.push(server.data_dir.clone());
    let client = Client::new(&root, &server);

    let stderr = client.fails(
        &[
            "login",
            "--gateway",
            &client.gateway,
            "--token",
            "agyn_not-a-real-token",
        ],
        1,
    );
    assert!(
        stderr.starts_with("agyn: unauthenticated: "),
        "stderr: {stderr}"
    );
    assert!(
        !client.credentials_path().exists(),
        "a rejected token must not be stored"
    );

    let stderr = client.fails(&["login", "--token", &server.admin_token], 2);
    assert!(stderr.contains("missing gateway URL"), "stderr: {stderr}");

    let stderr = client.fails(&["orgs", "list"], 1);
    assert!(stderr.contains("not logged in"), "stderr: {stderr}");
    assert!(
        !client
            .transcript
            .lock()
            .unwrap()
            .contains(&server.admin_token),
        "the admin token was printed"
    );
}

/// A gateway that nothing listens on is named in the error, with the
/// cause and, from login, what to check.
#[test]
fn unreachable_gateway_is_named() {
    let root = scratch_root("unreachable");
    let _cleanup = Cleanup(vec![root.clone()]);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let client = Client {
        root: root.clone(),
        config_dir: root.join("config"),
        gateway: closed.clone(),
        transcript: Mutex::new(String::new()),
    };
    let prefix = format!("agyn: unavailable: cannot reach the gateway at {closed}: ");

    let mut command = client.command(&["orgs", "list", "--gateway", &closed]);
    command.env("AGYN_TOKEN", "agyn_not-a-real-token");
    let run = client.run_command(command, None);
    assert_eq!(run.status, Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.starts_with(&prefix), "stderr: {}", run.stderr);
    assert!(
        run.stderr.to_lowercase().contains("connection refused"),
        "stderr: {}",
        run.stderr
    );

    let stderr = client.fails(
        &[
            "login",
            "--gateway",
            &closed,
            "--token",
            "agyn_not-a-real-token",
        ],
        1,
    );
    assert!(stderr.starts_with(&prefix), "stderr: {stderr}");
    assert!(stderr.contains("check the gateway URL"), "stderr: {stderr}");
}

#[test]
fn main_flow_against_serve() {
    let root = scratch_root("flow");
    let mut cleanup = Cleanup(vec![root.clone()]);
    let server = start_server();
    cleanup.0.push(server.data_dir.clone());
    let client = Client::new(&root, &server);
    let token_file = server.data_dir.join("admin-token");
    let token_file = token_file.to_str().unwrap();

    // Log in with the admin token; the file and its directory are private.
    let me = client.json(&[
        "login",
        "--gateway",
        &client.gateway,
        "--token-file",
        token_file,
    ]);
    assert!(me["user"]["meta"]["id"].is_string(), "GetMe: {me}");
    assert_eq!(mode(&client.credentials_path()), 0o600);
    assert_eq!(mode(&client.config_dir), 0o700);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(client.credentials_path()).unwrap()).unwrap();
    assert_eq!(stored["gateway_url"], client.gateway.as_str());

    // Logging in again reads the token from standard input.
    let login = client.command(&["login", "--gateway", &client.gateway, "--token", "-"]);
    let run = client.run_command(login, Some(&format!("{}\n", server.admin_token)));
    assert_eq!(run.status, Some(0), "login from stdin: {}", run.stderr);
    assert!(
        run.stdout.contains(&client.gateway),
        "stdout: {}",
        run.stdout
    );

    // An organization for everything below; the admin is its only member.
    let org = client.json(&["orgs", "create", "Acme CLI", "--slug", "acme-cli"]);
    let org_id = id(&org, "organization");
    let orgs = client.json(&["orgs", "list"]);
    let slugs: Vec<&str> = orgs["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|org| org["slug"].as_str())
        .collect();
    assert!(slugs.contains(&"acme-cli"), "orgs list: {orgs}");

    // A scripted provider, a model on it and an agent on the model, each
    // found by name.
    let script_path = root.join("script.json");
    std::fs::write(&script_path, SCRIPT).unwrap();
    let provider = client.json(&[
        "providers",
        "create",
        "--name",
        "demo",
        "--type",
        "scripted",
        "--script-file",
        script_path.to_str().unwrap(),
    ]);
    let provider_id = id(&provider, "provider");
    assert_eq!(provider["provider"]["organizationId"], org_id.as_str());
    assert!(
        provider["provider"]["script"]["rules"].is_array(),
        "{provider}"
    );
    let providers = client.ok(&["providers", "list"]);
    assert!(
        providers.stdout.contains(&provider_id),
        "{}",
        providers.stdout
    );
    assert!(
        providers.stdout.contains("scripted"),
        "{}",
        providers.stdout
    );

    let model = client.json(&[
        "models",
        "create",
        "--provider",
        "demo",
        "--name",
        "Demo",
        "--remote-name",
        "demo-1",
    ]);
    let model_id = id(&model, "model");
    assert_eq!(model["model"]["providerId"], provider_id.as_str());
    assert_eq!(model["model"]["remoteName"], "demo-1");

    let agent = client.json(&[
        "agents",
        "create",
        "--name",
        "Helper",
        "--nickname",
        "helper",
        "--model",
        "Demo",
        "--instructions",
        "Be brief.",
        "--idle-timeout",
        "5m",
    ]);
    let agent_id = id(&agent, "agent");
    assert_eq!(agent["agent"]["model"], model_id.as_str());
    assert_eq!(agent["agent"]["idleTimeout"], "300s");
    let configuration: Value =
        serde_json::from_str(agent["agent"]["configuration"].as_str().unwrap()).unwrap();
    assert_eq!(configuration["system_prompt"], "Be brief.");
    let agents = client.ok(&["agents", "list"]);
    assert!(agents.stdout.contains(&agent_id), "{}", agents.stdout);

    let mcp = client.json(&[
        "agents",
        "mcp",
        "add",
        "@helper",
        "--name",
        "files",
        "--command",
        "python3 -m files_server",
        "--stdio",
    ]);
    assert_eq!(mcp["mcp"]["agentId"], agent_id.as_str());
    assert_eq!(mcp["mcp"]["transport"], "MCP_TRANSPORT_STDIO");
    let mcps = client.json(&["agents", "mcp", "list", "Helper"]);
    assert_eq!(mcps["mcps"].as_array().unwrap().len(), 1, "{mcps}");

    // A conversation with the agent, a message in it, and the message read
    // back.
    let conversation = client.json(&[
        "conversations",
        "create",
        "--with",
        "Helper",
        "--title",
        "First chat",
    ]);
    let conversation_id = id(&conversation, "conversation");
    assert_eq!(conversation["conversation"]["summary"], "First chat");
    let participants: Vec<&str> = conversation["conversation"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|participant| participant["id"].as_str())
        .collect();
    assert!(participants.contains(&agent_id.as_str()), "{conversation}");
    let listed = client.ok(&["conversations", "list"]);
    assert!(
        listed.stdout.contains(&conversation_id),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("@helper"), "{}", listed.stdout);
    let row = listed
        .stdout
        .lines()
        .find(|line| line.starts_with(&conversation_id))
        .unwrap_or_else(|| panic!("no row for {conversation_id}: {}", listed.stdout));
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect();
    assert_eq!(cells[1..4], ["@helper", "open", "0"], "{}", listed.stdout);

    let sent = client.ok(&["send", &conversation_id, "hello there"]);
    assert!(sent.stdout.contains(&conversation_id), "{}", sent.stdout);
    let second = client.json(&["send", &conversation_id, "second message"]);
    assert_eq!(second["message"]["body"], "second message");
    assert_eq!(second["message"]["threadId"], conversation_id.as_str());

    let messages = client.ok(&["messages", &conversation_id]);
    assert!(
        messages.stdout.contains("  hello there\n"),
        "{}",
        messages.stdout
    );
    let messages = client.json(&["messages", &conversation_id]);
    let bodies: Vec<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["body"].as_str())
        .collect();
    assert_eq!(bodies, ["hello there", "second message"]);
    let newest = client.json(&["messages", &conversation_id, "--limit", "1"]);
    assert_eq!(newest["messages"][0]["body"], "second message");
    assert_eq!(newest["messages"].as_array().unwrap().len(), 1);

    // No runner, so no workload.
    let workloads = client.json(&["workloads", "list"]);
    assert_eq!(workloads["workloads"], serde_json::json!([]));
    let workloads = client.json(&["workloads", "list", "--conversation", &conversation_id]);
    assert_eq!(workloads["workloads"], serde_json::json!([]));

    // The agent cannot reply, so waiting times out with status 1 and no
    // progress line, because standard error is not a terminal.
    let started = std::time::Instant::now();
    let stderr = client.fails(
        &[
            "send",
            &conversation_id,
            "hello, anyone?",
            "--wait",
            "--timeout",
            "2s",
        ],
        1,
    );
    assert!(
        stderr.starts_with(&format!(
            "agyn: timed out after 2s waiting for a reply in conversation {conversation_id}"
        )),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("Waiting for a reply"), "stderr: {stderr}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let messages = client.json(&["messages", &conversation_id]);
    assert_eq!(messages["messages"].as_array().unwrap().len(), 3);

    // Unknown ids get the gateway's not_found.
    let stderr = client.fails(&["messages", UNKNOWN_ID], 1);
    assert!(stderr.starts_with("agyn: not_found: "), "stderr: {stderr}");
    let stderr = client.fails(&["logs", UNKNOWN_ID], 1);
    assert!(stderr.starts_with("agyn: not_found: "), "stderr: {stderr}");

    // Usage errors exit with status 2.
    let stderr = client.fails(
        &["providers", "create", "--name", "x", "--type", "openai"],
        2,
    );
    assert!(
        stderr.contains("require --base-url and --api-key-env"),
        "stderr: {stderr}"
    );
    client.fails(&["send", &conversation_id], 2);
    let stderr = client.fails(&["send", "nope", "hello"], 2);
    assert!(
        stderr.contains("invalid value 'nope' for '<CONVERSATION>'"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("thread_id"), "stderr: {stderr}");

    // With a second organization, --org is required and the error lists
    // both.
    client.json(&["orgs", "create", "Second CLI", "--slug", "second-cli"]);
    let stderr = client.fails(&["agents", "list"], 2);
    assert!(stderr.contains("pass --org"), "stderr: {stderr}");
    assert!(stderr.contains("acme-cli"), "stderr: {stderr}");
    assert!(stderr.contains("second-cli"), "stderr: {stderr}");
    for org in ["acme-cli", org_id.as_str()] {
        let agents = client.json(&["agents", "list", "--org", org]);
        assert_eq!(agents["agents"][0]["meta"]["id"], agent_id.as_str());
    }
    let agents = client.json(&["agents", "list", "--org", "second-cli"]);
    assert_eq!(agents["agents"], serde_json::json!([]));

    // AGYN_GATEWAY_URL replaces the stored URL.
    let mut elsewhere = client.command(&["orgs", "list"]);
    elsewhere.env("AGYN_GATEWAY_URL", "http://127.0.0.1:1");
    let run = client.run_command(elsewhere, None);
    assert_eq!(run.status, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.starts_with("agyn: unavailable: "),
        "stderr: {}",
        run.stderr
    );

    // After logout only the environment provides a login.
    let logout = client.json(&["logout"]);
    assert_eq!(logout["removed"], true);
    assert!(!client.credentials_path().exists());
    let stderr = client.fails(&["orgs", "list"], 1);
    assert!(stderr.contains("not logged in"), "stderr: {stderr}");
    let mut from_env = client.command(&["orgs", "list", "--json"]);
    from_env
        .env("AGYN_GATEWAY_URL", &client.gateway)
        .env("AGYN_TOKEN", &server.admin_token);
    let run = client.run_command(from_env, None);
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    let orgs: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(orgs["organizations"].as_array().unwrap().len(), 2);

    assert!(
        !client
            .transcript
            .lock()
            .unwrap()
            .contains(&server.admin_token),
        "the admin token was printed"
    );
}

/// Creates an app with the `thread:write` permission, installs it in the
/// organization and enrolls it. Returns its identity id and an HTTPS
/// client that presents its certificate.
async fn writer_app(server: &Server, org_id: &str) -> (String, reqwest::Client) {
    let plain = reqwest::Client::new();
    let admin = Some(server.admin_token.as_str());
    let (status, created) = connect_json(
        &plain,
        &server.base_url(),
        "agynio.api.apps.v1.AppsGateway/CreateApp",
        json!({
            "organizationId": org_id,
            "slug": "replier",
            "name": "Replier",
            "permissions": ["thread:write"],
        }),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let app_id = created["app"]["meta"]["id"].as_str().unwrap().to_string();
    let (status, installed) = connect_json(
        &plain,
        &server.base_url(),
        "agynio.api.apps.v1.AppsGateway/InstallApp",
        json!({"appId": app_id, "organizationId": org_id}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{installed}");

    let enrolled = AppsGatewayClient::new(
        HttpClient::plaintext_http2_only(),
        ClientConfig::new(server.base_url().parse().unwrap()),
    )
    .enroll_app(EnrollAppRequest {
        service_token: created["serviceToken"].as_str().unwrap().to_string(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_owned();
    let identity: Value = serde_json::from_slice(&enrolled.identity_json).unwrap();
    let app = tls_client(
        &server.admin_credentials().ca_pem,
        Some((
            identity["certificate_pem"].as_str().unwrap(),
            identity["private_key_pem"].as_str().unwrap(),
        )),
    );
    (enrolled.identity_id, app)
}

/// Waits up to 20 seconds until the conversation contains a message with
/// `body`.
async fn wait_for_message(server: &Server, conversation_id: &str, body: &str) {
    let plain = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, messages) = connect_json(
            &plain,
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
async fn send_wait_prints_reply() {
    let root = scratch_root("reply");
    let mut cleanup = Cleanup(vec![root.clone()]);
    let server = start_server();
    cleanup.0.push(server.data_dir.clone());
    let client = Client::new(&root, &server);
    let (org_id, _) = set_up_agent(&client, &server);
    let conversation = client.json(&["conversations", "create", "--with", "Helper"]);
    let conversation_id = id(&conversation, "conversation");
    let (app_id, app) = writer_app(&server, &org_id).await;

    // The app replies only once the message is in the conversation, so the
    // client must already be waiting on its subscription.
    let waiting = client
        .command(&[
            "send",
            &conversation_id,
            "hello there",
            "--wait",
            "--timeout",
            "60s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_message(&server, &conversation_id, "hello there").await;
    let (status, reply) = connect_json(
        &app,
        &server.https_url(),
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": conversation_id, "body": "Reply from the app"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    let output = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "stdout: {stdout}");
    assert_eq!(lines[0]["message"]["body"], "hello there");
    assert_eq!(lines[1]["message"]["body"], "Reply from the app");
    assert_eq!(lines[1]["message"]["senderId"], app_id.as_str());
    assert_eq!(lines[1]["message"]["threadId"], conversation_id.as_str());

    // A reply sent before the wait starts is not the next message.
    let human = client
        .command(&[
            "send",
            &conversation_id,
            "and again",
            "--wait",
            "--timeout",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_message(&server, &conversation_id, "and again").await;
    let (status, reply) = connect_json(
        &app,
        &server.https_url(),
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": conversation_id, "body": "Second reply\non two lines"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let output = tokio::task::spawn_blocking(move || human.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}");
    assert!(
        stdout.contains(&format!("  {app_id}\n")),
        "stdout: {stdout}"
    );
    assert!(
        stdout.ends_with("  Second reply\n  on two lines\n\n"),
        "stdout: {stdout}"
    );
    assert!(!stdout.contains("Reply from the app"), "stdout: {stdout}");
}
