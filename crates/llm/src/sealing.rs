//! Provider credentials at rest: the token and the custom header map are
//! each sealed with the master key and stored as base64. The associated
//! data `llm_providers/<provider id>/<column>` binds each sealed value to
//! its row and column.

use std::collections::BTreeMap;

use agyn_core::{Error, Result, Secret};
use agyn_pki::MasterKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

const TABLE: &str = "llm_providers";
const TOKEN_COLUMN: &str = "sealed_token";
const HEADERS_COLUMN: &str = "sealed_headers";

fn associated_data(provider_id: &str, column: &str) -> Vec<u8> {
    format!("{TABLE}/{provider_id}/{column}").into_bytes()
}

/// Seals a provider token for the `sealed_token` column.
pub(crate) fn seal_token(key: &MasterKey, provider_id: &str, token: &str) -> String {
    let sealed = key.seal(
        token.as_bytes(),
        &associated_data(provider_id, TOKEN_COLUMN),
    );
    BASE64.encode(sealed)
}

/// Opens the `sealed_token` column of a provider.
pub(crate) fn open_token(
    key: &MasterKey,
    provider_id: &str,
    sealed: &str,
) -> Result<Secret<String>> {
    let plaintext = open(key, provider_id, TOKEN_COLUMN, sealed)?;
    let token = String::from_utf8(plaintext)
        .map_err(|error| Error::internal("stored provider token is not UTF-8", error))?;
    Ok(Secret::new(token))
}

/// Seals the whole custom header map, lowercase name to value, as one JSON
/// object for the `sealed_headers` column.
pub(crate) fn seal_headers(
    key: &MasterKey,
    provider_id: &str,
    headers: &BTreeMap<String, String>,
) -> String {
    let json = Secret::new(serde_json::to_vec(headers).expect("a string map encodes as JSON"));
    let sealed = key.seal(json.expose(), &associated_data(provider_id, HEADERS_COLUMN));
    BASE64.encode(sealed)
}

/// Opens the `sealed_headers` column of a provider. Headers come back in
/// name order.
pub(crate) fn open_headers(
    key: &MasterKey,
    provider_id: &str,
    sealed: &str,
) -> Result<Vec<(String, Secret<String>)>> {
    let plaintext = Secret::new(open(key, provider_id, HEADERS_COLUMN, sealed)?);
    let headers: BTreeMap<String, String> = serde_json::from_slice(plaintext.expose())
        .map_err(|error| Error::internal("stored provider headers are not a JSON map", error))?;
    Ok(headers
        .into_iter()
        .map(|(name, value)| (name, Secret::new(value)))
        .collect())
}

fn open(key: &MasterKey, provider_id: &str, column: &str, sealed: &str) -> Result<Vec<u8>> {
    let bytes = BASE64
        .decode(sealed.trim())
        .map_err(|error| Error::internal(format!("stored {column} is not base64"), error))?;
    key.open(&bytes, &associated_data(provider_id, column))
        .map_err(|error| {
            Error::internal(
                format!("failed to open {column} of provider {provider_id}"),
                error,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_bound_to_its_row() {
        let key = MasterKey::generate();
        let sealed = seal_token(&key, "p1", "sk-canary");
        assert!(!sealed.contains("sk-canary"));
        assert_eq!(
            open_token(&key, "p1", &sealed).unwrap().expose(),
            "sk-canary"
        );
        assert!(open_token(&key, "p2", &sealed).is_err());
    }

    #[test]
    fn headers_are_bound_to_their_column() {
        let key = MasterKey::generate();
        let headers = BTreeMap::from([("x-b".to_string(), "2".to_string())]);
        let sealed = seal_headers(&key, "p1", &headers);
        let opened = open_headers(&key, "p1", &sealed).unwrap();
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].0, "x-b");
        assert_eq!(opened[0].1.expose(), "2");
        // A sealed header map moved into the token column does not open.
        assert!(open_token(&key, "p1", &sealed).is_err());
    }
}
