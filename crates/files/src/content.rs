//! GetDownloadUrl, GetFileContent and the sweep of orphaned objects.

use std::time::{Duration, SystemTime};

use agyn_core::{Caller, Error, Result};

use crate::model::FileRecord;
use crate::objects::ObjectStream;
use crate::{Files, db, storage_error};

/// Lifetime of a download link whose request names none.
pub const DEFAULT_LINK_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Maximum lifetime of a download link. Longer requests are clamped to it.
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Age after which an object without a metadata row is deleted.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60 * 60);

/// A signed download link.
#[derive(Debug, Clone)]
pub struct DownloadUrl {
    pub url: String,
    /// Unix seconds after which the link is rejected.
    pub expires_at: i64,
}

impl Files {
    /// GetDownloadUrl: a link to the content that needs no other
    /// credential until it expires. `lifetime` is `None` or zero for the
    /// default of 1 hour, and is clamped to 24 hours.
    pub async fn get_download_url(
        &self,
        caller: &Caller,
        id: &str,
        lifetime: Option<Duration>,
    ) -> Result<DownloadUrl> {
        let record = self.get_file_metadata(caller, id).await?;
        let lifetime = match lifetime {
            None => DEFAULT_LINK_LIFETIME,
            Some(lifetime) if lifetime.is_zero() => DEFAULT_LINK_LIFETIME,
            Some(lifetime) => lifetime.min(MAX_LINK_LIFETIME),
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        // Rounded up to whole seconds, so a link never lives shorter than
        // requested.
        let expires_at = (now + lifetime).as_secs_f64().ceil() as i64;
        // NOTE: the S3 store uses this signed route as well, not a presigned
        // S3 URL, so S3 downloads also stream through this server.
        let signature = self.download_key.sign(&record.id, expires_at);
        Ok(DownloadUrl {
            url: format!(
                "{}/files/{}/content?exp={expires_at}&sig={signature}",
                self.public_url, record.id
            ),
            expires_at,
        })
    }

    /// GetFileContent: the file and a stream of its whole content.
    pub async fn get_file_content(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(FileRecord, ObjectStream)> {
        let record = self.get_file_metadata(caller, id).await?;
        let stream = self
            .read_range(&record, 0..record.size_bytes as u64)
            .await?;
        Ok((record, stream))
    }

    pub(crate) async fn read_range(
        &self,
        record: &FileRecord,
        range: std::ops::Range<u64>,
    ) -> Result<ObjectStream> {
        self.objects
            .read(&record.id, range)
            .await
            .map_err(storage_error)
    }

    /// Deletes objects older than 1 hour that have no metadata row, which
    /// crashes between the object write and the row insert leave behind.
    /// Only the leader replica should run it. Returns the number of
    /// deleted objects.
    pub async fn sweep_orphans(&self) -> Result<usize> {
        let cutoff = SystemTime::now() - ORPHAN_AGE;
        let candidates = self
            .objects
            .list_older_than(cutoff)
            .await
            .map_err(storage_error)?;
        let mut deleted = 0;
        for id in candidates {
            if db::file_exists(&self.db, &id).await? {
                continue;
            }
            self.objects.delete(&id).await.map_err(storage_error)?;
            tracing::info!(file_id = %id, "Orphaned object deleted");
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Converts a request's `expiry` into a lifetime, rejecting negative
/// values.
pub(crate) fn lifetime_from_seconds(seconds: i64, nanos: i32) -> Result<Option<Duration>> {
    if seconds < 0 || nanos < 0 {
        return Err(Error::invalid_field("expiry", "must not be negative"));
    }
    Ok(Some(Duration::new(seconds as u64, nanos as u32)))
}
