//! Schema migrations, embedded in the binary.
//!
//! The scripts use SQL that SQLite and PostgreSQL both accept (`TEXT`,
//! `BIGINT`, `ON CONFLICT`), so one list serves both backends. A change
//! that needs backend-specific SQL adds its own script per backend.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use crate::Backend;

/// `(version, description, sql)` of every migration, in order.
type Script = (i64, &'static str, &'static str);

const SCRIPTS: &[Script] = &[
    (
        1,
        "identity users",
        include_str!("../migrations/0001_identity_users.sql"),
    ),
    (
        2,
        "organizations devices",
        include_str!("../migrations/0002_organizations_devices.sql"),
    ),
    (3, "pki", include_str!("../migrations/0003_pki.sql")),
    (
        4,
        "threads chat",
        include_str!("../migrations/0004_threads_chat.sql"),
    ),
    (
        5,
        "notifications",
        include_str!("../migrations/0005_notifications.sql"),
    ),
    (6, "llm", include_str!("../migrations/0006_llm.sql")),
    (7, "secrets", include_str!("../migrations/0007_secrets.sql")),
    (
        8,
        "llm usage",
        include_str!("../migrations/0008_llm_usage.sql"),
    ),
    (9, "agents", include_str!("../migrations/0009_agents.sql")),
    (
        10,
        "runners",
        include_str!("../migrations/0010_runners.sql"),
    ),
    (11, "files", include_str!("../migrations/0011_files.sql")),
    (
        12,
        "tracing",
        include_str!("../migrations/0012_tracing.sql"),
    ),
    (13, "apps", include_str!("../migrations/0013_apps.sql")),
    (
        14,
        "tuples by subject object",
        include_str!("../migrations/0014_tuples_by_subject_object.sql"),
    ),
];

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
        Backend::Sqlite | Backend::Postgres => SCRIPTS,
    };
    let migrator = Migrator::new(Embedded(scripts)).await?;
    migrator.run(pool).await
}
