//! RemoteRunner calling serve_tls over real TLS on loopback, with
//! certificates issued by the platform CA.
//!
//! The runner protocol keeps no database, so the PKI that issues the test
//! certificates runs on SQLite only.

mod support;

use std::sync::Arc;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::error::Code;
use agyn_pki::{KeySource, MasterKey, Pki, Subject};
use agyn_runner::{LocalRunner, RemoteRunner, Runner, serve_tls};
use agyn_store::Backend;
use support::*;

/// A certificate and its private key, in PEM.
struct Credential {
    certificate_pem: String,
    key_pem: String,
}

async fn new_pki() -> Pki {
    let db = agyn_store::testing::fresh(Backend::Sqlite).await;
    Pki::load_or_create(db, &MasterKey::generate())
        .await
        .unwrap()
}

async fn issue(pki: &Pki, subject: Subject) -> Credential {
    let issued = pki.issue(&subject, KeySource::Generate).await.unwrap();
    Credential {
        certificate_pem: issued.certificate_pem,
        key_pem: issued.private_key_pem.unwrap().expose().clone(),
    }
}

fn component(name: &str) -> Subject {
    Subject::Component {
        name: name.to_string(),
    }
}

/// A local runner served over TLS as `runner-1`.
struct Served {
    pki: Pki,
    address: String,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start() -> Self {
        let pki = new_pki().await;
        let dir = tempfile::tempdir().unwrap();
        let runner: Arc<dyn Runner> =
            Arc::new(LocalRunner::new(dir.path(), "runner-1", "9.9.9", "/bin/false").unwrap());
        let credential = issue(
            &pki,
            Subject::Runner {
                runner_id: "runner-1".to_string(),
            },
        )
        .await;
        let ca_pem = pki.ca_certificate_pem().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            serve_tls(
                listener,
                runner,
                &credential.certificate_pem,
                &credential.key_pem,
                &ca_pem,
            )
            .await
            .unwrap();
        });
        Self {
            pki,
            address,
            _dir: dir,
            server,
        }
    }

    /// Builds a client that presents `credential` and expects `runner_id`.
    fn client(&self, credential: &Credential, runner_id: &str, host: &str) -> RemoteRunner {
        let port = self.address.rsplit_once(':').unwrap().1;
        RemoteRunner::new(
            &format!("https://{host}:{port}"),
            runner_id,
            &credential.certificate_pem,
            &credential.key_pem,
            self.pki.ca_certificate_pem(),
        )
        .unwrap()
    }

    async fn orchestrator(&self) -> RemoteRunner {
        let credential = issue(&self.pki, component("orchestrator")).await;
        self.client(&credential, "runner-1", "127.0.0.1")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test]
