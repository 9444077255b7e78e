//! `FilesService` (internal) and `FilesGateway` (public) over [`Files`].
//!
//! The gateway methods run the same code as the internal ones, with the
//! caller the gateway attached to the request.

use agyn_api_files::agynio::api::files::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use agyn_core::{Error, Result};
use bytes::Bytes;
use connectrpc::{
    ConnectError, InboundStream, RequestContext, Response, ServiceRequest, ServiceResult,
    ServiceStream, StreamMessage,
};
use futures::StreamExt as _;
use pb::__buffa::view::oneof::upload_file_request::Payload;

use crate::model::{FileRecord, UploadMetadata};
use crate::{Files, storage_error};

/// Largest accepted `UploadFileChunk.data`.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Converts a file record.
pub fn file_to_proto(record: &FileRecord) -> pb::FileInfo {
    pb::FileInfo {
        meta: pb::EntityMeta {
            id: record.id.clone(),
            created_at: timestamp(record.created_at).into(),
            updated_at: timestamp(record.created_at).into(),
            ..Default::default()
        }
        .into(),
        filename: record.filename.clone(),
        content_type: record.content_type.clone(),
        size_bytes: record.size_bytes,
        sha256: record.sha256.clone(),
        organization_id: record.organization_id.clone().unwrap_or_default(),
        uploader_id: record.uploader_id.clone(),
        ..Default::default()
    }
}

/// Reads the metadata frame that must open an upload stream.
fn metadata_from_frame(frame: &StreamMessage<pb::UploadFileRequest>) -> Result<UploadMetadata> {
    match &frame.view().payload {
        Some(Payload::Metadata(metadata)) => Ok(UploadMetadata {
            filename: metadata.filename.to_string(),
            content_type: metadata.content_type.to_string(),
            size_bytes: metadata.size_bytes,
            organization_id: metadata.organization_id.map(str::to_string),
            request_id: metadata.request_id.to_string(),
        }),
        _ => Err(Error::invalid_argument("first frame must be metadata")),
    }
}

/// Reads the content of a frame after the metadata.
fn chunk_from_frame(
    frame: std::result::Result<StreamMessage<pb::UploadFileRequest>, ConnectError>,
) -> Result<Bytes> {
    let Ok(frame) = frame else {
        return Err(Error::invalid_argument(
            "the upload stream ended before it was complete",
        ));
    };
    match &frame.view().payload {
        Some(Payload::Chunk(chunk)) if chunk.data.len() > MAX_CHUNK_BYTES => Err(
            Error::invalid_field("chunk.data", "must be at most 1048576 bytes per chunk"),
        ),
        Some(Payload::Chunk(chunk)) => Ok(Bytes::copy_from_slice(chunk.data)),
        Some(Payload::Metadata(_)) => Err(Error::invalid_argument("metadata sent twice")),
        None => Err(Error::invalid_argument(
            "payload: every frame must set metadata or chunk",
        )),
    }
}

async fn upload_file(
    files: &Files,
    ctx: &RequestContext,
    mut requests: InboundStream<pb::UploadFileRequest>,
) -> ServiceResult<pb::UploadFileResponse> {
    let caller = request_caller(ctx)?.clone();
    let metadata = match requests.next().await {
        Some(Ok(frame)) => metadata_from_frame(&frame)?,
        Some(Err(error)) => return Err(error),
        None => return Err(Error::invalid_argument("first frame must be metadata").into()),
    };
    let record = files
        .upload_file(&caller, &metadata, requests.map(chunk_from_frame))
        .await?;
    Response::ok(pb::UploadFileResponse {
        file: file_to_proto(&record).into(),
        ..Default::default()
    })
}

async fn get_file_metadata(
    files: &Files,
    ctx: &RequestContext,
    request: ServiceRequest<'_, pb::GetFileMetadataRequest>,
) -> ServiceResult<pb::GetFileMetadataResponse> {
    let record = files
        .get_file_metadata(request_caller(ctx)?, request.id)
        .await?;
    Response::ok(pb::GetFileMetadataResponse {
        file: file_to_proto(&record).into(),
        ..Default::default()
    })
}

