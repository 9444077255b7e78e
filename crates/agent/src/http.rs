//! The HTTP clients of the agent: one for the platform (the LLM proxy and
//! the OTLP ingest) that presents the workload certificate and trusts only
//! the platform CA, and one for the MCP and hook servers on localhost.

use std::time::Duration;

use crate::AgentError;
use crate::settings::Credentials;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the mutual TLS client of the LLM proxy and the OTLP ingest.
pub fn platform_client(credentials: &Credentials) -> Result<reqwest::Client, AgentError> {
    let ca = reqwest::Certificate::from_pem(credentials.ca_pem.as_bytes())
        .map_err(|error| AgentError::Http(format!("invalid CA certificate: {error}")))?;
    let mut identity_pem = credentials.cert_pem.clone().into_bytes();
    identity_pem.push(b'\n');
    identity_pem.extend_from_slice(credentials.key_pem.expose().as_bytes());
    let identity = reqwest::Identity::from_pem(&identity_pem).map_err(|error| {
        AgentError::Http(format!("invalid workload certificate or key: {error}"))
    })?;
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(identity)
        .connect_timeout(CONNECT_TIMEOUT)
        // The gateway is reached directly, as the Connect client does.
        .no_proxy()
        .build()
        .map_err(|error| AgentError::Http(format!("failed to build the HTTP client: {error}")))
}

/// Builds the plain HTTP client of the MCP and hook servers.
pub fn local_client() -> Result<reqwest::Client, AgentError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|error| AgentError::Http(format!("failed to build the HTTP client: {error}")))
}
