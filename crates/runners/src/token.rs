//! Runner service tokens: `agynsvc_` followed by 44 base62 characters from
//! `rand::rng()`, a CSPRNG seeded by the operating system. Only the
//! lowercase hex SHA-256 of the whole token is stored.

use agyn_core::Secret;
use agyn_users::tokens::{SERVICE_TOKEN_PREFIX, hash};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use subtle::ConstantTimeEq as _;

const RANDOM_LEN: usize = 44;

/// Generates a new service token.
pub(crate) fn generate() -> Secret<String> {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    Secret::new(format!("{SERVICE_TOKEN_PREFIX}{random}"))
}

/// Returns the stored form of a token.
pub(crate) fn token_hash(token: &str) -> String {
    hash(token)
}

/// Returns whether `token` has the shape of a service token.
pub(crate) fn looks_like_service_token(token: &str) -> bool {
    token.len() == SERVICE_TOKEN_PREFIX.len() + RANDOM_LEN
        && token.starts_with(SERVICE_TOKEN_PREFIX)
        && token[SERVICE_TOKEN_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric())
}

/// Compares two stored hashes in constant time.
pub(crate) fn hashes_equal(left: &str, right: &str) -> bool {
    left.as_bytes().ct_eq(right.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_has_format() {
        let token = generate();
        assert!(looks_like_service_token(token.expose()));
        assert_ne!(generate().expose(), token.expose());
        assert!(!looks_like_service_token("agyn_abc"));
    }

    #[test]
    fn hashes_compare_by_value() {
        let hash = token_hash("agynsvc_x");
        assert!(hashes_equal(&hash, &token_hash("agynsvc_x")));
        assert!(!hashes_equal(&hash, &token_hash("agynsvc_y")));
        assert!(!hashes_equal(&hash, ""));
    }
}
