//! Starting a workload: assemble it, record it (with its new provisioned
//! volumes) and only then ask the runner to start it, so reconciliation
//! never mistakes an in-flight start for an orphan.

use std::collections::HashMap;

use agyn_agents::AgentBundle;
use agyn_core::error::Code;
use agyn_core::id::new_id;
use agyn_core::{Error, Result};
use agyn_pki::{IssuedCertificate, KeySource, Subject};
use agyn_runners::{
    FailureReason, NewWorkload, NewWorkloadVolume, VolumeStatus, WorkloadChanges, WorkloadStatus,
};

use crate::assemble::Blocked;
use crate::reconcile::record_containers;
use crate::select::Placement;
use crate::spec::{self, Credential, Spec, SpecInput};
use crate::{ORCHESTRATOR, Orchestrator, Pair};

impl Orchestrator {
    /// Assembles and starts the next workload of `pair`. A configuration
    /// error is recorded as a FAILED `CONFIG_INVALID` workload, a
    /// transient one is retried on a later pass.
    pub(crate) async fn start(&self, pair: &Pair, bundle: AgentBundle) -> Result<()> {
        match self.prepare_and_launch(pair, &bundle).await {
            Ok(()) => Ok(()),
            Err(Blocked::Transient(message)) => {
                self.log_transient(pair, &message);
                Ok(())
            }
            Err(Blocked::Config(message)) => self.record_config_failure(pair, &message).await,
            Err(Blocked::Degrade(reason)) => self.degrade(&pair.thread_id, reason).await,
        }
    }

    async fn prepare_and_launch(&self, pair: &Pair, bundle: &AgentBundle) -> Result<(), Blocked> {
        let resolved = self.resolve(bundle).await?;
        let placement = self.select_runner(pair, &bundle.agent).await?;
        let (volume_keys, new_volumes) = volume_keys(bundle, &placement)?;

        let workload_id = new_id();
        let certificate = self
            .issue_certificate(&pair.agent_id, &workload_id)
            .await
            .map_err(|error| Blocked::from_error("workload certificate", &error))?;
        let Some(private_key_pem) = certificate.private_key_pem.as_ref() else {
            self.revoke(&certificate.serial).await;
            return Err(Blocked::Transient(
                "the workload certificate was issued without a key".to_string(),
            ));
        };
        let built = spec::build(SpecInput {
            config: &self.inner.config,
            bundle,
            thread_id: &pair.thread_id,
            workload_id: &workload_id,
            secret_env: &resolved.secret_env,
            volume_keys: &volume_keys,
            credential: Credential {
                certificate_pem: &certificate.certificate_pem,
                private_key_pem,
                ca_pem: &certificate.ca_certificate_pem,
            },
            pull_credentials: resolved.pull_credentials,
        });
        let built = match built {
            Ok(built) => built,
            Err(message) => {
                self.revoke(&certificate.serial).await;
                return Err(Blocked::Config(message));
            }
        };
        self.record_and_start(
            pair,
            &placement,
            &workload_id,
            &certificate,
            built,
            new_volumes,
        )
        .await
    }

    async fn issue_certificate(
        &self,
        agent_id: &str,
        workload_id: &str,
    ) -> Result<IssuedCertificate> {
        self.services()
            .pki
            .issue(
                &Subject::Workload {
                    agent_id: agent_id.to_string(),
                    workload_id: workload_id.to_string(),
                },
                KeySource::Generate,
            )
            .await
    }

    /// Revokes a workload certificate that no record refers to.
    async fn revoke(&self, serial: &str) {
        let pki = &self.services().pki;
        let revoked = async {
            let mut connection = pki.db().pool().acquire().await?;
            pki.revoke_serial_in(&mut connection, serial).await
        };
        if let Err(error) = revoked.await {
            tracing::warn!(serial, %error, "Failed to revoke an unused workload certificate");
        }
    }

    async fn record_and_start(
        &self,
        pair: &Pair,
        placement: &Placement,
        workload_id: &str,
        certificate: &IssuedCertificate,
        built: Spec,
        new_volumes: Vec<NewWorkloadVolume>,
    ) -> Result<(), Blocked> {
        let input = NewWorkload {
            id: workload_id.to_string(),
            runner_id: placement.runner.id.clone(),
            thread_id: pair.thread_id.clone(),
            agent_id: pair.agent_id.clone(),
            organization_id: pair.organization_id.clone(),
            containers: built.containers,
            credential_id: certificate.serial.clone(),
            allocated_cpu_millicores: built.allocated_cpu_millicores,
            allocated_ram_bytes: built.allocated_ram_bytes,
            failure_reason: None,
            failure_message: String::new(),
            provisioned_volumes: new_volumes,
        };
        match self
            .services()
            .runners
            .create_workload(&ORCHESTRATOR, &input)
            .await
        {
            Ok(_) => {}
            Err(error) => {
                self.revoke(&certificate.serial).await;
                if error.code() == Code::AlreadyExists {
                    // Another start of this pair won; it serves the pair.
                    tracing::debug!(
                        thread_id = %pair.thread_id,
                        agent_id = %pair.agent_id,
                        "Another start recorded a workload for the pair first"
                    );
                    return Ok(());
                }
                return Err(Blocked::from_error("CreateWorkload", &error));
            }
        }
        tracing::info!(
            workload_id,
            thread_id = %pair.thread_id,
            agent_id = %pair.agent_id,
            runner_id = %placement.runner.id,
            "Starting a workload"
        );
        self.call_start(&placement.runner, workload_id, built.request)
            .await;
        Ok(())
    }

