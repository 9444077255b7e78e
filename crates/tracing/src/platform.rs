//! [`TraceDirectory`] over the agents, threads and runners services of
//! this process.

use agyn_agents::Agents;
use agyn_core::error::Code;
use agyn_core::{Caller, Result};
use agyn_runners::Runners;
use agyn_threads::Threads;

use crate::directory::{AgentIdentity, Lookup, MessageThread, TraceDirectory, WorkloadState};

/// Component name the lookups run as.
const COMPONENT: Caller = Caller::Component("tracing");

/// The platform's [`TraceDirectory`]: ResolveAgentIdentity,
/// GetMessageInternal and GetWorkload of the in-process services.
#[derive(Clone)]
pub struct PlatformDirectory {
    agents: Agents,
    threads: Threads,
    runners: Runners,
}

impl PlatformDirectory {
    pub fn new(agents: Agents, threads: Threads, runners: Runners) -> Self {
        Self {
            agents,
            threads,
            runners,
        }
    }
}

/// Turns `not_found`, and `invalid_argument` for an id that is not a
/// UUID, into `None`.
fn found<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if matches!(error.code(), Code::NotFound | Code::InvalidArgument) => Ok(None),
        Err(error) => Err(error),
    }
}

impl TraceDirectory for PlatformDirectory {
    fn resolve_agent<'a>(&'a self, identity_id: &'a str) -> Lookup<'a, Option<AgentIdentity>> {
        Box::pin(async move {
            let resolved = self
                .agents
                .resolve_agent_identity(&COMPONENT, identity_id)
                .await;
            Ok(
                found(resolved)?.map(|(agent_id, organization_id)| AgentIdentity {
                    agent_id,
                    organization_id,
                }),
            )
        })
    }

    fn message_thread<'a>(&'a self, message_id: &'a str) -> Lookup<'a, Option<MessageThread>> {
        Box::pin(async move {
            let message = found(self.threads.get_message_internal(message_id).await)?;
            Ok(message.map(|(message, organization_id)| MessageThread {
                thread_id: message.thread_id,
                organization_id,
            }))
        })
    }

    fn read_workload<'a>(
        &'a self,
        caller: &'a Caller,
        workload_id: &'a str,
    ) -> Lookup<'a, WorkloadState> {
        Box::pin(async move {
            let workload = self.runners.get_workload(caller, workload_id).await?;
            Ok(WorkloadState {
                terminal: workload.status.is_terminal(),
            })
        })
    }
}
