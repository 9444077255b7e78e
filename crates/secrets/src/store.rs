//! SQL for the three tables. Secrets and image pull secrets share the
//! storage columns (`storage`, the sealed column, `secret_provider_id`,
//! `remote_name`), which this module reads and writes for both.

pub(crate) mod image_pull;
pub(crate) mod providers;
pub(crate) mod secrets;

use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{RemoteRef, Storage};

/// Rows deleted per statement during the organization purge.
pub(crate) const DELETE_BATCH: i64 = 1_000;

/// A table with storage columns: `secrets` or `image_pull_secrets`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceTable {
    pub table: &'static str,
    pub sealed_column: &'static str,
}

pub(crate) const SECRETS: SourceTable = SourceTable {
    table: "secrets",
    sealed_column: "sealed_value",
};

pub(crate) const IMAGE_PULL_SECRETS: SourceTable = SourceTable {
    table: "image_pull_secrets",
    sealed_column: "sealed_password",
};

/// New contents of the storage columns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SourceWrite<'a> {
    /// No change.
    Keep,
    /// A local value: this sealed text and no remote reference.
    Local(&'a str),
    /// A remote value: this reference and no sealed value.
    Remote(&'a RemoteRef),
}

/// Returns the stored name of a storage: `local` or `remote`.
pub(crate) fn storage_name(storage: &Storage) -> &'static str {
    match storage {
        Storage::Local => "local",
        Storage::Remote(_) => "remote",
    }
}

/// The storage columns of a row, as resolution reads them.
pub(crate) struct StoredSource {
    pub storage: Storage,
    /// The sealed text of a local row, `None` for a remote one.
    pub sealed: Option<String>,
}

/// Reads a row selected with the storage columns and the sealed column
/// as `sealed`.
pub(crate) fn stored_source_from_row(row: &AnyRow) -> Result<StoredSource, sqlx::Error> {
    Ok(StoredSource {
        storage: storage_from_row(row)?,
        sealed: row.try_get("sealed")?,
    })
}

/// Reads the storage of a row selected with `storage, secret_provider_id,
/// remote_name`.
pub(crate) fn storage_from_row(row: &AnyRow) -> Result<Storage, sqlx::Error> {
    let storage: String = row.try_get("storage")?;
    match storage.as_str() {
        "local" => Ok(Storage::Local),
        "remote" => Ok(Storage::Remote(RemoteRef {
            secret_provider_id: row.try_get("secret_provider_id")?,
            remote_name: row.try_get("remote_name")?,
        })),
        other => Err(sqlx::Error::Decode(
            format!("unknown storage {other:?}").into(),
        )),
    }
}

impl SourceTable {
    /// Writes the storage columns of row `id`.
    pub(crate) async fn write_source(
        self,
        connection: &mut AnyConnection,
        id: &str,
        write: SourceWrite<'_>,
    ) -> Result<()> {
        let table = self.table;
        let sealed_column = self.sealed_column;
        match write {
            SourceWrite::Keep => {}
            SourceWrite::Local(sealed) => {
                let sql = format!(
                    "UPDATE {table} SET storage = 'local', {sealed_column} = $2, \
                     secret_provider_id = NULL, remote_name = NULL WHERE id = $1"
                );
                sqlx::query(&sql)
                    .bind(id)
                    .bind(sealed)
                    .execute(&mut *connection)
                    .await?;
            }
            SourceWrite::Remote(remote) => {
                let sql = format!(
                    "UPDATE {table} SET storage = 'remote', {sealed_column} = NULL, \
                     secret_provider_id = $2, remote_name = $3 WHERE id = $1"
                );
                sqlx::query(&sql)
                    .bind(id)
                    .bind(&remote.secret_provider_id)
                    .bind(&remote.remote_name)
                    .execute(&mut *connection)
                    .await?;
            }
        }
        Ok(())
    }

    /// Returns the organization of row `id`.
    pub(crate) async fn organization_of(
        self,
        connection: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<String>> {
        let sql = format!("SELECT organization_id FROM {} WHERE id = $1", self.table);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
        Ok(row.map(|row| row.try_get("organization_id")).transpose()?)
    }

    /// Deletes row `id` and returns whether it existed.
    pub(crate) async fn delete(self, connection: &mut AnyConnection, id: &str) -> Result<bool> {
        let sql = format!("DELETE FROM {} WHERE id = $1", self.table);
        let done = sqlx::query(&sql).bind(id).execute(&mut *connection).await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Appends the keyset condition and order of an ascending `(created_at,
/// id)` page to `sql`, whose last placeholder is `$<next - 1>`, and
/// returns the number of the next placeholder.
pub(crate) fn push_page(sql: &mut String, page: &Page, mut next: usize) -> usize {
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (created_at > ${next} OR (created_at = ${next} AND id > ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY created_at, id LIMIT ${next}"));
    next + 1
}

/// Deletes up to [`DELETE_BATCH`] rows of `table` owned by `org_id` and
/// returns how many.
pub(crate) async fn delete_organization_batch(
    connection: &mut AnyConnection,
    table: &str,
    org_id: &str,
) -> Result<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE id IN \
         (SELECT id FROM {table} WHERE organization_id = $1 LIMIT $2)"
    );
    let done = sqlx::query(&sql)
        .bind(org_id)
        .bind(DELETE_BATCH)
        .execute(&mut *connection)
        .await?;
    Ok(done.rows_affected())
}

/// Returns the cursor of a row for the next page token.
pub(crate) fn cursor(created_at: i64, id: &str) -> Cursor {
    Cursor {
        position: created_at,
        id: id.to_string(),
    }
}
