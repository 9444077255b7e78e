//! A standalone `agyn runner` against a real `agyn serve`.
//!
//! The runner enrolls with a RegisterRunner token and runs a workload
//! started through the runner protocol with the orchestrator's
//! certificate. The workload's log streams through
//! `RunnersGateway/StreamWorkloadLogs` with `buf curl`. A named volume
//! keeps its files for the next workload and an ephemeral one does not,
//! and a runner restart keeps a workload running.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_runner::Runner;
use serde_json::{Value, json};
use support::{Server, connect_json};

const RUNNERS: &str = "agynio.api.runners.v1.RunnersGateway";
const RUNNERS_INTERNAL: &str = "agynio.api.runners.v1.RunnersService";

/// A running `agyn runner` process.
struct RunnerProcess {
    child: Child,
    data_dir: PathBuf,
    log_path: PathBuf,
}

impl RunnerProcess {
    fn start(gateway: &str, token: &str, port: u16, data_dir: &Path) -> Self {
        let log_path = match std::env::var_os("AGYN_TEST_LOG_DIR") {
            Some(dir) => {
                std::fs::create_dir_all(&dir).unwrap();
                PathBuf::from(dir).join(format!("runner-{}-{port}.log", std::process::id()))
            }
            None => data_dir.with_extension("log"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agyn"))
            .arg("runner")
            .arg("--gateway")
            .arg(gateway)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-level")
            .arg("trace")
            .env("AGYN_RUNNER_SERVICE_TOKEN", token)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agyn runner");
        Self {
            child,
            data_dir: data_dir.to_path_buf(),
            log_path,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn call(server: &Server, method: &str, body: Value) -> Value {
    let client = reqwest::Client::new();
    let (status, value) = connect_json(
        &client,
        &server.base_url(),
        method,
        body,
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{method}: {value}");
    value
}

/// Issues a certificate for component `name` from the server's own CA
/// in `database_url`, as the platform does for its orchestrator.
async fn component_credential(server: &Server, database_url: &str, name: &str) -> (String, String) {
    let db = agyn_store::Db::open(database_url).await.unwrap();
    let (key, created) = agyn_pki::MasterKey::load_or_create(&server.data_dir).unwrap();
    assert!(!created, "the server created the master key");
    let pki = agyn_pki::Pki::load_or_create(db.clone(), &key)
        .await
        .unwrap();
    let issued = pki
        .issue(
            &agyn_pki::Subject::Component {
                name: name.to_string(),
            },
            agyn_pki::KeySource::Generate,
        )
        .await
        .unwrap();
    db.close().await;
    (
        issued.certificate_pem,
        issued.private_key_pem.unwrap().expose().clone(),
    )
}

/// Waits until GetRunner shows the runner ENROLLED at an endpoint.
async fn wait_enrolled(server: &Server, runner_id: &str, process: &RunnerProcess) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let runner = call(
            server,
            &format!("{RUNNERS}/GetRunner"),
            json!({"id": runner_id}),
        )
        .await;
        if runner["runner"]["status"] == "RUNNER_STATUS_ENROLLED"
            && !runner["runner"]["endpoint"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        {
            return runner["runner"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "runner did not enroll: {runner}\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `script` as the main container with a named volume at /data and
/// an ephemeral one at /scratch; `$DATA` and `$SCRATCH` name them.
fn workload_spec(
    workload_id: &str,
    persistent_name: &str,
    script: &str,
) -> pb::StartWorkloadRequest {
    let mount = |volume: &str, path: &str| pb::Mount {
        volume: volume.to_string(),
        mount_path: path.to_string(),
        ..Default::default()
    };
    let env = |name: &str, value: &str| pb::EnvVar {
        name: name.to_string(),
        value: value.to_string(),
        ..Default::default()
    };
    pb::StartWorkloadRequest {
        workload_id: workload_id.to_string(),
        labels: [("agyn.managed_by".to_string(), "agyn".to_string())]
            .into_iter()
            .collect(),
        main: pb::ContainerSpec {
            name: "agent".to_string(),
            command: vec!["/bin/sh".into(), "-c".into(), script.to_string()],
            env: vec![env("DATA", "/data"), env("SCRATCH", "/scratch")],
            mounts: vec![mount("data", "/data"), mount("scratch", "/scratch")],
            ..Default::default()
        }
        .into(),
        volumes: vec![
            pb::VolumeSpec {
                name: "data".to_string(),
                kind: pb::VolumeKind::VOLUME_KIND_NAMED.into(),
                persistent_name: persistent_name.to_string(),
                size: "1Gi".to_string(),
                ..Default::default()
            },
            pb::VolumeSpec {
                name: "scratch".to_string(),
                kind: pb::VolumeKind::VOLUME_KIND_EPHEMERAL.into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn main_status(inspect: &pb::InspectWorkloadResponse) -> Option<pb::ContainerStatus> {
    inspect
        .containers
        .iter()
        .find(|container| container.name == "agent")
        .and_then(|container| container.status.as_known())
}

async fn wait_main(runner: &dyn Runner, workload_id: &str, want: pb::ContainerStatus) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let inspect = runner
            .inspect_workload(pb::InspectWorkloadRequest {
                workload_id: workload_id.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        if main_status(&inspect) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workload {workload_id} never reached {want:?}: {inspect:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records a STARTING workload for `agent` in `thread` on the runner, with
/// a workload certificate, through the internal RunnersService.
async fn record_workload(
    server: &Server,
    orchestrator: &reqwest::Client,
    ids: (&str, &str, &str, &str),
) -> String {
    let (runner_id, thread_id, agent_id, org_id) = ids;
    let workload_id = agyn_core::id::new_id();
    let (status, body) = connect_json(
        orchestrator,
        &server.internal_url(),
        &format!("{RUNNERS_INTERNAL}/CreateWorkload"),
        json!({
            "id": workload_id,
            "runnerId": runner_id,
            "threadId": thread_id,
            "agentId": agent_id,
            "organizationId": org_id,
            "credentialId": format!("serial-{workload_id}"),
            "containers": [{"name": "agent", "role": "CONTAINER_ROLE_MAIN"}],
        }),
        None,
    )
    .await;
    assert_eq!(status, 200, "CreateWorkload: {body}");
    workload_id
}

/// Streams the main container's log through the gateway with `buf curl`
/// for `seconds`, following it, and returns the decoded text.
fn buf_curl_logs(server: &Server, workload_id: &str, seconds: u64) -> String {
    let buf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/buf");
    assert!(
        buf.exists(),
        "{} is missing; run `npm ci` in the repository root",
        buf.display()
    );
    let output = Command::new("timeout")
        .arg(seconds.to_string())
        .arg(&buf)
        .arg("curl")
        .arg("--schema")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto"))
        .arg("--protocol")
        .arg("connect")
        .arg("--http2-prior-knowledge")
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", server.admin_token))
        .arg("-d")
        .arg(
            json!({"workloadId": workload_id, "containerName": "agent", "follow": true})
                .to_string(),
        )
        .arg(format!(
            "{}/{RUNNERS}/StreamWorkloadLogs",
            server.base_url()
        ))
        .output()
        .expect("run buf curl");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let mut text = String::new();
    for message in serde_json::Deserializer::from_str(&stdout).into_iter::<Value>() {
        let message =
            message.unwrap_or_else(|error| panic!("buf curl printed {stdout:?}: {error}"));
        if let Some(data) = message["chunk"]["data"].as_str() {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(
        !text.is_empty(),
        "buf curl streamed no log data: stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_runner_runs_streams_and_keeps_volumes() {
    // PostgreSQL, because the test opens the server's database beside it
    // to issue the orchestrator's certificate, and SQLite allows one owner.
    let database_url = support::fresh_postgres_url().await;
    let server = Server::start_with(&["--database-url".to_string(), database_url.clone()]);

    // An organization, a thread and an agent for the workload records.
    let org = call(
        &server,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Runner test"}),
    )
    .await["organization"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = call(
        &server,
        "agynio.api.agents.v1.AgentsGateway/CreateAgent",
        json!({"organizationId": org, "name": "Worker", "availability": "AGENT_AVAILABILITY_INTERNAL"}),
    )
    .await["agent"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let thread = call(
        &server,
        "agynio.api.threads.v1.ThreadsGateway/CreateThread",
        json!({"organizationId": org, "participants": [{"id": agent}]}),
    )
    .await["thread"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Register, then enroll a standalone runner with the token.
    let registered = call(
        &server,
        &format!("{RUNNERS}/RegisterRunner"),
        json!({"name": "edge-1"}),
    )
    .await;
    let token = registered["serviceToken"].as_str().unwrap().to_string();
    let runner_id = registered["runner"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(registered["runner"]["status"], "RUNNER_STATUS_PENDING");
    let runner_dir = server.data_dir.join("edge-1");
    let port = free_port();
    let mut process = RunnerProcess::start(&server.base_url(), &token, port, &runner_dir);
    let enrolled = wait_enrolled(&server, &runner_id, &process).await;
    assert_eq!(enrolled["endpoint"], format!("https://127.0.0.1:{port}"));
    assert!(
        !process.log().contains(&token),
        "the runner logged its token"
    );

    // The orchestrator's view: a component certificate for both the
    // internal listener and the runner protocol.
    let (cert, key) = component_credential(&server, &database_url, "orchestrator").await;
    let ca = server.admin_credentials().ca_pem;
    let orchestrator = support::tls_client(&ca, Some((&cert, &key)));
    let endpoint = enrolled["endpoint"].as_str().unwrap();
    let remote: Arc<dyn Runner> =
        Arc::new(agyn_runner::RemoteRunner::new(endpoint, &runner_id, &cert, &key, &ca).unwrap());
    let ready = remote.ready().await.unwrap();
    assert_eq!(ready.runner_id, runner_id);

    // First workload: writes to both volumes, then ticks until stopped.
    let ids = (
        runner_id.as_str(),
        thread.as_str(),
        agent.as_str(),
        org.as_str(),
    );
    let first = record_workload(&server, &orchestrator, ids).await;
    let persistent = format!("agyn-vol-{}", agyn_core::id::new_id());
    remote
        .start_workload(workload_spec(
            &first,
            &persistent,
            "echo kept > \"$DATA/kept\"; echo gone > \"$SCRATCH/gone\"; \
             i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ))
        .await
        .unwrap();
    wait_main(
        remote.as_ref(),
        &first,
        pb::ContainerStatus::CONTAINER_STATUS_RUNNING,
    )
    .await;

    // Its log streams through the gateway while it runs.
    let streamed = buf_curl_logs(&server, &first, 3);
    assert!(streamed.contains("tick 0"), "log: {streamed:?}");
    assert!(streamed.contains("tick 3"), "log: {streamed:?}");

    remote
        .stop_workload(pb::StopWorkloadRequest {
            workload_id: first.clone(),
            timeout_sec: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_main(
        remote.as_ref(),
        &first,
        pb::ContainerStatus::CONTAINER_STATUS_TERMINATED,
    )
    .await;

    // Second workload on the same thread: the named volume kept its file,
    // the ephemeral one starts empty.
    let (status, body) = connect_json(
        &orchestrator,
        &server.internal_url(),
        &format!("{RUNNERS_INTERNAL}/UpdateWorkload"),
        json!({"id": first, "status": "WORKLOAD_STATUS_STOPPING"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "UpdateWorkload: {body}");
    let (status, body) = connect_json(
        &orchestrator,
        &server.internal_url(),
        &format!("{RUNNERS_INTERNAL}/UpdateWorkload"),
        json!({"id": first, "status": "WORKLOAD_STATUS_STOPPED"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "UpdateWorkload: {body}");
    let second = record_workload(&server, &orchestrator, ids).await;
    remote
        .start_workload(workload_spec(
            &second,
            &persistent,
            "if [ -f \"$DATA/kept\" ]; then echo data-kept; else echo data-lost; fi; \
             if [ -e \"$SCRATCH/gone\" ]; then echo scratch-kept; else echo scratch-empty; fi; \
             while true; do sleep 1; done",
        ))
        .await
        .unwrap();
    wait_main(
        remote.as_ref(),
        &second,
        pb::ContainerStatus::CONTAINER_STATUS_RUNNING,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = buf_curl_logs(&server, &second, 2);
        if log.contains("scratch-") || Instant::now() > deadline {
            break log;
        }
    };
    assert!(log.contains("data-kept"), "log: {log:?}");
    assert!(log.contains("scratch-empty"), "log: {log:?}");

    // A runner restart keeps the running workload: it is adopted, still
    // running, and can be stopped.
    process.kill();
    let mut process = RunnerProcess::start(&server.base_url(), &token, port, &runner_dir);
    wait_enrolled(&server, &runner_id, &process).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let restarted = loop {
        let client =
            agyn_runner::RemoteRunner::new(endpoint, &runner_id, &cert, &key, &ca).unwrap();
        if client.ready().await.is_ok() {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "runner did not come back:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_main(
        &restarted,
        &second,
        pb::ContainerStatus::CONTAINER_STATUS_RUNNING,
    )
    .await;
    let listed = restarted.list_workloads().await.unwrap();
    assert!(listed.iter().any(|summary| summary.workload_id == second));
    restarted
        .stop_workload(pb::StopWorkloadRequest {
            workload_id: second.clone(),
            timeout_sec: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_main(
        &restarted,
        &second,
        pb::ContainerStatus::CONTAINER_STATUS_TERMINATED,
    )
    .await;
    assert!(process.data_dir.join("volumes").join(&persistent).is_dir());
    process.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn builtin_runner_serves_in_process() {
    let database_url = support::fresh_postgres_url().await;
    let server = Server::start_with(&["--database-url".to_string(), database_url.clone()]);
    let runners = call(&server, &format!("{RUNNERS}/ListRunners"), json!({})).await;
    let builtin = runners["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|runner| runner["builtin"] == true)
        .unwrap_or_else(|| panic!("no built-in runner in {runners}"))
        .clone();
    assert_eq!(builtin["status"], "RUNNER_STATUS_ENROLLED");
    assert!(builtin["name"].as_str().unwrap().starts_with("local-"));
    let runner_id = builtin["meta"]["id"].as_str().unwrap().to_string();

    let org = call(
        &server,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Built-in runner test"}),
    )
    .await["organization"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (cert, key) = component_credential(&server, &database_url, "orchestrator").await;
    let ca = server.admin_credentials().ca_pem;
    let orchestrator = support::tls_client(&ca, Some((&cert, &key)));
    let thread = agyn_core::id::new_id();
    let agent = agyn_core::id::new_id();
    let workload = record_workload(
        &server,
        &orchestrator,
        (
            runner_id.as_str(),
            thread.as_str(),
            agent.as_str(),
            org.as_str(),
        ),
    )
    .await;

    // The runner protocol of the built-in runner is on the internal
    // listener, for the orchestrator's certificate only.
    let spec = json!({
        "workloadId": workload,
        "main": {"name": "agent", "command": ["/bin/sh", "-c", "echo built-in says hello; sleep 30"]},
    });
    let (status, body) = connect_json(
        &orchestrator,
        &server.internal_url(),
        "agynio.api.runner.v1.RunnerService/StartWorkload",
        spec.clone(),
        None,
    )
    .await;
    assert_eq!(status, 200, "StartWorkload: {body}");
    let admin = server.admin_credentials();
    let operator = support::tls_client(&ca, Some((&admin.cert_pem, &admin.key_pem)));
    let (status, body) = connect_json(
        &operator,
        &server.internal_url(),
        "agynio.api.runner.v1.RunnerService/StartWorkload",
        spec,
        None,
    )
    .await;
    assert_eq!(
        status, 403,
        "the admin component started a workload: {body}"
    );

    // The gateway relays its log from the runner in process.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = support::ConnectStream::open(
            &client,
            &server.base_url(),
            &format!("{RUNNERS}/StreamWorkloadLogs"),
            json!({"workloadId": workload, "containerName": "agent"}),
            &server.admin_token,
        )
        .await;
        let mut text = String::new();
        while let Some(Ok(message)) = stream.next(Duration::from_secs(5)).await {
            if let Some(data) = message["chunk"]["data"].as_str() {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap();
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        if text.contains("built-in says hello") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log from the built-in runner: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, body) = connect_json(
        &orchestrator,
        &server.internal_url(),
        "agynio.api.runner.v1.RunnerService/StopWorkload",
        json!({"workloadId": workload, "timeoutSec": 2}),
        None,
    )
    .await;
    assert_eq!(status, 200, "StopWorkload: {body}");
}

#[test]
fn builtin_runner_can_be_turned_off() {
    let server = Server::start_with(&["--runner-builtin".to_string(), "false".to_string()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let runners = runtime.block_on(call(&server, &format!("{RUNNERS}/ListRunners"), json!({})));
    assert_eq!(runners["runners"], json!([]), "{runners}");
    assert!(!server.data_dir.join("runner").exists());
}
