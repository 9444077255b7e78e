//! API token format: `agyn_` followed by 44 base62 characters from the
//! operating system's CSPRNG (about 262 bits). Only the SHA-256 of the
//! whole token is stored, with its first 8 characters for display.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use agyn_core::Secret;

pub const API_TOKEN_PREFIX: &str = "agyn_";
/// Prefix of platform service tokens, which only enrollment accepts.
pub const SERVICE_TOKEN_PREFIX: &str = "agynsvc_";
/// Prefix of one-time enrollment tokens, which only enrollment accepts.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "agynenr_";
const RANDOM_LEN: usize = 44;
const DISPLAY_PREFIX_LEN: usize = 8;

/// `last_used_at` is written at most once per this many microseconds.
pub const LAST_USED_RESOLUTION_MICROS: i64 = 60_000_000;

/// Generates a new API token.
pub fn generate() -> Secret<String> {
    random_token(API_TOKEN_PREFIX)
}

/// Generates a new service token: `agynsvc_` followed by 44 base62
/// characters from the same CSPRNG as API tokens.
pub fn generate_service_token() -> Secret<String> {
    random_token(SERVICE_TOKEN_PREFIX)
}

fn random_token(prefix: &str) -> Secret<String> {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    Secret::new(format!("{prefix}{random}"))
}

/// Returns the SHA-256 digest of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Returns the stored form of a token: lowercase hex SHA-256.
pub fn hash(token: &str) -> String {
    hex(&digest(token))
}

/// Returns the lowercase hex form of a digest, as stored in `token_hash`.
pub fn hex(digest: &[u8; 32]) -> String {
    let mut hex = String::with_capacity(64);
    for &byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Returns the part of a token shown in listings, e.g. `agyn_Ab3`.
pub fn display_prefix(token: &str) -> String {
    token.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// Returns true when `token` has the shape of an API token. Other bearer
/// values are OIDC access tokens or rejected.
pub fn looks_like_api_token(token: &str) -> bool {
    has_token_shape(token, API_TOKEN_PREFIX)
}

/// Returns true when `token` has the shape of a service token.
pub fn looks_like_service_token(token: &str) -> bool {
    has_token_shape(token, SERVICE_TOKEN_PREFIX)
}

fn has_token_shape(token: &str, prefix: &str) -> bool {
    token.len() == prefix.len() + RANDOM_LEN
        && token.starts_with(prefix)
        && token[prefix.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric())
}

/// Compares two stored token hashes in constant time.
pub fn hashes_equal(left: &str, right: &str) -> bool {
    left.as_bytes().ct_eq(right.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_has_format() {
        let token = generate();
        let token = token.expose();
        assert_eq!(token.len(), 49);
        assert!(looks_like_api_token(token));
        assert_ne!(generate().expose(), token);
    }

    #[test]
    fn hash_is_lowercase_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_tokens_are_not_api_tokens() {
        assert!(!looks_like_api_token("agyn_short"));
        assert!(!looks_like_api_token(&format!("agyn_{}", "!".repeat(44))));
        assert!(!looks_like_api_token(&format!(
            "agynsvc_{}",
            "a".repeat(41)
        )));
    }

    #[test]
    fn service_token_has_format() {
        let token = generate_service_token();
        assert!(looks_like_service_token(token.expose()));
        assert!(!looks_like_api_token(token.expose()));
        assert_ne!(generate_service_token().expose(), token.expose());
        assert!(!looks_like_service_token("agyn_abc"));
    }

    #[test]
    fn hashes_compare_by_value() {
        let stored = hash("agynsvc_x");
        assert!(hashes_equal(&stored, &hash("agynsvc_x")));
        assert!(!hashes_equal(&stored, &hash("agynsvc_y")));
        assert!(!hashes_equal(&stored, ""));
    }

    #[test]
    fn display_prefix_is_eight_chars() {
        assert_eq!(display_prefix("agyn_Ab3xyz"), "agyn_Ab3");
    }
}
