//! Files: uploaded blobs, their metadata and signed download links.
//!
//! [`Files`] contains the logic and storage. The content lives in an
//! [`ObjectStore`] under the file id: [`LocalStore`] keeps it under the
//! data directory and [`S3Store`] in an S3-compatible bucket. The metadata
//! row is inserted only after the object is complete, so a failed or
//! aborted upload leaves no row. [`service`] serves `FilesService` and
//! `FilesGateway`, and [`Files::router`] serves the HTTP upload route and
//! the signed download route.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod access;
mod content;
mod db;
mod http;
mod model;
mod objects;
pub mod service;
mod signing;
mod upload;
mod validate;

use std::sync::Arc;

use agyn_authz::Authorizer;
use agyn_core::{Caller, Error, Result};
use agyn_orgs::Organizations;
use agyn_store::Db;

pub use content::{DEFAULT_LINK_LIFETIME, DownloadUrl, MAX_LINK_LIFETIME, ORPHAN_AGE};
pub use model::{FileRecord, UploadMetadata};
pub use objects::{
    LocalStore, ObjectStore, ObjectStream, PART_BYTES, S3Settings, S3Store, StagedObject,
};
pub use signing::DownloadKey;

/// Default of `files.max_upload_bytes`: 20 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024;

/// Size of the pieces that GetFileContent and the download route send.
pub const CONTENT_CHUNK_BYTES: usize = 64 * 1024;

/// Files over one database and one object store.
#[derive(Clone)]
pub struct Files {
    db: Db,
    objects: Arc<dyn ObjectStore>,
    orgs: Organizations,
    authorizer: Authorizer,
    download_key: DownloadKey,
    /// Base of download URLs, such as `https://agyn.example.com`, without
    /// a trailing slash.
    public_url: String,
    max_upload_bytes: u64,
}

impl Files {
    /// Builds the service. `public_url` is the externally reachable base
    /// URL that download links start with, and `download_key` signs them.
    pub fn new(
        db: Db,
        orgs: Organizations,
        objects: Arc<dyn ObjectStore>,
        download_key: DownloadKey,
        public_url: &str,
    ) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            db,
            objects,
            orgs,
            download_key,
            public_url: public_url.trim_end_matches('/').to_string(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }

    /// Sets `files.max_upload_bytes`, the largest accepted file.
    pub fn with_max_upload_bytes(mut self, max_upload_bytes: u64) -> Self {
        self.max_upload_bytes = max_upload_bytes;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// GetFileMetadata: the file, after the read rule.
    pub async fn get_file_metadata(&self, caller: &Caller, id: &str) -> Result<FileRecord> {
        let id = agyn_core::id::parse_id("id", id)?;
        let record = self.load(&id).await?;
        self.authorize_read(caller, &record).await?;
        Ok(record)
    }

    async fn load(&self, id: &str) -> Result<FileRecord> {
        db::file_by_id(&self.db, id)
            .await?
            .ok_or_else(|| Error::not_found("file", id))
    }
}

/// Builds the error of every object store failure. The caller sees only
/// `storage error`, and the cause is logged.
fn storage_error(error: std::io::Error) -> Error {
    Error::internal("storage error", error)
}
