//! The listener transport over real sockets: plaintext HTTP/1.1 and h2c,
//! TLS with and without client certificates, on one port or TLS only.
//! Clients are `curl` and a rustls client built from the platform CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agyn_gateway::transport::{Transport, serve};
use agyn_pki::{
    ClientAuth, KeySource, MasterKey, PeerCertificate, Pki, ServerCertificate, Subject,
};
use axum::extract::{ConnectInfo, Request, State};
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server under test and the files curl needs to reach it.
struct Server {
    address: SocketAddr,
    dir: PathBuf,
    pki: Pki,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(mode: fn(Arc<rustls::ServerConfig>) -> Transport) -> Self {
        let db = agyn_store::testing::fresh(agyn_store::Backend::Sqlite).await;
        let pki = Pki::load_or_create(db, &MasterKey::generate())
            .await
            .unwrap();
        let config = pki
            .server_config(&ServerCertificate::default(), ClientAuth::Optional)
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", get(echo))
            .route("/slow", get(slow))
            .with_state(pki.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, mode(config), async move {
            let _ = stopped.await;
        }));
        let dir = std::env::temp_dir().join(format!("agyn-transport-{}", agyn_core::id::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), pki.ca_certificate_pem()).unwrap();
        Self {
            address,
            dir,
            pki,
            stop: Some(stop),
            task,
        }
    }

    fn port(&self) -> u16 {
        self.address.port()
    }

    /// Issues a device certificate and writes it and its key to files.
    async fn device_files(&self, device_id: &str) -> (PathBuf, PathBuf) {
        let issued = self
            .pki
            .issue(
                &Subject::Device {
                    user_id: "user-1".to_string(),
                    device_id: device_id.to_string(),
                },
                KeySource::Generate,
            )
            .await
            .unwrap();
        let key = issued.private_key_pem.unwrap();
        write_pair(&self.dir, device_id, &issued.certificate_pem, key.expose())
    }
}

fn write_pair(dir: &Path, name: &str, certificate: &str, key: &str) -> (PathBuf, PathBuf) {
    let certificate_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&certificate_file, certificate).unwrap();
    std::fs::write(&key_file, key).unwrap();
    (certificate_file, key_file)
}

