//! The platform certificate authority.
//!
//! One CA per cluster (ECDSA P-256, self-signed, valid for 10 years) is
//! kept in the `platform_ca` table with its private key sealed by the
//! [`MasterKey`], so every replica that shares the database issues and
//! verifies the same certificates. [`Pki`] issues certificates for
//! devices, runners, apps, workloads, platform components and the TLS
//! listeners, records each one in `certificates`, revokes them, and turns
//! a presented client certificate into a [`PeerIdentity`].
//!
//! Identity is carried only in URI subject alternative names:
//! `agyn://identity/<type>/<id>` names the identity a certificate acts as,
//! and `agyn://device/<id>`, `agyn://workload/<id>` and
//! `agyn://component/<name>` name the subject it was issued to. The common
//! name is informational.
//!
//! The only cryptography provider is `ring`, for rustls and rcgen alike.

mod ca;
mod csr;
mod issue;
pub mod master_key;
mod tls;
mod verify;

use std::fmt;
use std::sync::Arc;

use agyn_store::Db;
use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;

pub use issue::{DEFAULT_SERVER_HOSTNAMES, IssuedCertificate, KeySource, Subject};
pub use master_key::{MasterKey, MasterKeyError};
pub use tls::{ClientAuth, ServerCertificate};
pub use verify::{PEER_CACHE_TTL, PeerError, PeerIdentity};

/// The DER leaf certificate a TLS client presented, after the handshake
/// checked that it chains to the platform CA. The transport inserts it
/// into the extensions of every request on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate(pub Arc<[u8]>);

/// The kind of holder a certificate was issued to, stored in
/// `certificates.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateKind {
    Device,
    Runner,
    App,
    Workload,
    Component,
    Server,
}

impl CertificateKind {
    /// Returns the name stored in `certificates.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Runner => "runner",
            Self::App => "app",
            Self::Workload => "workload",
            Self::Component => "component",
            Self::Server => "server",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "device" => Some(Self::Device),
            "runner" => Some(Self::Runner),
            "app" => Some(Self::App),
            "workload" => Some(Self::Workload),
            "component" => Some(Self::Component),
            "server" => Some(Self::Server),
            _ => None,
        }
    }
}

impl fmt::Display for CertificateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from loading the CA and building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(
        "the master key does not match the one this database was created with; \
         pass the original key with --master-key or copy its master.key file"
    )]
    MasterKeyMismatch,
    #[error("the stored platform CA is invalid: {0}")]
    InvalidCa(String),
    #[error("database error while loading the platform CA: {0}")]
    Database(#[from] agyn_store::sqlx::Error),
    #[error("failed to generate a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("failed to issue the server certificate: {0}")]
    Issue(agyn_core::Error),
    #[error("failed to read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The platform CA and the certificate records of one database.
///
/// Cheap to clone; clones share the CA and the peer cache.
#[derive(Clone)]
pub struct Pki {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    ca_certificate_pem: String,
    ca_certificate_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    peers: verify::PeerCache,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_certificate_pem", &self.inner.ca_certificate_pem)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the cluster's CA from `platform_ca`, creating it first when
    /// the table is empty.
    ///
    /// Creation is race-safe across replicas: each inserts its own CA only
    /// if no row exists, then every replica reads back and uses the row
    /// that won. A key that cannot open the stored CA private key returns
    /// [`PkiError::MasterKeyMismatch`].
    pub async fn load_or_create(db: Db, master_key: &MasterKey) -> Result<Self, PkiError> {
        let (ca_certificate_pem, key) = ca::load_or_create(&db, master_key).await?;
        let ca_certificate_der = ca::certificate_der(&ca_certificate_pem)?;
        let issuer = Issuer::from_ca_cert_der(&ca_certificate_der, key)
            .map_err(|error| PkiError::InvalidCa(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                ca_certificate_pem,
                ca_certificate_der,
                issuer,
                provider: Arc::new(rustls::crypto::ring::default_provider()),
                peers: verify::PeerCache::default(),
            }),
        })
    }

    /// Returns the CA certificate in PEM, the trust anchor clients need.
    pub fn ca_certificate_pem(&self) -> &str {
        &self.inner.ca_certificate_pem
    }

    /// Returns the CA certificate in DER.
    pub fn ca_certificate_der(&self) -> &CertificateDer<'static> {
        &self.inner.ca_certificate_der
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }
}
