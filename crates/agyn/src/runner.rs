//! `agyn runner`: the built-in runner as a standalone process.
//!
//! At start it enrolls with the gateway (`RunnersGateway/EnrollRunner`)
//! using its service token and a certificate request for a key that never
//! leaves its data directory, then serves the runner protocol over mutual
//! TLS with the enrolled certificate. Each start enrolls again with the
//! same key, which renews the certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agyn_core::Secret;
use clap::Args;
use serde::Deserialize;

/// Flags of `agyn runner`.
#[derive(Args, Debug)]
pub struct RunnerArgs {
    /// Base URL of the platform's public listener, e.g. http://10.0.0.5:8080.
    #[arg(long, env = "AGYN_GATEWAY_URL")]
    pub gateway: String,
    /// Service token returned by RegisterRunner.
    #[arg(long, env = "AGYN_RUNNER_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: String,
    /// Address the runner protocol listens on.
    #[arg(long, env = "AGYN_RUNNER_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// URL the platform dials to reach this runner; required when --listen is 0.0.0.0 or [::] [default: https://<listen>].
    #[arg(long, env = "AGYN_RUNNER_ENDPOINT")]
    pub endpoint: Option<String>,
    /// State directory: the key, the certificates, workloads and volumes [default: $XDG_DATA_HOME/agyn-runner].
    #[arg(long, env = "AGYN_RUNNER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM CA certificate to trust for an https gateway [default: the system roots].
    #[arg(long, env = "AGYN_GATEWAY_CA_FILE")]
    pub gateway_ca_file: Option<PathBuf>,
    /// Log level or tracing filter.
    #[arg(long, env = "AGYN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "AGYN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Files in the runner's data directory.
const KEY_FILE: &str = "runner.key";
const CERT_FILE: &str = "runner.crt";
const CA_FILE: &str = "ca.crt";

/// Remaining certificate lifetime below which the runner logs a restart warning.
const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the certificate's remaining lifetime is checked.
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// The credential in the `identity_json` field of an EnrollRunner response.
#[derive(Deserialize)]
struct EnrolledIdentity {
    identity_id: String,
    certificate_pem: String,
    ca_pem: String,
    /// RFC 3339 end of validity.
    expires_at: String,
}

/// A verified enrollment: who the runner is and what it presents.
struct Enrollment {
    runner_id: String,
    certificate_pem: String,
    ca_pem: String,
    expires_at: time::OffsetDateTime,
}

pub async fn run(args: RunnerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => crate::config::default_dir("agyn-runner")?,
    };
    crate::serve::prepare_data_dir(&data_dir)?;

    let gateway = args.gateway.trim_end_matches('/').to_string();
    if !(gateway.starts_with("http://") || gateway.starts_with("https://")) {
        return Err(format!(
            "invalid --gateway {gateway:?}: expected the platform's public URL, such as http://10.0.0.5:8080"
        )
        .into());
    }
    if args.service_token.trim().is_empty() {
        return Err("missing service token: pass --service-token or set AGYN_RUNNER_SERVICE_TOKEN to the token RegisterRunner returned".into());
    }
    let endpoint = match &args.endpoint {
        Some(endpoint) => endpoint.clone(),
        None if args.listen.ip().is_unspecified() => {
            return Err(format!(
                "--listen {} accepts connections on every address, so the platform cannot derive where to dial; pass --endpoint https://<this host>:{}",
                args.listen,
                args.listen.port()
            )
            .into());
        }
        None => format!("https://{}", args.listen),
    };
    if !endpoint.starts_with("https://") {
        return Err(format!("invalid --endpoint {endpoint:?}: expected https://host:port").into());
    }
    // Bind first, so that a busy port fails before the runner enrolls.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("failed to bind {}: {error}", args.listen))?;

    let key = load_or_create_key(&data_dir)?;
    let client = gateway_client(args.gateway_ca_file.as_deref())?;
    let token = Secret::new(args.service_token.clone());
    let enroller = Enroller {
        client,
        gateway,
        token,
        endpoint,
        key,
        data_dir: data_dir.clone(),
    };
    let enrollment = enroller.enroll().await?;
    tracing::info!(
        runner_id = %enrollment.runner_id,
        expires_at = %rfc3339(enrollment.expires_at),
        "Runner enrolled"
    );

    let runner = agyn_runner::LocalRunner::new(
        &data_dir,
        &enrollment.runner_id,
        env!("CARGO_PKG_VERSION"),
        std::env::current_exe()?,
    )?;
    let runner: Arc<dyn agyn_runner::Runner> = Arc::new(runner);
    let renewal = tokio::spawn(watch_expiry(enrollment.expires_at));
    let served = tokio::select! {
        result = agyn_runner::serve_tls(
            listener,
            runner,
            &enrollment.certificate_pem,
            enroller.key.expose(),
            &enrollment.ca_pem,
        ) => result,
        signal = crate::serve::shutdown_signal() => {
            tracing::info!(signal, "Shutting down");
            Ok(())
        }
    };
    renewal.abort();
    served?;
    tracing::info!("Runner stopped; its workloads keep running and are adopted at the next start");
    Ok(())
}

