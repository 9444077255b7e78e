//! Object stores that hold file content under the file id.
//!
//! An upload is staged first and becomes visible under its id only at
//! [`StagedObject::commit`], so a reader never sees a partial object.

mod local;
mod s3;

use std::io;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use local::LocalStore;
pub use s3::{PART_BYTES, S3Settings, S3Store};

/// Content of an object as a stream of pieces of at most
/// [`crate::CONTENT_CHUNK_BYTES`].
pub type ObjectStream = BoxStream<'static, io::Result<Bytes>>;

/// A place to keep immutable objects by id.
pub trait ObjectStore: Send + Sync + 'static {
    /// Starts writing the object `id`.
    fn stage<'a>(&'a self, id: &'a str) -> BoxFuture<'a, io::Result<Box<dyn StagedObject>>>;

    /// Streams the bytes `range` of the object `id`. The caller keeps the
    /// range within the object size, which the metadata row stores.
    fn read<'a>(
        &'a self,
        id: &'a str,
        range: Range<u64>,
    ) -> BoxFuture<'a, io::Result<ObjectStream>>;

    /// Deletes the object `id`. A missing object is not an error.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, io::Result<()>>;

    /// Lists the ids of committed objects last modified before `cutoff`,
    /// and deletes staged uploads older than `cutoff` that a crash left
    /// behind.
    fn list_older_than(&self, cutoff: SystemTime) -> BoxFuture<'_, io::Result<Vec<String>>>;
}

/// An object being written.
pub trait StagedObject: Send {
    /// Appends `data`.
    fn write(&mut self, data: Bytes) -> BoxFuture<'_, io::Result<()>>;

    /// Makes the object durable and visible under its id.
    fn commit(self: Box<Self>) -> BoxFuture<'static, io::Result<()>>;

    /// Discards everything written.
    fn abort(self: Box<Self>) -> BoxFuture<'static, io::Result<()>>;
}