async fn remote_runner_controls_a_served_runner() {
    let served = Served::start().await;
    let orchestrator = served.orchestrator().await;
    let ready = orchestrator.ready().await.unwrap();
    assert_eq!(ready.status, "ok");
    assert_eq!(ready.runner_id, "runner-1");
    assert_eq!(ready.version, "9.9.9");

    let script = "echo first; echo second; trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let started = orchestrator
        .start_workload(workload("wl-remote", shell("main", script)))
        .await
        .unwrap();
    assert!(!started.instance_id.is_empty());
    let running = wait_status(
        &orchestrator,
        "wl-remote",
        pb::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_RUNNING,
    )
    .await;
    assert_eq!(running.instance_id, started.instance_id);
    assert_eq!(
        running.labels.get("agyn.workload_id").map(String::as_str),
        Some("wl-remote")
    );
    let workloads = orchestrator.list_workloads().await.unwrap();
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0].workload_id, "wl-remote");
    assert!(orchestrator.list_volumes().await.unwrap().is_empty());

    let runners = issue(&served.pki, component("runners")).await;
    let logs_client = served.client(&runners, "runner-1", "127.0.0.1");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = read_logs(&logs_client, "wl-remote", "main", false, 0).await;
        if log == "first\nsecond\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "log so far: {log:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    stop(&orchestrator, "wl-remote", 5).await;
    let stopped = inspect(&orchestrator, "wl-remote").await;
    assert_eq!(
        stopped.status.as_known(),
        Some(pb::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_STOPPED)
    );
    // sh may report the TERM that ended its `sleep`, so the log after the
    // stop is compared with itself rather than with fixed text.
    let full = read_logs(&logs_client, "wl-remote", "main", false, 0).await;
    assert!(full.starts_with("first\nsecond\n"), "{full:?}");
    let followed = read_logs(&logs_client, "wl-remote", "main", true, 0).await;
    assert_eq!(followed, full);
    orchestrator
        .remove_workload(pb::RemoveWorkloadRequest {
            workload_id: "wl-remote".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(orchestrator.list_workloads().await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_keep_their_codes_over_the_wire() {
    let served = Served::start().await;
    let orchestrator = served.orchestrator().await;
    let error = orchestrator
        .inspect_workload(pb::InspectWorkloadRequest {
            workload_id: "wl-missing".to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(error.message(), "workload wl-missing not found");

    let mut main = shell("main", "true");
    main.command.push("${port:nope}".to_string());
    let error = orchestrator
        .start_workload(workload("wl-bad", main))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    let mut request = workload("wl-gpu", shell("main", "true"));
    request.capabilities = vec!["gpu".to_string()];
    let error = orchestrator.start_workload(request).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);

    let runners = issue(&served.pki, component("runners")).await;
    let logs_client = served.client(&runners, "runner-1", "127.0.0.1");
    let error = match logs_client
        .stream_workload_logs(pb::StreamWorkloadLogsRequest {
            workload_id: "wl-missing".to_string(),
            container_name: "main".to_string(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => panic!("logs of an unknown workload were streamed"),
        Err(error) => error,
    };
    assert_eq!(error.code(), Code::NotFound);
}

#[tokio::test]
async fn components_other_than_orchestrator_and_runners_are_refused() {
    let served = Served::start().await;
    let gateway = issue(&served.pki, component("gateway")).await;
    let error = served
        .client(&gateway, "runner-1", "127.0.0.1")
        .ready()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert!(error.message().contains("gateway"), "{}", error.message());

    let device = issue(
        &served.pki,
        Subject::Device {
            user_id: "user-1".to_string(),
            device_id: "device-1".to_string(),
        },
    )
    .await;
    let error = served
        .client(&device, "runner-1", "127.0.0.1")
        .list_workloads()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn each_method_needs_its_component() {
    let served = Served::start().await;
    let orchestrator = served.orchestrator().await;
    orchestrator
        .start_workload(workload("wl-perm", shell("main", "echo hi")))
        .await
        .unwrap();
    let logs = pb::StreamWorkloadLogsRequest {
        workload_id: "wl-perm".to_string(),
        container_name: "main".to_string(),
        ..Default::default()
    };
    let error = match orchestrator.stream_workload_logs(logs).await {
        Ok(_) => panic!("the orchestrator certificate streamed logs"),
        Err(error) => error,
    };
    assert_eq!(error.code(), Code::PermissionDenied);

    let runners = issue(&served.pki, component("runners")).await;
    let error = served
        .client(&runners, "runner-1", "127.0.0.1")
        .stop_workload(pb::StopWorkloadRequest {
            workload_id: "wl-perm".to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn server_identity_comes_from_its_uri_name() {
    let served = Served::start().await;
    let orchestrator = issue(&served.pki, component("orchestrator")).await;

    // The runner certificate names no host, so only the URI name can
    // match, whichever host name the endpoint uses.
    let by_name = served.client(&orchestrator, "runner-1", "localhost");
    assert_eq!(by_name.ready().await.unwrap().runner_id, "runner-1");

    let wrong_runner = served.client(&orchestrator, "runner-2", "127.0.0.1");
    let error = wrong_runner.ready().await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused() {
    let served = Served::start().await;
    let foreign = new_pki().await;
    let stranger = issue(&foreign, component("orchestrator")).await;
    let error = served
        .client(&stranger, "runner-1", "127.0.0.1")
        .ready()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");

    // A client that trusts another CA rejects the runner's certificate.
    let port = served.address.rsplit_once(':').unwrap().1;
    let distrustful = RemoteRunner::new(
        &format!("https://127.0.0.1:{port}"),
        "runner-1",
        &stranger.certificate_pem,
        &stranger.key_pem,
        foreign.ca_certificate_pem(),
    )
    .unwrap();
    let error = distrustful.ready().await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
}

#[tokio::test]
async fn remote_runner_rejects_bad_configuration() {
    let pki = new_pki().await;
    let credential = issue(&pki, component("orchestrator")).await;
    let ca = pki.ca_certificate_pem();
    let cases = [
        (
            "http://127.0.0.1:1",
            credential.certificate_pem.as_str(),
            ca,
        ),
        ("not a uri", credential.certificate_pem.as_str(), ca),
        ("https://127.0.0.1:1", "not a certificate", ca),
        (
            "https://127.0.0.1:1",
            credential.certificate_pem.as_str(),
            "",
        ),
    ];
    for (endpoint, certificate, ca) in cases {
        let error = RemoteRunner::new(endpoint, "runner-1", certificate, &credential.key_pem, ca)
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{endpoint} {error:?}");
    }
}
