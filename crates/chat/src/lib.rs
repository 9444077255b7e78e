//! Chat: conversations over threads. A conversation is a thread (same id)
//! plus a chat record with a user-controlled status and a summary. Chat
//! adds per-caller unread counts and agent activity. Messages are sent and
//! read through the threads API.
//!
//! [`Chat`] contains the logic and storage; [`service`] serves it as the
//! internal `ChatService` and the public `ChatGateway`. [`SummaryHook`]
//! fills in summaries after sends and [`ChatCleaner`] deletes an
//! organization's chat records during the organization purge.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub mod ops;
pub mod service;
mod store;
mod summary;

use std::future::Future;
use std::pin::Pin;

use agyn_core::Result;
use agyn_core::id::parse_id;
use agyn_orgs::ResourceCleaner;
use agyn_store::Db;
use agyn_threads::Threads;

pub use ops::{ActivityStatus, Conversation, CreateInput};
pub use store::{ConversationRecord, ConversationStatus};
pub use summary::{SummaryHook, summary_from_body};

/// Conversations over one database and the threads they belong to.
#[derive(Clone)]
pub struct Chat {
    db: Db,
    threads: Threads,
}

impl Chat {
    pub fn new(db: Db, threads: Threads) -> Self {
        Self { db, threads }
    }

    /// DeleteOrganizationResources (internal): deletes every chat record
    /// of the organization. Idempotent.
    pub async fn delete_organization_resources(&self, organization_id: &str) -> Result<()> {
        let org_id = parse_id("organization_id", organization_id)?;
        delete_organization_conversations(&self.db, &org_id).await
    }
}

/// Deletes an organization's chat records for the organization purge. It
/// needs only the database, so it can be built before
/// [`agyn_orgs::Organizations`].
pub struct ChatCleaner {
    db: Db,
}

impl ChatCleaner {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl ResourceCleaner for ChatCleaner {
    fn step(&self) -> &'static str {
        "chat"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(delete_organization_conversations(&self.db, organization_id))
    }
}

/// Deletes the organization's chat records, 1,000 per transaction.
async fn delete_organization_conversations(db: &Db, org_id: &str) -> Result<()> {
    let mut deleted = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let batch = store::delete_conversation_batch(&mut tx, org_id).await?;
        tx.commit().await?;
        deleted += batch;
        if batch < store::DELETE_BATCH as u64 {
            break;
        }
    }
    tracing::info!(organization_id = %org_id, conversations = deleted, "Organization conversations deleted");
    Ok(())
}
