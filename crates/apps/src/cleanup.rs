//! The organization purge step `apps`.

use std::future::Future;
use std::pin::Pin;

use agyn_authz::Authorizer;
use agyn_core::{Caller, Result};
use agyn_orgs::ResourceCleaner;
use agyn_pki::{CertificateKind, Pki};
use agyn_store::Db;

use crate::installation::revoke_access_in;
use crate::{Apps, require_component, store};

/// Installations uninstalled per transaction.
const BATCH: i64 = 100;

/// Purge step that uninstalls every app from an organization and deletes
/// the apps the organization owns after uninstalling them everywhere. It
/// needs only the database and the PKI, so it can be built before
/// [`agyn_orgs::Organizations`].
pub struct AppsCleaner {
    db: Db,
    pki: Pki,
}

impl AppsCleaner {
    pub fn new(db: Db, pki: Pki) -> Self {
        Self { db, pki }
    }
}

impl ResourceCleaner for AppsCleaner {
    fn step(&self) -> &'static str {
        "apps"
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(delete_organization(&self.db, &self.pki, organization_id))
    }
}

impl Apps {
    /// DeleteOrganizationResources: organizations only. Idempotent.
    pub async fn delete_organization_resources(
        &self,
        caller: &Caller,
        organization_id: &str,
    ) -> Result<()> {
        require_component(caller, "DeleteOrganizationResources", &["organizations"])?;
        let org_id = agyn_core::id::parse_id("organization_id", organization_id)?;
        delete_organization(&self.db, &self.pki, &org_id).await?;
        self.installations.forget_organization(&org_id);
        Ok(())
    }
}

/// Installations that one purge pass uninstalls.
#[derive(Clone, Copy)]
enum Installed<'a> {
    Into(&'a str),
    Of(&'a str),
}

/// Uninstalls every installation into `org_id`, then every installation of
/// the apps `org_id` owns, then deletes those apps with their certificates
/// and identities.
pub(crate) async fn delete_organization(db: &Db, pki: &Pki, org_id: &str) -> Result<()> {
    let authorizer = Authorizer::new(db.clone());
    let mut uninstalled = uninstall_all(db, &authorizer, Installed::Into(org_id)).await?;

    let mut connection = db.pool().acquire().await?;
    let app_ids = store::apps_of_organization(&mut connection, org_id).await?;
    drop(connection);
    for app_id in &app_ids {
        uninstalled += uninstall_all(db, &authorizer, Installed::Of(app_id)).await?;
        let mut tx = db.begin_write().await?;
        pki.revoke_subject_in(&mut tx, CertificateKind::App, app_id)
            .await?;
        store::delete_app(&mut tx, app_id).await?;
        tx.commit().await?;
    }
    tracing::info!(
        organization_id = %org_id,
        installations = uninstalled,
        apps = app_ids.len(),
        "Organization apps deleted"
    );
    Ok(())
}

/// Uninstalls the selected installations, [`BATCH`] per transaction, and
/// returns how many.
async fn uninstall_all(db: &Db, authorizer: &Authorizer, selected: Installed<'_>) -> Result<usize> {
    let mut uninstalled = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let ids = match selected {
            Installed::Into(org_id) => {
                store::installation_ids_in_organization(&mut tx, org_id, BATCH).await?
            }
            Installed::Of(app_id) => store::installation_ids_of_app(&mut tx, app_id, BATCH).await?,
        };
        for id in &ids {
            uninstall_in(authorizer, &mut tx, id).await?;
        }
        tx.commit().await?;
        uninstalled += ids.len();
        if (ids.len() as i64) < BATCH {
            return Ok(uninstalled);
        }
    }
}

/// Deletes installation `id` and the app's access it granted, inside the
/// caller's transaction.
async fn uninstall_in(
    authorizer: &Authorizer,
    connection: &mut agyn_store::sqlx::AnyConnection,
    id: &str,
) -> Result<()> {
    let Some(installation) = store::installation_by_id(connection, id).await? else {
        return Ok(());
    };
    let Some(app) = store::app_by_id(connection, &installation.app_id).await? else {
        return Ok(());
    };
    store::delete_installation(connection, id).await?;
    revoke_access_in(authorizer, connection, &app, &installation.organization_id).await
}
