//! Lookups in the services that own agents, thread messages and
//! workloads. The platform implements [`TraceDirectory`] over the agents,
//! threads and runners services.

use std::future::Future;
use std::pin::Pin;

use agyn_core::{Caller, Result};

/// Boxed future of a directory lookup.
pub type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The agent behind an identity and its organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub organization_id: String,
}

/// The thread of a message and the thread's organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageThread {
    pub thread_id: String,
    pub organization_id: String,
}

/// State of a workload that a caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadState {
    /// Whether the workload has stopped or failed for good.
    pub terminal: bool,
}

/// Lookups that ingest and StreamRunEvents need from other services.
pub trait TraceDirectory: Send + Sync {
    /// Resolves an identity to its agent (AgentsService.ResolveAgentIdentity).
    /// Returns `None` when the identity is not an agent.
    fn resolve_agent<'a>(&'a self, identity_id: &'a str) -> Lookup<'a, Option<AgentIdentity>>;

    /// Returns the thread of a message (ThreadsService.GetMessageInternal),
    /// or `None` when the message does not exist.
    fn message_thread<'a>(&'a self, message_id: &'a str) -> Lookup<'a, Option<MessageThread>>;

    /// Reads the workload `workload_id` as `caller`, under the workload
    /// read rule: `can_view_workloads` on its organization, `can_read` on
    /// its thread, or the caller is its agent. Fails with `not_found` for
    /// an unknown workload and `permission_denied` when the rule fails.
    fn read_workload<'a>(
        &'a self,
        caller: &'a Caller,
        workload_id: &'a str,
    ) -> Lookup<'a, WorkloadState>;
}
