//! TLS configurations of the runner protocol: the platform CA is the only
//! trust root on both sides, and identities come from the `agyn://` URI
//! subject alternative names, not from host names.

use std::sync::Arc;

use agyn_core::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

/// URI name prefix of a platform component certificate.
const COMPONENT_PREFIX: &str = "agyn://component/";

/// URI name prefix of a runner certificate.
const RUNNER_PREFIX: &str = "agyn://identity/runner/";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_chain(pem: &str, description: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::invalid_argument(format!("{description}: invalid PEM: {error}")))?;
    if chain.is_empty() {
        return Err(Error::invalid_argument(format!(
            "{description}: contains no CERTIFICATE block"
        )));
    }
    Ok(chain)
}

fn parse_key(pem: &str, description: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|error| {
        Error::invalid_argument(format!("{description}: invalid private key PEM: {error}"))
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for certificate in parse_chain(ca_pem, "CA certificate")? {
        roots
            .add(certificate)
            .map_err(|error| Error::invalid_argument(format!("CA certificate: {error}")))?;
    }
    Ok(Arc::new(roots))
}

fn invalid_config(error: rustls::Error) -> Error {
    Error::invalid_argument(format!("invalid TLS configuration: {error}"))
}

/// Returns the URI subject alternative names of a DER certificate.
pub(crate) fn uri_names(der: &[u8]) -> std::result::Result<Vec<String>, String> {
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|error| format!("failed to parse the certificate: {error}"))?;
    let extension = certificate
        .subject_alternative_name()
        .map_err(|error| format!("invalid subject alternative names: {error}"))?;
    let Some(extension) = extension else {
        return Ok(Vec::new());
    };
    Ok(extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect())
}

/// Returns the platform component a client certificate names, from its
/// `agyn://component/<name>` URI.
pub(crate) fn component(der: &[u8]) -> Option<String> {
    uri_names(der)
        .ok()?
        .iter()
        .find_map(|uri| uri.strip_prefix(COMPONENT_PREFIX).map(str::to_string))
}

/// Builds the runner's server configuration: it presents `cert_pem` (leaf
/// first) and requires a client certificate that chains to `ca_pem`. ALPN
/// offers `h2` and `http/1.1`.
pub(crate) fn server_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|error| Error::invalid_argument(format!("CA certificate: {error}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid_config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_chain(cert_pem, "server certificate")?,
            parse_key(key_pem, "server private key")?,
        )
        .map_err(invalid_config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the platform's client configuration for one runner: it presents
/// `cert_pem` with `key_pem`, trusts only `ca_pem`, and accepts only a
/// server certificate named `agyn://identity/runner/<runner_id>`. ALPN
/// offers only `h2`, because the client speaks gRPC.
pub(crate) fn client_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    runner_id: &str,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = RunnerVerifier {
        roots: roots(ca_pem)?,
        expected_uri: format!("{RUNNER_PREFIX}{runner_id}"),
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid_config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(
            parse_chain(cert_pem, "client certificate")?,
            parse_key(key_pem, "client private key")?,
        )
        .map_err(invalid_config)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Checks a runner's server certificate: the chain to the platform CA and
/// the runner's URI name. The host name is not checked, because runners
/// enroll with an endpoint that their certificate does not name.
#[derive(Debug)]
struct RunnerVerifier {
    roots: Arc<RootCertStore>,
    expected_uri: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RunnerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let names = uri_names(end_entity).map_err(rustls::Error::General)?;
        if !names.contains(&self.expected_uri) {
            return Err(rustls::Error::General(format!(
                "the runner certificate is not named {}; it names {names:?}",
                self.expected_uri
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