async fn get_download_url(
    files: &Files,
    ctx: &RequestContext,
    request: ServiceRequest<'_, pb::GetDownloadUrlRequest>,
) -> ServiceResult<pb::GetDownloadUrlResponse> {
    let request = request.to_owned_message();
    let lifetime = match request.expiry.into_option() {
        Some(expiry) => crate::content::lifetime_from_seconds(expiry.seconds, expiry.nanos)?,
        None => None,
    };
    let link = files
        .get_download_url(request_caller(ctx)?, &request.id, lifetime)
        .await?;
    Response::ok(pb::GetDownloadUrlResponse {
        url: link.url,
        expires_at: timestamp(link.expires_at * 1_000_000).into(),
        ..Default::default()
    })
}

async fn get_file_content(
    files: &Files,
    ctx: &RequestContext,
    request: ServiceRequest<'_, pb::GetFileContentRequest>,
) -> ServiceResult<ServiceStream<pb::GetFileContentResponse>> {
    let (record, stream) = files
        .get_file_content(request_caller(ctx)?, request.id)
        .await?;
    let file_id = record.id;
    Response::stream_ok(stream.map(move |chunk| match chunk {
        Ok(chunk) => Ok(pb::GetFileContentResponse {
            chunk_data: chunk.to_vec(),
            ..Default::default()
        }),
        Err(error) => {
            tracing::error!(%error, file_id = %file_id, "Reading file content failed");
            Err(ConnectError::from(storage_error(error)))
        }
    }))
}

/// The internal `FilesService`.
#[derive(Clone)]
pub struct FilesRpc {
    files: Files,
}

impl FilesRpc {
    pub fn new(files: Files) -> Self {
        Self { files }
    }
}

impl pb::FilesService for FilesRpc {
    async fn upload_file(
        &self,
        ctx: RequestContext,
        requests: InboundStream<pb::UploadFileRequest>,
    ) -> ServiceResult<pb::UploadFileResponse> {
        upload_file(&self.files, &ctx, requests).await
    }

    async fn get_file_metadata(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetFileMetadataRequest>,
    ) -> ServiceResult<pb::GetFileMetadataResponse> {
        get_file_metadata(&self.files, &ctx, request).await
    }

    async fn get_download_url(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetDownloadUrlRequest>,
    ) -> ServiceResult<pb::GetDownloadUrlResponse> {
        get_download_url(&self.files, &ctx, request).await
    }

    async fn get_file_content(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetFileContentRequest>,
    ) -> ServiceResult<ServiceStream<pb::GetFileContentResponse>> {
        get_file_content(&self.files, &ctx, request).await
    }
}

/// The public `FilesGateway`.
#[derive(Clone)]
pub struct FilesGatewayRpc {
    files: Files,
}

impl FilesGatewayRpc {
    pub fn new(files: Files) -> Self {
        Self { files }
    }
}

impl pb::FilesGateway for FilesGatewayRpc {
    async fn upload_file(
        &self,
        ctx: RequestContext,
        requests: InboundStream<pb::UploadFileRequest>,
    ) -> ServiceResult<pb::UploadFileResponse> {
        upload_file(&self.files, &ctx, requests).await
    }

    async fn get_file_metadata(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetFileMetadataRequest>,
    ) -> ServiceResult<pb::GetFileMetadataResponse> {
        get_file_metadata(&self.files, &ctx, request).await
    }

    async fn get_download_url(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetDownloadUrlRequest>,
    ) -> ServiceResult<pb::GetDownloadUrlResponse> {
        get_download_url(&self.files, &ctx, request).await
    }

    async fn get_file_content(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetFileContentRequest>,
    ) -> ServiceResult<ServiceStream<pb::GetFileContentResponse>> {
        get_file_content(&self.files, &ctx, request).await
    }
}
