//! The platform CA against real SQLite and PostgreSQL databases: creation
//! and loading, issuing every kind, CSR checks, verification and
//! revocation. Every test runs once per backend.

use agyn_core::IdentityKind;
use agyn_core::error::Code;
use agyn_pki::{
    CertificateKind, IssuedCertificate, KeySource, MasterKey, PEER_CACHE_TTL, PeerError, Pki,
    PkiError, Subject,
};
use agyn_store::on_both_backends;
use agyn_store::sqlx::{self, Row as _};
use agyn_store::{Backend, Db};
use base64::Engine as _;
use rcgen::{
    CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ED25519, PKCS_RSA_SHA256, PublicKeyData, SanType, SignatureAlgorithm, SigningKey,
};
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer as _;

on_both_backends!(
    ca_is_created_once,
    concurrent_loads_share_one_ca,
    wrong_master_key_is_rejected,
    every_kind_has_its_names,
    server_certificate_names_hosts,
    csr_keys_are_accepted,
    csr_subject_and_extensions_are_ignored,
    unsupported_csr_is_rejected,
    invalid_ids_are_rejected,
    revoked_subject_is_rejected,
    revoked_serial_is_rejected,
    unrecorded_certificate_is_rejected,
    rolled_back_issue_is_not_recorded,
    revocation_in_transaction_applies_on_commit,
    other_replica_sees_revocation_after_ttl,
);

async fn pki_on(backend: Backend) -> (Db, Pki) {
    let db = agyn_store::testing::fresh(backend).await;
    let pki = Pki::load_or_create(db.clone(), &MasterKey::generate())
        .await
        .unwrap();
    (db, pki)
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, certificate) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    certificate
}