struct Enroller {
    client: reqwest::Client,
    gateway: String,
    token: Secret<String>,
    endpoint: String,
    key: Secret<String>,
    data_dir: PathBuf,
}

impl Enroller {
    /// Calls EnrollRunner with a certificate request for the runner's key,
    /// checks the response, and writes the certificate and CA files.
    async fn enroll(&self) -> Result<Enrollment, Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::from_pem(self.key.expose())
            .map_err(|error| format!("invalid key in {KEY_FILE}: {error}"))?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .and_then(|request| request.pem())
            .map_err(|error| format!("failed to build the certificate request: {error}"))?;

        let url = format!(
            "{}/agynio.api.runners.v1.RunnersGateway/EnrollRunner",
            self.gateway
        );
        let response = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .json(&serde_json::json!({
                "serviceToken": self.token.expose(),
                "endpoint": self.endpoint,
                "csrPem": csr,
            }))
            .send()
            .await
            .map_err(|error| {
                format!(
                    "failed to reach the gateway at {}: {}",
                    self.gateway,
                    error_chain(&error)
                )
            })?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|error| format!("unreadable EnrollRunner response ({status}): {error}"))?;
        if !status.is_success() {
            let code = body["code"].as_str().unwrap_or("unknown");
            let message = body["message"].as_str().unwrap_or("");
            return Err(format!("enrollment refused: {code}: {message}").into());
        }

        let encoded = body["identityJson"]
            .as_str()
            .ok_or("EnrollRunner returned no identity")?;
        let decoded = base64_decode(encoded)?;
        let identity: EnrolledIdentity = serde_json::from_slice(&decoded)
            .map_err(|error| format!("EnrollRunner returned an invalid identity: {error}"))?;
        let expires_at = time::OffsetDateTime::parse(
            &identity.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|error| format!("EnrollRunner returned an invalid expiry: {error}"))?;

        crate::serve::write_atomically(
            &self.data_dir.join(CERT_FILE),
            identity.certificate_pem.as_bytes(),
            0o644,
        )?;
        crate::serve::write_atomically(
            &self.data_dir.join(CA_FILE),
            identity.ca_pem.as_bytes(),
            0o644,
        )?;
        Ok(Enrollment {
            runner_id: identity.identity_id,
            certificate_pem: identity.certificate_pem,
            ca_pem: identity.ca_pem,
            expires_at,
        })
    }
}

/// Warns once the certificate has less than [`RENEW_BEFORE`] left.
///
/// NOTE: the listener reads its certificate once, so a renewed certificate
/// takes effect only at the next start, which enrolls again.
async fn watch_expiry(expires_at: time::OffsetDateTime) {
    loop {
        let left = expires_at - time::OffsetDateTime::now_utc();
        if left < RENEW_BEFORE {
            tracing::warn!(
                expires_at = %rfc3339(expires_at),
                "Runner certificate expires soon; restart the runner to enroll again"
            );
            return;
        }
        tokio::time::sleep(RENEW_CHECK).await;
    }
}

/// Reads the runner's private key, or creates an ECDSA P-256 key (mode
/// 0600) on first start.
fn load_or_create_key(data_dir: &Path) -> Result<Secret<String>, Box<dyn std::error::Error>> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(pem) => Ok(Secret::new(pem)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|error| format!("failed to generate the runner key: {error}"))?;
            let pem = key.serialize_pem();
            crate::serve::write_atomically(&path, pem.as_bytes(), 0o600)?;
            tracing::info!(file = %path.display(), "Runner key created");
            Ok(Secret::new(pem))
        }
        Err(error) => Err(format!("failed to read {}: {error}", path.display()).into()),
    }
}

fn gateway_client(ca_file: Option<&Path>) -> Result<reqwest::Client, Box<dyn std::error::Error>> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .use_rustls_tls();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
        let found =
            <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(
                &pem,
            )
            .filter(Result::is_ok)
            .count();
        if found == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()).into());
        }
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|error| format!("invalid CA certificate in {}: {error}", path.display()))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(certificate);
    }
    builder.build().map_err(|error| {
        format!(
            "failed to build the gateway client: {}",
            error_chain(&error)
        )
        .into()
    })
}

/// Formats `error` with every cause below it, such as `connection refused`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn base64_decode(encoded: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|error| format!("EnrollRunner returned invalid base64: {error}").into())
}
