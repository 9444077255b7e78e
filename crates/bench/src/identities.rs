//! `agyn-bench identities`: benchmark users and API tokens written
//! straight into the server's database through `agyn_users`.
//!
//! No public method creates a user without OIDC sign-in, and an API token
//! can only be created by its own user, so the idle-streams benchmark
//! (which needs more identities than the per-identity stream limit allows
//! for one) makes them here. On SQLite the server holds an exclusive lock
//! on the database file, so this must run before the server starts. On
//! PostgreSQL it may also run while the server is up.

use std::io::Write as _;
use std::path::PathBuf;

use agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_store::{Db, OpenError};
use agyn_users::Users;
use clap::Args;

use crate::BenchError;

#[derive(Args, Debug)]
pub struct IdentitiesArgs {
    /// Database URL of the server: sqlite://<data-dir>/agyn.db or postgres://...
    #[arg(long)]
    database_url: String,
    /// Number of users to create (or reuse, when they exist from an earlier run).
    #[arg(long, default_value_t = 320)]
    count: usize,
    /// File to write `<identity id> <token>` lines to; it is replaced.
    #[arg(long)]
    output: PathBuf,
}

pub async fn run(args: IdentitiesArgs) -> Result<(), BenchError> {
    let db = Db::open(&args.database_url)
        .await
        .map_err(|error| match error {
            OpenError::InUse(path) => format!(
                "database {} is locked by a running agyn server: on SQLite, create the \
                 identities before starting it",
                path.display()
            ),
            other => format!("failed to open {}: {other}", args.database_url),
        })?;
    let users = Users::new(db.clone());
    let mut lines = String::new();
    for index in 0..args.count {
        let profile = ResolveOrCreateUserRequest {
            oidc_subject: format!("agyn-bench:{index}"),
            preferred_username: format!("bench{index}"),
            name: format!("Benchmark user {index}"),
            ..Default::default()
        };
        let (user, _created) = users
            .resolve_or_create_user(&profile)
            .await
            .map_err(|error| format!("failed to create benchmark user {index}: {error}"))?;
        let caller = Caller::Identity {
            identity_id: user.id.clone(),
            kind: IdentityKind::User,
            workload_id: None,
            credential: CredentialKind::ApiToken,
        };
        let token = users
            .create_api_token(&caller, "benchmark", None)
            .await
            .map_err(|error| format!("failed to create a token for user {}: {error}", user.id))?;
        lines.push_str(&format!("{} {}\n", user.id, token.plaintext.expose()));
    }
    db.close().await;
    write_private(&args.output, &lines)?;
    eprintln!(
        "Wrote {} identities to {}",
        args.count,
        args.output.display()
    );
    Ok(())
}

/// Writes `text` to `path`, readable by its owner only, because it contains
/// API tokens.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), BenchError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| format!("failed to create {}: {error}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
    Ok(())
}
