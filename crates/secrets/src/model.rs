//! The records that read methods return and the inputs of create and
//! update. Records never carry a value, token or password, and inputs
//! carry them only inside [`Secret`] wrappers.

use agyn_core::Secret;

/// Kind of external secret store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    /// HashiCorp Vault, read through the KV version 2 engine.
    Vault,
}

impl ProviderType {
    /// Returns the name stored in `secret_providers.provider_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vault => "vault",
        }
    }

    pub(crate) fn parse(value: &str) -> Option<Self> {
        match value {
            "vault" => Some(Self::Vault),
            _ => None,
        }
    }
}

/// Location of a value inside a secret provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    pub secret_provider_id: String,
    /// `<mount>/<path...>/<key>`.
    pub remote_name: String,
}

/// Storage of a secret value or an image pull password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Stored by the platform, sealed with the master key.
    Local,
    /// Read from a secret provider each time it is resolved.
    Remote(RemoteRef),
}

/// A stored secret provider. The Vault token is never loaded into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProviderRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub provider_type: ProviderType,
    pub vault_address: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stored secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub storage: Storage,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stored image pull secret, without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePullSecretRecord {
    pub id: String,
    pub organization_id: String,
    pub description: String,
    pub registry: String,
    pub username: String,
    pub storage: Storage,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Registry credentials returned by ResolveImagePullSecret.
#[derive(Debug, Clone)]
pub struct ImagePullCredentials {
    pub registry: String,
    pub username: String,
    pub password: Secret<String>,
}

/// Connection settings of a Vault server, as a request sends them.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub address: String,
    /// Empty on update keeps the stored token.
    pub token: Secret<String>,
}

/// Source of a secret value or an image pull password: exactly one of the
/// request's `value` and `remote` fields.
#[derive(Debug, Clone)]
pub enum Source {
    Value(Secret<String>),
    Remote(RemoteRef),
}

/// Request of CreateSecretProvider.
#[derive(Debug, Clone)]
pub struct NewSecretProvider {
    pub organization_id: String,
    pub name: String,
    pub description: String,
    /// `None` when the request left the type UNSPECIFIED, which is rejected.
    pub provider_type: Option<ProviderType>,
    /// `None` when the request set no `config.vault`.
    pub vault: Option<VaultSettings>,
    pub request_id: String,
}

/// Request of UpdateSecretProvider. `None` fields stay unchanged.
#[derive(Debug, Clone, Default)]
pub struct SecretProviderChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` when `config` is present without its `vault` branch,
    /// which is rejected.
    pub vault: Option<Option<VaultSettings>>,
}

/// Request of CreateSecret.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub organization_id: String,
    pub name: String,
    pub description: String,
    /// `None` when neither `value` nor `remote` was set, which is rejected.
    pub source: Option<Source>,
    pub request_id: String,
}

/// Request of UpdateSecret. `None` fields stay unchanged, and setting both
/// `value` and `remote` is rejected.
#[derive(Debug, Clone, Default)]
pub struct SecretChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub value: Option<Secret<String>>,
    pub remote: Option<RemoteRef>,
}

/// Request of CreateImagePullSecret.
#[derive(Debug, Clone)]
pub struct NewImagePullSecret {
    pub organization_id: String,
    pub description: String,
    pub registry: String,
    pub username: String,
    /// `None` when neither `value` nor `remote` was set, which is rejected.
    pub source: Option<Source>,
    pub request_id: String,
}

/// Request of UpdateImagePullSecret. `None` fields stay unchanged, and
/// setting both `value` and `remote` is rejected.
#[derive(Debug, Clone, Default)]
pub struct ImagePullSecretChanges {
    pub description: Option<String>,
    pub registry: Option<String>,
    pub username: Option<String>,
    pub value: Option<Secret<String>>,
    pub remote: Option<RemoteRef>,
}