fn uris(certificate: &X509Certificate<'_>) -> Vec<String> {
    let names = certificate
        .subject_alternative_name()
        .unwrap()
        .expect("subject alternative names");
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

async fn count(db: &Db, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

fn device(device_id: &str) -> Subject {
    Subject::Device {
        user_id: "user-1".to_string(),
        device_id: device_id.to_string(),
    }
}

async fn ca_is_created_once(backend: Backend) {
    let db = agyn_store::testing::fresh(backend).await;
    let key = MasterKey::generate();
    let first = Pki::load_or_create(db.clone(), &key).await.unwrap();
    let second = Pki::load_or_create(db.clone(), &key).await.unwrap();
    assert_eq!(first.ca_certificate_pem(), second.ca_certificate_pem());
    assert_eq!(count(&db, "platform_ca").await, 1);

    let der = der_of(first.ca_certificate_pem());
    let ca = parse(&der);
    assert_eq!(ca.subject().to_string(), "CN=Agyn Platform CA");
    assert_eq!(ca.issuer(), ca.subject());
    assert!(ca.is_ca());
    ca.verify_signature(None).expect("self-signed");
    let validity = ca.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    // 3650 days from now, starting 5 minutes in the past.
    assert_eq!(days, 3650);
    let key_info = ca.public_key();
    assert_eq!(key_info.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = key_info
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);

    // A certificate issued by the first instance verifies on the second.
    let issued = first
        .issue(&device("d1"), KeySource::Generate)
        .await
        .unwrap();
    let peer = second
        .verify_peer(&der_of(&issued.certificate_pem))
        .await
        .unwrap();
    assert_eq!(peer.device_id.as_deref(), Some("d1"));
}

async fn concurrent_loads_share_one_ca(backend: Backend) {
    let db = agyn_store::testing::fresh(backend).await;
    let key = MasterKey::generate();
    let (first, second, third) = tokio::join!(
        Pki::load_or_create(db.clone(), &key),
        Pki::load_or_create(db.clone(), &key),
        Pki::load_or_create(db.clone(), &key),
    );
    let (first, second, third) = (first.unwrap(), second.unwrap(), third.unwrap());
    assert_eq!(first.ca_certificate_pem(), second.ca_certificate_pem());
    assert_eq!(first.ca_certificate_pem(), third.ca_certificate_pem());
    assert_eq!(count(&db, "platform_ca").await, 1);
}

async fn wrong_master_key_is_rejected(backend: Backend) {
    let (db, _pki) = pki_on(backend).await;
    let error = Pki::load_or_create(db, &MasterKey::generate())
        .await
        .unwrap_err();
    assert!(matches!(error, PkiError::MasterKeyMismatch), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("the master key does not match the one this database was created with"),
        "{error}"
    );
}

struct Expected {
    subject: Subject,
    kind: CertificateKind,
    uris: Vec<&'static str>,
    client_auth: bool,
    server_auth: bool,
    days: i64,
    subject_id: &'static str,
    identity: Option<(&'static str, &'static str)>,
    workload_id: Option<&'static str>,
}

async fn every_kind_has_its_names(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let ca_der = der_of(pki.ca_certificate_pem());
    let ca = parse(&ca_der);
    let cases = vec![
        Expected {
            subject: Subject::Device {
                user_id: "u1".to_string(),
                device_id: "d1".to_string(),
            },
            kind: CertificateKind::Device,
            uris: vec!["agyn://identity/user/u1", "agyn://device/d1"],
            client_auth: true,
            server_auth: false,
            days: 365,
            subject_id: "d1",
            identity: Some(("u1", "user")),
            workload_id: None,
        },
        Expected {
            subject: Subject::Runner {
                runner_id: "r1".to_string(),
            },
            kind: CertificateKind::Runner,
            uris: vec!["agyn://identity/runner/r1"],
            client_auth: true,
            server_auth: true,
            days: 30,
            subject_id: "r1",
            identity: Some(("r1", "runner")),
            workload_id: None,
        },
        Expected {
            subject: Subject::App {
                app_identity_id: "a1".to_string(),
            },
            kind: CertificateKind::App,
            uris: vec!["agyn://identity/app/a1"],
            client_auth: true,
            server_auth: false,
            days: 30,
            subject_id: "a1",
            identity: Some(("a1", "app")),
            workload_id: None,
        },
        Expected {
            subject: Subject::Workload {
                agent_id: "g1".to_string(),
                workload_id: "w1".to_string(),
            },
            kind: CertificateKind::Workload,
            uris: vec!["agyn://identity/agent/g1", "agyn://workload/w1"],
            client_auth: true,
            server_auth: false,
            days: 30,
            subject_id: "w1",
            identity: Some(("g1", "agent")),
            workload_id: Some("w1"),
        },
        Expected {
            subject: Subject::Component {
                name: "orchestrator".to_string(),
            },
            kind: CertificateKind::Component,
            uris: vec!["agyn://component/orchestrator"],
            client_auth: true,
            server_auth: false,
            days: 365,
            subject_id: "orchestrator",
            identity: None,
            workload_id: None,
        },
    ];
    for case in cases {
        let label = case.kind.as_str();
        let issued = pki.issue(&case.subject, KeySource::Generate).await.unwrap();
        assert_eq!(issued.kind, case.kind, "{label}");
        assert_eq!(issued.ca_certificate_pem, pki.ca_certificate_pem());
        let der = der_of(&issued.certificate_pem);
        let certificate = parse(&der);
        assert_eq!(uris(&certificate), case.uris, "{label}");
        assert_eq!(certificate.issuer(), ca.subject(), "{label}");
        certificate
            .verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|error| panic!("{label}: signed by the CA: {error}"));
        assert!(!certificate.is_ca(), "{label}");

        let usage = certificate.extended_key_usage().unwrap().unwrap().value;
        assert_eq!(usage.client_auth, case.client_auth, "{label} client auth");
        assert_eq!(usage.server_auth, case.server_auth, "{label} server auth");

        let validity = certificate.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        assert_eq!(issued.not_before, not_before * 1_000_000, "{label}");
        assert_eq!(issued.not_after, not_after * 1_000_000, "{label}");
        let now = agyn_core::time::now_micros() / 1_000_000;
        assert!(not_before <= now, "{label}");
        assert!(now - not_before <= 301, "{label}");
        let lifetime = not_after - now;
        assert!(
            (case.days * 86_400 - 5..=case.days * 86_400).contains(&lifetime),
            "{label}: lifetime {lifetime} s"
        );

        let serial = certificate.raw_serial();
        assert!(
            serial.len() >= 8,
            "{label}: serial of {} bytes",
            serial.len()
        );
        assert_eq!(serial[0] & 0x80, 0, "{label}: serial must be positive");
        assert_eq!(issued.serial, hex(serial), "{label}");

        // The returned key is the certificate's key.
        let key_pem = issued.private_key_pem.as_ref().expect("generated key");
        let key = KeyPair::from_pem(key_pem.expose()).unwrap();
        assert_eq!(
            key.public_key_raw(),
            certificate.public_key().subject_public_key.data.as_ref(),
            "{label}"
        );

        let row = sqlx::query(
            "SELECT kind, subject_id, identity_id, identity_type, workload_id, \
             not_before, not_after, revoked_at FROM certificates WHERE serial = $1",
        )
        .bind(&issued.serial)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>(0), case.kind.as_str(), "{label}");
        assert_eq!(row.get::<String, _>(1), case.subject_id, "{label}");
        let identity = (
            row.get::<Option<String>, _>(2),
            row.get::<Option<String>, _>(3),
        );
        let expected_identity = match case.identity {
            Some((id, kind)) => (Some(id.to_string()), Some(kind.to_string())),
            None => (None, None),
        };
        assert_eq!(identity, expected_identity, "{label}");
        assert_eq!(
            row.get::<Option<String>, _>(4).as_deref(),
            case.workload_id,
            "{label}"
        );
        assert_eq!(row.get::<i64, _>(5), issued.not_before, "{label}");
        assert_eq!(row.get::<i64, _>(6), issued.not_after, "{label}");
        assert_eq!(row.get::<Option<i64>, _>(7), None, "{label}");

        let peer = pki.verify_peer(&der).await.unwrap();
        assert_eq!(peer.serial, issued.serial, "{label}");
        assert_eq!(peer.kind, case.kind, "{label}");
        assert_eq!(
            peer.identity
                .as_ref()
                .map(|(id, kind)| (id.as_str(), kind.as_str())),
            case.identity,
            "{label}"
        );
        assert_eq!(peer.workload_id.as_deref(), case.workload_id, "{label}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn server_certificate_names_hosts(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let issued = pki
        .issue(&Subject::default_server(), KeySource::Generate)
        .await
        .unwrap();
    let der = der_of(&issued.certificate_pem);
    let certificate = parse(&der);

    let names = certificate
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(names.len(), 2);
    assert!(matches!(names[0], GeneralName::DNSName("localhost")));
    assert!(matches!(names[1], GeneralName::IPAddress([127, 0, 0, 1])));

    let usage = certificate.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.server_auth);
    assert!(!usage.client_auth);

    let kind: String = sqlx::query("SELECT kind FROM certificates WHERE serial = $1")
        .bind(&issued.serial)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "server");

    // A server certificate is not a client credential.
    let error = pki.verify_peer(&der).await.unwrap_err();
    assert!(matches!(error, PeerError::Invalid(_)), "{error:?}");
}

