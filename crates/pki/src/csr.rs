//! Reading the public key out of a PKCS #10 certificate signing request.
//!
//! Only the key and the signature matter: the platform sets the subject,
//! names and extensions of every certificate, so those parts of a request
//! are ignored rather than checked.

use agyn_core::Error;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;

/// Request field that carries the CSR, named in validation errors.
const FIELD: &str = "csr_pem";

/// Smallest RSA modulus accepted, in bits.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Parses a PEM CSR, checks its key type and signature, and returns the
/// subject public key for the certificate.
pub(crate) fn public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo, Error> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|_| {
        Error::invalid_field(FIELD, "must be a PEM block labelled CERTIFICATE REQUEST")
    })?;
    let (rest, request) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|_| Error::invalid_field(FIELD, "is not a valid PKCS #10 request"))?;
    if !rest.is_empty() {
        return Err(Error::invalid_field(
            FIELD,
            "has trailing bytes after the request",
        ));
    }
    let key_info = &request.certification_request_info.subject_pki;
    check_key_type(key_info)?;
    // The key is checked first because ring rejects signatures of RSA keys
    // under 2048 bits, which would otherwise read as a bad signature.
    request
        .verify_signature()
        .map_err(|_| Error::invalid_field(FIELD, "signature does not verify"))?;
    rcgen::SubjectPublicKeyInfo::from_der(key_info.raw)
        .map_err(|_| Error::invalid_field(FIELD, "public key is not supported"))
}

fn check_key_type(key_info: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), Error> {
    let unsupported = || {
        Error::invalid_field(
            FIELD,
            "key must be ECDSA P-256, Ed25519 or RSA of at least 2048 bits",
        )
    };
    let algorithm = &key_info.algorithm.algorithm;
    if *algorithm == OID_SIG_ED25519 {
        return Ok(());
    }
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = key_info
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok());
        return match curve {
            Some(curve) if curve == OID_EC_P256 => Ok(()),
            _ => Err(unsupported()),
        };
    }
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = key_info.parsed() else {
            return Err(Error::invalid_field(FIELD, "RSA public key is malformed"));
        };
        let bits = modulus_bits(rsa.modulus);
        if bits < MIN_RSA_BITS {
            return Err(Error::invalid_field(
                FIELD,
                &format!("RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"),
            ));
        }
        return Ok(());
    }
    Err(unsupported())
}

/// Returns the bit length of a big-endian unsigned integer.
fn modulus_bits(modulus: &[u8]) -> usize {
    let start = modulus.iter().position(|&byte| byte != 0);
    match start {
        Some(start) => {
            let significant = &modulus[start..];
            (significant.len() - 1) * 8 + (8 - significant[0].leading_zeros() as usize)
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::modulus_bits;

    #[test]
    fn modulus_bits_ignores_leading_zeros() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0xff]), 15);
        assert_eq!(modulus_bits(&[0x01]), 1);
    }
}
