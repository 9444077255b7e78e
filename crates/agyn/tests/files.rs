//! Files through the real `agyn serve`: a 200 MB upload over gRPC and its
//! download through the signed link, with the server's peak memory read
//! from /proc, plus the HTTP upload route, limits and link checks.

mod support;

use std::sync::Arc;

use agyn_api_files::agynio::api::files::v1::{self as pb, FilesGatewayClient};
use connectrpc::Protocol;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use futures::StreamExt as _;
use pb::__buffa::oneof::upload_file_request::Payload;
use sha2::Digest as _;
use support::*;

const LARGE_FILE_BYTES: usize = 200 * 1024 * 1024;
const CHUNK_BYTES: usize = 1024 * 1024;

/// Allowed growth of the server's peak resident set while the large file
/// moves through it.
const MAX_PEAK_GROWTH_BYTES: u64 = 64 * 1024 * 1024;

fn bearer(token: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {token}"))
}

fn grpc_client(server: &Server) -> FilesGatewayClient<HttpClient> {
    let config =
        ClientConfig::new(server.base_url().parse().unwrap()).with_protocol(Protocol::Grpc);
    FilesGatewayClient::new(HttpClient::plaintext_http2_only(), config)
}

/// Returns the peak resident set size (VmHWM) of process `pid`.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("a VmHWM line in /proc/<pid>/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Builds one chunk of the content plus one pattern period. Byte `p` of
/// the file is `p % 251`, so `base[offset % 251..]` continues at `offset`.
fn base() -> Vec<u8> {
    (0..CHUNK_BYTES + 251).map(|i| (i % 251) as u8).collect()
}

fn piece(base: &[u8], offset: usize, len: usize) -> &[u8] {
    &base[offset % 251..offset % 251 + len]
}

