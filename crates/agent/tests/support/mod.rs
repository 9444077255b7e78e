//! Shared setup of the agent tests. The whole public API is served in
//! process over TLS on loopback, with an organization, a scripted model,
//! an agent and a thread. Workload records get real workload certificates,
//! the agent runs in process, and a real MCP server runs from the test
//! Python environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agyn_agent::{AgentConfig, AgentError, Credentials, McpServerAddress, Settings, Timing};
use agyn_client::llm::__buffa::oneof::script_step::Reply;
use agyn_client::threads::__buffa::oneof::participant_identifier::Identifier;
use agyn_client::{Credential, Gateway, agents, into_error, llm, runners, threads, tracing};
use agyn_core::{Caller, CredentialKind, IdentityKind, Secret};
use agyn_gateway::Platform;
use agyn_gateway::transport::{Transport, serve};
use agyn_store::Backend;
use tokio::sync::oneshot;

/// Maximum time a test waits for the agent to act.
pub const WAIT: Duration = Duration::from_secs(20);

/// A platform served on a loopback port, and an organization owner.
pub struct World {
    pub platform: Platform,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    pub ca_pem: String,
    pub owner: Caller,
    pub owner_token: String,
    /// The owner's client.
    pub gateway: Gateway,
    pub org: String,
    runner_id: String,
    files_dir: PathBuf,
    _stop_server: oneshot::Sender<()>,
}

/// The ids of one agent's setup.
#[derive(Debug, Clone)]
pub struct Setup {
    pub model: String,
    pub agent: String,
    pub thread: String,
}

