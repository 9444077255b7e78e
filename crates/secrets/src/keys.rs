//! Client request keys (`request_id`) of the create calls, on top of
//! [`agyn_store::idempotency`].
//!
//! The stored fingerprint is the hex SHA-256 of the request's public
//! fields. When the request carries a value, token or password, that is
//! not hashed, because an unkeyed hash of a short password can be guessed
//! offline. It is sealed with the master key and appended after a `.`
//! instead, so a repeat with a different value is still detected.

use agyn_core::time::now_micros;
use agyn_core::{Error, Result, Secret};
use agyn_pki::MasterKey;
use agyn_store::idempotency::{self, Recorded};
use agyn_store::sqlx::AnyConnection;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};

/// Checks a request key: empty means none, otherwise 1 to 64 characters
/// of `[A-Za-z0-9_-]`.
pub(crate) fn validate(request_id: &str) -> Result<()> {
    if !request_id.is_empty() && !idempotency::is_valid_key(request_id) {
        return Err(Error::invalid_field(
            "request_id",
            "must be 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(())
}

/// The idempotency key of one create call and the content it is bound to.
pub(crate) struct CreateKey<'a> {
    scope: &'static str,
    caller_id: &'a str,
    request_id: &'a str,
    digest: String,
    secret: Option<&'a Secret<String>>,
}

impl<'a> CreateKey<'a> {
    /// Builds the key of one create call. `parts` are the request's public
    /// fields in a fixed order, and `secret` is its value, token or
    /// password, if any.
    pub(crate) fn new(
        scope: &'static str,
        caller_id: &'a str,
        request_id: &'a str,
        parts: &[&str],
        secret: Option<&'a Secret<String>>,
    ) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self {
            scope,
            caller_id,
            request_id,
            digest,
            secret,
        }
    }

    fn associated_data(&self) -> String {
        format!(
            "idempotency_keys/{}:{}:{}/fingerprint",
            self.scope, self.caller_id, self.request_id
        )
    }

    /// Returns the resource an earlier call with this key created, or
    /// `None` for a first call or an empty key. The same key with a
    /// different request fails with `already_exists` (reason
    /// `IDEMPOTENCY_KEY_REUSED`).
    pub(crate) async fn replayed(
        &self,
        connection: &mut AnyConnection,
        key: &MasterKey,
    ) -> Result<Option<String>> {
        if self.request_id.is_empty() {
            return Ok(None);
        }
        let Some(recorded) = idempotency::lookup(
            connection,
            self.scope,
            self.caller_id,
            self.request_id,
            now_micros(),
        )
        .await?
        else {
            return Ok(None);
        };
        if self.matches(&recorded.fingerprint, key) {
            Ok(Some(recorded.resource_id))
        } else {
            Err(
                Error::already_exists("request_id was already used for a different request")
                    .with_reason("IDEMPOTENCY_KEY_REUSED"),
            )
        }
    }

    fn matches(&self, stored: &str, key: &MasterKey) -> bool {
        let (digest, sealed) = match stored.split_once('.') {
            Some((digest, sealed)) => (digest, Some(sealed)),
            None => (stored, None),
        };
        if digest != self.digest {
            return false;
        }
        match (self.secret, sealed) {
            (None, None) => true,
            (Some(secret), Some(sealed)) => {
                let opened = BASE64
                    .decode(sealed)
                    .ok()
                    .and_then(|sealed| key.open(&sealed, self.associated_data().as_bytes()).ok())
                    .map(Secret::new);
                opened.is_some_and(|opened| {
                    constant_time_eq(opened.expose(), secret.expose().as_bytes())
                })
            }
            _ => false,
        }
    }

    /// Records this key for `resource_id` in the caller's transaction. An
    /// empty key records nothing.
    pub(crate) async fn record(
        &self,
        connection: &mut AnyConnection,
        key: &MasterKey,
        resource_id: &str,
    ) -> Result<()> {
        if self.request_id.is_empty() {
            return Ok(());
        }
        let fingerprint = match self.secret {
            None => self.digest.clone(),
            Some(secret) => {
                let sealed = key.seal(
                    secret.expose().as_bytes(),
                    self.associated_data().as_bytes(),
                );
                format!("{}.{}", self.digest, BASE64.encode(sealed))
            }
        };
        let recorded = Recorded {
            fingerprint,
            resource_id: resource_id.to_string(),
        };
        idempotency::record(
            connection,
            self.scope,
            self.caller_id,
            self.request_id,
            &recorded,
            now_micros(),
        )
        .await?;
        Ok(())
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_detects_a_different_secret() {
        let key = MasterKey::generate();
        let first = Secret::new("first-password".to_string());
        let second = Secret::new("second-password".to_string());
        let original = CreateKey::new("scope", "caller", "key-1", &["org", "name"], Some(&first));
        let sealed = key.seal(
            first.expose().as_bytes(),
            original.associated_data().as_bytes(),
        );
        let stored = format!("{}.{}", original.digest, BASE64.encode(sealed));
        assert!(!stored.contains("first-password"));
        assert!(original.matches(&stored, &key));

        let other_secret =
            CreateKey::new("scope", "caller", "key-1", &["org", "name"], Some(&second));
        assert!(!other_secret.matches(&stored, &key));
        let other_fields =
            CreateKey::new("scope", "caller", "key-1", &["org", "other"], Some(&first));
        assert!(!other_fields.matches(&stored, &key));
        let no_secret = CreateKey::new("scope", "caller", "key-1", &["org", "name"], None);
        assert!(!no_secret.matches(&stored, &key));
        // The sealed part is bound to the key it was recorded under.
        let other_key = CreateKey::new("scope", "caller", "key-2", &["org", "name"], Some(&first));
        assert!(!other_key.matches(&stored, &key));
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
