//! Creating and loading the `platform_ca` row.

use agyn_store::Db;
use agyn_store::sqlx::{self, Row as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::Duration;
use x509_parser::prelude::FromDer as _;

use crate::{MasterKey, PkiError, issue};

/// Subject common name of the platform CA.
pub(crate) const CA_COMMON_NAME: &str = "Agyn Platform CA";

/// Validity of the platform CA: 10 years of 365 days.
const CA_VALIDITY: Duration = Duration::days(3650);

/// Returns the associated data that binds a sealed CA key to its
/// certificate, so a key cannot be moved to another certificate's row.
fn sealing_context(certificate_pem: &str) -> Vec<u8> {
    let mut context = b"agyn platform_ca private key\n".to_vec();
    context.extend_from_slice(certificate_pem.as_bytes());
    context
}

pub(crate) async fn load_or_create(
    db: &Db,
    master_key: &MasterKey,
) -> Result<(String, KeyPair), PkiError> {
    if let Some(stored) = select(db).await? {
        return open(stored, master_key);
    }
    let (certificate_pem, key) = generate()?;
    let sealed = master_key.seal(key.serialized_der(), &sealing_context(&certificate_pem));
    let inserted = sqlx::query(
        "INSERT INTO platform_ca (id, certificate_pem, sealed_private_key, created_at) \
         VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&certificate_pem)
    .bind(BASE64.encode(&sealed))
    .bind(agyn_core::time::now_micros())
    .execute(db.pool())
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::info!("Platform CA created");
    }
    // Whether this insert won or another replica's did, the stored row is
    // the cluster's CA.
    let stored = select(db).await?.ok_or_else(|| {
        PkiError::InvalidCa("platform_ca has no row right after an insert".to_string())
    })?;
    open(stored, master_key)
}

struct StoredCa {
    certificate_pem: String,
    sealed_private_key: String,
}

async fn select(db: &Db) -> Result<Option<StoredCa>, PkiError> {
    let row =
        sqlx::query("SELECT certificate_pem, sealed_private_key FROM platform_ca WHERE id = 1")
            .fetch_optional(db.pool())
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(StoredCa {
        certificate_pem: row.try_get(0)?,
        sealed_private_key: row.try_get(1)?,
    }))
}

/// Opens the sealed key and checks that it belongs to the certificate.
fn open(stored: StoredCa, master_key: &MasterKey) -> Result<(String, KeyPair), PkiError> {
    let sealed = BASE64
        .decode(stored.sealed_private_key.trim())
        .map_err(|error| {
            PkiError::InvalidCa(format!("sealed private key is not base64: {error}"))
        })?;
    let pkcs8 = master_key
        .open(&sealed, &sealing_context(&stored.certificate_pem))
        .map_err(|_| PkiError::MasterKeyMismatch)?;
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8),
        &PKCS_ECDSA_P256_SHA256,
    )
    .map_err(|error| PkiError::InvalidCa(format!("private key: {error}")))?;
    let der = certificate_der(&stored.certificate_pem)?;
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|error| PkiError::InvalidCa(format!("certificate: {error}")))?;
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::InvalidCa(
            "the private key does not match the certificate".to_string(),
        ));
    }
    Ok((stored.certificate_pem, key))
}

pub(crate) fn certificate_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|error| PkiError::InvalidCa(format!("certificate PEM: {error}")))
}

fn generate() -> Result<(String, KeyPair), PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = issue::now_seconds();
    params.not_before = now - issue::CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&issue::random_serial()));
    let certificate = params.self_signed(&key)?;
    Ok((certificate.pem(), key))
}