/// A workload record with its certificate.
#[derive(Clone)]
pub struct Workload {
    pub id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl World {
    pub async fn start(backend: Backend) -> Self {
        install_log_capture();
        let db = agyn_store::testing::fresh(backend).await;
        let master_key = agyn_pki::MasterKey::generate();
        let pki = agyn_pki::Pki::load_or_create(db.clone(), &master_key)
            .await
            .unwrap();
        let events =
            agyn_events::Events::start(db.clone(), agyn_events::EventsConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let files_dir =
            std::env::temp_dir().join(format!("agyn-agent-test-files-{}", uuid::Uuid::new_v4()));
        let objects = Arc::new(agyn_files::LocalStore::open(&files_dir).await.unwrap());
        let platform = Platform::new(db, pki.clone(), master_key, events, objects, &url);
        let tls = pki
            .server_config(
                &agyn_pki::ServerCertificate::default(),
                agyn_pki::ClientAuth::Optional,
            )
            .await
            .unwrap();
        let app = agyn_gateway::public_app(&platform);
        let (stop_server, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, Transport::Mixed(tls), async {
            let _ = stopped.await;
        }));

        let request = agyn_client::users::ResolveOrCreateUserRequest {
            oidc_subject: format!("agent-tests|{}", uuid::Uuid::new_v4()),
            preferred_username: "owner".to_string(),
            name: "Owner".to_string(),
            ..Default::default()
        };
        let (user, _) = platform
            .users
            .resolve_or_create_user(&request)
            .await
            .unwrap();
        let owner = Caller::Identity {
            identity_id: user.id.clone(),
            kind: IdentityKind::User,
            workload_id: None,
            credential: CredentialKind::ApiToken,
        };
        let owner_token = platform
            .users
            .create_api_token(&owner, "tests", None)
            .await
            .unwrap()
            .plaintext
            .into_inner();
        let org = platform
            .orgs
            .create_organization(&owner, "Agents", None, "")
            .await
            .unwrap()
            .id;
        let runner_id = platform
            .runners
            .register_runner(
                &owner,
                &agyn_runners::NewRunner {
                    name: "tests".to_string(),
                    organization_id: Some(org.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .runner
            .id;
        let ca_pem = pki.ca_certificate_pem().to_string();
        let gateway = Gateway::connect(
            &url,
            Credential::Token(Secret::new(owner_token.clone())),
            Some(&ca_pem),
        )
        .unwrap();
        Self {
            platform,
            url,
            ca_pem,
            owner,
            owner_token,
            gateway,
            org,
            runner_id,
            files_dir,
            _stop_server: stop_server,
        }
    }

    /// Creates a scripted provider with `rules` and a model on it.
    pub async fn scripted_model(&self, rules: Vec<llm::ScriptRule>) -> String {
        let provider = self
            .gateway
            .llm()
            .create_provider(llm::CreateProviderRequest {
                organization_id: self.org.clone(),
                name: format!("scripted-{}", uuid::Uuid::new_v4().simple()),
                script: llm::Script {
                    rules,
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .provider
            .into_option()
            .unwrap();
        self.model_on(&provider.meta.id).await
    }

    /// Creates a provider that forwards to `endpoint` and a model on it.
    pub async fn networked_model(&self, endpoint: &str) -> String {
        let provider = self
            .gateway
            .llm()
            .create_provider(llm::CreateProviderRequest {
                organization_id: self.org.clone(),
                name: format!("upstream-{}", uuid::Uuid::new_v4().simple()),
                endpoint: endpoint.to_string(),
                token: "upstream-token".to_string(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .provider
            .into_option()
            .unwrap();
        self.model_on(&provider.meta.id).await
    }

    async fn model_on(&self, provider: &str) -> String {
        self.gateway
            .llm()
            .create_model(llm::CreateModelRequest {
                organization_id: self.org.clone(),
                name: "model".to_string(),
                provider_id: provider.to_string(),
                remote_name: "remote-model".to_string(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .model
            .into_option()
            .unwrap()
            .meta
            .id
            .clone()
    }

    /// Creates an agent on `model` with `configuration`, and a thread of the
    /// owner with it.
    pub async fn setup(&self, model: &str, configuration: &str) -> Setup {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let agent = self
            .gateway
            .agents()
            .create_agent(agents::CreateAgentRequest {
                organization_id: self.org.clone(),
                name: "Helper".to_string(),
                nickname: Some(format!("helper-{}", &suffix[..8])),
                role: "assistant".to_string(),
                availability: agents::AgentAvailability::AGENT_AVAILABILITY_INTERNAL.into(),
                model: model.to_string(),
                configuration: configuration.to_string(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .agent
            .into_option()
            .unwrap()
            .meta
            .id
            .clone();
        let thread = self
            .gateway
            .threads()
            .create_thread(threads::CreateThreadRequest {
                organization_id: Some(self.org.clone()),
                participants: vec![threads::ParticipantIdentifier {
                    identifier: Some(Identifier::Id(agent.clone())),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .thread
            .into_option()
            .unwrap()
            .meta
            .id
            .clone();
        Setup {
            model: model.to_string(),
            agent,
            thread,
        }
    }

    /// Adds an MCP server named `name` to the agent.
    pub async fn add_mcp(&self, agent: &str, name: &str, tool_timeout_seconds: i64) {
        self.gateway
            .agents()
            .create_mcp(agents::CreateMcpRequest {
                agent_id: agent.to_string(),
                name: name.to_string(),
                command: "python3 tests/python/mcp_tool_server.py".to_string(),
                tool_timeout: buffa_types::google::protobuf::Duration {
                    seconds: tool_timeout_seconds,
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap();
    }

    /// Sends `body` into the thread as the owner.
    pub async fn send(&self, thread: &str, body: &str) -> threads::Message {
        self.send_with_files(thread, body, &[]).await
    }

    /// Sends `body` with attached files into the thread as the owner.
    pub async fn send_with_files(
        &self,
        thread: &str,
        body: &str,
        file_ids: &[String],
    ) -> threads::Message {
        self.gateway
            .threads()
            .send_message(threads::SendMessageRequest {
                thread_id: thread.to_string(),
                body: body.to_string(),
                file_ids: file_ids.to_vec(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .message
            .into_option()
            .unwrap()
    }

    /// Returns every message of the thread, oldest first.
    pub async fn messages(&self, thread: &str) -> Vec<threads::Message> {
        self.gateway
            .threads()
            .get_messages(threads::GetMessagesRequest {
                thread_id: thread.to_string(),
                page_size: 200,
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .messages
    }

    /// Waits until the agent has sent `count` messages into the thread and
    /// returns them.
    pub async fn wait_for_replies(&self, setup: &Setup, count: usize) -> Vec<threads::Message> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let replies = self.replies(setup).await;
            if replies.len() >= count {
                return replies;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent sent {} of {count} replies in {WAIT:?}; thread: {:?}",
                replies.len(),
                self.messages(&setup.thread).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns the agent's messages in the thread, oldest first.
    pub async fn replies(&self, setup: &Setup) -> Vec<threads::Message> {
        self.messages(&setup.thread)
            .await
            .into_iter()
            .filter(|message| message.sender_id == setup.agent)
            .collect()
    }

    /// Uploads a file of the organization as the owner with the
    /// `POST /files` route and returns its id.
    pub async fn upload(&self, filename: &str, content_type: &str, content: &[u8]) -> String {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        let response = client
            .post(format!("{}/files", self.url))
            .query(&[
                ("filename", filename),
                ("organization_id", self.org.as_str()),
            ])
            .header("content-type", content_type)
            .bearer_auth(&self.owner_token)
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "upload failed: {text}");
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        file["meta"]["id"].as_str().unwrap().to_string()
    }

    /// Records a STARTING workload of the setup's pair and issues its
    /// certificate, as the orchestrator does.
    pub async fn workload(&self, setup: &Setup) -> Workload {
        let id = agyn_core::id::new_id();
        let issued = self
            .platform
            .pki
            .issue(
                &agyn_pki::Subject::Workload {
                    agent_id: setup.agent.clone(),
                    workload_id: id.clone(),
                },
                agyn_pki::KeySource::Generate,
            )
            .await
            .unwrap();
        self.platform
            .runners
            .create_workload(
                &orchestrator(),
                &agyn_runners::NewWorkload {
                    id: id.clone(),
                    runner_id: self.runner_id.clone(),
                    thread_id: setup.thread.clone(),
                    agent_id: setup.agent.clone(),
                    organization_id: self.org.clone(),
                    containers: vec![runners::Container {
                        name: "agent".to_string(),
                        role: runners::ContainerRole::CONTAINER_ROLE_MAIN.into(),
                        image: "agyn/agyn:test".to_string(),
                        status: runners::ContainerStatus::CONTAINER_STATUS_RUNNING.into(),
                        ..Default::default()
                    }],
                    credential_id: issued.serial.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        Workload {
            id,
            cert_pem: issued.certificate_pem,
            key_pem: issued.private_key_pem.unwrap().into_inner(),
        }
    }

    /// Moves a workload to `status` as the orchestrator.
    pub async fn set_workload_status(
        &self,
        workload: &Workload,
        status: agyn_runners::WorkloadStatus,
    ) {
        self.platform
            .runners
            .update_workload(
                &orchestrator(),
                &workload.id,
                &agyn_runners::WorkloadChanges {
                    status: Some(status),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    /// Returns the workload as the owner reads it.
    pub async fn get_workload(&self, workload: &Workload) -> runners::Workload {
        self.gateway
            .runners()
            .get_workload(runners::GetWorkloadRequest {
                id: workload.id.clone(),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .workload
            .into_option()
            .unwrap()
    }

    /// Settings of the agent of `setup` in `workload`, with short timings.
    pub fn settings(&self, setup: &Setup, workload: &Workload, state_dir: &Path) -> Settings {
        Settings {
            agent_id: setup.agent.clone(),
            agent_name: "Helper".to_string(),
            agent_role: "assistant".to_string(),
            model: setup.model.clone(),
            config: AgentConfig::default(),
            thread_id: setup.thread.clone(),
            workload_id: workload.id.clone(),
            organization_id: self.org.clone(),
            gateway_url: self.url.clone(),
            llm_base_url: format!("{}/v1", self.url),
            otlp_endpoint: self.url.clone(),
            credentials: Credentials {
                cert_pem: workload.cert_pem.clone(),
                key_pem: Secret::new(workload.key_pem.clone()),
                ca_pem: self.ca_pem.clone(),
            },
            mcp_servers: Vec::new(),
            hooks: Vec::new(),
            state_dir: state_dir.to_path_buf(),
            timing: Timing {
                touch_interval: Duration::from_secs(1),
                // Longer than any test waits, so turns after startup can
                // only come from notifications.
                poll_interval: Duration::from_secs(120),
                mcp_connect_window: Duration::from_secs(10),
                mcp_reconnect_limit: Duration::from_secs(5),
                llm_retry_delays: vec![Duration::from_millis(100); 3],
                export_interval: Duration::from_millis(200),
                stop_hooks_limit: Duration::from_secs(2),
            },
        }
    }

    /// Returns a client that calls as the workload.
    pub fn workload_gateway(&self, workload: &Workload) -> Gateway {
        Gateway::connect(
            &self.url,
            Credential::Certificate {
                cert_pem: workload.cert_pem.clone(),
                key_pem: Secret::new(workload.key_pem.clone()),
            },
            Some(&self.ca_pem),
        )
        .unwrap()
    }

    /// Returns the ids of the thread's messages that the agent has not
    /// acked, read with the workload's certificate.
    pub async fn unacked(&self, workload: &Workload, thread: &str) -> Vec<String> {
        self.workload_gateway(workload)
            .threads()
            .get_unacked_messages(threads::GetUnackedMessagesRequest {
                thread_id: Some(thread.to_string()),
                ..Default::default()
            })
            .await
            .map_err(into_error)
            .unwrap()
            .into_owned()
            .messages
            .into_iter()
            .map(|message| message.meta.id.clone())
            .collect()
    }

    /// Returns the spans of the workload's trace, or none while it has
    /// none.
    pub async fn spans(
        &self,
        workload: &Workload,
    ) -> Vec<agyn_api_tracing::opentelemetry::proto::trace::v1::Span> {
        let trace_id = uuid::Uuid::parse_str(&workload.id)
            .unwrap()
            .as_bytes()
            .to_vec();
        let response = self
            .gateway
            .tracing()
            .get_trace(tracing::GetTraceRequest {
                trace_id,
                ..Default::default()
            })
            .await;
        match response {
            Ok(response) => response
                .into_owned()
                .resource_spans
                .into_iter()
                .flat_map(|resource| resource.scope_spans)
                .flat_map(|scope| scope.spans)
                .collect(),
            Err(error) if error.code == agyn_client::ErrorCode::NotFound => Vec::new(),
            Err(error) => panic!("GetTrace failed: {error:?}"),
        }
    }

    /// Waits until the trace has a span that `matches`, and returns it.
    pub async fn wait_for_span(
        &self,
        workload: &Workload,
        description: &str,
        matches: impl Fn(&agyn_api_tracing::opentelemetry::proto::trace::v1::Span) -> bool,
    ) -> agyn_api_tracing::opentelemetry::proto::trace::v1::Span {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(span) = self
                .spans(workload)
                .await
                .into_iter()
                .find(|span| matches(span))
            {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {description} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.files_dir);
    }
}

pub fn orchestrator() -> Caller {
    Caller::Component("orchestrator")
}

/// Returns a string attribute of a span.
pub fn attribute(
    span: &agyn_api_tracing::opentelemetry::proto::trace::v1::Span,
    key: &str,
) -> Option<String> {
    use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value;
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| match &attribute.value.value {
            Some(Value::StringValue(text)) => Some(text.clone()),
            Some(Value::IntValue(number)) => Some(number.to_string()),
            _ => None,
        })
}

/// Returns a scripted rule for requests whose latest user message
/// contains `when`.
pub fn rule(when: &str, steps: Vec<llm::ScriptStep>) -> llm::ScriptRule {
    llm::ScriptRule {
        when_input_contains: when.to_string(),
        steps,
        ..Default::default()
    }
}

pub fn text(reply: &str) -> llm::ScriptStep {
    llm::ScriptStep {
        reply: Some(Reply::Text(reply.to_string())),
        ..Default::default()
    }
}

pub fn tool_call(name: &str, arguments: &str) -> llm::ScriptStep {
    llm::ScriptStep {
        reply: Some(Reply::ToolCall(Box::new(llm::ScriptToolCall {
            name: name.to_string(),
            arguments_json: arguments.to_string(),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// The agent running in process.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    pub fn start(settings: Settings) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agyn_agent::run(settings, async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the agent as SIGTERM does and returns how its run ended.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("the agent did not stop within 15 s")
            .unwrap()
    }

    /// Waits for the run to end by itself.
    pub async fn finished(mut self) -> Result<(), AgentError> {
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the agent did not end")
            .unwrap()
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("agyn-agent-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tests/python/mcp_tool_server.py` serving streamable HTTP on a free
/// loopback port, stopped on drop. Python comes from the test virtual
/// environment (`AGYN_TEST_VENV`, default `.venv-tests` in the repository
/// root), which `tests/python/venv.sh` creates.
pub struct McpToolServer {
    pub url: String,
    port: u16,
    child: std::process::Child,
}

impl McpToolServer {
    /// Starts the server on `port`, or on a free port.
    pub async fn start(port: Option<u16>) -> Self {
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = std::env::var("AGYN_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repository.join(".venv-tests"));
        let python = venv.join("bin/python");
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = std::process::Command::new(&python)
            .arg(repository.join("tests/python/mcp_tool_server.py"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "the MCP tests need Python with the mcp package at {}: {error}; \
                     create it with `tests/python/venv.sh`",
                    python.display()
                )
            });
        let server = Self {
            url: format!("http://127.0.0.1:{port}/mcp"),
            port,
            child,
        };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the MCP server did not start on port {port}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self, name: &str) -> McpServerAddress {
        McpServerAddress {
            name: name.to_string(),
            url: self.url.clone(),
        }
    }

    /// Stops the server process, as a crashed sidecar would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for McpToolServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything the `tracing` subscriber of this test binary has written.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.get_or_init(Default::default).lock().unwrap()).into_owned()
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Sends the logs of every test in this binary, the agent's at trace
/// level, to a buffer that [`captured_logs`] returns.
fn install_log_capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let buffer = Arc::clone(LOGS.get_or_init(Default::default));
        let writer = move || LogWriter(Arc::clone(&buffer));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,agyn_agent=trace"))
            .with_writer(writer)
            .with_ansi(false)
            .try_init();
    });
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