/// An RSA key from the `rsa` crate, because ring cannot generate RSA keys
/// and refuses to sign with ones under 2048 bits.
struct RsaKey {
    private: rsa::RsaPrivateKey,
    public_der: Vec<u8>,
}

impl RsaKey {
    fn generate(bits: usize) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        Self {
            private,
            public_der,
        }
    }
}

impl PublicKeyData for RsaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_RSA_SHA256
    }
}

impl SigningKey for RsaKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(self.private.clone());
        Ok(signer.sign(message).to_vec())
    }
}

fn csr_pem(key: &impl SigningKey) -> String {
    let mut params = CertificateParams::new(vec!["requested.example.com".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "requested name");
    params.serialize_request(key).unwrap().pem().unwrap()
}

async fn issue_with_csr(pki: &Pki, csr: &str) -> Result<IssuedCertificate, agyn_core::Error> {
    let subject = Subject::App {
        app_identity_id: "app-1".to_string(),
    };
    pki.issue(&subject, KeySource::Csr(csr)).await
}

async fn csr_keys_are_accepted(backend: Backend) {
    let (_db, pki) = pki_on(backend).await;
    let p256 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ed25519 = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let rsa = RsaKey::generate(2048);
    let keys = [
        ("p256", csr_pem(&p256), p256.subject_public_key_info()),
        (
            "ed25519",
            csr_pem(&ed25519),
            ed25519.subject_public_key_info(),
        ),
        ("rsa2048", csr_pem(&rsa), rsa.subject_public_key_info()),
    ];
    for (label, csr, expected_key_info) in keys {
        let issued = issue_with_csr(&pki, &csr)
            .await
            .unwrap_or_else(|error| panic!("{label}: {error}"));
        assert!(issued.private_key_pem.is_none(), "{label}");
        let der = der_of(&issued.certificate_pem);
        let certificate = parse(&der);
        assert_eq!(certificate.public_key().raw, expected_key_info, "{label}");
        let peer = pki.verify_peer(&der).await.unwrap();
        assert_eq!(
            peer.identity,
            Some(("app-1".to_string(), IdentityKind::App)),
            "{label}"
        );
    }
}

async fn csr_subject_and_extensions_are_ignored(backend: Backend) {
    let (_db, pki) = pki_on(backend).await;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        "agyn://identity/user/admin".try_into().unwrap(),
    )];
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Agyn Platform CA");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let issued = issue_with_csr(&pki, &csr).await.unwrap();
    let der = der_of(&issued.certificate_pem);
    let certificate = parse(&der);
    assert_eq!(uris(&certificate), vec!["agyn://identity/app/app-1"]);
    assert!(!certificate.is_ca());
    assert_eq!(certificate.subject().to_string(), "CN=agyn app app-1");
}

