//! Schema migrations, embedded in the binary. Each backend has its own
//! directory of numbered SQL files; both define the same tables.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use crate::Backend;

/// `(version, description, sql)` of every migration, in order.
type Script = (i64, &'static str, &'static str);

const SQLITE: &[Script] = &[(
    1,
    "identity users",
    include_str!("../migrations/sqlite/0001_identity_users.sql"),
)];

const POSTGRES: &[Script] = &[(
    1,
    "identity users",
    include_str!("../migrations/postgres/0001_identity_users.sql"),
)];

#[derive(Debug)]
struct Embedded(&'static [Script]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Applies every migration the database has not seen yet. Concurrent
/// replicas are serialised by sqlx's migration lock.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<(), MigrateError> {
    let scripts = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let migrator = Migrator::new(Embedded(scripts)).await?;
    migrator.run(pool).await
}
