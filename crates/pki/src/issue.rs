//! Issuing, recording and revoking certificates.

use std::net::IpAddr;

use agyn_core::{Error, IdentityKind, Secret};
use agyn_store::sqlx::{self, AnyConnection};
use rand::RngCore as _;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::{CertificateKind, Pki, csr};

/// Host names of the listener certificate when the operator names none.
pub const DEFAULT_SERVER_HOSTNAMES: &[&str] = &["localhost", "127.0.0.1"];

/// How far `not_before` is set in the past, so that a replica whose clock
/// is slightly behind the issuer's accepts a new certificate at once.
pub(crate) const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Length of a random serial number in bytes. The top bit is cleared so
/// the DER integer is positive, leaving 126 random bits.
const SERIAL_LEN: usize = 16;

/// Maximum length of an id or name in a URI subject alternative name.
const MAX_ID_LEN: usize = 128;

/// The holder of a certificate. Each variant fixes the certificate's
/// names, extended key usages and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user's device: `agyn://identity/user/<user_id>` and
    /// `agyn://device/<device_id>`, client auth, 365 days.
    Device { user_id: String, device_id: String },
    /// A runner: `agyn://identity/runner/<runner_id>`, client and server
    /// auth, 30 days.
    Runner { runner_id: String },
    /// An app: `agyn://identity/app/<app_identity_id>`, client auth,
    /// 30 days.
    App { app_identity_id: String },
    /// An agent workload: `agyn://identity/agent/<agent_id>` and
    /// `agyn://workload/<workload_id>`, client auth, 30 days.
    Workload {
        agent_id: String,
        workload_id: String,
    },
    /// A platform component: `agyn://component/<name>`, client auth,
    /// 365 days.
    Component { name: String },
    /// A TLS listener: each host name becomes a DNS or IP address
    /// subject alternative name, server auth, 365 days.
    Server { hostnames: Vec<String> },
}

/// The source of a certificate's key pair.
#[derive(Debug, Clone, Copy)]
pub enum KeySource<'a> {
    /// The platform generates an ECDSA P-256 key and returns it once.
    Generate,
    /// The caller keeps its key and sends a PEM PKCS #10 request, whose key
    /// must be ECDSA P-256, Ed25519 or RSA of at least 2048 bits. Only the
    /// key and the signature are used.
    Csr(&'a str),
}

/// A certificate just issued and recorded.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Serial number as lowercase hex, the `certificates` primary key.
    pub serial: String,
    pub kind: CertificateKind,
    pub certificate_pem: String,
    /// The PKCS #8 PEM private key, present only for
    /// [`KeySource::Generate`]. The platform keeps no copy.
    pub private_key_pem: Option<Secret<String>>,
    /// The platform CA certificate, for the holder's trust store.
    pub ca_certificate_pem: String,
    /// Start of validity, in microseconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, in microseconds since the Unix epoch.
    pub not_after: i64,
}

impl IssuedCertificate {
    /// Builds the `identity_json` that enrollment returns to runners and
    /// apps: a JSON object with `identity_id`, `certificate_pem`, `ca_pem`,
    /// `expires_at` (RFC 3339) and, for a generated key only,
    /// `private_key_pem`.
    pub fn identity_json(&self, identity_id: &str) -> Secret<Vec<u8>> {
        let mut identity = serde_json::json!({
            "identity_id": identity_id,
            "certificate_pem": self.certificate_pem,
            "ca_pem": self.ca_certificate_pem,
            "expires_at": agyn_core::time::rfc3339(self.not_after),
        });
        if let Some(private_key) = &self.private_key_pem {
            identity["private_key_pem"] = serde_json::json!(private_key.expose());
        }
        Secret::new(serde_json::to_vec(&identity).expect("a JSON value serializes"))
    }
}

/// The columns of a `certificates` row that follow from the subject.
pub(crate) struct Record {
    pub kind: CertificateKind,
    pub subject_id: String,
    pub identity: Option<(String, IdentityKind)>,
    pub workload_id: Option<String>,
}

impl Subject {
    pub fn kind(&self) -> CertificateKind {
        match self {
            Self::Device { .. } => CertificateKind::Device,
            Self::Runner { .. } => CertificateKind::Runner,
            Self::App { .. } => CertificateKind::App,
            Self::Workload { .. } => CertificateKind::Workload,
            Self::Component { .. } => CertificateKind::Component,
            Self::Server { .. } => CertificateKind::Server,
        }
    }

