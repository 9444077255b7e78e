//! The references that block deleting a secret or an image pull secret.

use std::future::Future;
use std::pin::Pin;

use agyn_core::Result;
use agyn_secrets::SecretReferences;
use agyn_store::Db;

use crate::internal::{image_pull_secret_references, secret_references};

/// [`SecretReferences`] over the agents tables: envs that read a secret
/// and attachments of an image pull secret. It needs only the database,
/// so it can be built before [`agyn_secrets::Secrets`], which
/// [`crate::Agents`] needs.
pub struct AgentSecretReferences {
    db: Db,
}

impl AgentSecretReferences {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl SecretReferences for AgentSecretReferences {
    fn secret_references<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>>> + Send + 'a>> {
        Box::pin(secret_references(&self.db, secret_id))
    }

    fn image_pull_secret_references<'a>(
        &'a self,
        image_pull_secret_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>>> + Send + 'a>> {
        Box::pin(image_pull_secret_references(&self.db, image_pull_secret_id))
    }
}
