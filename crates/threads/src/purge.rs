//! The `threads` step of the organization purge.

use std::future::Future;
use std::pin::Pin;

use agyn_authz::Authorizer;
use agyn_core::Result;
use agyn_core::id::parse_id;
use agyn_orgs::ResourceCleaner;
use agyn_store::Db;

use crate::store::cleanup::{self, ROW_BATCH};
use crate::{Threads, thread_object};

/// Deletes an organization's threads for the organization purge. It needs
/// only the database, so it can be built before [`agyn_orgs::Organizations`],
/// which [`Threads`] depends on.
pub struct ThreadsCleaner {
    db: Db,
    authorizer: Authorizer,
}

impl ThreadsCleaner {
    pub fn new(db: Db) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            db,
        }
    }
}

impl ResourceCleaner for ThreadsCleaner {
    fn step(&self) -> &'static str {
        "threads"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(delete_organization_threads(
            &self.db,
            &self.authorizer,
            organization_id,
        ))
    }
}

impl Threads {
    /// DeleteOrganizationResources (internal): deletes the organization's
    /// threads with their participants, messages, file links, recipient
    /// rows and tuples. Idempotent.
    pub async fn delete_organization_resources(&self, organization_id: &str) -> Result<()> {
        let org_id = parse_id("organization_id", organization_id)?;
        delete_organization_threads(&self.db, &self.authorizer, &org_id).await
    }
}

/// Rows that are deleted in batches of [`ROW_BATCH`], children first.
#[derive(Clone, Copy)]
enum Rows {
    Recipients,
    MessageFiles,
    Messages,
}

async fn delete_organization_threads(db: &Db, authorizer: &Authorizer, org_id: &str) -> Result<()> {
    for rows in [Rows::Recipients, Rows::MessageFiles, Rows::Messages] {
        loop {
            let mut tx = db.begin_write().await?;
            let deleted = match rows {
                Rows::Recipients => cleanup::delete_recipients(&mut tx, org_id).await?,
                Rows::MessageFiles => cleanup::delete_message_files(&mut tx, org_id).await?,
                Rows::Messages => cleanup::delete_messages(&mut tx, org_id).await?,
            };
            tx.commit().await?;
            if deleted < ROW_BATCH as u64 {
                break;
            }
        }
    }
    let mut threads = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let batch = cleanup::thread_batch(&mut tx, org_id).await?;
        if batch.is_empty() {
            break;
        }
        for thread_id in &batch {
            authorizer
                .delete_object_in(&mut tx, &thread_object(thread_id), None)
                .await?;
            cleanup::delete_thread(&mut tx, thread_id).await?;
        }
        tx.commit().await?;
        threads += batch.len();
    }
    tracing::info!(organization_id = %org_id, threads, "Organization threads deleted");
    Ok(())
}