/// Returns the HTTP version, the peer address and the device id carried by
/// the client certificate, or `none`.
async fn echo(State(pki): State<Pki>, request: Request) -> String {
    let version = format!("{:?}", request.version());
    let ConnectInfo(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
        .expect("ConnectInfo is set on every request");
    let certificate = match request.extensions().get::<PeerCertificate>() {
        Some(PeerCertificate(der)) => match pki.verify_peer(der).await {
            Ok(identity) => format!("device {}", identity.device_id.unwrap_or_default()),
            Err(error) => format!("rejected: {error}"),
        },
        None => "none".to_string(),
    };
    format!("{version} {} {certificate}", peer.ip())
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(800)).await;
    "slow done"
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn curl(args: &[&str]) -> Output {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("curl must be installed");
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs curl against `https://localhost:<port>/` trusting the test CA.
async fn curl_tls(server: &Server, extra: &[&str]) -> Output {
    let resolve = format!("localhost:{}:127.0.0.1", server.port());
    let url = format!("https://localhost:{}/", server.port());
    let ca = server.dir.join("ca.pem");
    let mut args = vec![
        "--resolve",
        resolve.as_str(),
        "--cacert",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    curl(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_serves_plaintext_http1() {
    let server = Server::start(Transport::Mixed).await;
    let url = format!("http://127.0.0.1:{}/", server.port());
    let output = curl(&["--http1.1", &url]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/1.1 127.0.0.1 none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_serves_h2c_prior_knowledge() {
    let server = Server::start(Transport::Mixed).await;
    let url = format!("http://127.0.0.1:{}/", server.port());
    let output = curl(&["--http2-prior-knowledge", &url]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/2.0 127.0.0.1 none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_serves_tls_h2_and_http1() {
    let server = Server::start(Transport::Mixed).await;
    let output = curl_tls(&server, &["--http2"]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/2.0 127.0.0.1 none");

    let output = curl_tls(&server, &["--http1.1"]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/1.1 127.0.0.1 none");

    // The default server certificate also names 127.0.0.1.
    let ca = server.dir.join("ca.pem");
    let url = format!("https://127.0.0.1:{}/", server.port());
    let output = curl(&["--cacert", ca.to_str().unwrap(), &url]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/2.0 127.0.0.1 none");

    // A client without the platform CA rejects the server certificate.
    let output = curl(&[&url]).await;
    assert!(!output.success, "{}", output.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_reaches_handler() {
    let server = Server::start(Transport::Mixed).await;
    let (certificate, key) = server.device_files("d1").await;
    let certificate = certificate.to_str().unwrap();
    let key = key.to_str().unwrap();
    for version in ["--http2", "--http1.1"] {
        let output = curl_tls(&server, &[version, "--cert", certificate, "--key", key]).await;
        assert!(output.success, "{version}: {}", output.stderr);
        assert!(
            output.stdout.ends_with(" 127.0.0.1 device d1"),
            "{version}: {}",
            output.stdout
        );
    }

    // After revocation the handshake still succeeds, and verification
    // rejects the certificate.
    server
        .pki
        .revoke_subject(agyn_pki::CertificateKind::Device, "d1")
        .await
        .unwrap();
    let output = curl_tls(&server, &["--cert", certificate, "--key", key]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(
        output.stdout,
        "HTTP/2.0 127.0.0.1 rejected: credential revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_client_certificate_fails_handshake() {
    let server = Server::start(Transport::Mixed).await;
    // A self-signed CA of another cluster, with a leaf of the same shape.
    let other_db = agyn_store::testing::fresh(agyn_store::Backend::Sqlite).await;
    let other = Pki::load_or_create(other_db, &MasterKey::generate())
        .await
        .unwrap();
    let issued = other
        .issue(
            &Subject::Device {
                user_id: "user-1".to_string(),
                device_id: "d1".to_string(),
            },
            KeySource::Generate,
        )
        .await
        .unwrap();
    let key = issued.private_key_pem.as_ref().unwrap();
    let (certificate_file, key_file) = write_pair(
        &server.dir,
        "foreign",
        &issued.certificate_pem,
        key.expose(),
    );
    let output = curl_tls(
        &server,
        &[
            "--cert",
            certificate_file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!output.success, "served: {}", output.stdout);
    assert!(output.stdout.is_empty(), "{}", output.stdout);

    // The same with a rustls client that trusts the server.
    let config = server
        .pki
        .client_config(&issued.certificate_pem, key.expose())
        .unwrap();
    let result = rustls_get(server.address, config).await;
    assert!(result.is_err(), "served: {result:?}");
}

/// Sends `GET /` over HTTP/1.1 with a rustls client and returns the body.
async fn rustls_get(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, stream).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed response: {response:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status: {head}")));
    }
    Ok(body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_client_config_presents_certificate() {
    let server = Server::start(Transport::TlsOnly).await;
    let issued = server
        .pki
        .issue(
            &Subject::Device {
                user_id: "user-1".to_string(),
                device_id: "d7".to_string(),
            },
            KeySource::Generate,
        )
        .await
        .unwrap();
    let key = issued.private_key_pem.unwrap();
    let config = server
        .pki
        .client_config(&issued.certificate_pem, key.expose())
        .unwrap();
    let body = rustls_get(server.address, config).await.unwrap();
    assert_eq!(body, "HTTP/1.1 127.0.0.1 device d7");

    let anonymous = server.pki.anonymous_client_config().unwrap();
    let body = rustls_get(server.address, anonymous).await.unwrap();
    assert_eq!(body, "HTTP/1.1 127.0.0.1 none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_rejects_plaintext() {
    let server = Server::start(Transport::TlsOnly).await;
    let url = format!("http://127.0.0.1:{}/", server.port());
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let output = curl(&[version, &url]).await;
        assert!(!output.success, "{version} served: {}", output.stdout);
        assert!(output.stdout.is_empty(), "{version}: {}", output.stdout);
    }
    let output = curl_tls(&server, &[]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/2.0 127.0.0.1 none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_serves_http1_and_h2c() {
    let server = Server::start(|_| Transport::Plain).await;
    let url = format!("http://127.0.0.1:{}/", server.port());
    let output = curl(&["--http1.1", &url]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/1.1 127.0.0.1 none");
    let output = curl(&["--http2-prior-knowledge", &url]).await;
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "HTTP/2.0 127.0.0.1 none");
    let output = curl_tls(&server, &[]).await;
    assert!(!output.success, "TLS served: {}", output.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_finish() {
    let mut server = Server::start(Transport::Mixed).await;
    let slow_url = format!("http://127.0.0.1:{}/slow", server.port());
    let in_flight = tokio::spawn(async move { curl(&["--http1.1", &slow_url]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop.take().unwrap().send(()).unwrap();

    let output = in_flight.await.unwrap();
    assert!(output.success, "{}", output.stderr);
    assert_eq!(output.stdout, "slow done");
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns after its connections close")
        .unwrap()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/", server.port());
    let output = curl(&["--http1.1", &url]).await;
    assert!(!output.success, "served after shutdown: {}", output.stdout);
}
