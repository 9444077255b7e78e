//! Signatures of download links.
//!
//! `sig = base64url(HMAC-SHA256(key, "v1\n" + id + "\n" + exp))` without
//! padding, where `exp` is the expiry in Unix seconds and `key` is derived
//! from the master key with HKDF-SHA256 (info `agyn files download v1`).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::{hkdf, hmac};

/// HKDF info of the download signing key.
const KEY_INFO: &[u8] = b"agyn files download v1";

/// The key that signs and verifies download links.
#[derive(Clone)]
pub struct DownloadKey(hmac::Key);

impl std::fmt::Debug for DownloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadKey(..)")
    }
}

impl DownloadKey {
    /// Derives the key from the bytes of the master key.
    pub fn derive(master_key: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(master_key);
        let okm = prk
            .expand(&[KEY_INFO], hmac::HMAC_SHA256)
            .expect("HKDF-SHA256 can expand one 32-byte key");
        Self(hmac::Key::from(okm))
    }

    /// Derives the key from the platform master key.
    pub fn from_master_key(master_key: &agyn_pki::MasterKey) -> Self {
        // MasterKey exposes its bytes only as standard base64.
        let bytes = STANDARD
            .decode(master_key.to_base64())
            .expect("MasterKey::to_base64 returns standard base64");
        Self::derive(&bytes)
    }

    /// Returns the `sig` parameter of a link to `id` that expires at
    /// `expires` (Unix seconds).
    pub fn sign(&self, id: &str, expires: i64) -> String {
        let tag = hmac::sign(&self.0, &message(id, expires));
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Returns whether `signature` is the signature of (`id`, `expires`),
    /// comparing in constant time.
    pub fn verify(&self, id: &str, expires: i64, signature: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        hmac::verify(&self.0, &message(id, expires), &tag).is_ok()
    }
}

fn message(id: &str, expires: i64) -> Vec<u8> {
    format!("v1\n{id}\n{expires}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip() {
        let key = DownloadKey::derive(&[7; 32]);
        let signature = key.sign("f1", 100);
        assert!(key.verify("f1", 100, &signature));
        assert!(!key.verify("f1", 101, &signature));
        assert!(!key.verify("f2", 100, &signature));
        assert!(!key.verify("f1", 100, "not base64!"));
        assert!(!DownloadKey::derive(&[8; 32]).verify("f1", 100, &signature));
    }

    #[test]
    fn master_key_derivation_is_stable() {
        let master = agyn_pki::MasterKey::generate();
        let first = DownloadKey::from_master_key(&master).sign("f", 1);
        let second = DownloadKey::from_master_key(&master).sign("f", 1);
        assert_eq!(first, second);
    }
}
