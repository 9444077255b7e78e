//! Model resolution for the LLM proxy and TestModel: the upstream endpoint
//! and the decrypted credential of a model's provider.

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol, Script};
use agyn_core::error::Code;
use agyn_core::id::parse_id;
use agyn_core::{Error, Result, Secret};
use agyn_pki::MasterKey;
use http::{HeaderName, HeaderValue};

use crate::store::{self, StoredProvider};
use crate::{Llm, sealing};

/// Everything the LLM proxy needs to forward a call to a model.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub model_id: String,
    pub organization_id: String,
    pub provider_id: String,
    /// Empty for a scripted provider.
    pub endpoint: String,
    pub protocol: Protocol,
    /// The provider's own model id, which replaces the platform model id
    /// in request bodies.
    pub remote_name: String,
    pub credential: Credential,
    /// Set for a scripted provider, whose replies the platform generates
    /// from it.
    pub script: Option<Script>,
}

/// A provider credential in plaintext. `Debug` prints header names but
/// redacts every value.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A scripted provider, which takes no credential.
    None,
    /// Sent as `Authorization: Bearer <token>`.
    Bearer(Secret<String>),
    /// Sent as `x-api-key: <token>`.
    ApiKey(Secret<String>),
    /// Custom headers keyed by lowercase name, sent verbatim.
    Headers(Vec<(String, Secret<String>)>),
}

impl Credential {
    /// Returns the auth method that stores this credential.
    pub fn auth_method(&self) -> AuthMethod {
        match self {
            Self::None => AuthMethod::AUTH_METHOD_UNSPECIFIED,
            Self::Bearer(_) => AuthMethod::AUTH_METHOD_BEARER,
            Self::ApiKey(_) => AuthMethod::AUTH_METHOD_X_API_KEY,
            Self::Headers(_) => AuthMethod::AUTH_METHOD_CUSTOM_HEADERS,
        }
    }

    /// Builds the headers that carry the credential upstream, with every
    /// value marked sensitive so that HTTP libraries redact it in their
    /// logs. They replace caller headers of the same name.
    ///
    /// Stored values were checked when they were written. One that no
    /// longer forms a header is left out with a warning that names only
    /// the header.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Self::None => Vec::new(),
            Self::Bearer(token) => {
                sensitive_header("authorization", &format!("Bearer {}", token.expose()))
                    .into_iter()
                    .collect()
            }
            Self::ApiKey(token) => sensitive_header("x-api-key", token.expose())
                .into_iter()
                .collect(),
            Self::Headers(headers) => headers
                .iter()
                .filter_map(|(name, value)| sensitive_header(name, value.expose()))
                .collect(),
        }
    }
}

fn sensitive_header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
        tracing::warn!(
            header = name,
            "Stored provider header has an invalid name; skipped"
        );
        return None;
    };
    let Ok(mut header_value) = HeaderValue::from_str(value) else {
        tracing::warn!(
            header = name,
            "Stored provider header has an invalid value; skipped"
        );
        return None;
    };
    header_value.set_sensitive(true);
    Some((header_name, header_value))
}

impl Llm {
    /// Resolves a model for the LLM proxy. There is no authorization check:
    /// the caller checks `can_use` itself. An unknown or malformed id is
    /// `not_found` (`model <id> not found`).
    pub async fn resolve_model(&self, model_id: &str) -> Result<ResolvedModel> {
        let not_found = || Error::not_found("model", model_id);
        let id = parse_id("model_id", model_id).map_err(|_| not_found())?;
        let mut connection = self.db.pool().acquire().await?;
        let model = store::model_by_id(&mut connection, &id)
            .await?
            .ok_or_else(not_found)?;
        let provider = store::provider_by_id(&mut connection, &model.provider_id)
            .await?
            .ok_or_else(not_found)?;
        drop(connection);
        let credential = open_credential(&self.key, &provider)?;
        Ok(ResolvedModel {
            model_id: model.id,
            organization_id: model.organization_id,
            provider_id: provider.record.id,
            endpoint: provider.record.endpoint,
            protocol: provider.record.protocol,
            remote_name: model.remote_name,
            credential,
            script: provider.record.script,
        })
    }
}

/// Opens the sealed credential of a provider.
fn open_credential(key: &MasterKey, provider: &StoredProvider) -> Result<Credential> {
    let id = &provider.record.id;
    let missing = |column: &str| {
        Error::new(
            Code::Internal,
            format!("provider {id} has no {column} for its auth method"),
        )
    };
    match provider.record.auth_method {
        AuthMethod::AUTH_METHOD_UNSPECIFIED => Ok(Credential::None),
        AuthMethod::AUTH_METHOD_BEARER | AuthMethod::AUTH_METHOD_X_API_KEY => {
            let sealed = provider
                .sealed_token
                .as_deref()
                .ok_or_else(|| missing("sealed_token"))?;
            let token = sealing::open_token(key, id, sealed)?;
            if provider.record.auth_method == AuthMethod::AUTH_METHOD_BEARER {
                Ok(Credential::Bearer(token))
            } else {
                Ok(Credential::ApiKey(token))
            }
        }
        AuthMethod::AUTH_METHOD_CUSTOM_HEADERS => {
            let sealed = provider
                .sealed_headers
                .as_deref()
                .ok_or_else(|| missing("sealed_headers"))?;
            Ok(Credential::Headers(sealing::open_headers(key, id, sealed)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_sensitive() {
        let credential = Credential::Bearer(Secret::new("sk-canary".to_string()));
        let headers = credential.headers();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "authorization");
        assert_eq!(headers[0].1, "Bearer sk-canary");
        assert!(headers[0].1.is_sensitive());
    }

    #[test]
    fn api_key_header_is_sensitive() {
        let headers = Credential::ApiKey(Secret::new("k".to_string())).headers();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "x-api-key");
        assert_eq!(headers[0].1, "k");
        assert!(headers[0].1.is_sensitive());
    }

    #[test]
    fn custom_headers_are_sent_verbatim() {
        let credential = Credential::Headers(vec![
            ("x-a".to_string(), Secret::new("1".to_string())),
            ("x-b".to_string(), Secret::new("two words".to_string())),
        ]);
        let headers = credential.headers();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].0, "x-a");
        assert_eq!(headers[0].1, "1");
        assert_eq!(headers[1].0, "x-b");
        assert_eq!(headers[1].1, "two words");
        assert!(headers.iter().all(|(_, value)| value.is_sensitive()));
    }

    #[test]
    fn none_injects_nothing() {
        assert!(Credential::None.headers().is_empty());
    }

    #[test]
    fn debug_redacts_values() {
        let credential =
            Credential::Headers(vec![("x-a".to_string(), Secret::new("canary".to_string()))]);
        let printed = format!("{credential:?}");
        assert!(printed.contains("x-a"), "{printed}");
        assert!(!printed.contains("canary"), "{printed}");
    }
}
