//! The issuer's signing keys from its JWKS (RFC 7517), and which token
//! algorithm each key may verify.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Algorithms accepted in a token header. HMAC algorithms are absent, so
/// a public key can never serve as an HMAC secret, and `alg: none` does
/// not parse as an [`Algorithm`] at all.
pub(crate) const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Keys beyond this count in one JWKS are ignored.
const MAX_KEYS: usize = 100;

/// Key type and curve of a verifying key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    /// Returns whether a key of this type verifies `algorithm`. Each
    /// algorithm belongs to exactly one key type, which rules out
    /// algorithm confusion between key families and curves.
    fn verifies(self, algorithm: Algorithm) -> bool {
        match self {
            Self::Rsa => matches!(
                algorithm,
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
            ),
            Self::P256 => algorithm == Algorithm::ES256,
            Self::P384 => algorithm == Algorithm::ES384,
            Self::Ed25519 => algorithm == Algorithm::EdDSA,
        }
    }
}

/// One public key from the JWKS.
pub(crate) struct VerifyingKey {
    kid: Option<String>,
    /// The JWK's `alg`; when present, the only algorithm the key verifies.
    algorithm: Option<Algorithm>,
    key_type: KeyType,
    pub(crate) key: DecodingKey,
}

impl VerifyingKey {
    fn verifies(&self, algorithm: Algorithm) -> bool {
        self.key_type.verifies(algorithm) && self.algorithm.is_none_or(|own| own == algorithm)
    }
}

/// Result of looking up the key for a token.
pub(crate) enum Lookup<'a> {
    Found(&'a VerifyingKey),
    /// No key has the token's `kid` (or, for a token without `kid`, no
    /// single key verifies its algorithm). A newer JWKS may have it.
    Unknown,
    /// A key has the token's `kid` but a type or `alg` that does not match
    /// the token's algorithm.
    WrongAlgorithm,
}

/// The JWKS document: `keys` is parsed key by key, so that one key of an
/// unsupported type does not hide the others.
#[derive(Deserialize)]
pub(crate) struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

/// The JWK members this crate reads.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    public_key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The verifying keys of one JWKS.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Builds the key set, skipping keys that are not signature keys or
    /// are of an unsupported type; returns the set and the skipped count.
    pub(crate) fn from_document(document: JwksDocument) -> (Self, usize) {
        let total = document.keys.len();
        let keys: Vec<VerifyingKey> = document
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|value| {
                let jwk: Jwk = serde_json::from_value(value).ok()?;
                verifying_key(jwk)
            })
            .collect();
        let skipped = total - keys.len();
        (Self { keys }, skipped)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Finds the key for a token with header `kid` and `algorithm`. A token
    /// without `kid` uses the only key that verifies its algorithm.
    pub(crate) fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Lookup<'_> {
        let Some(kid) = kid else {
            let mut candidates = self.keys.iter().filter(|key| key.verifies(algorithm));
            return match (candidates.next(), candidates.next()) {
                (Some(key), None) => Lookup::Found(key),
                _ => Lookup::Unknown,
            };
        };
        let mut named = self
            .keys
            .iter()
            .filter(|key| key.kid.as_deref() == Some(kid))
            .peekable();
        if named.peek().is_none() {
            return Lookup::Unknown;
        }
        match named.find(|key| key.verifies(algorithm)) {
            Some(key) => Lookup::Found(key),
            None => Lookup::WrongAlgorithm,
        }
    }
}

/// Converts a JWK to a verifying key, or `None` when the key is not meant
/// for signatures, names an algorithm outside [`ACCEPTED_ALGORITHMS`], or
/// has a type, curve or size that is not supported.
fn verifying_key(jwk: Jwk) -> Option<VerifyingKey> {
    if jwk
        .public_key_use
        .as_deref()
        .is_some_and(|usage| usage != "sig")
    {
        return None;
    }
    if jwk
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let algorithm = match jwk.alg.as_deref() {
        None => None,
        Some(name) => {
            let algorithm: Algorithm = name.parse().ok()?;
            if !ACCEPTED_ALGORITHMS.contains(&algorithm) {
                return None;
            }
            Some(algorithm)
        }
    };
    let (key_type, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let key = DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?);
            (KeyType::Rsa, key.ok()?)
        }
        ("EC", Some("P-256")) => (KeyType::P256, ec_key(&jwk, 32)?),
        ("EC", Some("P-384")) => (KeyType::P384, ec_key(&jwk, 48)?),
        ("OKP", Some("Ed25519")) => {
            let x = jwk.x.as_deref()?;
            if decoded_len(x)? != 32 {
                return None;
            }
            (KeyType::Ed25519, DecodingKey::from_ed_components(x).ok()?)
        }
        _ => return None,
    };
    let key = VerifyingKey {
        kid: jwk.kid,
        algorithm,
        key_type,
        key,
    };
    algorithm
        .is_none_or(|algorithm| key.key_type.verifies(algorithm))
        .then_some(key)
}

/// Builds an EC key whose coordinates are `size` bytes each.
fn ec_key(jwk: &Jwk, size: usize) -> Option<DecodingKey> {
    let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
    if decoded_len(x)? != size || decoded_len(y)? != size {
        return None;
    }
    DecodingKey::from_ec_components(x, y).ok()
}

fn decoded_len(value: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(value).ok().map(|bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: serde_json::Value) -> (KeySet, usize) {
        KeySet::from_document(serde_json::from_value(serde_json::json!({ "keys": keys })).unwrap())
    }

    /// 32 zero bytes, base64url.
    const ZEROS_32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn unsupported_keys_are_skipped() {
        let (keys, skipped) = set(serde_json::json!([
            { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
            { "kty": "EC", "crv": "P-521", "x": ZEROS_32, "y": ZEROS_32 },
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "use": "enc" },
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "alg": "HS256" },
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "alg": "ES256" },
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "key_ops": ["encrypt"] },
            { "kty": "EC", "crv": "P-256", "x": ZEROS_32, "y": "AAAA" },
            "not an object",
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "kid": "ed" },
        ]));
        assert_eq!(keys.len(), 1);
        assert_eq!(skipped, 8);
        assert!(matches!(
            keys.find(Some("ed"), Algorithm::EdDSA),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn kid_with_wrong_algorithm_is_rejected() {
        let (keys, _) = set(serde_json::json!([
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "kid": "ed" },
        ]));
        assert!(matches!(
            keys.find(Some("ed"), Algorithm::RS256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            keys.find(Some("other"), Algorithm::EdDSA),
            Lookup::Unknown
        ));
        assert!(matches!(
            keys.find(None, Algorithm::EdDSA),
            Lookup::Found(_)
        ));
        assert!(matches!(keys.find(None, Algorithm::ES256), Lookup::Unknown));
    }

    #[test]
    fn key_without_kid_needs_a_single_candidate() {
        let (keys, _) = set(serde_json::json!([
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "kid": "a" },
            { "kty": "OKP", "crv": "Ed25519", "x": ZEROS_32, "kid": "b" },
        ]));
        assert!(matches!(keys.find(None, Algorithm::EdDSA), Lookup::Unknown));
    }
}
