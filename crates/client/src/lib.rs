//! Typed clients of the agyn gateway.
//!
//! [`Gateway`] keeps one HTTP/2 connection to the public listener and hands
//! out the generated ConnectRPC clients of each `<Service>Gateway`. It
//! speaks the Connect protocol with binary messages, over h2c for an
//! `http://` URL and over TLS for `https://`. The caller is a user with a
//! bearer token ([`Credential::Token`]) or a holder of a platform client
//! certificate ([`Credential::Certificate`]), such as an agent workload.
//!
//! The connection is opened on the first call and re-opened after it
//! fails, so a `Gateway` can be built before the server is up.

use std::sync::Arc;
use std::time::Duration;

use agyn_core::{Error, Result, Secret};
use connectrpc::Protocol;
use connectrpc::client::{ClientConfig, Http2Connection, SharedHttp2Connection};
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

pub use agyn_api_agents::agynio::api::agents::v1 as agents;
pub use agyn_api_chat::agynio::api::chat::v1 as chat;
pub use agyn_api_files::agynio::api::files::v1 as files;
pub use agyn_api_llm::agynio::api::llm::v1 as llm;
pub use agyn_api_notifications::agynio::api::notifications::v1 as notifications;
pub use agyn_api_organizations::agynio::api::organizations::v1 as organizations;
pub use agyn_api_runners::agynio::api::runners::v1 as runners;
pub use agyn_api_secrets::agynio::api::secrets::v1 as secrets;
pub use agyn_api_threads::agynio::api::threads::v1 as threads;
pub use agyn_api_tracing::agynio::api::tracing::v1 as tracing;
pub use agyn_api_users::agynio::api::users::v1 as users;
pub use connectrpc::client::CallOptions;
pub use connectrpc::{ConnectError, ErrorCode};

/// Requests that may wait on the shared connection before callers see
/// back-pressure.
const MAX_QUEUED_REQUESTS: usize = 1024;

/// Deadline of every call, streams included, unless the call sets its own.
/// [`Gateway::without_default_timeout`] returns clients without it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The credential a client presents.
pub enum Credential {
    /// An API token (`agyn_…`) or an OIDC access token, sent as
    /// `Authorization: Bearer`.
    Token(Secret<String>),
    /// A certificate issued by the platform CA, presented in the TLS
    /// handshake. Needs an `https://` URL.
    Certificate {
        cert_pem: String,
        key_pem: Secret<String>,
    },
    /// No credential, for the methods that take a service token in their
    /// request instead.
    Anonymous,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Token(_) => "Token(..)",
            Self::Certificate { .. } => "Certificate(..)",
            Self::Anonymous => "Anonymous",
        })
    }
}