async fn unsupported_csr_is_rejected(backend: Backend) {
    let (db, pki) = pki_on(backend).await;

    let rsa1024 = RsaKey::generate(1024);
    let error = issue_with_csr(&pki, &csr_pem(&rsa1024)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "csr_pem: RSA key has 1024 bits; at least 2048 are required"
    );

    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let error = issue_with_csr(&pki, &csr_pem(&p384)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "csr_pem: key must be ECDSA P-256, Ed25519 or RSA of at least 2048 bits"
    );

    // Flip a bit in the last byte, which is inside the signature.
    let p256 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem(&p256).as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = pem("CERTIFICATE REQUEST", &der);
    let error = issue_with_csr(&pki, &tampered).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.message(), "csr_pem: signature does not verify");

    let ed25519 = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(
        csr_pem(&ed25519).as_bytes(),
    )
    .unwrap()
    .as_ref()
    .to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    let error = issue_with_csr(&pki, &pem("CERTIFICATE REQUEST", &der))
        .await
        .unwrap_err();
    assert_eq!(error.message(), "csr_pem: signature does not verify");

    let error = issue_with_csr(&pki, "not a csr").await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "csr_pem: must be a PEM block labelled CERTIFICATE REQUEST"
    );

    let error = issue_with_csr(&pki, &pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00"))
        .await
        .unwrap_err();
    assert_eq!(error.message(), "csr_pem: is not a valid PKCS #10 request");

    assert_eq!(count(&db, "certificates").await, 0);
}

async fn invalid_ids_are_rejected(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let error = pki
        .issue(&device("a/b"), KeySource::Generate)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "device_id: may contain only ASCII letters, digits and - . _ ~"
    );
    let error = pki
        .issue(&Subject::Server { hostnames: vec![] }, KeySource::Generate)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(count(&db, "certificates").await, 0);
}

