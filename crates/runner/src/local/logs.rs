//! Streaming a container's log file: the last lines first, then, with
//! `follow`, new output until the container exits.
//!
//! The process writes its log file directly, so the runner records no
//! per-line times. Chunks of the initial tail carry no `ts`. Chunks read
//! while following carry the time the runner read them, which trails the
//! write by at most [`FOLLOW_POLL_INTERVAL`] plus the read itself.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::time::{now_micros, timestamp};
use agyn_core::{Error, Result};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::mpsc;

use super::Workload;
use crate::LogStream;

/// Lines sent first when the request sets `tail_lines = 0`.
pub(crate) const DEFAULT_TAIL_LINES: usize = 1000;

/// Maximum size of one log chunk.
const CHUNK_SIZE: usize = 64 * 1024;

/// Interval between two reads of a followed log file that had no new
/// output.
pub(crate) const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Returns the offset where the last `lines` lines of `file` start.
///
/// The file is read backwards in blocks, so only the tail is read. A
/// final line without a newline counts as a line.
async fn tail_offset(file: &mut tokio::fs::File, lines: usize) -> std::io::Result<u64> {
    let length = file.metadata().await?.len();
    let mut end = length;
    let mut newlines = 0usize;
    let mut buffer = vec![0u8; CHUNK_SIZE];
    // A newline that ends the file closes the last line, so it is not a
    // line boundary to count.
    let mut skip_final_newline = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK_SIZE as u64);
        let size = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buffer[..size]).await?;
        for index in (0..size).rev() {
            if buffer[index] != b'\n' {
                skip_final_newline = false;
                continue;
            }
            if skip_final_newline {
                skip_final_newline = false;
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok(start + index as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

/// Reads up to one chunk from the current position, or returns `None` at
/// the end of the file.
async fn read_chunk(file: &mut tokio::fs::File) -> std::io::Result<Option<Vec<u8>>> {
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let read = file.read(&mut buffer).await?;
    if read == 0 {
        return Ok(None);
    }
    buffer.truncate(read);
    Ok(Some(buffer))
}

fn chunk(data: Vec<u8>, read_at: Option<i64>) -> pb::LogChunk {
    pb::LogChunk {
        data,
        ts: read_at.map(timestamp).into(),
        ..Default::default()
    }
}

fn read_failed(path: &Path, error: std::io::Error) -> Error {
    Error::unavailable(format!(
        "failed to read log file {}: {error}",
        path.display()
    ))
}

/// Opens the log and starts sending it. The caller has checked that the
/// workload has a container named `container`.
pub(crate) async fn stream(
    workload: Arc<Workload>,
    container: String,
    path: PathBuf,
    follow: bool,
    tail_lines: usize,
) -> Result<LogStream> {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) => return Err(read_failed(&path, error)),
    };
    let offset = tail_offset(&mut file, tail_lines)
        .await
        .map_err(|error| read_failed(&path, error))?;
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|error| read_failed(&path, error))?;

    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        let result = send_log(&workload, &container, &mut file, follow, &sender).await;
        if let Err(error) = result {
            let _ = sender.send(Err(read_failed(&path, error))).await;
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Ok(Box::pin(stream))
}

/// Sends the tail, then follows the file when `follow` is set. Returns when the
/// output ends or the receiver is gone.
async fn send_log(
    workload: &Workload,
    container: &str,
    file: &mut tokio::fs::File,
    follow: bool,
    sender: &mpsc::Sender<Result<pb::LogChunk>>,
) -> std::io::Result<()> {
    while let Some(data) = read_chunk(file).await? {
        if sender.send(Ok(chunk(data, None))).await.is_err() {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    let mut changes = workload.subscribe();
    loop {
        // The state is read before the file, so output written just
        // before the exit is still read once more.
        let exited = workload.container_done(container);
        let mut sent_any = false;
        while let Some(data) = read_chunk(file).await? {
            sent_any = true;
            let read_at = Some(now_micros());
            if sender.send(Ok(chunk(data, read_at))).await.is_err() {
                return Ok(());
            }
        }
        if exited && !sent_any {
            return Ok(());
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(FOLLOW_POLL_INTERVAL).await;
                }
            }
            () = tokio::time::sleep(FOLLOW_POLL_INTERVAL) => {}
            () = sender.closed() => return Ok(()),
        }
    }
}
