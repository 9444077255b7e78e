//! The organization deletion cascade.
//!
//! DeleteOrganization only closes an organization: it becomes DELETING
//! and loses every owner and member tuple. [`Organizations::run_purges`]
//! then deletes what each service owns, one step at a time in the fixed
//! order of [`DELETION_STEPS`], persisting the current step before each
//! call so that a restart resumes where it stopped. The last step removes
//! the memberships, the remaining tuples and the organization row, which
//! frees the slug.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agyn_core::Result;
use agyn_core::time::now_micros;
use tokio::sync::Notify;

use crate::store::{self, OrgState};
use crate::{Organizations, org_object};

/// Cascade steps, in the order they run; each names the service whose
/// resources it deletes.
pub const DELETION_STEPS: &[&str] = &[
    "agents", "runners", "apps", "chat", "threads", "llm", "secrets", "identity",
];

/// How often organizations being deleted are looked for without a wake-up.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Deletes one service's resources of an organization. Implementations
/// delete by organization id and are idempotent: a step may run again
/// after a crash or a failure.
pub trait ResourceCleaner: Send + Sync {
    /// Returns the step of [`DELETION_STEPS`] that this cleaner serves.
    fn step(&self) -> &'static str;

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
}

pub(crate) struct Purger {
    cleaners: Vec<Arc<dyn ResourceCleaner>>,
    wake: Notify,
}

impl Purger {
    pub(crate) fn new(cleaners: Vec<Arc<dyn ResourceCleaner>>) -> Self {
        for cleaner in &cleaners {
            assert!(
                DELETION_STEPS.contains(&cleaner.step()),
                "unknown deletion step {}",
                cleaner.step()
            );
        }
        Self {
            cleaners,
            wake: Notify::new(),
        }
    }

    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Retry state of an organization whose purge failed.
struct Backoff {
    delay: Duration,
    next: Instant,
}

impl Organizations {
    /// Purges organizations being deleted until `shutdown` resolves:
    /// after every DeleteOrganization, and every 30 seconds. A failing
    /// step is retried after 5 seconds, doubling up to 5 minutes.
    /// `agyn serve` runs it on the leader only. The steps are idempotent,
    /// so two replicas during a leadership change only repeat work.
    pub async fn run_purges(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failing: HashMap<String, Backoff> = HashMap::new();
        loop {
            match store::deleting_orgs(&self.db).await {
                Ok(ids) => {
                    failing.retain(|id, _| ids.contains(id));
                    for id in ids {
                        if failing
                            .get(&id)
                            .is_some_and(|backoff| backoff.next > Instant::now())
                        {
                            continue;
                        }
                        match self.purge(&id).await {
                            Ok(()) => {
                                failing.remove(&id);
                            }
                            Err(error) => {
                                let delay = failing.get(&id).map_or(FIRST_RETRY, |backoff| {
                                    (backoff.delay * 2).min(MAX_RETRY)
                                });
                                tracing::warn!(
                                    organization_id = %id,
                                    error = %error,
                                    retry_s = delay.as_secs(),
                                    "Organization purge step failed"
                                );
                                failing.insert(
                                    id,
                                    Backoff {
                                        delay,
                                        next: Instant::now() + delay,
                                    },
                                );
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Failed to list organizations being deleted")
                }
            }
            let next_retry = failing
                .values()
                .map(|backoff| backoff.next.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(SWEEP_INTERVAL)
                .min(SWEEP_INTERVAL);
            tokio::select! {
                () = &mut shutdown => return,
                () = self.purge.wake.notified() => {}
                () = tokio::time::sleep(next_retry) => {}
            }
        }
    }

    /// Runs the remaining steps of one organization's purge and removes it.
    pub async fn purge(&self, id: &str) -> Result<()> {
        let mut connection = self.db.pool().acquire().await?;
        let Some(org) = store::org_by_id(&mut connection, id).await? else {
            return Ok(());
        };
        drop(connection);
        if org.state != OrgState::Deleting {
            return Ok(());
        }
        let start = DELETION_STEPS
            .iter()
            .position(|step| *step == org.deletion_step)
            .unwrap_or(0);
        for step in &DELETION_STEPS[start..] {
            self.persist_step(id, step).await?;
            for cleaner in self
                .purge
                .cleaners
                .iter()
                .filter(|cleaner| cleaner.step() == *step)
            {
                cleaner.delete_organization_resources(id).await?;
            }
        }
        let mut tx = self.db.begin_write().await?;
        self.authorizer
            .delete_object_in(&mut tx, &org_object(id), None)
            .await?;
        store::delete_org(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(organization_id = %id, slug = %org.slug, "Organization purged");
        Ok(())
    }

    async fn persist_step(&self, id: &str, step: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if let Some(mut org) = store::org_by_id(&mut tx, id).await?
            && org.deletion_step != step
        {
            org.deletion_step = step.to_string();
            org.updated_at = now_micros().max(org.updated_at);
            store::update_org(&mut tx, &org).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
