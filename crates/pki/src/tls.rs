//! rustls configurations that trust the platform CA.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{KeySource, Pki, PkiError, Subject};

/// ALPN protocols of the listeners, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The client certificate policy of a TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Requests no certificate.
    None,
    /// Requests a certificate and accepts a connection without one. A certificate that does
    /// not chain to the platform CA fails the handshake.
    Optional,
    /// Rejects connections without a certificate that chains to the CA.
    Required,
}

/// The source of a listener's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCertificate {
    /// A certificate of kind `server` issued by the platform CA at startup
    /// for these DNS names and IP addresses.
    Issue { hostnames: Vec<String> },
    /// PEM files given by the operator: a certificate chain, leaf first,
    /// and its private key (PKCS #8, PKCS #1 or SEC 1).
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

impl Default for ServerCertificate {
    fn default() -> Self {
        Self::Issue {
            hostnames: crate::DEFAULT_SERVER_HOSTNAMES
                .iter()
                .map(|name| name.to_string())
                .collect(),
        }
    }
}

impl Pki {
    /// Builds a listener's TLS configuration with ALPN `h2` and
    /// `http/1.1`, whose client certificate verifier trusts only the
    /// platform CA.
    ///
    /// [`ServerCertificate::Issue`] issues and records a new certificate
    /// on every call.
    pub async fn server_config(
        &self,
        certificate: &ServerCertificate,
        client_auth: ClientAuth,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        let (chain, key) = match certificate {
            ServerCertificate::Issue { hostnames } => {
                let subject = Subject::Server {
                    hostnames: hostnames.clone(),
                };
                let issued = self
                    .issue(&subject, KeySource::Generate)
                    .await
                    .map_err(PkiError::Issue)?;
                let key_pem = issued
                    .private_key_pem
                    .expect("a generated key is always returned");
                let chain = parse_chain(issued.certificate_pem.as_bytes(), "issued certificate")?;
                let key = parse_key(key_pem.expose().as_bytes(), "issued private key")?;
                (chain, key)
            }
            ServerCertificate::Files {
                cert_file,
                key_file,
            } => {
                let chain = parse_chain(&read(cert_file)?, &cert_file.display().to_string())?;
                let key = parse_key(&read(key_file)?, &key_file.display().to_string())?;
                (chain, key)
            }
        };
        let builder = ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(self.roots()?),
                    self.inner.provider.clone(),
                );
                let verifier = if client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|error| rustls::Error::General(error.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Builds a client configuration that trusts only the platform CA and
    /// presents `certificate_pem` (leaf first) with `private_key_pem`.
    pub fn client_config(
        &self,
        certificate_pem: &str,
        private_key_pem: &str,
    ) -> Result<Arc<ClientConfig>, PkiError> {
        let chain = parse_chain(certificate_pem.as_bytes(), "client certificate")?;
        let key = parse_key(private_key_pem.as_bytes(), "client private key")?;
        let mut config = ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Builds a client configuration that trusts only the platform CA and
    /// presents no certificate.
    pub fn anonymous_client_config(&self) -> Result<Arc<ClientConfig>, PkiError> {
        let mut config = ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.inner.ca_certificate_der.clone())?;
        Ok(roots)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|error| PkiError::File {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

fn parse_chain(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PkiError::File {
            path: source.to_string(),
            reason: format!("invalid certificate PEM: {error}"),
        })?;
    if chain.is_empty() {
        return Err(PkiError::File {
            path: source.to_string(),
            reason: "contains no CERTIFICATE block".to_string(),
        });
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], source: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| PkiError::File {
        path: source.to_string(),
        reason: format!("invalid private key PEM: {error}"),
    })
}
