//! The organization purge step `runners`.

use std::future::Future;
use std::pin::Pin;

use agyn_core::{Caller, Error, Result};
use agyn_orgs::ResourceCleaner;
use agyn_pki::{CertificateKind, Pki};
use agyn_store::Db;

use crate::store::{self, runners, volumes, workloads};
use crate::{Runners, require_component};

/// Purge step that deletes an organization's workload records,
/// provisioned volume records and organization runners. It needs only the
/// database and the PKI, so it can be built before
/// [`agyn_orgs::Organizations`].
pub struct RunnersCleaner {
    db: Db,
    pki: Pki,
}

impl RunnersCleaner {
    pub fn new(db: Db, pki: Pki) -> Self {
        Self { db, pki }
    }
}

impl ResourceCleaner for RunnersCleaner {
    fn step(&self) -> &'static str {
        "runners"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(delete_organization(&self.db, &self.pki, organization_id))
    }
}

impl Runners {
    /// DeleteOrganizationResources: organizations only. Idempotent.
    pub async fn delete_organization_resources(
        &self,
        caller: &Caller,
        organization_id: &str,
    ) -> Result<()> {
        require_component(caller, "DeleteOrganizationResources", &["organizations"])?;
        let org_id = agyn_core::id::parse_id("organization_id", organization_id)?;
        delete_organization(&self.db, &self.pki, &org_id).await
    }
}

/// Deletes the organization's rows, 1,000 per transaction, once every
/// workload is terminal and every volume is DELETED or FAILED. Until then
/// it fails with `failed_precondition`, so the purge retries later.
/// Runners go last, each with its certificates and identity.
pub(crate) async fn delete_organization(db: &Db, pki: &Pki, org_id: &str) -> Result<()> {
    let mut connection = db.pool().acquire().await?;
    if workloads::organization_has_active(&mut connection, org_id).await?
        || volumes::organization_has_active(&mut connection, org_id).await?
    {
        return Err(Error::failed_precondition(format!(
            "organization {org_id} still has non-terminal workloads or volumes; retry once the \
             orchestrator has stopped them"
        )));
    }
    drop(connection);

    let mut counts = [0u64; 3];
    for (table, count) in ["workloads", "provisioned_volumes"]
        .iter()
        .zip(counts.iter_mut())
    {
        loop {
            let mut tx = db.begin_write().await?;
            let batch = store::delete_organization_batch(&mut tx, table, org_id).await?;
            tx.commit().await?;
            *count += batch;
            if batch < store::DELETE_BATCH as u64 {
                break;
            }
        }
    }
    loop {
        let mut tx = db.begin_write().await?;
        let ids = runners::organization_batch(&mut tx, org_id).await?;
        for id in &ids {
            pki.revoke_subject_in(&mut tx, CertificateKind::Runner, id)
                .await?;
            runners::delete(&mut tx, id).await?;
        }
        tx.commit().await?;
        counts[2] += ids.len() as u64;
        if (ids.len() as i64) < store::DELETE_BATCH {
            break;
        }
    }
    tracing::info!(
        organization_id = %org_id,
        workloads = counts[0],
        provisioned_volumes = counts[1],
        runners = counts[2],
        "Organization runners deleted"
    );
    Ok(())
}