fn metadata_frame(filename: &str, size_bytes: i64) -> pb::UploadFileRequest {
    pb::UploadFileRequest {
        payload: Some(Payload::from(pb::UploadFileMetadata {
            filename: filename.to_string(),
            size_bytes,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn chunk_frame(data: &[u8]) -> pb::UploadFileRequest {
    pb::UploadFileRequest {
        payload: Some(Payload::from(pb::UploadFileChunk {
            data: data.to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Uploads `size` bytes of the pattern and returns the stored file.
async fn upload_pattern(server: &Server, base: &Arc<Vec<u8>>, size: usize) -> pb::FileInfo {
    let frames_base = base.clone();
    let chunks = futures::stream::iter((0..size).step_by(CHUNK_BYTES)).map(move |offset| {
        let len = CHUNK_BYTES.min(size - offset);
        chunk_frame(piece(&frames_base, offset, len))
    });
    let frames = futures::stream::iter([metadata_frame("pattern.bin", size as i64)]).chain(chunks);
    grpc_client(server)
        .upload_file_with_options(frames, bearer(&server.admin_token))
        .await
        .unwrap()
        .into_owned()
        .file
        .into_option()
        .unwrap()
}

async fn download_url(server: &Server, id: &str) -> String {
    grpc_client(server)
        .get_download_url_with_options(
            pb::GetDownloadUrlRequest {
                id: id.to_string(),
                ..Default::default()
            },
            bearer(&server.admin_token),
        )
        .await
        .unwrap()
        .into_owned()
        .url
}

/// Downloads `url` without a credential and checks every byte against the
/// pattern. Returns the number of bytes received.
async fn download_and_compare(url: &str, base: &[u8]) -> usize {
    let mut response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut offset = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(
            chunk.as_ref() == piece(base, offset, chunk.len()),
            "the download differs in the {} bytes at offset {offset}",
            chunk.len()
        );
        offset += chunk.len();
    }
    offset
}

fn pattern_sha256(base: &[u8], size: usize) -> String {
    let mut hasher = sha2::Sha256::new();
    for offset in (0..size).step_by(CHUNK_BYTES) {
        hasher.update(piece(base, offset, CHUNK_BYTES.min(size - offset)));
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_round_trip_flat_server_memory() {
    let server = Server::start_with(&[
        "--files-max-upload-bytes".to_string(),
        (256 * 1024 * 1024).to_string(),
    ]);
    let base = Arc::new(base());

    // A small round trip first, so that the baseline includes the
    // connection pools and buffers every request uses.
    let warm_up = upload_pattern(&server, &base, 3 * CHUNK_BYTES).await;
    let url = download_url(&server, &warm_up.meta.id).await;
    assert_eq!(download_and_compare(&url, &base).await, 3 * CHUNK_BYTES);
    let before = peak_rss_bytes(server.pid());

    let file = upload_pattern(&server, &base, LARGE_FILE_BYTES).await;
    assert_eq!(file.size_bytes, LARGE_FILE_BYTES as i64);
    assert_eq!(file.sha256, pattern_sha256(&base, LARGE_FILE_BYTES));

    let url = download_url(&server, &file.meta.id).await;
    assert!(url.starts_with(&server.base_url()), "{url}");
    assert_eq!(download_and_compare(&url, &base).await, LARGE_FILE_BYTES);

    let start = LARGE_FILE_BYTES - 100_000;
    let response = reqwest::Client::new()
        .get(&url)
        .header("range", format!("bytes={start}-{}", start + 9_999))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes {start}-{}/{LARGE_FILE_BYTES}", start + 9_999).as_str()
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body.as_ref(), piece(&base, start, 10_000));

    let growth = peak_rss_bytes(server.pid()).saturating_sub(before);
    assert!(
        growth < MAX_PEAK_GROWTH_BYTES,
        "the server's peak RSS grew by {growth} bytes for a {LARGE_FILE_BYTES}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upload_route_and_limits() {
    let server = Server::start();
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{}/files", server.base_url()))
        .bearer_auth(&server.admin_token)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-agyn-filename", "hello%20world.txt")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["filename"], "hello world.txt");
    assert_eq!(info["sizeBytes"], "5");
    let id = info["meta"]["id"].as_str().unwrap().to_string();

    // A message may carry a file its sender can read, and no other.
    let call = |method: &'static str, body: serde_json::Value| {
        let client = client.clone();
        let base = server.base_url();
        let token = server.admin_token.clone();
        async move { connect_json(&client, &base, method, body, Some(&token)).await }
    };
    let (_, org) = call(
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        serde_json::json!({"name": "Files"}),
    )
    .await;
    let (status, thread) = call(
        "agynio.api.threads.v1.ThreadsGateway/CreateThread",
        serde_json::json!({"organizationId": org["organization"]["meta"]["id"]}),
    )
    .await;
    assert_eq!(status, 200, "{thread}");
    let thread_id = thread["thread"]["meta"]["id"].clone();
    let (status, sent) = call(
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        serde_json::json!({"threadId": thread_id, "body": "see attached", "fileIds": [id]}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let (status, refused) = call(
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        serde_json::json!({
            "threadId": thread_id,
            "body": "not mine",
            "fileIds": [id, "00000000-0000-7000-8000-000000000000"],
        }),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["message"], "file_ids[1]: file not found");

    let (status, body) = connect_json(
        &client,
        &server.base_url(),
        "agynio.api.files.v1.FilesGateway/GetFileMetadata",
        serde_json::json!({ "id": id }),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"]["sha256"], info["sha256"]);

    // The default limit is 20 MiB. The route rejects the declared
    // Content-Length before it reads the body.
    // Over HTTP/2, because the server responds before it reads the body,
    // and an HTTP/1.1 client still writing it sees a broken pipe instead
    // of the response.
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = http2
        .post(format!("{}/files?filename=big.bin", server.base_url()))
        .bearer_auth(&server.admin_token)
        .body(vec![0u8; 20 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "resource_exhausted");
    assert_eq!(body["message"], "file exceeds the 20971520-byte limit");

    let response = client
        .post(format!("{}/files?filename=a.txt", server.base_url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (status, body) = connect_json(
        &client,
        &server.base_url(),
        "agynio.api.files.v1.FilesGateway/GetDownloadUrl",
        serde_json::json!({ "id": id, "expiry": "60s" }),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap().to_string();
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename*=UTF-8''hello%20world.txt"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello");

    let tampered = url.replace("exp=", "exp=1");
    let response = reqwest::get(&tampered).await.unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid signature");
}

/// A moto S3 server on a free loopback port, stopped on drop. Moto comes
/// from the test virtual environment (`AGYN_TEST_VENV`, default
/// `.venv-tests` in the repository root, which tests/python/venv.sh
/// creates).
struct Moto {
    endpoint: String,
    child: std::process::Child,
}

impl Moto {
    async fn start() -> Self {
        let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = std::env::var("AGYN_TEST_VENV")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| repository.join(".venv-tests"));
        let program = venv.join("bin/moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "S3 tests need moto at {}: {error}; run tests/python/venv.sh",
                    program.display()
                )
            });
        let moto = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        for _ in 0..200 {
            if reqwest::get(&moto.endpoint).await.is_ok() {
                return moto;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto did not start on {}", moto.endpoint);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_round_trip() {
    let moto = Moto::start().await;
    let bucket = "agyn-serve-files";
    let response = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "create bucket: {response:?}"
    );
    let flags = [
        ("--files-backend", "s3"),
        ("--files-s3-bucket", bucket),
        ("--files-s3-endpoint", moto.endpoint.as_str()),
        ("--files-s3-region", "us-east-1"),
        ("--files-s3-access-key-id", "testing"),
        ("--files-s3-secret-access-key", "testing"),
    ];
    let args: Vec<String> = flags
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
    let server = Server::start_with(&args);
    let base = Arc::new(base());

    // 10 MiB: above one 8 MiB part, so the upload is a multipart upload.
    let size = 10 * CHUNK_BYTES;
    let file = upload_pattern(&server, &base, size).await;
    assert_eq!(file.sha256, pattern_sha256(&base, size));
    let listing = reqwest::get(format!("{}/{bucket}?list-type=2", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains(&format!("<Key>{}</Key>", file.meta.id)),
        "{listing}"
    );

    let url = download_url(&server, &file.meta.id).await;
    assert_eq!(download_and_compare(&url, &base).await, size);
}
