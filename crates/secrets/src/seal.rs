//! Sealing of stored values with the master key (AES-256-GCM).
//!
//! A sealed column contains base64 of [`MasterKey::seal`]'s output, with the
//! associated data `<table>/<row id>/<column>`. A sealed value copied to
//! another row or column therefore fails to open.

use agyn_core::{Error, Result, Secret};
use agyn_pki::MasterKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A sealed column: its table and column name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub table: &'static str,
    pub column: &'static str,
}

pub(crate) const VAULT_TOKEN: Column = Column {
    table: "secret_providers",
    column: "sealed_vault_token",
};

pub(crate) const SECRET_VALUE: Column = Column {
    table: "secrets",
    column: "sealed_value",
};

pub(crate) const PASSWORD: Column = Column {
    table: "image_pull_secrets",
    column: "sealed_password",
};

impl Column {
    /// Returns the associated data of this column in row `id`.
    pub(crate) fn associated_data(self, id: &str) -> String {
        format!("{}/{id}/{}", self.table, self.column)
    }

    /// Seals `plaintext` for row `id` and returns the base64 text to store.
    pub(crate) fn seal(self, key: &MasterKey, id: &str, plaintext: &Secret<String>) -> String {
        let sealed = key.seal(
            plaintext.expose().as_bytes(),
            self.associated_data(id).as_bytes(),
        );
        BASE64.encode(sealed)
    }

    /// Opens the stored text of row `id`. A value that does not open (a
    /// different master key, a value moved from another row, corruption)
    /// is an internal error that names the row, never the content.
    pub(crate) fn open(self, key: &MasterKey, id: &str, stored: &str) -> Result<Secret<String>> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| {
            Error::internal(
                format!(
                    "failed to open {}.{} of row {id}; check that the master key is the one that sealed it",
                    self.table, self.column
                ),
                source,
            )
        };
        let sealed = BASE64
            .decode(stored.trim())
            .map_err(|error| failed(Box::new(error)))?;
        let plaintext = key
            .open(&sealed, self.associated_data(id).as_bytes())
            .map_err(|error| failed(Box::new(error)))?;
        let plaintext = String::from_utf8(plaintext)
            .map_err(|_| failed("the opened value is not UTF-8".into()))?;
        Ok(Secret::new(plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_value_opens_only_in_its_row() {
        let key = MasterKey::generate();
        let plaintext = Secret::new("canary-value".to_string());
        let stored = SECRET_VALUE.seal(&key, "row-1", &plaintext);
        assert!(!stored.contains("canary-value"));
        assert_eq!(
            SECRET_VALUE.open(&key, "row-1", &stored).unwrap().expose(),
            "canary-value"
        );
        assert!(SECRET_VALUE.open(&key, "row-2", &stored).is_err());
        assert!(PASSWORD.open(&key, "row-1", &stored).is_err());
        assert!(
            SECRET_VALUE
                .open(&MasterKey::generate(), "row-1", &stored)
                .is_err()
        );
    }

    #[test]
    fn open_error_names_row_not_content() {
        let key = MasterKey::generate();
        let stored = VAULT_TOKEN.seal(&key, "a", &Secret::new("canary-token".to_string()));
        let error = VAULT_TOKEN.open(&key, "b", &stored).unwrap_err();
        assert!(
            error
                .message()
                .contains("secret_providers.sealed_vault_token of row b")
        );
        assert!(!format!("{error:?}").contains("canary-token"));
    }
}
