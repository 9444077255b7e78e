//! UploadFile, GetFileMetadata and GetFileContent over Connect on
//! loopback, on SQLite and PostgreSQL, with the local object store.

mod support;

use agyn_api_files::agynio::api::files::v1 as pb;
use agyn_api_rpc::google::rpc::ErrorInfo;
use agyn_store::{Backend, on_both_backends};
use base64::Engine as _;
use connectrpc::client::CallOptions;
use connectrpc::{ConnectError, ErrorCode};
use support::*;

/// Returns the `google.rpc.ErrorInfo` detail of an error.
fn error_info(error: &ConnectError) -> ErrorInfo {
    let value = error
        .details
        .iter()
        .find(|detail| detail.type_url.ends_with("google.rpc.ErrorInfo"))
        .and_then(|detail| detail.value.as_deref())
        .expect("an ErrorInfo detail");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value.trim_end_matches('='))
        .unwrap();
    <ErrorInfo as buffa::Message>::decode_from_slice(&bytes).unwrap()
}

async fn metadata(w: &World, options: CallOptions, id: &str) -> Result<pb::FileInfo, ConnectError> {
    let response = w
        .gateway()
        .get_file_metadata_with_options(
            pb::GetFileMetadataRequest {
                id: id.to_string(),
                ..Default::default()
            },
            options,
        )
        .await?;
    Ok(response.into_owned().file.into_option().unwrap())
}

async fn upload_round_trip(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let content = pattern(200_000);

    let file = w
        .upload(bearer(&alice), upload_frames("notes.txt", &content, 7_000))
        .await
        .unwrap();
    assert_eq!(file.filename, "notes.txt");
    assert_eq!(file.content_type, "application/octet-stream");
    assert_eq!(file.size_bytes, 200_000);
    assert_eq!(file.sha256, sha256_hex(&content));
    assert_eq!(file.organization_id, "");
    assert_eq!(file.uploader_id, id(&alice));
    assert_eq!(file.meta.created_at, file.meta.updated_at);

    let read = metadata(&w, bearer(&alice), &file.meta.id).await.unwrap();
    assert_eq!(read, file);

    let pieces = w
        .content_pieces(bearer(&alice), &file.meta.id)
        .await
        .unwrap();
    let sizes: Vec<usize> = pieces.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![65_536, 65_536, 65_536, 3_392]);
    assert_eq!(pieces.concat(), content);

    let internal = w
        .internal()
        .get_file_metadata_with_options(
            pb::GetFileMetadataRequest {
                id: file.meta.id.to_uppercase(),
                ..Default::default()
            },
            bearer(&alice),
        )
        .await
        .unwrap()
        .into_owned();
    assert_eq!(internal.file.into_option().unwrap(), file);
}

async fn empty_file_has_no_pieces(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let mut frames = vec![metadata_frame_with(pb::UploadFileMetadata {
        filename: "empty".to_string(),
        content_type: "text/plain; charset=utf-8".to_string(),
        ..Default::default()
    })];
    frames.push(chunk_frame(b""));

    let file = w.upload(bearer(&alice), frames).await.unwrap();
    assert_eq!(file.size_bytes, 0);
    assert_eq!(file.content_type, "text/plain; charset=utf-8");
    assert_eq!(file.sha256, sha256_hex(b""));
    let pieces = w
        .content_pieces(bearer(&alice), &file.meta.id)
        .await
        .unwrap();
    assert!(pieces.is_empty(), "{pieces:?}");
}

async fn frame_order_errors(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let cases = [
        (vec![chunk_frame(b"abc")], "first frame must be metadata"),
        (Vec::new(), "first frame must be metadata"),
        (
            vec![
                metadata_frame("a", 0),
                chunk_frame(b"x"),
                metadata_frame("b", 0),
            ],
            "metadata sent twice",
        ),
        (
            vec![metadata_frame("a", 5), chunk_frame(b"abc")],
            "size_bytes: does not match the uploaded data",
        ),
        (
            vec![
                metadata_frame("a", 0),
                chunk_frame(&vec![0; 1024 * 1024 + 1]),
            ],
            "chunk.data: must be at most 1048576 bytes per chunk",
        ),
        (
            vec![metadata_frame("a/b", 0)],
            "filename: must not contain '/', '\\' or control characters",
        ),
        (vec![metadata_frame("", 0)], "filename: is required"),
        (
            vec![metadata_frame("a", -1)],
            "size_bytes: must not be negative",
        ),
    ];
    for (frames, message) in cases {
        let error = w.upload(bearer(&alice), frames).await.unwrap_err();
        assert_eq!(
            error.code,
            ErrorCode::InvalidArgument,
            "{message}: {error:?}"
        );
        assert_eq!(error.message.as_deref(), Some(message));
    }
    let bad_type = metadata_frame_with(pb::UploadFileMetadata {
        filename: "a".to_string(),
        content_type: "not a type".to_string(),
        ..Default::default()
    });
    let error = w.upload(bearer(&alice), vec![bad_type]).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(w.file_rows().await, 0);
    w.wait_until_store_empty().await;
}

async fn upload_needs_identity(backend: Backend) {
    let w = World::new(backend).await;
    let error = w
        .upload(CallOptions::default(), upload_frames("a", b"abc", 3))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    assert_eq!(w.file_rows().await, 0);
}

