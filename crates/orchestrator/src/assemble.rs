//! Assembly inputs that come from other services: the agent's model, the
//! secret values of its environment variables and the registry
//! credentials of its image pull secrets.

use std::collections::{HashMap, HashSet};

use agyn_agents::{AgentBundle, AgentRecord, EnvSource};
use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
use agyn_core::error::Code;
use agyn_core::{Error, Secret};

use crate::pending::is_transient;
use crate::{ORCHESTRATOR, Orchestrator};

/// Reason a start cannot go ahead now.
#[derive(Debug)]
pub(crate) enum Blocked {
    /// The configuration cannot run; recorded as a FAILED `CONFIG_INVALID`
    /// workload with this message, so backoff and the attempt limit apply.
    Config(String),
    /// Retried on a later pass; nothing is recorded.
    Transient(String),
    /// The thread must be degraded with this reason.
    Degrade(&'static str),
}

impl Blocked {
    /// Classifies a failed call: transient when it may go away by itself,
    /// a configuration error otherwise. `context` names what was looked up.
    pub(crate) fn from_error(context: &str, error: &Error) -> Self {
        let message = format!("{context}: {}", error.message());
        if is_transient(error) {
            Self::Transient(message)
        } else {
            Self::Config(message)
        }
    }
}

/// The resolved inputs of one workload. Holds secret values, so it is
/// never logged.
pub(crate) struct Resolved {
    /// Values of the secret-backed environment variables, by env id.
    pub secret_env: HashMap<String, Secret<String>>,
    /// At most one credential per registry.
    pub pull_credentials: Vec<runner_pb::ImagePullCredential>,
}

impl Orchestrator {
    /// Checks the agent's model and resolves every secret the workload of
    /// `bundle` needs.
    pub(crate) async fn resolve(&self, bundle: &AgentBundle) -> Result<Resolved, Blocked> {
        self.check_model(&bundle.agent).await?;
        let mut secret_env = HashMap::new();
        for env in &bundle.envs {
            let EnvSource::Secret(secret_id) = &env.source else {
                continue;
            };
            let value = self
                .services()
                .secrets
                .resolve_secret(&ORCHESTRATOR, secret_id)
                .await
                .map_err(|error| Blocked::from_error(&format!("env {}", env.name), &error))?;
            secret_env.insert(env.id.clone(), value);
        }
        let pull_credentials = self.resolve_pull_credentials(bundle).await?;
        Ok(Resolved {
            secret_env,
            pull_credentials,
        })
    }

    /// Requires a model that exists in the agent's organization.
    async fn check_model(&self, agent: &AgentRecord) -> Result<(), Blocked> {
        if agent.model.is_empty() {
            return Err(Blocked::Config(format!(
                "agent {} has no model; set one with UpdateAgent",
                agent.id
            )));
        }
        let not_found = || {
            Blocked::Config(format!(
                "model {} of agent {} not found in organization {}",
                agent.model, agent.id, agent.organization_id
            ))
        };
        match self
            .services()
            .llm
            .get_model(&ORCHESTRATOR, &agent.model)
            .await
        {
            Ok(model) if model.organization_id == agent.organization_id => Ok(()),
            Ok(_) => Err(not_found()),
            Err(error) if error.code() == Code::NotFound => Err(not_found()),
            Err(error) => Err(Blocked::from_error("model", &error)),
        }
    }

    /// Resolves the image pull secrets attached to the agent, its MCP
    /// servers and hooks, and merges them by registry. Two different
    /// credentials for one registry are a configuration error.
    async fn resolve_pull_credentials(
        &self,
        bundle: &AgentBundle,
    ) -> Result<Vec<runner_pb::ImagePullCredential>, Blocked> {
        let mut by_registry: Vec<(String, runner_pb::ImagePullCredential)> = Vec::new();
        let mut resolved: HashSet<&str> = HashSet::new();
        for attachment in &bundle.image_pull_secret_attachments {
            let secret_id = attachment.image_pull_secret_id.as_str();
            if !resolved.insert(secret_id) {
                continue;
            }
            let credentials = self
                .services()
                .secrets
                .resolve_image_pull_secret(&ORCHESTRATOR, secret_id)
                .await
                .map_err(|error| {
                    Blocked::from_error(&format!("image pull secret {secret_id}"), &error)
                })?;
            let existing = by_registry
                .iter()
                .find(|(_, credential)| credential.registry == credentials.registry);
            match existing {
                Some((first_id, credential)) => {
                    let same = credential.username == credentials.username
                        && credential.password == *credentials.password.expose();
                    if !same {
                        return Err(Blocked::Config(format!(
                            "image pull secrets {first_id} and {secret_id} give different \
                             credentials for registry {}; attach one per registry",
                            credentials.registry
                        )));
                    }
                }
                None => by_registry.push((
                    secret_id.to_string(),
                    runner_pb::ImagePullCredential {
                        registry: credentials.registry,
                        username: credentials.username,
                        password: credentials.password.into_inner(),
                        ..Default::default()
                    },
                )),
            }
        }
        Ok(by_registry
            .into_iter()
            .map(|(_, credential)| credential)
            .collect())
    }
}
