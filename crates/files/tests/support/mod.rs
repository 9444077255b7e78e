//! Shared setup: a platform database with users and organizations, and
//! the files service over a local object store in a temp directory or an
//! S3 bucket on a moto server. An in-process server on loopback serves
//! both Connect services and the HTTP routes.
//!
//! The server replaces the gateway's authentication: the bearer value
//! `user:<id>` makes the caller that user, and any other request carries
//! no caller.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agyn_api_files::agynio::api::files::v1::{self as pb, FilesGatewayClient, FilesServiceClient};
use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_files::service::{FilesGatewayRpc, FilesRpc};
use agyn_files::{DownloadKey, Files, LocalStore, ObjectStore};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, Role};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use agyn_users::Users;
use connectrpc::ConnectError;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use pb::__buffa::oneof::upload_file_request::Payload;

/// Master key bytes that the test servers derive the download key from.
pub const MASTER_KEY: [u8; 32] = [42; 32];

pub struct World {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub files: Files,
    pub address: String,
    pub data_dir: tempfile::TempDir,
}

/// Maps the test bearer values to callers, in place of the gateway.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer user:"))
        .map(str::to_string);
    if let Some(id) = user {
        request.extensions_mut().insert(user_caller(&id));
    }
    next.run(request).await
}

impl World {
    /// Starts a server whose upload limit is the default.
    pub async fn new(backend: Backend) -> Self {
        Self::with_limit(backend, agyn_files::DEFAULT_MAX_UPLOAD_BYTES).await
    }