    /// Calls StartWorkload and records its outcome. A timeout or a
    /// transient error leaves the record STARTING for reconciliation and
    /// the watchdog, which is safe because the runner starts each workload
    /// id once.
    async fn call_start(
        &self,
        runner: &agyn_runners::RunnerRecord,
        workload_id: &str,
        request: agyn_api_runner::agynio::api::runner::v1::StartWorkloadRequest,
    ) {
        let client = match self.connect(runner) {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(workload_id, runner_id = %runner.id, %error, "Runner unreachable; reconciliation will settle the workload");
                return;
            }
        };
        let timeout = self.inner.config.start_call_timeout;
        let response = match tokio::time::timeout(timeout, client.start_workload(request)).await {
            Ok(response) => response,
            Err(_) => Err(Error::unavailable(format!(
                "StartWorkload did not return within {}s",
                timeout.as_secs()
            ))),
        };
        let changes = match response {
            Ok(response) => WorkloadChanges {
                instance_id: Some(response.instance_id),
                containers: Some(record_containers(&response.containers)),
                ..WorkloadChanges::default()
            },
            Err(error)
                if matches!(
                    error.code(),
                    Code::InvalidArgument | Code::FailedPrecondition
                ) =>
            {
                tracing::warn!(workload_id, runner_id = %runner.id, %error, "Runner rejected the workload");
                WorkloadChanges {
                    status: Some(WorkloadStatus::Failed),
                    failure_reason: Some(FailureReason::ConfigInvalid),
                    failure_message: Some(failure_message(error.message())),
                    ..WorkloadChanges::default()
                }
            }
            Err(error) => {
                tracing::warn!(workload_id, runner_id = %runner.id, %error, "StartWorkload failed; reconciliation will settle the workload");
                return;
            }
        };
        if let Err(error) = self
            .services()
            .runners
            .update_workload(&ORCHESTRATOR, workload_id, &changes)
            .await
        {
            tracing::warn!(workload_id, %error, "Failed to record the StartWorkload result");
        }
    }

    /// Records a start that failed on its configuration as a FAILED
    /// `CONFIG_INVALID` workload, so that backoff and the attempt limit
    /// apply to it as to any failed start.
    async fn record_config_failure(&self, pair: &Pair, message: &str) -> Result<()> {
        let workload_id = new_id();
        let input = NewWorkload {
            id: workload_id.clone(),
            thread_id: pair.thread_id.clone(),
            agent_id: pair.agent_id.clone(),
            organization_id: pair.organization_id.clone(),
            failure_reason: Some(FailureReason::ConfigInvalid),
            failure_message: failure_message(message),
            ..NewWorkload::default()
        };
        self.services()
            .runners
            .create_workload(&ORCHESTRATOR, &input)
            .await?;
        tracing::warn!(
            %workload_id,
            thread_id = %pair.thread_id,
            agent_id = %pair.agent_id,
            reason = message,
            "Workload configuration is invalid; recorded a failed start"
        );
        Ok(())
    }
}

/// Maximum characters of a stored failure message.
const MAX_FAILURE_MESSAGE: usize = 4096;

/// Cuts `message` to what a workload record stores.
pub(crate) fn failure_message(message: &str) -> String {
    message.chars().take(MAX_FAILURE_MESSAGE).collect()
}

/// Returns the provisioned volume id of every persistent volume the
/// workload mounts, by definition id: the thread's existing record when
/// there is one, otherwise a new id, which is also returned for
/// CreateWorkload.
fn volume_keys(
    bundle: &AgentBundle,
    placement: &Placement,
) -> Result<(HashMap<String, String>, Vec<NewWorkloadVolume>), Blocked> {
    let mut keys = HashMap::new();
    let mut new_volumes = Vec::new();
    for volume in bundle.volumes.iter().filter(|volume| volume.persistent) {
        let existing = placement
            .thread_volumes
            .iter()
            .find(|record| record.volume_id == volume.id);
        match existing {
            Some(record) if record.status == VolumeStatus::Deprovisioning => {
                return Err(Blocked::Transient(format!(
                    "volume {} of the thread is being deprovisioned",
                    record.id
                )));
            }
            Some(record) => {
                keys.insert(volume.id.clone(), record.id.clone());
            }
            None => {
                let key = new_id();
                keys.insert(volume.id.clone(), key.clone());
                new_volumes.push(NewWorkloadVolume {
                    id: key,
                    volume_id: volume.id.clone(),
                    size: volume.size.clone(),
                });
            }
        }
    }
    Ok((keys, new_volumes))
}
