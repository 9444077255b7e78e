//! Signed download links, Range requests, the `POST /files` upload route
//! and the orphan sweep, over HTTP on loopback, on SQLite and PostgreSQL.

mod support;

use std::time::{Duration, SystemTime};

use agyn_api_files::agynio::api::files::v1 as pb;
use agyn_files::{DownloadKey, LocalStore, ObjectStore as _};
use agyn_store::{Backend, on_both_backends};
use connectrpc::ErrorCode;
use serde_json::Value;
use support::*;

async fn upload(w: &World, caller: &agyn_core::Caller, name: &str, content: &[u8]) -> pb::FileInfo {
    w.upload(bearer(caller), upload_frames(name, content, 10_000))
        .await
        .unwrap()
}

async fn link(
    w: &World,
    caller: &agyn_core::Caller,
    id: &str,
    expiry: Option<i64>,
) -> pb::GetDownloadUrlResponse {
    w.gateway()
        .get_download_url_with_options(
            pb::GetDownloadUrlRequest {
                id: id.to_string(),
                expiry: expiry
                    .map(|seconds| buffa_types::google::protobuf::Duration {
                        seconds,
                        ..Default::default()
                    })
                    .into(),
                ..Default::default()
            },
            bearer(caller),
        )
        .await
        .unwrap()
        .into_owned()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn error_body(response: reqwest::Response) -> String {
    let body = json(response).await;
    body["error"].as_str().unwrap().to_string()
}

async fn link_downloads_without_credential(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let content = pattern(150_000);
    let file = upload(&w, &alice, "résumé 1.pdf", &content).await;

    let issued = link(&w, &alice, &file.meta.id, None).await;
    let expires_at = issued.expires_at.into_option().unwrap().seconds;
    let lifetime = expires_at - unix_now();
    assert!((3_599..=3_601).contains(&lifetime), "lifetime {lifetime}");
    let expected_prefix = format!(
        "{}/files/{}/content?exp={expires_at}&sig=",
        w.address, file.meta.id
    );
    assert!(issued.url.starts_with(&expected_prefix), "{}", issued.url);

    let response = reqwest::get(&issued.url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert_eq!(header(&response, "content-length"), "150000");
    assert_eq!(
        header(&response, "content-disposition"),
        "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"
    );
    assert_eq!(header(&response, "etag"), format!("\"{}\"", file.sha256));
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    let cache = header(&response, "cache-control").to_string();
    let max_age: i64 = cache
        .strip_prefix("private, max-age=")
        .unwrap_or_else(|| panic!("cache-control {cache}"))
        .parse()
        .unwrap();
    assert!((3_590..=3_601).contains(&max_age), "{cache}");
    let body = response.bytes().await.unwrap();
    assert_eq!(body.as_ref(), content.as_slice());
}

async fn link_lifetime_rules(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let stranger = w.user("stranger").await;
    let file = upload(&w, &alice, "a", b"abc").await;

    let clamped = link(&w, &alice, &file.meta.id, Some(7 * 24 * 3600)).await;
    let lifetime = clamped.expires_at.into_option().unwrap().seconds - unix_now();
    assert!((86_399..=86_401).contains(&lifetime), "lifetime {lifetime}");
    let short = link(&w, &alice, &file.meta.id, Some(60)).await;
    let lifetime = short.expires_at.into_option().unwrap().seconds - unix_now();
    assert!((59..=61).contains(&lifetime), "lifetime {lifetime}");
    let zero = link(&w, &alice, &file.meta.id, Some(0)).await;
    let lifetime = zero.expires_at.into_option().unwrap().seconds - unix_now();
    assert!((3_599..=3_601).contains(&lifetime), "lifetime {lifetime}");

    let request = |id: &str, seconds: i64| pb::GetDownloadUrlRequest {
        id: id.to_string(),
        expiry: buffa_types::google::protobuf::Duration {
            seconds,
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let error = w
        .gateway()
        .get_download_url_with_options(request(&file.meta.id, -1), bearer(&alice))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(
        error.message.as_deref(),
        Some("expiry: must not be negative")
    );
    let error = w
        .gateway()
        .get_download_url_with_options(request(&file.meta.id, 60), bearer(&stranger))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);
}

async fn tampered_and_expired_links(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let file = upload(&w, &alice, "a", b"abc").await;
    let other = upload(&w, &alice, "b", b"def").await;
    let issued = link(&w, &alice, &file.meta.id, None).await;
    let exp = issued.expires_at.into_option().unwrap().seconds;
    let sig = issued.url.rsplit_once("sig=").unwrap().1.to_string();
    let key = DownloadKey::derive(&MASTER_KEY);
    let url = |id: &str, exp: i64, sig: &str| {
        format!("{}/files/{id}/content?exp={exp}&sig={sig}", w.address)
    };

    let mut flipped = sig.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let invalid = [
        url(&file.meta.id, exp, &flipped),
        url(&file.meta.id, exp + 1, &sig),
        url(&other.meta.id, exp, &sig),
        format!("{}/files/{}/content?exp={exp}", w.address, file.meta.id),
        format!("{}/files/{}/content", w.address, file.meta.id),
        url(&file.meta.id, exp, "%%%"),
    ];
    for target in invalid {
        let response = reqwest::get(&target).await.unwrap();
        assert_eq!(response.status(), 403, "{target}");
        assert_eq!(error_body(response).await, "invalid signature", "{target}");
    }

    let past = unix_now() - 5;
    let expired = url(&file.meta.id, past, &key.sign(&file.meta.id, past));
    let response = reqwest::get(&expired).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(error_body(response).await, "link expired");

    let missing = agyn_core::id::new_id();
    let unknown = url(&missing, exp, &key.sign(&missing, exp));
    let response = reqwest::get(&unknown).await.unwrap();
    assert_eq!(response.status(), 404);
}

async fn range_requests(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let content = pattern(100_000);
    let file = upload(&w, &alice, "a", &content).await;
    let url = link(&w, &alice, &file.meta.id, None).await.url;
    let client = reqwest::Client::new();
    let get = |range: &'static str| client.get(&url).header("range", range).send();

    let response = get("bytes=10-19").await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(header(&response, "content-range"), "bytes 10-19/100000");
    assert_eq!(header(&response, "content-length"), "10");
    assert_eq!(response.bytes().await.unwrap().as_ref(), &content[10..20]);

    let response = get("bytes=70000-").await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        header(&response, "content-range"),
        "bytes 70000-99999/100000"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), &content[70_000..]);

    let response = get("bytes=-5").await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        header(&response, "content-range"),
        "bytes 99995-99999/100000"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), &content[99_995..]);

    let response = get("bytes=100000-").await.unwrap();
    assert_eq!(response.status(), 416);
    assert_eq!(header(&response, "content-range"), "bytes */100000");

    let response = get("bytes=0-1, 5-6").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 100_000);
}

