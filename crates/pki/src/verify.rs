//! Turning a presented client certificate into the identity it carries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agyn_core::IdentityKind;
use agyn_store::sqlx::{self, Row as _};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::issue::serial_hex;
use crate::{CertificateKind, Pki};

/// Maximum time a verified certificate is trusted without reading its
/// `certificates` row again, so a revocation made by another replica takes
/// effect within this time.
pub const PEER_CACHE_TTL: Duration = Duration::from_secs(5);

/// Time after a revocation through this process during which nothing is
/// cached for the revoked subject or serial. It covers the time until the
/// revoking transaction commits, because a lookup in between still reads
/// the row as valid and must not cache that result.
const PENDING_REVOCATION: Duration = Duration::from_secs(30);

/// Entries kept before expired ones are swept; past it the cache is
/// cleared.
const MAX_CACHE_ENTRIES: usize = 10_000;

/// The identity carried by a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Serial number as lowercase hex.
    pub serial: String,
    pub kind: CertificateKind,
    /// The identity the certificate acts as, from
    /// `agyn://identity/<type>/<id>`; `None` for components.
    pub identity: Option<(String, IdentityKind)>,
    /// From `agyn://device/<id>`, set for device certificates.
    pub device_id: Option<String>,
    /// From `agyn://workload/<id>`, set for workload certificates.
    pub workload_id: Option<String>,
    /// From `agyn://component/<name>`, set for component certificates.
    pub component: Option<String>,
}

/// The reason a client certificate was rejected.
///
/// `Revoked` and `UnknownSerial` share the message `credential revoked`,
/// so a client cannot tell a revoked certificate from one never issued.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("credential revoked")]
    Revoked,
    #[error("credential revoked")]
    UnknownSerial,
    #[error("credential expired")]
    Expired,
    #[error("credential not yet valid")]
    NotYetValid,
    #[error("invalid client certificate: {0}")]
    Invalid(String),
    #[error("failed to look up the client certificate: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<PeerError> for agyn_core::Error {
    fn from(error: PeerError) -> Self {
        match error {
            PeerError::Database(source) => {
                agyn_core::Error::internal("failed to look up the client certificate", source)
            }
            other => agyn_core::Error::unauthenticated(other.to_string()),
        }
    }
}

struct CacheEntry {
    identity: PeerIdentity,
    subject_id: String,
    /// End of the certificate's validity, in seconds since the epoch.
    not_after: i64,
    cached_at: Instant,
}

/// Recently verified certificates, keyed by the SHA-256 of their DER.
#[derive(Default)]
pub(crate) struct PeerCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<[u8; 32], CacheEntry>,
    /// `(kind, subject_id)` pairs revoked recently, with the revocation time.
    revoked_subjects: HashMap<(CertificateKind, String), Instant>,
    /// Serials revoked recently, with the revocation time.
    revoked_serials: HashMap<String, Instant>,
}

impl PeerCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding the lock leaves only cache entries behind,
        // which stay consistent, so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<(PeerIdentity, i64)> {
        let state = self.lock();
        let entry = state.entries.get(key)?;
        if now.duration_since(entry.cached_at) >= PEER_CACHE_TTL {
            return None;
        }
        Some((entry.identity.clone(), entry.not_after))
    }

    fn insert(&self, key: [u8; 32], entry: CacheEntry) {
        let mut state = self.lock();
        let now = entry.cached_at;
        state
            .revoked_subjects
            .retain(|_, revoked_at| now.duration_since(*revoked_at) < PENDING_REVOCATION);
        state
            .revoked_serials
            .retain(|_, revoked_at| now.duration_since(*revoked_at) < PENDING_REVOCATION);
        let subject = (entry.identity.kind, entry.subject_id.clone());
        if state.revoked_subjects.contains_key(&subject)
            || state.revoked_serials.contains_key(&entry.identity.serial)
        {
            return;
        }
        if state.entries.len() >= MAX_CACHE_ENTRIES {
            state
                .entries
                .retain(|_, cached| now.duration_since(cached.cached_at) < PEER_CACHE_TTL);
            if state.entries.len() >= MAX_CACHE_ENTRIES {
                state.entries.clear();
            }
        }
        state.entries.insert(key, entry);
    }

    pub(crate) fn forget_subject(&self, kind: CertificateKind, subject_id: &str) {
        let mut state = self.lock();
        state
            .entries
            .retain(|_, entry| !(entry.identity.kind == kind && entry.subject_id == subject_id));
        state
            .revoked_subjects
            .insert((kind, subject_id.to_string()), Instant::now());
    }

    pub(crate) fn forget_serial(&self, serial: &str) {
        let mut state = self.lock();
        state
            .entries
            .retain(|_, entry| entry.identity.serial != serial);
        state
            .revoked_serials
            .insert(serial.to_string(), Instant::now());
    }
}

