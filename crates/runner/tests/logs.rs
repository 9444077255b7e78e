//! Trace-level logs of workloads run through RemoteRunner and serve_tls
//! never contain an environment value, an inline file's contents or an
//! image pull password.
//!
//! This test binary installs one global subscriber at TRACE that writes
//! into memory, so lines from every thread are captured.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_pki::{KeySource, MasterKey, Pki, Subject};
use agyn_runner::{LocalRunner, RemoteRunner, Runner, serve_tls};
use agyn_store::Backend;
use support::*;

const ENV_SECRET: &str = "canary-env-3f9a1c";
const FILE_SECRET: &str = "canary-file-8d2e47";
const PULL_SECRET: &str = "canary-pull-c15b90";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Returns everything logged so far in this test binary.
fn captured() -> String {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("install the test subscriber");
        logs
    });
    String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned()
}

async fn issue(pki: &Pki, subject: Subject) -> (String, String) {
    let issued = pki.issue(&subject, KeySource::Generate).await.unwrap();
    let key = issued.private_key_pem.unwrap().expose().clone();
    (issued.certificate_pem, key)
}

/// Builds a request whose env, inline file and pull credential carry the
/// canaries.
fn secret_workload(workload_id: &str, script: &str) -> pb::StartWorkloadRequest {
    let mut main = shell("main", script);
    main.env = vec![env("API_KEY", ENV_SECRET)];
    main.inline_file_paths = vec!["/etc/agyn/key".to_string()];
    let mut request = workload(workload_id, main);
    request
        .inline_files
        .insert("/etc/agyn/key".to_string(), FILE_SECRET.as_bytes().to_vec());
    request.image_pull_credentials = vec![pb::ImagePullCredential {
        registry: "ghcr.io".to_string(),
        username: "bot".to_string(),
        password: PULL_SECRET.to_string(),
        ..Default::default()
    }];
    request
}

#[tokio::test]
async fn trace_logs_contain_no_secrets() {
    captured();
    let db = agyn_store::testing::fresh(Backend::Sqlite).await;
    let pki = Pki::load_or_create(db, &MasterKey::generate())
        .await
        .unwrap();
    let (server_cert, server_key) = issue(
        &pki,
        Subject::Runner {
            runner_id: "runner-logs".to_string(),
        },
    )
    .await;
    let (client_cert, client_key) = issue(
        &pki,
        Subject::Component {
            name: "orchestrator".to_string(),
        },
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Runner> =
        Arc::new(LocalRunner::new(dir.path(), "runner-logs", "1", "/bin/false").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let ca = pki.ca_certificate_pem().to_string();
    let server = tokio::spawn(async move {
        serve_tls(listener, local, &server_cert, &server_key, &ca)
            .await
            .unwrap();
    });
    let runner = RemoteRunner::new(
        &format!("https://{address}"),
        "runner-logs",
        &client_cert,
        &client_key,
        pki.ca_certificate_pem(),
    )
    .unwrap();

    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    runner
        .start_workload(secret_workload("wl-canary", script))
        .await
        .unwrap();
    wait_status(
        &runner,
        "wl-canary",
        pb::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_RUNNING,
    )
    .await;
    stop(&runner, "wl-canary", 5).await;

    let mut missing_command = secret_workload("wl-missing", "true");
    missing_command.main.as_option_mut().unwrap().command = vec!["/nonexistent/tool".to_string()];
    runner.start_workload(missing_command).await.unwrap();
    wait_status(
        &runner,
        "wl-missing",
        pb::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_FAILED,
    )
    .await;

    let mut bad_port = secret_workload("wl-bad-port", "true");
    bad_port.main.as_option_mut().unwrap().env[0].value =
        format!("{ENV_SECRET}${{port:undeclared}}");
    runner.start_workload(bad_port).await.unwrap_err();
    server.abort();

    let logs = captured();
    assert!(logs.contains("Starting a workload"), "{logs}");
    assert!(logs.contains("Failed to start a container"), "{logs}");
    assert!(logs.contains("wl-canary"), "{logs}");
    assert!(!logs.contains(ENV_SECRET), "{logs}");
    assert!(!logs.contains(FILE_SECRET), "{logs}");
    assert!(!logs.contains(PULL_SECRET), "{logs}");
}