    /// Returns the listener subject for [`DEFAULT_SERVER_HOSTNAMES`].
    pub fn default_server() -> Self {
        Self::Server {
            hostnames: DEFAULT_SERVER_HOSTNAMES
                .iter()
                .map(|name| name.to_string())
                .collect(),
        }
    }

    fn validity(&self) -> Duration {
        match self {
            Self::Device { .. } | Self::Component { .. } | Self::Server { .. } => {
                Duration::days(365)
            }
            Self::Runner { .. } | Self::App { .. } | Self::Workload { .. } => Duration::days(30),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        match self {
            Self::Device { user_id, device_id } => {
                validate_id("user_id", user_id)?;
                validate_id("device_id", device_id)
            }
            Self::Runner { runner_id } => validate_id("runner_id", runner_id),
            Self::App { app_identity_id } => validate_id("app_identity_id", app_identity_id),
            Self::Workload {
                agent_id,
                workload_id,
            } => {
                validate_id("agent_id", agent_id)?;
                validate_id("workload_id", workload_id)
            }
            Self::Component { name } => validate_id("name", name),
            Self::Server { hostnames } => {
                if hostnames.is_empty() {
                    return Err(Error::invalid_field(
                        "hostnames",
                        "must contain at least one DNS name or IP address",
                    ));
                }
                Ok(())
            }
        }
    }

    pub(crate) fn record(&self) -> Record {
        let (subject_id, identity, workload_id) = match self {
            Self::Device { user_id, device_id } => (
                device_id.clone(),
                Some((user_id.clone(), IdentityKind::User)),
                None,
            ),
            Self::Runner { runner_id } => (
                runner_id.clone(),
                Some((runner_id.clone(), IdentityKind::Runner)),
                None,
            ),
            Self::App { app_identity_id } => (
                app_identity_id.clone(),
                Some((app_identity_id.clone(), IdentityKind::App)),
                None,
            ),
            Self::Workload {
                agent_id,
                workload_id,
            } => (
                workload_id.clone(),
                Some((agent_id.clone(), IdentityKind::Agent)),
                Some(workload_id.clone()),
            ),
            Self::Component { name } => (name.clone(), None, None),
            Self::Server { hostnames } => (hostnames.join(","), None, None),
        };
        Record {
            kind: self.kind(),
            subject_id,
            identity,
            workload_id,
        }
    }

    /// Returns the common name, which only helps people read the
    /// certificate.
    fn common_name(&self) -> String {
        match self {
            Self::Device { device_id, .. } => format!("agyn device {device_id}"),
            Self::Runner { runner_id } => format!("agyn runner {runner_id}"),
            Self::App { app_identity_id } => format!("agyn app {app_identity_id}"),
            Self::Workload { workload_id, .. } => format!("agyn workload {workload_id}"),
            Self::Component { name } => format!("agyn component {name}"),
            Self::Server { hostnames } => hostnames[0].clone(),
        }
    }

    fn subject_alt_names(&self) -> Result<Vec<SanType>, Error> {
        let uris = match self {
            Self::Device { user_id, device_id } => vec![
                format!("agyn://identity/user/{user_id}"),
                format!("agyn://device/{device_id}"),
            ],
            Self::Runner { runner_id } => vec![format!("agyn://identity/runner/{runner_id}")],
            Self::App { app_identity_id } => {
                vec![format!("agyn://identity/app/{app_identity_id}")]
            }
            Self::Workload {
                agent_id,
                workload_id,
            } => vec![
                format!("agyn://identity/agent/{agent_id}"),
                format!("agyn://workload/{workload_id}"),
            ],
            Self::Component { name } => vec![format!("agyn://component/{name}")],
            Self::Server { hostnames } => return server_names(hostnames),
        };
        uris.into_iter()
            .map(|uri| {
                let uri = uri
                    .try_into()
                    .map_err(|error| Error::internal("failed to encode a URI name", error))?;
                Ok(SanType::URI(uri))
            })
            .collect()
    }

    fn extended_key_usages(&self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Self::Runner { .. } => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            Self::Server { .. } => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Self::Device { .. }
            | Self::App { .. }
            | Self::Workload { .. }
            | Self::Component { .. } => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// Checks that an id fits a URI path segment without escaping: RFC 3986
/// unreserved characters only.
fn validate_id(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid_field(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::invalid_field(
            field,
            &format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    let unreserved = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
    if !value.chars().all(unreserved) {
        return Err(Error::invalid_field(
            field,
            "may contain only ASCII letters, digits and - . _ ~",
        ));
    }
    Ok(())
}

fn server_names(hostnames: &[String]) -> Result<Vec<SanType>, Error> {
    hostnames
        .iter()
        .map(|hostname| {
            if let Ok(address) = hostname.parse::<IpAddr>() {
                return Ok(SanType::IpAddress(address));
            }
            let valid = !hostname.is_empty()
                && hostname.len() <= 253
                && hostname
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
            if !valid {
                return Err(Error::invalid_field(
                    "hostnames",
                    &format!("{hostname:?} is neither a DNS name nor an IP address"),
                ));
            }
            let name = hostname.as_str().try_into().map_err(|_| {
                Error::invalid_field("hostnames", &format!("{hostname:?} is not ASCII"))
            })?;
            Ok(SanType::DnsName(name))
        })
        .collect()
}

/// Returns the current UTC time truncated to whole seconds, the precision
/// of certificate validity times.
pub(crate) fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .expect("zero nanoseconds is always valid")
}

/// Returns a random positive serial number of [`SERIAL_LEN`] bytes whose
/// first byte is never zero, so its DER encoding is exactly these bytes.
pub(crate) fn random_serial() -> [u8; SERIAL_LEN] {
    let mut serial = [0u8; SERIAL_LEN];
    rand::rng().fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// Returns the lowercase hex form of a serial number, as stored in
/// `certificates.serial`.
pub(crate) fn serial_hex(serial: &[u8]) -> String {
    serial.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn micros(time: OffsetDateTime) -> i64 {
    time.unix_timestamp() * 1_000_000
}

impl Pki {
    /// Issues a certificate to `subject` and records it, in its own
    /// transaction.
    pub async fn issue(
        &self,
        subject: &Subject,
        key: KeySource<'_>,
    ) -> Result<IssuedCertificate, Error> {
        let mut transaction = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(|error| Error::internal("failed to start a transaction", error))?;
        let issued = self.issue_in(&mut transaction, subject, key).await?;
        transaction
            .commit()
            .await
            .map_err(|error| Error::internal("failed to record the certificate", error))?;
        Ok(issued)
    }

    /// Issues a certificate to `subject` and records it in `certificates`
    /// on `connection`, so a caller can make issuance part of its own
    /// transaction. The certificate exists for verification only once
    /// that transaction commits.
    ///
    /// Invalid ids, host names and CSRs return `invalid_argument`.
    pub async fn issue_in(
        &self,
        connection: &mut AnyConnection,
        subject: &Subject,
        key: KeySource<'_>,
    ) -> Result<IssuedCertificate, Error> {
        subject.validate()?;
        let (public_key, private_key_pem) = match key {
            KeySource::Generate => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|error| Error::internal("failed to generate a key pair", error))?;
                let public_key =
                    rcgen::SubjectPublicKeyInfo::from_der(&key.subject_public_key_info())
                        .map_err(|error| Error::internal("failed to encode a public key", error))?;
                (public_key, Some(Secret::new(key.serialize_pem())))
            }
            KeySource::Csr(pem) => (csr::public_key(pem)?, None),
        };

        let now = now_seconds();
        let not_before = now - CLOCK_SKEW;
        let not_after = now + subject.validity();
        let serial = random_serial();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, subject.common_name());
        params.distinguished_name = name;
        params.subject_alt_names = subject.subject_alt_names()?;
        params.extended_key_usages = subject.extended_key_usages();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        let certificate = params
            .signed_by(&public_key, &self.inner.issuer)
            .map_err(|error| Error::internal("failed to sign the certificate", error))?;

        let record = subject.record();
        let serial = serial_hex(&serial);
        let (identity_id, identity_type) = match &record.identity {
            Some((id, kind)) => (Some(id.clone()), Some(kind.as_str().to_string())),
            None => (None, None),
        };
        sqlx::query(
            "INSERT INTO certificates (serial, kind, subject_id, identity_id, identity_type, \
             workload_id, not_before, not_after, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)",
        )
        .bind(&serial)
        .bind(record.kind.as_str())
        .bind(&record.subject_id)
        .bind(identity_id)
        .bind(identity_type)
        .bind(record.workload_id.clone())
        .bind(micros(not_before))
        .bind(micros(not_after))
        .bind(agyn_core::time::now_micros())
        .execute(&mut *connection)
        .await
        .map_err(|error| Error::internal("failed to record the certificate", error))?;
        tracing::info!(
            serial = %serial,
            kind = %record.kind,
            subject_id = %record.subject_id,
            "Certificate issued"
        );
        Ok(IssuedCertificate {
            serial,
            kind: record.kind,
            certificate_pem: certificate.pem(),
            private_key_pem,
            ca_certificate_pem: self.inner.ca_certificate_pem.clone(),
            not_before: micros(not_before),
            not_after: micros(not_after),
        })
    }

    /// Revokes every unrevoked certificate of one subject, in its own
    /// transaction. Returns how many were revoked.
    pub async fn revoke_subject(
        &self,
        kind: CertificateKind,
        subject_id: &str,
    ) -> Result<u64, Error> {
        let mut connection =
            self.inner.db.pool().acquire().await.map_err(|error| {
                Error::internal("failed to acquire a database connection", error)
            })?;
        self.revoke_subject_in(&mut connection, kind, subject_id)
            .await
    }

    /// Revokes every unrevoked certificate of one subject on `connection`,
    /// such as a device's certificates when it is deleted, by setting
    /// `revoked_at`. Returns how many were revoked.
    ///
    /// This process's peer cache drops the subject's entries at once and
    /// caches nothing for it during the next 30 seconds. So the revocation
    /// applies here as soon as the caller's transaction commits, provided
    /// the commit comes within those 30 seconds. Other replicas apply it
    /// within [`crate::PEER_CACHE_TTL`].
    pub async fn revoke_subject_in(
        &self,
        connection: &mut AnyConnection,
        kind: CertificateKind,
        subject_id: &str,
    ) -> Result<u64, Error> {
        self.inner.peers.forget_subject(kind, subject_id);
        let revoked = sqlx::query(
            "UPDATE certificates SET revoked_at = $1 \
             WHERE kind = $2 AND subject_id = $3 AND revoked_at IS NULL",
        )
        .bind(agyn_core::time::now_micros())
        .bind(kind.as_str())
        .bind(subject_id)
        .execute(&mut *connection)
        .await
        .map_err(|error| Error::internal("failed to revoke certificates", error))?
        .rows_affected();
        tracing::info!(kind = %kind, subject_id, revoked, "Certificates revoked");
        Ok(revoked)
    }

    /// Revokes one certificate by serial (lowercase hex) on `connection`.
    /// Returns false when it was unknown or already revoked. The peer
    /// cache behaves as for [`Pki::revoke_subject_in`].
    pub async fn revoke_serial_in(
        &self,
        connection: &mut AnyConnection,
        serial: &str,
    ) -> Result<bool, Error> {
        self.inner.peers.forget_serial(serial);
        let revoked = sqlx::query(
            "UPDATE certificates SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL",
        )
        .bind(agyn_core::time::now_micros())
        .bind(serial)
        .execute(&mut *connection)
        .await
        .map_err(|error| Error::internal("failed to revoke the certificate", error))?
        .rows_affected();
        if revoked > 0 {
            tracing::info!(serial, "Certificate revoked");
        }
        Ok(revoked > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_positive_and_full_length() {
        for _ in 0..100 {
            let serial = random_serial();
            assert!(serial[0] & 0x80 == 0, "serial must be positive");
            assert!(serial[0] != 0, "first byte must not be zero");
            assert_eq!(serial_hex(&serial).len(), SERIAL_LEN * 2);
        }
    }

    #[test]
    fn ids_outside_unreserved_characters_are_rejected() {
        for bad in ["", "a/b", "a b", "é", "a?b", "a#b", "a%2f"] {
            let subject = Subject::Runner {
                runner_id: bad.to_string(),
            };
            assert!(subject.validate().is_err(), "{bad:?} must be rejected");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(
            Subject::Component { name: long }.validate().is_err(),
            "overlong name must be rejected"
        );
        let ok = Subject::Workload {
            agent_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_string(),
            workload_id: "w_1.x~y".to_string(),
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn server_names_split_dns_and_ip() {
        let names = server_names(&["localhost".to_string(), "::1".to_string()]).unwrap();
        assert!(matches!(&names[0], SanType::DnsName(name) if name.as_str() == "localhost"));
        assert!(matches!(names[1], SanType::IpAddress(address) if address.is_loopback()));
        assert!(server_names(&["bad name".to_string()]).is_err());
        assert!(Subject::Server { hostnames: vec![] }.validate().is_err());
    }
}
