//! Threads: the participant-agnostic message store. A thread belongs to one
//! organization and has participants (users, agents and apps alike),
//! immutable messages numbered from 1, and one read-state row per message
//! and recipient.
//!
//! [`Threads`] contains the logic and storage; [`service`] serves it as the
//! internal `ThreadsService` and the public `ThreadsGateway`.
//! [`ThreadsCleaner`] deletes an organization's threads during the
//! organization purge.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub use agyn_store::request_keys as keys;
mod messages;
pub mod ops;
mod participants;
mod purge;
mod send;
pub mod service;
mod store;
mod thread_cache;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::events::EventSink;
use agyn_core::{Caller, Error, IdentityKind, Result};
use agyn_orgs::{OrgState, Organizations};
use agyn_store::Db;
use agyn_store::sqlx::AnyConnection;

pub use participants::{ParticipantEntry, ParticipantRef, ThreadPlan};
pub use purge::ThreadsCleaner;
pub use send::SendInput;
pub use store::{MessageRecord, ParticipantRecord, PendingWork, ThreadRecord, ThreadStatus};

/// Maximum number of participants in a thread, the creator included.
pub const MAX_PARTICIPANTS: usize = 50;

/// A message that was just stored, as post-send hooks see it.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub message: MessageRecord,
    pub organization_id: String,
    pub sender_kind: IdentityKind,
}

/// Work that runs inside the SendMessage transaction once its messages are
/// inserted, such as the chat summary. The work of each hook runs behind
/// a savepoint, so a failure rolls back only that hook's writes, is
/// logged, and never fails the send.
pub trait PostSendHook: Send + Sync {
    /// Returns whether the hook has work for `sent`. It is called for
    /// every stored message inside the transaction, so it must not wait.
    fn applies_to(&self, sent: &SentMessage) -> bool;

    /// Does the work for `sent`, the messages of one transaction that
    /// [`PostSendHook::applies_to`] selected, in the order they were
    /// stored, on that transaction's `connection`.
    fn in_transaction<'a>(
        &'a self,
        connection: &'a mut AnyConnection,
        sent: &'a [&'a SentMessage],
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
}

/// Read checks on attached files: SendMessage checks each file before a
/// message may reference it, so a message can never grant access to a
/// file the sender could not read.
pub trait FileAccess: Send + Sync {
    /// Succeeds when file `file_id` exists and `caller` may read it;
    /// `not_found` or `permission_denied` otherwise.
    fn check_readable<'a>(
        &'a self,
        caller: &'a Caller,
        file_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
}

/// Threads, participants, messages and read state over one database.
#[derive(Clone)]
pub struct Threads {
    db: Db,
    authorizer: Authorizer,
    orgs: Organizations,
    events: Arc<dyn EventSink>,
    hooks: Vec<Arc<dyn PostSendHook>>,
    files: Option<Arc<dyn FileAccess>>,
    cache: Arc<thread_cache::ThreadCache>,
    /// Queue of the task that stores validated sends in batches, started
    /// by the first send so that it runs on the caller's tokio runtime.
    writer: Arc<OnceLock<writer::Queue>>,
}

impl Threads {
    /// `orgs` provides organization states for the write checks, and
    /// `events` receives `message.created` after each send.
    pub fn new(db: Db, orgs: Organizations, events: Arc<dyn EventSink>) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            db,
            orgs,
            events,
            hooks: Vec::new(),
            files: None,
            cache: Arc::default(),
            writer: Arc::default(),
        }
    }

    /// Checks attached files through `files`. Without it, attached ids are
    /// only checked to be UUIDs, which only tests of this crate rely on.
    pub fn with_file_access(mut self, files: Arc<dyn FileAccess>) -> Self {
        self.files = Some(files);
        self
    }

    /// Adds a hook that runs for every new message, in the order added.
    pub fn with_post_send_hook(mut self, hook: Arc<dyn PostSendHook>) -> Self {
        self.hooks.push(hook);
        // Clones made earlier keep their writer, which runs their hooks.
        self.writer = Arc::default();
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Succeeds when the organization exists and is not being deleted:
    /// `not_found` for an unknown one, and `failed_precondition` (reason
    /// `ORGANIZATION_DELETING`) while it is deleted.
    pub async fn ensure_organization_active(&self, organization_id: &str) -> Result<()> {
        match self.orgs.organization_state(organization_id).await? {
            OrgState::Active => Ok(()),
            OrgState::Deleting => Err(Error::failed_precondition(format!(
                "organization {organization_id} is being deleted"
            ))
            .with_reason("ORGANIZATION_DELETING")),
        }
    }
}

/// `thread:<id>`.
pub fn thread_object(id: &str) -> ObjectRef {
    ObjectRef::new("thread", id)
}

fn org_object(id: &str) -> ObjectRef {
    ObjectRef::new("organization", id)
}

fn agent_object(id: &str) -> ObjectRef {
    ObjectRef::new("agent", id)
}

fn cluster() -> ObjectRef {
    ObjectRef::new("cluster", "global")
}

/// Returns the calling identity's id and kind. Components act for no
/// identity and cannot call identity-scoped methods.
fn identity_of(caller: &Caller) -> Result<(&str, IdentityKind)> {
    match caller {
        Caller::Identity {
            identity_id, kind, ..
        } => Ok((identity_id, *kind)),
        Caller::Component(_) => Err(Error::unauthenticated("an identity is required")),
    }
}