async fn revoked_subject_is_rejected(backend: Backend) {
    let (_db, pki) = pki_on(backend).await;
    let first = pki.issue(&device("d1"), KeySource::Generate).await.unwrap();
    let second = pki.issue(&device("d1"), KeySource::Generate).await.unwrap();
    let other = pki.issue(&device("d2"), KeySource::Generate).await.unwrap();
    let first_der = der_of(&first.certificate_pem);
    let second_der = der_of(&second.certificate_pem);
    let other_der = der_of(&other.certificate_pem);

    let peer = pki.verify_peer(&first_der).await.unwrap();
    assert_eq!(peer.kind, CertificateKind::Device);
    assert_eq!(
        peer.identity,
        Some(("user-1".to_string(), IdentityKind::User))
    );
    assert_eq!(peer.device_id.as_deref(), Some("d1"));
    assert_eq!(peer.workload_id, None);
    assert_eq!(peer.component, None);
    pki.verify_peer(&second_der).await.unwrap();
    pki.verify_peer(&other_der).await.unwrap();

    // Both verifications above are cached; revocation must still apply.
    let revoked = pki
        .revoke_subject(CertificateKind::Device, "d1")
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    for der in [&first_der, &second_der] {
        let error = pki.verify_peer(der).await.unwrap_err();
        assert!(matches!(error, PeerError::Revoked), "{error:?}");
        assert_eq!(error.to_string(), "credential revoked");
        let status: agyn_core::Error = error.into();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    pki.verify_peer(&other_der).await.unwrap();

    let again = pki
        .revoke_subject(CertificateKind::Device, "d1")
        .await
        .unwrap();
    assert_eq!(again, 0);
    // The same id under another kind is another subject.
    let unrelated = pki
        .revoke_subject(CertificateKind::Workload, "d2")
        .await
        .unwrap();
    assert_eq!(unrelated, 0);
    pki.verify_peer(&other_der).await.unwrap();
}

async fn revoked_serial_is_rejected(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let subject = Subject::Workload {
        agent_id: "agent-1".to_string(),
        workload_id: "w1".to_string(),
    };
    let issued = pki.issue(&subject, KeySource::Generate).await.unwrap();
    let der = der_of(&issued.certificate_pem);
    let peer = pki.verify_peer(&der).await.unwrap();
    assert_eq!(peer.workload_id.as_deref(), Some("w1"));

    let mut connection = db.pool().acquire().await.unwrap();
    assert!(
        pki.revoke_serial_in(&mut connection, &issued.serial)
            .await
            .unwrap()
    );
    assert!(
        !pki.revoke_serial_in(&mut connection, &issued.serial)
            .await
            .unwrap()
    );
    drop(connection);
    let error = pki.verify_peer(&der).await.unwrap_err();
    assert_eq!(error.to_string(), "credential revoked");
}

async fn unrecorded_certificate_is_rejected(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let issued = pki.issue(&device("d1"), KeySource::Generate).await.unwrap();
    sqlx::query("DELETE FROM certificates WHERE serial = $1")
        .bind(&issued.serial)
        .execute(db.pool())
        .await
        .unwrap();
    // Signed by this CA, but no longer recorded.
    let error = pki
        .verify_peer(&der_of(&issued.certificate_pem))
        .await
        .unwrap_err();
    assert!(matches!(error, PeerError::UnknownSerial), "{error:?}");
    assert_eq!(error.to_string(), "credential revoked");

    // Recorded by another cluster's CA only.
    let (_other_db, other) = pki_on(backend).await;
    let foreign = other
        .issue(&device("d1"), KeySource::Generate)
        .await
        .unwrap();
    let error = pki
        .verify_peer(&der_of(&foreign.certificate_pem))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "credential revoked");

    let error = pki.verify_peer(b"not a certificate").await.unwrap_err();
    assert!(matches!(error, PeerError::Invalid(_)), "{error:?}");
}

async fn rolled_back_issue_is_not_recorded(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let mut transaction = db.begin_write().await.unwrap();
    let issued = pki
        .issue_in(&mut transaction, &device("d1"), KeySource::Generate)
        .await
        .unwrap();
    transaction.rollback().await.unwrap();
    assert_eq!(count(&db, "certificates").await, 0);
    let error = pki
        .verify_peer(&der_of(&issued.certificate_pem))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "credential revoked");

    let mut transaction = db.begin_write().await.unwrap();
    let issued = pki
        .issue_in(&mut transaction, &device("d1"), KeySource::Generate)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(count(&db, "certificates").await, 1);
    pki.verify_peer(&der_of(&issued.certificate_pem))
        .await
        .unwrap();
}

async fn revocation_in_transaction_applies_on_commit(backend: Backend) {
    let (db, pki) = pki_on(backend).await;
    let issued = pki.issue(&device("d1"), KeySource::Generate).await.unwrap();
    let der = der_of(&issued.certificate_pem);
    pki.verify_peer(&der).await.unwrap();

    let mut transaction = db.begin_write().await.unwrap();
    let revoked = pki
        .revoke_subject_in(&mut transaction, CertificateKind::Device, "d1")
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    // A lookup before the commit still reads the row as valid, and its
    // result must not outlive the commit in the cache.
    pki.verify_peer(&der).await.unwrap();
    transaction.commit().await.unwrap();
    let error = pki.verify_peer(&der).await.unwrap_err();
    assert_eq!(error.to_string(), "credential revoked");
}

async fn other_replica_sees_revocation_after_ttl(backend: Backend) {
    let db = agyn_store::testing::fresh(backend).await;
    let key = MasterKey::generate();
    let revoker = Pki::load_or_create(db.clone(), &key).await.unwrap();
    let replica = Pki::load_or_create(db.clone(), &key).await.unwrap();
    let issued = revoker
        .issue(&device("d1"), KeySource::Generate)
        .await
        .unwrap();
    let der = der_of(&issued.certificate_pem);
    replica.verify_peer(&der).await.unwrap();
    revoker
        .revoke_subject(CertificateKind::Device, "d1")
        .await
        .unwrap();
    // The replica's cached result lasts at most PEER_CACHE_TTL.
    tokio::time::sleep(PEER_CACHE_TTL + std::time::Duration::from_millis(100)).await;
    let error = replica.verify_peer(&der).await.unwrap_err();
    assert_eq!(error.to_string(), "credential revoked");
}