impl Pki {
    /// Checks a client certificate (DER) that the TLS handshake already
    /// chained to the platform CA, and returns the identity it carries.
    ///
    /// It checks the validity window, that the serial is recorded and not
    /// revoked, and that the URI names match the recorded kind and
    /// subject. A result is reused for at most [`PEER_CACHE_TTL`].
    pub async fn verify_peer(&self, der: &[u8]) -> Result<PeerIdentity, PeerError> {
        self.verify_peer_at(der, agyn_core::time::now_micros() / 1_000_000)
            .await
    }

    /// Runs [`Pki::verify_peer`] as if the time were `now` (seconds since
    /// the Unix epoch).
    pub(crate) async fn verify_peer_at(
        &self,
        der: &[u8],
        now: i64,
    ) -> Result<PeerIdentity, PeerError> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, der)
            .as_ref()
            .try_into()
            .expect("SHA-256 digests are 32 bytes");
        let started = Instant::now();
        if let Some((identity, not_after)) = self.inner.peers.get(&key, started) {
            if now > not_after {
                return Err(PeerError::Expired);
            }
            return Ok(identity);
        }

        let (rest, certificate) = X509Certificate::from_der(der)
            .map_err(|error| PeerError::Invalid(format!("failed to parse: {error}")))?;
        if !rest.is_empty() {
            return Err(PeerError::Invalid(
                "trailing bytes after the certificate".to_string(),
            ));
        }
        let validity = certificate.validity();
        let not_after = validity.not_after.timestamp();
        if now > not_after {
            return Err(PeerError::Expired);
        }
        if now < validity.not_before.timestamp() {
            return Err(PeerError::NotYetValid);
        }
        let names = Names::parse(&certificate)?;
        let serial = serial_hex(certificate.raw_serial());

        let row =
            sqlx::query("SELECT kind, subject_id, revoked_at FROM certificates WHERE serial = $1")
                .bind(&serial)
                .fetch_optional(self.inner.db.pool())
                .await?;
        let Some(row) = row else {
            return Err(PeerError::UnknownSerial);
        };
        let kind: String = row.try_get(0)?;
        let subject_id: String = row.try_get(1)?;
        let revoked_at: Option<i64> = row.try_get(2)?;
        if revoked_at.is_some() {
            return Err(PeerError::Revoked);
        }
        let kind = CertificateKind::parse(&kind).ok_or_else(|| {
            PeerError::Invalid(format!("serial {serial} has unknown kind {kind:?}"))
        })?;
        let identity = names.into_identity(serial, kind, &subject_id)?;
        self.inner.peers.insert(
            key,
            CacheEntry {
                identity: identity.clone(),
                subject_id,
                not_after,
                cached_at: started,
            },
        );
        Ok(identity)
    }
}

/// The `agyn://` URI names of a certificate.
#[derive(Default)]
struct Names {
    identity: Option<(String, IdentityKind)>,
    device_id: Option<String>,
    workload_id: Option<String>,
    component: Option<String>,
}

