//! Shared setup: a platform database with users and organizations, the
//! files service over a local object store in a temp directory, and an
//! in-process server on loopback that serves both Connect services and the
//! HTTP routes.
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
use agyn_files::{DownloadKey, Files, LocalStore};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{Organizations, Role};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use agyn_users::Users;
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
        let db = agyn_store::testing::fresh(backend).await;
        let orgs = Organizations::new(db.clone(), Vec::new());
        let data_dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(data_dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let files = Files::new(
            db.clone(),
            orgs.clone(),
            Arc::new(store),
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