/// A connection to the gateway and the settings every call shares.
#[derive(Clone)]
pub struct Gateway {
    connection: SharedHttp2Connection,
    config: ClientConfig,
    /// `config` without [`DEFAULT_TIMEOUT`].
    untimed_config: ClientConfig,
    url: Arc<str>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds a client of the gateway at `url` (`http://host:port` or
    /// `https://host:port`, with an optional `/api` path).
    ///
    /// With `https`, the server certificate must chain to `ca_pem` when
    /// it is given, else to the system's trust roots. Must be called
    /// within a Tokio runtime, which drives the connection.
    pub fn connect(url: &str, credential: Credential, ca_pem: Option<&str>) -> Result<Self> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|error| Error::invalid_argument(format!("{url:?} is not a URL: {error}")))?;
        let Some(authority) = uri.authority().cloned() else {
            return Err(Error::invalid_argument(format!("{url:?} has no host")));
        };
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "{url:?} must start with http:// or https://"
                )));
            }
        };
        let default_port = if tls { 443 } else { 80 };
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(default_port)
        );

        let mut config = ClientConfig::new(uri.clone()).with_protocol(Protocol::Connect);
        let mut client_identity = None;
        match credential {
            Credential::Token(token) => {
                let value = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        Error::invalid_argument(
                            "invalid token: it contains characters not allowed in a header",
                        )
                    })?;
                let mut headers = http::HeaderMap::new();
                let mut value = value;
                value.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, value);
                config = config.with_default_headers(headers);
            }
            Credential::Certificate { cert_pem, key_pem } => {
                if !tls {
                    return Err(Error::invalid_argument(format!(
                        "{url:?}: a client certificate needs an https:// URL"
                    )));
                }
                client_identity = Some((cert_pem, key_pem));
            }
            Credential::Anonymous => {}
        }

        let connection = if tls {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let server_name = ServerName::try_from(host.clone()).map_err(|error| {
                Error::invalid_argument(format!("invalid host {host:?}: {error}"))
            })?;
            let connector = TlsConnector::from(tls_config(ca_pem, client_identity)?);
            let connect = tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                let server_name = server_name.clone();
                let address = address.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(&address).await?;
                    tcp.set_nodelay(true)?;
                    let stream = connector.connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            });
            Http2Connection::lazy_with_connector(connect, uri)
        } else {
            let connect = tower::service_fn(move |_: Uri| {
                let address = address.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(&address).await?;
                    tcp.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(TokioIo::new(tcp))
                }
            });
            Http2Connection::lazy_with_connector(connect, uri)
        };
        Ok(Self {
            connection: connection.shared(MAX_QUEUED_REQUESTS),
            untimed_config: config.clone(),
            config: config.with_default_timeout(DEFAULT_TIMEOUT),
            url: url.into(),
        })
    }

    /// Returns a client on the same connection whose calls have no
    /// deadline unless the call sets one, for server streams that stay
    /// open longer than [`DEFAULT_TIMEOUT`], such as followed logs and
    /// notification subscriptions.
    pub fn without_default_timeout(&self) -> Self {
        Self {
            config: self.untimed_config.clone(),
            ..self.clone()
        }
    }

    /// Returns the URL this client was built for.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn users(&self) -> users::UsersGatewayClient<SharedHttp2Connection> {
        users::UsersGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn organizations(
        &self,
    ) -> organizations::OrganizationsGatewayClient<SharedHttp2Connection> {
        organizations::OrganizationsGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn threads(&self) -> threads::ThreadsGatewayClient<SharedHttp2Connection> {
        threads::ThreadsGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn chat(&self) -> chat::ChatGatewayClient<SharedHttp2Connection> {
        chat::ChatGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn notifications(
        &self,
    ) -> notifications::NotificationsGatewayClient<SharedHttp2Connection> {
        notifications::NotificationsGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn agents(&self) -> agents::AgentsGatewayClient<SharedHttp2Connection> {
        agents::AgentsGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn llm(&self) -> llm::LlmGatewayClient<SharedHttp2Connection> {
        llm::LlmGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn secrets(&self) -> secrets::SecretsGatewayClient<SharedHttp2Connection> {
        secrets::SecretsGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn runners(&self) -> runners::RunnersGatewayClient<SharedHttp2Connection> {
        runners::RunnersGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn files(&self) -> files::FilesGatewayClient<SharedHttp2Connection> {
        files::FilesGatewayClient::new(self.connection.clone(), self.config.clone())
    }

    pub fn tracing(&self) -> tracing::TracingGatewayClient<SharedHttp2Connection> {
        tracing::TracingGatewayClient::new(self.connection.clone(), self.config.clone())
    }
}

/// Call options for a stream. The stream may stay open indefinitely only
/// on a client from [`Gateway::without_default_timeout`].
pub fn streaming() -> CallOptions {
    CallOptions::default()
}

/// Converts a failed call into the platform's error, keeping its code and
/// message. Codes the platform has no twin for become `unavailable` when
/// a retry may help (deadline, cancellation) and `internal` otherwise.
pub fn into_error(error: ConnectError) -> Error {
    use agyn_core::error::Code;
    let message = error
        .message
        .clone()
        .unwrap_or_else(|| format!("the gateway answered {}", error.code.as_str()));
    let code = match error.code {
        ErrorCode::InvalidArgument | ErrorCode::OutOfRange => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition | ErrorCode::Aborted => Code::FailedPrecondition,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Canceled => {
            Code::Unavailable
        }
        _ => Code::Internal,
    };
    Error::new(code, message)
}

fn tls_config(
    ca_pem: Option<&str>,
    identity: Option<(String, Secret<String>)>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let certificate = certificate.map_err(|error| {
                    Error::invalid_argument(format!("CA certificate: invalid PEM: {error}"))
                })?;
                roots
                    .add(certificate)
                    .map_err(|error| Error::invalid_argument(format!("CA certificate: {error}")))?;
            }
            if roots.is_empty() {
                return Err(Error::invalid_argument(
                    "CA certificate: contains no CERTIFICATE block",
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid_config)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|error| {
                    Error::invalid_argument(format!("client certificate: invalid PEM: {error}"))
                })?;
            if chain.is_empty() {
                return Err(Error::invalid_argument(
                    "client certificate: contains no CERTIFICATE block",
                ));
            }
            let key =
                PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|error| {
                    Error::invalid_argument(format!("client key: invalid PEM: {error}"))
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(invalid_config)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn invalid_config(error: rustls::Error) -> Error {
    Error::invalid_argument(format!("invalid TLS configuration: {error}"))
}
