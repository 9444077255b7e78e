//! Retention: deleting spans that were last stored long ago.

use std::time::Duration;

use agyn_core::Result;
use agyn_core::time::now_micros;

use crate::{Tracing, duration_micros, store};

/// Default of `tracing.retention`: 14 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Spans deleted per transaction.
const PRUNE_BATCH: i64 = 10_000;

impl Tracing {
    /// Deletes the spans whose `updated_at` is more than `older_than` ago,
    /// 10,000 per transaction, and returns how many were deleted.
    pub async fn prune(&self, older_than: Duration) -> Result<u64> {
        let cutoff = now_micros().saturating_sub(duration_micros(older_than));
        let mut deleted = 0;
        loop {
            let mut tx = self.db.begin_write().await?;
            let batch = store::delete_updated_before(&mut tx, cutoff, PRUNE_BATCH).await?;
            tx.commit().await?;
            deleted += batch;
            if batch < PRUNE_BATCH as u64 {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "Pruned expired spans");
        }
        Ok(deleted)
    }
}
