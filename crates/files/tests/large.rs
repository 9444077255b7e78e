//! A 200 MB upload and download through the local object store on both
//! databases and through an S3 bucket (moto), with the process's peak
//! memory checked. It is the only test in this binary, so
//! the peak belongs to it alone.

mod support;

use agyn_api_files::agynio::api::files::v1 as pb;
use std::sync::Arc;

use agyn_store::Backend;
use sha2::Digest as _;
use support::*;

const FILE_BYTES: usize = 200 * 1024 * 1024;
const CHUNK_BYTES: usize = 1024 * 1024;

/// Allowed growth of the peak resident set while the file moves through.
const MAX_PEAK_GROWTH_BYTES: u64 = 64 * 1024 * 1024;

/// Builds one chunk of the content plus one pattern period. Byte `p` of
/// the file is `p % 251`, so `base[offset % 251..]` continues at `offset`.
fn base() -> Vec<u8> {
    pattern(CHUNK_BYTES + 251)
}

fn piece(base: &[u8], offset: usize, len: usize) -> &[u8] {
    &base[offset % 251..offset % 251 + len]
}

/// Returns the peak resident set size of this process (VmHWM).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("a VmHWM line in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn expected_sha256(base: &[u8]) -> String {
    let mut hasher = sha2::Sha256::new();
    let mut offset = 0;
    while offset < FILE_BYTES {
        let len = CHUNK_BYTES.min(FILE_BYTES - offset);
        hasher.update(piece(base, offset, len));
        offset += len;
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const LIMIT_BYTES: u64 = 256 * 1024 * 1024;

async fn round_trip(w: World, store: &str, base: Arc<Vec<u8>>, sha256: &str) {
    let alice = w.user("alice").await;
    let before = peak_rss_bytes();

    let frames_base = base.clone();
    let chunks = futures::stream::iter((0..FILE_BYTES).step_by(CHUNK_BYTES)).map(move |offset| {
        let len = CHUNK_BYTES.min(FILE_BYTES - offset);
        chunk_frame(piece(&frames_base, offset, len))
    });
    let frames =
        futures::stream::iter([metadata_frame("big.bin", FILE_BYTES as i64)]).chain(chunks);
    let file = w
        .gateway()
        .upload_file_with_options(frames, bearer(&alice))
        .await
        .unwrap()
        .into_owned()
        .file
        .into_option()
        .unwrap();
    assert_eq!(file.size_bytes, FILE_BYTES as i64);
    assert_eq!(file.sha256, sha256);

    let url = w
        .gateway()
        .get_download_url_with_options(
            pb::GetDownloadUrlRequest {
                id: file.meta.id.clone(),
                ..Default::default()
            },
            bearer(&alice),
        )
        .await
        .unwrap()
        .into_owned()
        .url;
    let mut response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut offset = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(
            chunk.as_ref() == piece(&base, offset, chunk.len()),
            "the download differs in the {} bytes at offset {offset}",
            chunk.len()
        );
        offset += chunk.len();
    }
    assert_eq!(offset, FILE_BYTES);

    let tail_start = FILE_BYTES - 1000;
    let response = reqwest::Client::new()
        .get(&url)
        .header("range", format!("bytes={tail_start}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    let tail = response.bytes().await.unwrap();
    assert_eq!(tail.as_ref(), piece(&base, tail_start, 1000));

    let growth = peak_rss_bytes().saturating_sub(before);
    assert!(
        growth < MAX_PEAK_GROWTH_BYTES,
        "peak RSS grew by {growth} bytes for a {FILE_BYTES}-byte file in the {store} store"
    );
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_round_trip_flat_memory() {
    let base = Arc::new(base());
    let sha256 = expected_sha256(&base);
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let w = World::with_limit(backend, LIMIT_BYTES).await;
        round_trip(w, "local", base.clone(), &sha256).await;
    }

    let moto = MotoServer::start().await;
    let bucket = moto.bucket("large").await;
    let data_dir = tempfile::tempdir().unwrap();
    let w = World::build(Backend::Sqlite, LIMIT_BYTES, Arc::new(bucket), data_dir).await;
    round_trip(w, "S3", base, &sha256).await;
}
