//! Objects in an S3-compatible bucket under the key `<file id>`.
//!
//! Content up to one part (8 MiB) is buffered and sent with one PUT.
//! Larger content becomes a multipart upload of 8 MiB parts with at most
//! two parts in flight, so memory stays at about three parts whatever the
//! file size.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore as _, PutPayload, WriteMultipart};

use super::{ObjectStore, ObjectStream, StagedObject};
use crate::CONTENT_CHUNK_BYTES;

/// Size of one multipart upload part.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts uploaded at the same time.
const PARTS_IN_FLIGHT: usize = 2;

/// Connection settings of an S3-compatible bucket. Unset values come from
/// the standard `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Endpoint URL of a non-AWS server, such as `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<agyn_core::Secret<String>>,
}

/// Object store in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: Arc<AmazonS3>,
}

impl S3Store {
    /// Builds the client. Requests use path-style URLs, and a plain
    /// `http://` endpoint is allowed.
    pub fn new(settings: &S3Settings) -> io::Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(access_key_id) = &settings.access_key_id {
            builder = builder.with_access_key_id(access_key_id);
        }
        if let Some(secret_access_key) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret_access_key.expose());
        }
        let bucket = builder.build().map_err(io::Error::other)?;
        Ok(Self {
            bucket: Arc::new(bucket),
        })
    }
}

fn object_path(id: &str) -> Path {
    Path::from(id)
}

fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}

impl ObjectStore for S3Store {
    fn stage<'a>(&'a self, id: &'a str) -> BoxFuture<'a, io::Result<Box<dyn StagedObject>>> {
        Box::pin(async move {
            Ok(Box::new(S3Staged {
                bucket: self.bucket.clone(),
                path: object_path(id),
                buffer: Vec::new(),
                buffered: 0,
                multipart: None,
            }) as Box<dyn StagedObject>)
        })
    }

    fn read<'a>(
        &'a self,
        id: &'a str,
        range: Range<u64>,
    ) -> BoxFuture<'a, io::Result<ObjectStream>> {
        Box::pin(async move {
            if range.is_empty() {
                return Ok(Box::pin(futures::stream::empty()) as ObjectStream);
            }
            let options = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..Default::default()
            };
            let result = self
                .bucket
                .get_opts(&object_path(id), options)
                .await
                .map_err(io::Error::other)?;
            let stream = result.into_stream().map_err(io::Error::other);
            Ok(rechunk(stream.boxed()))
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match self.bucket.delete(&object_path(id)).await {
                Err(error) if !is_not_found(&error) => Err(io::Error::other(error)),
                _ => Ok(()),
            }
        })
    }

    // NOTE: multipart uploads that a crash left open are not listed here.
    // A bucket lifecycle rule that aborts incomplete multipart uploads
    // removes their parts.
    fn list_older_than(&self, cutoff: SystemTime) -> BoxFuture<'_, io::Result<Vec<String>>> {
        Box::pin(async move {
            let mut listing = self.bucket.list(None);
            let mut ids = Vec::new();
            while let Some(object) = listing.next().await {
                let object = object.map_err(io::Error::other)?;
                if SystemTime::from(object.last_modified) < cutoff {
                    ids.push(object.location.to_string());
                }
            }
            Ok(ids)
        })
    }
}

/// Splits and joins the pieces of an S3 response body into pieces of
/// [`CONTENT_CHUNK_BYTES`], except for the last.
fn rechunk(stream: ObjectStream) -> ObjectStream {
    let pieces = futures::stream::try_unfold(
        (stream, BytesMut::new(), false),
        |(mut stream, mut pending, mut ended)| async move {
            loop {
                if pending.len() >= CONTENT_CHUNK_BYTES {
                    let piece = pending.split_to(CONTENT_CHUNK_BYTES).freeze();
                    return Ok(Some((piece, (stream, pending, ended))));
                }
                if ended {
                    if pending.is_empty() {
                        return Ok(None);
                    }
                    let piece = pending.split().freeze();
                    return Ok(Some((piece, (stream, pending, ended))));
                }
                match stream.next().await {
                    Some(Ok(bytes)) => pending.extend_from_slice(&bytes),
                    Some(Err(error)) => return Err(error),
                    None => ended = true,
                }
            }
        },
    );
    Box::pin(pieces)
}

/// An upload in progress: buffered until it passes one part, then a
/// multipart upload. Dropping it before commit aborts the multipart
/// upload in the background.
struct S3Staged {
    bucket: Arc<AmazonS3>,
    path: Path,
    buffer: Vec<Bytes>,
    buffered: usize,
    multipart: Option<WriteMultipart>,
}

impl S3Staged {
    async fn start_multipart(&mut self) -> io::Result<()> {
        let upload = self
            .bucket
            .put_multipart(&self.path)
            .await
            .map_err(io::Error::other)?;
        let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        for bytes in self.buffer.drain(..) {
            multipart.put(bytes);
        }
        self.buffered = 0;
        self.multipart = Some(multipart);
        Ok(())
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let path = self.path.to_string();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = multipart.abort().await {
                    tracing::warn!(%error, file_id = %path, "Failed to abort a multipart upload");
                }
            });
        }
    }
}

impl StagedObject for S3Staged {
    fn write(&mut self, data: Bytes) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            if let Some(multipart) = self.multipart.as_mut() {
                multipart
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(io::Error::other)?;
                multipart.put(data);
                return Ok(());
            }
            self.buffered += data.len();
            self.buffer.push(data);
            if self.buffered > PART_BYTES {
                self.start_multipart().await?;
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            if let Some(multipart) = self.multipart.take() {
                multipart.finish().await.map_err(io::Error::other)?;
                return Ok(());
            }
            let payload: PutPayload = self.buffer.drain(..).collect();
            self.bucket
                .put(&self.path, payload)
                .await
                .map_err(io::Error::other)?;
            Ok(())
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            if let Some(multipart) = self.multipart.take() {
                multipart.abort().await.map_err(io::Error::other)?;
            }
            Ok(())
        })
    }
}