impl Names {
    fn parse(certificate: &X509Certificate<'_>) -> Result<Self, PeerError> {
        let mut names = Self::default();
        let extension = certificate
            .subject_alternative_name()
            .map_err(|error| PeerError::Invalid(format!("subject alternative names: {error}")))?;
        let Some(extension) = extension else {
            return Ok(names);
        };
        for name in &extension.value.general_names {
            let GeneralName::URI(uri) = name else {
                continue;
            };
            let Some(path) = uri.strip_prefix("agyn://") else {
                continue;
            };
            let (slot, value) = if let Some(rest) = path.strip_prefix("identity/") {
                let (kind, id) = rest.split_once('/').ok_or_else(|| {
                    PeerError::Invalid(format!("identity name {uri:?} has no id"))
                })?;
                let kind = IdentityKind::parse(kind).ok_or_else(|| {
                    PeerError::Invalid(format!("identity name {uri:?} has an unknown type"))
                })?;
                if names.identity.is_some() {
                    return Err(PeerError::Invalid(
                        "more than one identity name".to_string(),
                    ));
                }
                names.identity = Some((checked_segment(uri, id)?, kind));
                continue;
            } else if let Some(id) = path.strip_prefix("device/") {
                (&mut names.device_id, id)
            } else if let Some(id) = path.strip_prefix("workload/") {
                (&mut names.workload_id, id)
            } else if let Some(name) = path.strip_prefix("component/") {
                (&mut names.component, name)
            } else {
                return Err(PeerError::Invalid(format!("unknown name {uri:?}")));
            };
            if slot.is_some() {
                return Err(PeerError::Invalid(format!("repeated name {uri:?}")));
            }
            *slot = Some(checked_segment(uri, value)?);
        }
        Ok(names)
    }

    /// Checks the names against the kind and subject recorded for the
    /// serial, and builds the identity.
    fn into_identity(
        self,
        serial: String,
        kind: CertificateKind,
        subject_id: &str,
    ) -> Result<PeerIdentity, PeerError> {
        let identity_kind = self.identity.as_ref().map(|(_, kind)| *kind);
        let identity_id = self.identity.as_ref().map(|(id, _)| id.as_str());
        let expected_subject = match kind {
            CertificateKind::Device if identity_kind == Some(IdentityKind::User) => {
                self.device_id.as_deref()
            }
            CertificateKind::Runner if identity_kind == Some(IdentityKind::Runner) => identity_id,
            CertificateKind::App if identity_kind == Some(IdentityKind::App) => identity_id,
            CertificateKind::Workload if identity_kind == Some(IdentityKind::Agent) => {
                self.workload_id.as_deref()
            }
            CertificateKind::Component if identity_kind.is_none() => self.component.as_deref(),
            CertificateKind::Server => {
                return Err(PeerError::Invalid(
                    "a server certificate is not a client credential".to_string(),
                ));
            }
            _ => None,
        };
        if expected_subject != Some(subject_id) {
            return Err(PeerError::Invalid(format!(
                "names do not match the {kind} certificate recorded for serial {serial}"
            )));
        }
        Ok(PeerIdentity {
            serial,
            kind,
            identity: self.identity,
            device_id: self.device_id,
            workload_id: self.workload_id,
            component: self.component,
        })
    }
}

fn checked_segment(uri: &str, value: &str) -> Result<String, PeerError> {
    if value.is_empty() || value.contains('/') {
        return Err(PeerError::Invalid(format!("malformed name {uri:?}")));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeySource, MasterKey, Subject};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    #[tokio::test]
    async fn validity_window_is_checked() {
        let db = agyn_store::testing::fresh(agyn_store::Backend::Sqlite).await;
        let pki = Pki::load_or_create(db, &MasterKey::generate())
            .await
            .unwrap();
        let issued = pki
            .issue(
                &Subject::Runner {
                    runner_id: "runner-1".to_string(),
                },
                KeySource::Generate,
            )
            .await
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        let not_after = issued.not_after / 1_000_000;
        let not_before = issued.not_before / 1_000_000;

        let error = pki.verify_peer_at(&der, not_before - 1).await.unwrap_err();
        assert!(matches!(error, PeerError::NotYetValid), "{error:?}");
        let error = pki.verify_peer_at(&der, not_after + 1).await.unwrap_err();
        assert!(matches!(error, PeerError::Expired), "{error:?}");
        assert_eq!(error.to_string(), "credential expired");

        // A cached result is still bounded by the certificate's expiry.
        pki.verify_peer_at(&der, not_after).await.unwrap();
        let error = pki.verify_peer_at(&der, not_after + 1).await.unwrap_err();
        assert!(matches!(error, PeerError::Expired), "{error:?}");
    }
}
