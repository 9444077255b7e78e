//! First-start bootstrap: the cluster admin and its API token.
//!
//! Guarded by the single-row `bootstrap_state` table, so it runs once per
//! cluster: the first replica to insert the row wins and the others skip.
//! The token file is written before the transaction commits and removed if
//! the commit fails, so a committed admin always has its token on disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use agyn_core::time::now_micros;
use agyn_core::{Error, IdentityKind, Result, Secret};
use agyn_store::sqlx::{self, Row};

use crate::store::{self, NewUser};
use crate::{BOOTSTRAP_ADMIN_SUBJECT, Users, identity, ops};

/// Name of the admin's API token minted by bootstrap.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// Result of a bootstrap run.
#[derive(Debug)]
pub enum Outcome {
    /// This start created the admin and wrote its token to `token_file`.
    Created {
        admin_id: String,
        token_prefix: String,
        token_file: PathBuf,
    },
    /// The cluster was bootstrapped before.
    AlreadyDone { admin_id: String },
}

impl Users {
    /// Creates the cluster admin on first start and writes its token to
    /// `<data_dir>/admin-token` (mode 0600).
    pub async fn bootstrap(&self, data_dir: &Path) -> Result<Outcome> {
        if let Some(admin_id) = self.bootstrapped_admin().await? {
            return Ok(Outcome::AlreadyDone { admin_id });
        }
        let now = now_micros();
        let admin_id = agyn_core::id::new_id();
        let mut tx = self.db.begin_write().await?;
        let claimed = sqlx::query(
            "INSERT INTO bootstrap_state (id, admin_id, created_at) VALUES (1, $1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&admin_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            drop(tx);
            let admin_id = self.bootstrapped_admin().await?.unwrap_or_default();
            return Ok(Outcome::AlreadyDone { admin_id });
        }
        identity::register(&mut tx, &admin_id, IdentityKind::User, now).await?;
        store::insert_user(
            &mut tx,
            &NewUser {
                id: &admin_id,
                oidc_subject: BOOTSTRAP_ADMIN_SUBJECT,
                username: "admin",
                name: "Administrator",
                email: "",
                email_verified: false,
                photo_url: "",
                now,
            },
        )
        .await?;
        self.set_admin_in(&mut tx, &admin_id, true, "bootstrap", now)
            .await?;
        let created =
            ops::insert_token(&mut tx, &admin_id, BOOTSTRAP_TOKEN_NAME, None, now).await?;
        let token_file = write_token_file(data_dir, &created.plaintext)?;
        if let Err(error) = tx.commit().await {
            let _ = std::fs::remove_file(&token_file);
            return Err(error.into());
        }
        Ok(Outcome::Created {
            admin_id,
            token_prefix: created.token.token_prefix,
            token_file,
        })
    }

    /// Replaces the bootstrap admin's `bootstrap` tokens with a new one and
    /// rewrites the token file.
    pub async fn reset_admin_token(&self, data_dir: &Path) -> Result<Outcome> {
        let admin_id = self
            .bootstrapped_admin()
            .await?
            .ok_or_else(|| Error::failed_precondition("the cluster has not been bootstrapped"))?;
        let mut tx = self.db.begin_write().await?;
        store::delete_tokens_named(&mut tx, &admin_id, BOOTSTRAP_TOKEN_NAME).await?;
        let created =
            ops::insert_token(&mut tx, &admin_id, BOOTSTRAP_TOKEN_NAME, None, now_micros()).await?;
        let token_file = write_token_file(data_dir, &created.plaintext)?;
        tx.commit().await?;
        if let Some(cache) = &self.cache {
            cache.forget_tokens_of(&admin_id);
        }
        Ok(Outcome::Created {
            admin_id,
            token_prefix: created.token.token_prefix,
            token_file,
        })
    }

    async fn bootstrapped_admin(&self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT admin_id FROM bootstrap_state WHERE id = 1")
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|row| row.try_get("admin_id")).transpose()?)
    }
}

/// Writes the token to `<data_dir>/admin-token` with mode 0600 through a
/// temporary file and a rename, so readers never see a partial token.
fn write_token_file(data_dir: &Path, token: &Secret<String>) -> Result<PathBuf> {
    let path = data_dir.join("admin-token");
    let temporary = data_dir.join(".admin-token.tmp");
    let written =
        write_private(&temporary, token).and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        let message = format!("failed to write {}: {error}", path.display());
        return Err(Error::internal(message, error));
    }
    Ok(path)
}

/// Writes the token and a newline to a new file with mode 0600.
fn write_private(path: &Path, token: &Secret<String>) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.expose().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
