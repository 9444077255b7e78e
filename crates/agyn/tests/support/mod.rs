//! Starts the real `agyn` binary on loopback ports for black-box tests.

#![allow(dead_code)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agyn_api_users::agynio::api::users::v1::UsersGatewayClient;
use connectrpc::Protocol;
use connectrpc::client::{ClientConfig, HttpClient};

/// A running `agyn serve` with its own data directory and ports.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub internal_port: u16,
    pub admin_token: String,
    log_path: PathBuf,
}

/// Returns the value that tests store as a provider token and a secret
/// value. It must never appear in a server log. AGYN_TEST_CANARY overrides
/// it.
pub fn canary() -> String {
    std::env::var("AGYN_TEST_CANARY").unwrap_or_else(|_| "agyn-canary-7c1f0e9b4d2a".to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the server with `--log-level trace` and waits until `/healthz`
    /// returns 200.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the server like [`Server::start`], with `extra_args` after
    /// the default flags.
    pub fn start_with(extra_args: &[String]) -> Self {
        Self::spawn(extra_args, true)
    }

    /// Starts another replica on a database that a first server already
    /// bootstrapped, so its data directory gets no `admin-token`; waits
    /// for `/healthz` only.
    pub fn start_replica(extra_args: &[String]) -> Self {
        Self::spawn(extra_args, false)
    }

    fn spawn(extra_args: &[String], bootstraps: bool) -> Self {
        let data_dir = std::env::temp_dir().join(format!("agyn-serve-{}", unique_suffix()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let port = free_port();
        let internal_port = free_port();
        // Logs go to AGYN_TEST_LOG_DIR when it is set, where the test script
        // searches them for the canary secret after every suite has run.
        let log_path = match std::env::var_os("AGYN_TEST_LOG_DIR") {
            Some(dir) => {
                std::fs::create_dir_all(&dir).unwrap();
                PathBuf::from(dir).join(format!("serve-{}.log", unique_suffix()))
            }
            None => data_dir.join("server.log"),
        };
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agyn"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--internal-listen")
            .arg(format!("127.0.0.1:{internal_port}"))
            .arg("--log-level")
            .arg("trace")
            .args(extra_args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agyn serve");
        let mut server = Self {
            child: Some(child),
            data_dir,
            port,
            internal_port,
            admin_token: String::new(),
            log_path,
        };
        server.wait_ready(bootstraps);
        server
    }

    fn wait_ready(&mut self, bootstraps: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let token =
                std::fs::read_to_string(self.data_dir.join("admin-token")).unwrap_or_default();
            if (!bootstraps || !token.is_empty())
                && http_get(self.port, "/healthz").starts_with("HTTP/1.1 200")
            {
                self.admin_token = token.trim().to_string();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agyn serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agyn serve did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Process id of the server, for reading /proc/<pid>/status.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Everything the server has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log_path)
            .and_then(|mut file| file.read_to_string(&mut text))
            .unwrap();
        text
    }

    /// Sends `signal` (such as `TERM`) to the server process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("server is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit; returns its exit
    /// code, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the process; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agyn serve ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Builds one UsersGateway client per protocol and codec: Connect JSON over
    /// HTTP/1.1, Connect binary over h2c, gRPC and gRPC-Web.
    pub fn clients(&self, base: &str) -> Vec<(&'static str, UsersGatewayClient<HttpClient>)> {
        let uri: http::Uri = base.parse().unwrap();
        let config = |protocol| ClientConfig::new(uri.clone()).with_protocol(protocol);
        vec![
            (
                "connect+json",
                UsersGatewayClient::new(HttpClient::plaintext(), config(Protocol::Connect).json()),
            ),
            (
                "connect+proto/h2",
                UsersGatewayClient::new(
                    HttpClient::plaintext_http2_only(),
                    config(Protocol::Connect).proto(),
                ),
            ),
            (
                "grpc",
                UsersGatewayClient::new(HttpClient::plaintext_http2_only(), config(Protocol::Grpc)),
            ),
            (
                "grpc-web",
                UsersGatewayClient::new(HttpClient::plaintext(), config(Protocol::GrpcWeb)),
            ),
        ]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_workload_processes(&self.data_dir);
        // A failed test keeps its data directory (and the log inside it)
        // for inspection. A passing one removes it, because file tests
        // leave hundreds of megabytes behind.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Kills every process the built-in runner of a server on `data_dir`
/// started. Workloads are process groups that outlive their runner by
/// design, so a killed test server would otherwise leave them running.
/// They are found by an executable path or a working directory under
/// `<data_dir>/runner`.
pub fn kill_workload_processes(data_dir: &std::path::Path) {
    let runner_dir = data_dir.join("runner");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let program = cmdline.split(|byte| *byte == 0).next().unwrap_or_default();
        let program = PathBuf::from(String::from_utf8_lossy(program).into_owned());
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if program.starts_with(&runner_dir) || cwd.starts_with(&runner_dir) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Sends a raw HTTP/1.1 request and returns the whole response text.
pub fn http_request(port: u16, request: &str) -> String {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

pub fn http_get(port: u16, path: &str) -> String {
    http_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_postgres_url() -> String {
    agyn_store::testing::fresh_postgres_url().await
}

/// The platform CA certificate and the `admin` component credential that
/// `agyn serve` writes to its data directory.
pub struct AdminCredentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Server {
    pub fn admin_credentials(&self) -> AdminCredentials {
        let read = |name: &str| std::fs::read_to_string(self.data_dir.join(name)).unwrap();
        AdminCredentials {
            ca_pem: read("ca.crt"),
            cert_pem: read("admin-client.crt"),
            key_pem: read("admin-client.key"),
        }
    }

    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn internal_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.internal_port)
    }
}

/// An HTTP/1.1 and HTTP/2 client that trusts only `ca_pem` and presents
/// `identity` (certificate and key PEM) when given.
pub fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Calls a unary method with Connect JSON; returns the HTTP status and
/// the decoded body.
pub async fn connect_json(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    body: serde_json::Value,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = client
        .post(format!("{base}/{method}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// A server stream of the Connect protocol with JSON messages.
pub struct ConnectStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl ConnectStream {
    /// Opens `method` with one request message.
    pub async fn open(
        client: &reqwest::Client,
        base: &str,
        method: &str,
        body: serde_json::Value,
        bearer: &str,
    ) -> Self {
        let message = body.to_string().into_bytes();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let response = client
            .post(format!("{base}/{method}"))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .bearer_auth(bearer)
            .body(framed)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{method}: HTTP {}",
            response.status()
        );
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// Returns the next message, `Err` with the end-of-stream JSON when
    /// the stream ends, or `None` after `timeout` without a message.
    pub async fn next(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<serde_json::Value, serde_json::Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    let value = serde_json::from_slice(&self.buffer[5..5 + len]).unwrap();
                    self.buffer.drain(..5 + len);
                    return Some(if flags & 0x02 != 0 {
                        Err(value)
                    } else {
                        Ok(value)
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk.unwrap() {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Some(Err(serde_json::Value::Null)),
            }
        }
    }
}