    pub async fn with_limit(backend: Backend, max_upload_bytes: u64) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(data_dir.path()).await.unwrap();
        Self::build(backend, max_upload_bytes, Arc::new(store), data_dir).await
    }

    /// Starts a server over `store`. `data_dir` is kept for the life of the
    /// world.
    pub async fn build(
        backend: Backend,
        max_upload_bytes: u64,
        store: Arc<dyn ObjectStore>,
        data_dir: tempfile::TempDir,
    ) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let orgs = Organizations::new(db.clone(), Vec::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let files = Files::new(
            db.clone(),
            orgs.clone(),
            store,
            DownloadKey::derive(&MASTER_KEY),
            &address,
        )
        .with_max_upload_bytes(max_upload_bytes);
        let router = connectrpc::Router::new()
            .add_service(Arc::new(FilesGatewayRpc::new(files.clone())))
            .add_service(Arc::new(FilesRpc::new(files.clone())));
        let app = files
            .router()
            .fallback_service(connectrpc::ConnectRpcService::new(router))
            .layer(axum::middleware::from_fn(authenticate));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            users: Users::new(db.clone()),
            db,
            orgs,
            files,
            address,
            data_dir,
        }
    }

    pub fn gateway(&self) -> FilesGatewayClient<HttpClient> {
        FilesGatewayClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    pub fn internal(&self) -> FilesServiceClient<HttpClient> {
        FilesServiceClient::new(
            HttpClient::plaintext(),
            ClientConfig::new(self.address.parse().unwrap()),
        )
    }

    /// Uploads `frames` through the gateway.
    pub async fn upload(
        &self,
        options: CallOptions,
        frames: Vec<pb::UploadFileRequest>,
    ) -> Result<pb::FileInfo, ConnectError> {
        let response = self
            .gateway()
            .upload_file_with_options(connectrpc::stream_iter(frames), options)
            .await?;
        Ok(response.into_owned().file.into_option().unwrap())
    }

    /// Reads a file through GetFileContent and returns its pieces.
    pub async fn content_pieces(
        &self,
        options: CallOptions,
        id: &str,
    ) -> Result<Vec<Vec<u8>>, ConnectError> {
        let request = pb::GetFileContentRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let mut stream = self
            .gateway()
            .get_file_content_with_options(request, options)
            .await?;
        let mut pieces = Vec::new();
        while let Some(message) = stream.message().await? {
            pieces.push(message.view().chunk_data.to_vec());
        }
        Ok(pieces)
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("files|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        user_caller(&user.id)
    }

    pub async fn org(&self, owner: &Caller, name: &str) -> String {
        self.orgs
            .create_organization(owner, name, None, "")
            .await
            .unwrap()
            .id
    }

    /// Makes `member` an active member of `org`.
    pub async fn join(&self, org: &str, owner: &Caller, member: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &MembershipInput {
                    organization_id: org,
                    identity_id: id(member),
                    role: Some(Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap();
        self.orgs
            .accept_membership(member, &invitation.id)
            .await
            .unwrap();
    }

    /// Creates a thread in `org` with `participant` and a message from
    /// `sender` that attaches `file_id`, as the threads service stores
    /// them. Returns the thread id.
    pub async fn thread_with_file(
        &self,
        org: &str,
        participant: &Caller,
        sender: &Caller,
        file_id: &str,
    ) -> String {
        let thread_id = agyn_core::id::new_id();
        let message_id = agyn_core::id::new_id();
        let now = agyn_core::time::now_micros();

        sqlx::query(
            "INSERT INTO threads (id, organization_id, status, message_count, created_at, \
             updated_at) VALUES ($1, $2, 'active', 1, $3, $3)",
        )
        .bind(&thread_id)
        .bind(org)
        .bind(now)
        .execute(self.db.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO messages (id, thread_id, seq, sender_id, body, created_at) \
             VALUES ($1, $2, 1, $3, 'see attached', $4)",
        )
        .bind(&message_id)
        .bind(&thread_id)
        .bind(id(sender))
        .bind(now)
        .execute(self.db.pool())
        .await
        .unwrap();
        sqlx::query("INSERT INTO message_files (message_id, ord, file_id) VALUES ($1, 0, $2)")
            .bind(&message_id)
            .bind(file_id)
            .execute(self.db.pool())
            .await
            .unwrap();

        let thread = ObjectRef::new("thread", &thread_id);
        Authorizer::new(self.db.clone())
            .write(
                &[
                    Tuple::new(ObjectRef::new("organization", org), "org", thread.clone()),
                    Tuple::new(ObjectRef::identity(id(participant)), "participant", thread),
                ],
                &[],
            )
            .await
            .unwrap();
        thread_id
    }

    pub async fn file_rows(&self) -> i64 {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM files")
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.try_get("n").unwrap()
    }

    /// Returns every file under the object store's directories.
    pub fn stored_objects(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect_files(&self.data_dir.path().join("files"), &mut found);
        found
    }

    pub fn staged_objects(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect_files(&self.data_dir.path().join("files/tmp"), &mut found);
        found
    }

    /// Waits up to 10 s until no object or staged upload is stored.
    pub async fn wait_until_store_empty(&self) {
        for _ in 0..200 {
            if self.stored_objects().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("objects left behind: {:?}", self.stored_objects());
    }
}

fn collect_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// Returns a Connect streaming envelope of one message.
fn envelope(frame: &pb::UploadFileRequest) -> Vec<u8> {
    let message = buffa::Message::encode_to_vec(frame);
    let mut envelope = vec![0];
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(&message);
    envelope
}

/// Sends the start of an UploadFile call with `frames` as a Connect
/// streaming request over HTTP/1.1 with a chunked body, and returns the
/// socket with the body still open. Dropping the socket cuts the upload.
pub async fn open_upload(
    w: &World,
    caller: &Caller,
    frames: &[pb::UploadFileRequest],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;

    let host = w.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /agynio.api.files.v1.FilesGateway/UploadFile HTTP/1.1\r\n\
         host: {host}\r\n\
         content-type: application/connect+proto\r\n\
         authorization: {}\r\n\
         transfer-encoding: chunked\r\n\r\n",
        bearer_header(caller)
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for frame in frames {
        let body = envelope(frame);
        let size = format!("{:x}\r\n", body.len());
        socket.write_all(size.as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
        socket.write_all(b"\r\n").await.unwrap();
    }
    socket.flush().await.unwrap();
    socket
}

/// A moto S3 server on a free loopback port, stopped on drop. Moto comes
/// from the test virtual environment (`AGYN_TEST_VENV`, default
/// `.venv-tests` in the repository root).
pub struct MotoServer {
    pub endpoint: String,
    child: std::process::Child,
}

impl MotoServer {
    pub async fn start() -> Self {
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = std::env::var("AGYN_TEST_VENV")
            .map(PathBuf::from)
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
                    "S3 tests need moto at {}: {error}; install it with \
                     `.venv-tests/bin/pip install -r tests/python/requirements.txt`",
                    program.display()
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = Self { endpoint, child };
        for _ in 0..200 {
            if reqwest::get(&server.endpoint).await.is_ok() {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto did not start on {}", server.endpoint);
    }

    /// Creates `bucket` and returns a store over it.
    pub async fn bucket(&self, bucket: &str) -> agyn_files::S3Store {
        let response = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "create bucket: {response:?}"
        );
        agyn_files::S3Store::new(&agyn_files::S3Settings {
            bucket: bucket.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".to_string()),
            access_key_id: Some("testing".to_string()),
            secret_access_key: Some(agyn_core::Secret::new("testing".to_string())),
        })
        .unwrap()
    }

    /// Returns the keys of the objects in `bucket`.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let listing = self.get_text(&format!("{bucket}?list-type=2")).await;
        xml_values(&listing, "Key")
    }

    /// Returns the ids of the multipart uploads still open in `bucket`.
    pub async fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let listing = self.get_text(&format!("{bucket}?uploads")).await;
        xml_values(&listing, "UploadId")
    }

    async fn get_text(&self, path: &str) -> String {
        let response = reqwest::get(format!("{}/{path}", self.endpoint))
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET {path}: {response:?}");
        response.text().await.unwrap()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the text of every `<tag>` element of an S3 XML listing.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(value, _)| value.to_string()))
        .collect()
}

pub fn user_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

pub fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

pub fn bearer(caller: &Caller) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer user:{}", id(caller)))
}

pub fn bearer_header(caller: &Caller) -> String {
    format!("Bearer user:{}", id(caller))
}

pub fn metadata_frame(filename: &str, size_bytes: i64) -> pb::UploadFileRequest {
    metadata_frame_with(pb::UploadFileMetadata {
        filename: filename.to_string(),
        size_bytes,
        ..Default::default()
    })
}

pub fn metadata_frame_with(metadata: pb::UploadFileMetadata) -> pb::UploadFileRequest {
    pb::UploadFileRequest {
        payload: Some(Payload::from(metadata)),
        ..Default::default()
    }
}

pub fn chunk_frame(data: &[u8]) -> pb::UploadFileRequest {
    pb::UploadFileRequest {
        payload: Some(Payload::from(pb::UploadFileChunk {
            data: data.to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Returns the frames of an upload of `content` in pieces of `chunk`
/// bytes, declaring its size.
pub fn upload_frames(filename: &str, content: &[u8], chunk: usize) -> Vec<pb::UploadFileRequest> {
    let mut frames = vec![metadata_frame(filename, content.len() as i64)];
    frames.extend(content.chunks(chunk).map(chunk_frame));
    frames
}

/// Returns `len` bytes of a repeating pattern that is not a multiple of
/// common chunk sizes, so misordered pieces change the content.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
