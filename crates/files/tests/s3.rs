//! The files service over an S3-compatible bucket: a moto server on
//! loopback, on SQLite and PostgreSQL. Content above one part (8 MiB)
//! goes through a multipart upload.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agyn_api_files::agynio::api::files::v1 as pb;
use agyn_files::{ObjectStore as _, PART_BYTES};
use agyn_store::{Backend, on_both_backends};
use connectrpc::ErrorCode;
use support::*;

const BUCKET: &str = "agyn-files";

async fn s3_world(backend: Backend, moto: &MotoServer, max_upload_bytes: u64) -> World {
    let store = moto.bucket(BUCKET).await;
    World::build(
        backend,
        max_upload_bytes,
        Arc::new(store),
        tempfile::tempdir().unwrap(),
    )
    .await
}

async fn download_url(w: &World, caller: &agyn_core::Caller, id: &str) -> String {
    w.gateway()
        .get_download_url_with_options(
            pb::GetDownloadUrlRequest {
                id: id.to_string(),
                ..Default::default()
            },
            bearer(caller),
        )
        .await
        .unwrap()
        .into_owned()
        .url
}

async fn s3_round_trip(backend: Backend) {
    let moto = MotoServer::start().await;
    let w = s3_world(backend, &moto, 64 * 1024 * 1024).await;
    let alice = w.user("alice").await;

    // 2.5 parts: a multipart upload of three parts.
    let large = pattern(PART_BYTES * 5 / 2);
    let file = w
        .upload(
            bearer(&alice),
            upload_frames("large.bin", &large, 1024 * 1024),
        )
        .await
        .unwrap();
    assert_eq!(file.size_bytes, large.len() as i64);
    assert_eq!(file.sha256, sha256_hex(&large));
    assert_eq!(moto.keys(BUCKET).await, vec![file.meta.id.clone()]);
    assert!(moto.open_uploads(BUCKET).await.is_empty());

    let pieces = w
        .content_pieces(bearer(&alice), &file.meta.id)
        .await
        .unwrap();
    assert!(
        pieces[..pieces.len() - 1]
            .iter()
            .all(|piece| piece.len() == 65_536)
    );
    assert_eq!(pieces.concat(), large);

    let url = download_url(&w, &alice, &file.meta.id).await;
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(body.as_ref(), large.as_slice());
    let start = PART_BYTES - 10;
    let response = reqwest::Client::new()
        .get(&url)
        .header("range", format!("bytes={start}-{}", start + 19))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.as_ref(), &large[start..start + 20]);

    // Small and empty files go up with one PUT.
    let small = w
        .upload(bearer(&alice), upload_frames("small.txt", b"hello", 2))
        .await
        .unwrap();
    assert_eq!(
        w.content_pieces(bearer(&alice), &small.meta.id)
            .await
            .unwrap()
            .concat(),
        b"hello"
    );
    let empty = w
        .upload(bearer(&alice), vec![metadata_frame("empty", 0)])
        .await
        .unwrap();
    assert!(
        w.content_pieces(bearer(&alice), &empty.meta.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(moto.keys(BUCKET).await.len(), 3);
}

async fn s3_over_limit_aborts_multipart(backend: Backend) {
    let moto = MotoServer::start().await;
    let limit = (PART_BYTES * 3 / 2) as u64;
    let w = s3_world(backend, &moto, limit).await;
    let alice = w.user("alice").await;

    let mut frames = vec![metadata_frame("big", 0)];
    frames.extend(pattern(PART_BYTES * 2).chunks(1024 * 1024).map(chunk_frame));
    let error = w.upload(bearer(&alice), frames).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(
        error.message.as_deref(),
        Some(format!("file exceeds the {limit}-byte limit").as_str())
    );
    assert!(moto.keys(BUCKET).await.is_empty());
    assert!(moto.open_uploads(BUCKET).await.is_empty());
    assert_eq!(w.file_rows().await, 0);
}

async fn s3_orphan_listing(backend: Backend) {
    let moto = MotoServer::start().await;
    let w = s3_world(backend, &moto, 1024).await;
    let alice = w.user("alice").await;
    let store = moto.bucket(BUCKET).await;
    let file = w
        .upload(bearer(&alice), upload_frames("a", b"abc", 3))
        .await
        .unwrap();
    let orphan = agyn_core::id::new_id();
    let mut staged = store.stage(&orphan).await.unwrap();
    staged
        .write(bytes::Bytes::from_static(b"orphan"))
        .await
        .unwrap();
    staged.commit().await.unwrap();

    // Objects written just now are not older than an hour.
    assert_eq!(w.files.sweep_orphans().await.unwrap(), 0);
    let future = SystemTime::now() + Duration::from_secs(60);
    let mut listed = store.list_older_than(future).await.unwrap();
    listed.sort();
    let mut expected = vec![file.meta.id.clone(), orphan.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    store.delete(&orphan).await.unwrap();
    store.delete(&orphan).await.unwrap();
    assert_eq!(moto.keys(BUCKET).await, vec![file.meta.id.clone()]);
}

async fn s3_cut_stream_aborts_multipart(backend: Backend) {
    let moto = MotoServer::start().await;
    let w = s3_world(backend, &moto, 64 * 1024 * 1024).await;
    let alice = w.user("alice").await;
    let mut frames = vec![metadata_frame("partial", 0)];
    frames.extend(
        pattern(PART_BYTES + 1024 * 1024)
            .chunks(1024 * 1024)
            .map(chunk_frame),
    );
    let socket = open_upload(&w, &alice, &frames).await;

    // Wait until the server opened the multipart upload, then cut the
    // connection without ending the body.
    let mut opened = false;
    for _ in 0..400 {
        if !moto.open_uploads(BUCKET).await.is_empty() {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(opened, "the server never started a multipart upload");
    drop(socket);

    let mut aborted = false;
    for _ in 0..400 {
        if moto.open_uploads(BUCKET).await.is_empty() {
            aborted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(aborted, "the multipart upload was left open");
    assert!(moto.keys(BUCKET).await.is_empty());
    assert_eq!(w.file_rows().await, 0);
}

on_both_backends!(
    s3_round_trip,
    s3_cut_stream_aborts_multipart,
    s3_over_limit_aborts_multipart,
    s3_orphan_listing,
);
