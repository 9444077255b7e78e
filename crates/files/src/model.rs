//! Records and inputs of the files service.

/// Metadata row of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    pub organization_id: Option<String>,
    pub uploader_id: String,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
}

/// Description of an upload, sent before its content.
#[derive(Debug, Clone, Default)]
pub struct UploadMetadata {
    pub filename: String,
    /// Empty means `application/octet-stream`.
    pub content_type: String,
    /// Declared size in bytes, or 0 when unknown.
    pub size_bytes: i64,
    pub organization_id: Option<String>,
    /// Idempotency key; empty disables idempotency.
    pub request_id: String,
}