async fn http_upload_route(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{}/files", w.address))
        .header("authorization", bearer_header(&alice))
        .header("content-type", "text/plain")
        .header("x-agyn-filename", "caf%C3%A9.txt")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let info = json(response).await;
    assert_eq!(info["filename"], "café.txt");
    assert_eq!(info["contentType"], "text/plain");
    assert_eq!(info["sizeBytes"], "5");
    assert_eq!(info["sha256"], sha256_hex(b"hello"));
    assert_eq!(info["uploaderId"], id(&alice));

    let response = client
        .post(format!("{}/files?filename=q.bin&request_id=r1", w.address))
        .header("authorization", bearer_header(&alice))
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let info = json(response).await;
    assert_eq!(info["filename"], "q.bin");
    assert_eq!(info["contentType"], "application/octet-stream");

    let response = client
        .post(format!("{}/files", w.address))
        .header("authorization", bearer_header(&alice))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["code"], "invalid_argument");

    let response = client
        .post(format!("{}/files?filename=a", w.address))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(w.file_rows().await, 2);
}

async fn http_upload_over_limit(backend: Backend) {
    let w = World::with_limit(backend, 1_000).await;
    let alice = w.user("alice").await;
    let response = reqwest::Client::new()
        .post(format!("{}/files?filename=big", w.address))
        .header("authorization", bearer_header(&alice))
        .body(pattern(1_001))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body = json(response).await;
    assert_eq!(body["code"], "resource_exhausted");
    assert_eq!(body["message"], "file exceeds the 1000-byte limit");
    assert_eq!(body["details"][0]["type"], "google.rpc.ErrorInfo");
    assert_eq!(w.file_rows().await, 0);
    assert!(w.stored_objects().is_empty(), "{:?}", w.stored_objects());
}

async fn sweep_deletes_only_old_orphans(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let referenced = upload(&w, &alice, "referenced", b"referenced").await;
    let store = LocalStore::open(w.data_dir.path()).await.unwrap();
    let old_orphan = agyn_core::id::new_id();
    let new_orphan = agyn_core::id::new_id();
    for id in [&old_orphan, &new_orphan] {
        let mut staged = store.stage(id).await.unwrap();
        staged
            .write(bytes::Bytes::from_static(b"orphan"))
            .await
            .unwrap();
        staged.commit().await.unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for path in w.stored_objects() {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == old_orphan || name == referenced.meta.id {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(two_hours_ago).unwrap();
        }
    }

    assert_eq!(w.files.sweep_orphans().await.unwrap(), 1);
    let mut names: Vec<String> = w
        .stored_objects()
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut expected = vec![referenced.meta.id.clone(), new_orphan.clone()];
    expected.sort();
    assert_eq!(names, expected);
    let url = link(&w, &alice, &referenced.meta.id, None).await.url;
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(body.as_ref(), b"referenced");
}

on_both_backends!(
    link_downloads_without_credential,
    link_lifetime_rules,
    tampered_and_expired_links,
    range_requests,
    http_upload_route,
    http_upload_over_limit,
    sweep_deletes_only_old_orphans,
);
