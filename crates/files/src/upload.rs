//! UploadFile and `POST /files`: validation, streaming into the object
//! store while counting and hashing, then the metadata row.

use agyn_authz::ObjectRef;
use agyn_core::id::{new_id, parse_id};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};
use agyn_orgs::OrgState;
use agyn_store::request_keys;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};

use crate::model::{FileRecord, UploadMetadata};
use crate::objects::StagedObject;
use crate::{Files, db, storage_error, validate};

/// Idempotency scope of upload request keys.
const REQUEST_KEY_SCOPE: &str = "agynio.api.files.v1.UploadFile";

/// Size and digest of stored content.
struct Stored {
    size_bytes: u64,
    sha256: String,
}

impl Files {
    /// UploadFile: checks `metadata`, streams `chunks` into the object
    /// store, then inserts the metadata row. On any failure, including an
    /// `Err` item from `chunks`, nothing stays stored.
    pub async fn upload_file<S>(
        &self,
        caller: &Caller,
        metadata: &UploadMetadata,
        chunks: S,
    ) -> Result<FileRecord>
    where
        S: Stream<Item = Result<Bytes>> + Send,
    {
        let uploader_id = caller.identity_id()?.to_string();
        validate::filename(&metadata.filename)?;
        let content_type = validate::content_type(&metadata.content_type)?;
        let declared = validate::declared_size(metadata.size_bytes)?;
        request_keys::validate(&metadata.request_id)?;
        let organization_id = metadata
            .organization_id
            .as_deref()
            .map(|id| parse_id("organization_id", id))
            .transpose()?;
        if declared > self.max_upload_bytes {
            return Err(self.too_large());
        }
        if let Some(org_id) = &organization_id {
            self.authorize_upload_org(&uploader_id, org_id).await?;
        }
        let declared_text = declared.to_string();
        let fingerprint = request_keys::fingerprint([
            metadata.filename.as_str(),
            content_type.as_str(),
            organization_id.as_deref().unwrap_or(""),
            declared_text.as_str(),
        ]);
        if let Some(record) = self
            .replayed(&uploader_id, &metadata.request_id, &fingerprint)
            .await?
        {
            return Ok(record);
        }

        let id = new_id();
        let stored = self.store_content(&id, declared, chunks).await?;
        let record = FileRecord {
            id,
            filename: metadata.filename.clone(),
            content_type,
            size_bytes: stored.size_bytes as i64,
            sha256: stored.sha256,
            organization_id,
            uploader_id,
            created_at: now_micros(),
        };
        match self
            .insert(&record, &metadata.request_id, &fingerprint)
            .await
        {
            Ok(inserted) => {
                if inserted.id != record.id {
                    self.delete_object(&record.id).await;
                }
                tracing::info!(
                    file_id = %inserted.id,
                    uploader_id = %inserted.uploader_id,
                    size_bytes = inserted.size_bytes,
                    "File uploaded"
                );
                Ok(inserted)
            }
            Err(error) => {
                self.delete_object(&record.id).await;
                Err(error)
            }
        }
    }

    /// Builds the `resource_exhausted` error of a file above the upload limit.
    pub(crate) fn too_large(&self) -> Error {
        let limit = self.max_upload_bytes;
        Error::resource_exhausted(format!("file exceeds the {limit}-byte limit"))
            .with_reason("FILE_TOO_LARGE")
            .with_metadata("limit_bytes", limit.to_string())
    }

    /// Requires an existing organization, `can_read` on it, and that it is
    /// not being deleted.
    async fn authorize_upload_org(&self, uploader_id: &str, org_id: &str) -> Result<()> {
        let state = self.orgs.organization_state(org_id).await?;
        self.authorizer
            .require(
                &ObjectRef::identity(uploader_id),
                "can_read",
                &agyn_orgs::org_object(org_id),
            )
            .await?;
        match state {
            OrgState::Active => Ok(()),
            OrgState::Deleting => Err(Error::failed_precondition(format!(
                "organization {org_id} is being deleted"
            ))
            .with_reason("ORGANIZATION_DELETING")),
        }
    }

    /// Returns the file an earlier upload with `request_id` stored.
    async fn replayed(
        &self,
        uploader_id: &str,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<Option<FileRecord>> {
        let mut connection = self.db.pool().acquire().await?;
        let replayed = request_keys::replayed(
            &mut connection,
            REQUEST_KEY_SCOPE,
            uploader_id,
            request_id,
            fingerprint,
        )
        .await?;
        drop(connection);
        match replayed {
            Some(id) => Ok(Some(self.load(&id).await?)),
            None => Ok(None),
        }
    }

    /// Writes `chunks` to a staged object and commits it once the stream
    /// ended within the limit and matches a non-zero `declared` size.
    async fn store_content<S>(&self, id: &str, declared: u64, chunks: S) -> Result<Stored>
    where
        S: Stream<Item = Result<Bytes>> + Send,
    {
        let mut staged = self.objects.stage(id).await.map_err(storage_error)?;
        let stored = match self.write_chunks(staged.as_mut(), chunks).await {
            Ok(stored) => stored,
            Err(error) => {
                abort(staged, id).await;
                return Err(error);
            }
        };
        if declared != 0 && declared != stored.size_bytes {
            abort(staged, id).await;
            return Err(Error::invalid_field(
                "size_bytes",
                "does not match the uploaded data",
            ));
        }
        staged.commit().await.map_err(storage_error)?;
        Ok(stored)
    }

    async fn write_chunks<S>(&self, staged: &mut dyn StagedObject, chunks: S) -> Result<Stored>
    where
        S: Stream<Item = Result<Bytes>> + Send,
    {
        let mut chunks = std::pin::pin!(chunks);
        let mut hasher = Sha256::new();
        let mut size_bytes: u64 = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size_bytes += chunk.len() as u64;
            if size_bytes > self.max_upload_bytes {
                return Err(self.too_large());
            }
            hasher.update(&chunk);
            staged.write(chunk).await.map_err(storage_error)?;
        }
        let sha256 = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Stored { size_bytes, sha256 })
    }

    /// Inserts the row and records the request key. When a concurrent
    /// upload with the same key committed first, returns its file instead.
    async fn insert(
        &self,
        record: &FileRecord,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<FileRecord> {
        let result = async {
            let mut tx = self.db.begin_write().await?;
            db::insert(&mut tx, record).await?;
            request_keys::record(
                &mut tx,
                REQUEST_KEY_SCOPE,
                &record.uploader_id,
                request_id,
                fingerprint,
                &record.id,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => Ok(record.clone()),
            Err(error) if error.is_unique_violation() && !request_id.is_empty() => self
                .replayed(&record.uploader_id, request_id, fingerprint)
                .await?
                .ok_or(error),
            Err(error) => Err(error),
        }
    }

    /// Deletes an object whose row was never inserted. A failure is only
    /// logged, because the orphan sweep removes the object later.
    async fn delete_object(&self, id: &str) {
        if let Err(error) = self.objects.delete(id).await {
            tracing::warn!(%error, file_id = %id, "Failed to delete an unreferenced object");
        }
    }
}

async fn abort(staged: Box<dyn StagedObject>, id: &str) {
    if let Err(error) = staged.abort().await {
        tracing::warn!(%error, file_id = %id, "Failed to discard a staged upload");
    }
}