async fn over_limit_leaves_nothing(backend: Backend) {
    let w = World::with_limit(backend, 1_000).await;
    let alice = w.user("alice").await;

    // Declared size one byte over the limit: rejected before any chunk.
    let declared = upload_frames("big", &pattern(1_001), 500);
    let error = w.upload(bearer(&alice), declared).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(
        error.message.as_deref(),
        Some("file exceeds the 1000-byte limit")
    );
    let info = error_info(&error);
    assert_eq!(info.reason, "FILE_TOO_LARGE");
    assert_eq!(
        info.metadata.get("limit_bytes").map(String::as_str),
        Some("1000")
    );

    // Undeclared size: the running total passes the limit mid-stream.
    let mut undeclared = vec![metadata_frame("big", 0)];
    undeclared.extend(pattern(1_001).chunks(400).map(chunk_frame));
    let error = w.upload(bearer(&alice), undeclared).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(error_info(&error).reason, "FILE_TOO_LARGE");

    // Exactly at the limit is accepted.
    let at_limit = w
        .upload(bearer(&alice), upload_frames("ok", &pattern(1_000), 300))
        .await
        .unwrap();
    assert_eq!(at_limit.size_bytes, 1_000);
    assert_eq!(w.file_rows().await, 1);
    assert_eq!(w.stored_objects().len(), 1, "{:?}", w.stored_objects());
}

async fn cut_stream_leaves_nothing(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let socket = open_upload(
        &w,
        &alice,
        &[metadata_frame("partial", 0), chunk_frame(&pattern(100_000))],
    )
    .await;

    // Wait until the server staged the upload, then close the connection
    // without ending the body.
    let mut staged = false;
    for _ in 0..400 {
        if !w.staged_objects().is_empty() {
            staged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(staged, "the server never staged the upload");
    drop(socket);

    w.wait_until_store_empty().await;
    assert_eq!(w.file_rows().await, 0);
}

async fn request_id_replays_first_upload(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let frames = |content: &[u8]| {
        let mut frames = vec![metadata_frame_with(pb::UploadFileMetadata {
            filename: "once.txt".to_string(),
            request_id: "upload-1".to_string(),
            ..Default::default()
        })];
        frames.push(chunk_frame(content));
        frames
    };

    let first = w.upload(bearer(&alice), frames(b"first")).await.unwrap();
    let second = w.upload(bearer(&alice), frames(b"second")).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(w.file_rows().await, 1);
    assert_eq!(w.stored_objects().len(), 1);

    let reused = metadata_frame_with(pb::UploadFileMetadata {
        filename: "other.txt".to_string(),
        request_id: "upload-1".to_string(),
        ..Default::default()
    });
    let error = w.upload(bearer(&alice), vec![reused]).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::AlreadyExists);
    assert_eq!(error_info(&error).reason, "IDEMPOTENCY_KEY_REUSED");
}

async fn read_rule(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let reader = w.user("reader").await;
    let stranger = w.user("stranger").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;

    let private = w
        .upload(bearer(&member), upload_frames("private", b"p", 1))
        .await
        .unwrap();
    let mut org_frames = vec![metadata_frame_with(pb::UploadFileMetadata {
        filename: "shared".to_string(),
        organization_id: Some(org.clone()),
        ..Default::default()
    })];
    org_frames.push(chunk_frame(b"s"));
    let shared = w.upload(bearer(&member), org_frames).await.unwrap();
    assert_eq!(shared.organization_id, org);

    // The uploader reads both, an organization reader reads the
    // organization's file only, and a stranger reads neither.
    assert!(
        metadata(&w, bearer(&member), &private.meta.id)
            .await
            .is_ok()
    );
    assert!(metadata(&w, bearer(&owner), &shared.meta.id).await.is_ok());
    let error = metadata(&w, bearer(&owner), &private.meta.id)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);
    assert_eq!(
        error.message.as_deref(),
        Some(format!("permission denied: can_read on file {}", private.meta.id).as_str())
    );
    let error = w
        .content_pieces(bearer(&stranger), &shared.meta.id)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);

    // A thread participant reads a file attached to a message in it.
    assert!(
        metadata(&w, bearer(&reader), &private.meta.id)
            .await
            .is_err()
    );
    w.thread_with_file(&org, &reader, &member, &private.meta.id)
        .await;
    assert!(
        metadata(&w, bearer(&reader), &private.meta.id)
            .await
            .is_ok()
    );
    let pieces = w
        .content_pieces(bearer(&reader), &private.meta.id)
        .await
        .unwrap();
    assert_eq!(pieces.concat(), b"p");
    assert!(
        metadata(&w, bearer(&stranger), &private.meta.id)
            .await
            .is_err()
    );
}

async fn lookup_errors(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let error = metadata(&w, bearer(&alice), "").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(error.message.as_deref(), Some("id: is required"));
    let error = metadata(&w, bearer(&alice), "nope").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    let missing = agyn_core::id::new_id();
    let error = metadata(&w, bearer(&alice), &missing).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(
        error.message.as_deref(),
        Some(format!("file {missing} not found").as_str())
    );
    let error = w
        .content_pieces(bearer(&alice), &missing)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
}

async fn organization_upload_checks(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let stranger = w.user("stranger").await;
    let org = w.org(&owner, "Acme").await;
    let frames = |org: &str| {
        vec![metadata_frame_with(pb::UploadFileMetadata {
            filename: "f".to_string(),
            organization_id: Some(org.to_string()),
            ..Default::default()
        })]
    };

    let error = w.upload(bearer(&stranger), frames(&org)).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied);
    let unknown = agyn_core::id::new_id();
    let error = w
        .upload(bearer(&owner), frames(&unknown))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
    let error = w.upload(bearer(&owner), frames("bad")).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(
        error.message.as_deref(),
        Some("organization_id: must be a UUID")
    );
    assert_eq!(w.file_rows().await, 0);
}

on_both_backends!(
    upload_round_trip,
    empty_file_has_no_pieces,
    frame_order_errors,
    upload_needs_identity,
    over_limit_leaves_nothing,
    cut_stream_leaves_nothing,
    request_id_replays_first_upload,
    read_rule,
    lookup_errors,
    organization_upload_checks,
);
