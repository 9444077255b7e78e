//! The organization purge step `secrets`.

use std::future::Future;
use std::pin::Pin;

use agyn_core::Result;
use agyn_orgs::ResourceCleaner;
use agyn_store::Db;

use crate::store::{self, DELETE_BATCH};

/// Purge step that deletes an organization's image pull secrets, secrets
/// and secret providers. It needs only the database, so it can be built
/// before [`agyn_orgs::Organizations`].
pub struct SecretsCleaner {
    db: Db,
}

impl SecretsCleaner {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl ResourceCleaner for SecretsCleaner {
    fn step(&self) -> &'static str {
        "secrets"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(delete_organization(&self.db, organization_id))
    }
}

/// Deletes the organization's rows, 1,000 per transaction. Image pull
/// secrets and secrets go first because they reference the providers.
pub(crate) async fn delete_organization(db: &Db, org_id: &str) -> Result<()> {
    let mut counts = [0u64; 3];
    let tables = ["image_pull_secrets", "secrets", "secret_providers"];
    for (table, count) in tables.iter().zip(counts.iter_mut()) {
        loop {
            let mut tx = db.begin_write().await?;
            let batch = store::delete_organization_batch(&mut tx, table, org_id).await?;
            tx.commit().await?;
            *count += batch;
            if batch < DELETE_BATCH as u64 {
                break;
            }
        }
    }
    tracing::info!(
        organization_id = %org_id,
        image_pull_secrets = counts[0],
        secrets = counts[1],
        secret_providers = counts[2],
        "Organization secrets deleted"
    );
    Ok(())
}
