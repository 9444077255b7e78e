//! Objects as files under `<data_dir>/files/`: committed objects at
//! `objects/<first two hex digits of the id>/<id>`, uploads in progress at
//! `tmp/<id>`.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::{ObjectStore, ObjectStream, StagedObject};
use crate::CONTENT_CHUNK_BYTES;

/// Object store on the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalStore {
    objects: PathBuf,
    staging: PathBuf,
}

impl LocalStore {
    /// Opens the store under `<data_dir>/files/`, creating its directories.
    pub async fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("files");
        let store = Self {
            objects: root.join("objects"),
            staging: root.join("tmp"),
        };
        fs::create_dir_all(&store.objects).await?;
        fs::create_dir_all(&store.staging).await?;
        Ok(store)
    }

    fn object_path(&self, id: &str) -> io::Result<PathBuf> {
        check_id(id)?;
        Ok(self.objects.join(&id[..2]).join(id))
    }
}

/// Rejects ids that could name a path outside the store. Ids are UUIDs.
fn check_id(id: &str) -> io::Result<()> {
    if id.len() >= 2 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid object id {id:?}"),
        ))
    }
}

impl ObjectStore for LocalStore {
    fn stage<'a>(&'a self, id: &'a str) -> BoxFuture<'a, io::Result<Box<dyn StagedObject>>> {
        Box::pin(async move {
            let target = self.object_path(id)?;
            let temp = self.staging.join(id);
            let file = File::create_new(&temp).await?;
            Ok(Box::new(LocalStaged {
                file: Some(file),
                temp,
                target,
                finished: false,
            }) as Box<dyn StagedObject>)
        })
    }

    fn read<'a>(
        &'a self,
        id: &'a str,
        range: Range<u64>,
    ) -> BoxFuture<'a, io::Result<ObjectStream>> {
        Box::pin(async move {
            let mut file = File::open(self.object_path(id)?).await?;
            file.seek(SeekFrom::Start(range.start)).await?;
            let remaining = range.end.saturating_sub(range.start);
            Ok(read_chunks(file, remaining))
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match fs::remove_file(self.object_path(id)?).await {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        })
    }

    fn list_older_than(&self, cutoff: SystemTime) -> BoxFuture<'_, io::Result<Vec<String>>> {
        Box::pin(async move {
            for path in files_older_than(&self.staging, cutoff).await? {
                remove_if_present(&path).await?;
            }
            let mut ids = Vec::new();
            let mut prefixes = fs::read_dir(&self.objects).await?;
            while let Some(prefix) = prefixes.next_entry().await? {
                if !prefix.file_type().await?.is_dir() {
                    continue;
                }
                for path in files_older_than(&prefix.path(), cutoff).await? {
                    if let Some(name) = path.file_name().and_then(|name| name.to_str()) {
                        ids.push(name.to_string());
                    }
                }
            }
            Ok(ids)
        })
    }
}

async fn files_older_than(dir: &Path, cutoff: SystemTime) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let mut entries = fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let metadata = entry.metadata().await?;
        if metadata.is_file() && metadata.modified()? < cutoff {
            paths.push(entry.path());
        }
    }
    Ok(paths)
}

async fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path).await {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Streams `remaining` bytes of `file` from its current position.
fn read_chunks(file: File, remaining: u64) -> ObjectStream {
    Box::pin(futures::stream::try_unfold(
        (file, remaining),
        |(mut file, remaining)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(CONTENT_CHUNK_BYTES as u64) as usize;
            let mut buffer = BytesMut::zeroed(want);
            file.read_exact(&mut buffer).await?;
            Ok(Some((buffer.freeze(), (file, remaining - want as u64))))
        },
    ))
}

/// An upload in progress. Dropping it before [`StagedObject::commit`]
/// removes the temp file, which covers a handler dropped mid-upload.
struct LocalStaged {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    finished: bool,
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        if !self.finished {
            self.file.take();
            if let Err(error) = std::fs::remove_file(&self.temp)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(%error, path = %self.temp.display(), "Failed to remove a staged upload");
            }
        }
    }
}

impl StagedObject for LocalStaged {
    fn write(&mut self, data: Bytes) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            match self.file.as_mut() {
                Some(file) => file.write_all(&data).await,
                None => Err(io::Error::other("the staged upload is closed")),
            }
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let mut file = self
                .file
                .take()
                .ok_or_else(|| io::Error::other("the staged upload is closed"))?;
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            if let Some(parent) = self.target.parent() {
                fs::create_dir_all(parent).await?;
            }
            fs::rename(&self.temp, &self.target).await?;
            self.finished = true;
            sync_dir(self.target.parent()).await
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        // Drop removes the temp file.
        Box::pin(async move {
            drop(self);
            Ok(())
        })
    }
}

/// Syncs a directory so that a rename into it survives a crash.
async fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    if let Some(dir) = dir {
        File::open(dir).await?.sync_all().await?;
    }
    Ok(())
}
