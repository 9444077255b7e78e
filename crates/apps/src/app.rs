//! Apps. Each operation states its authorization rule first.

use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use agyn_pki::CertificateKind;
use agyn_users::tokens;

use crate::model::{AppChanges, AppRecord, CreatedApp, NewApp, Visibility};
use crate::store::{self, AppScope, MAX_REFERENCED_IDS};
use crate::{
    Apps, caller_key, is_app, no_fields, optional_id, require_active, require_component, validate,
};

fn slug_taken(slug: &str, org_id: &str) -> Error {
    Error::already_exists(format!(
        "app slug {slug:?} is already used in organization {org_id}; choose another slug"
    ))
}

impl Apps {
    /// CreateApp: `can_manage` on the owning organization, which must be
    /// active. The row and the app identity are written in one
    /// transaction.
    pub async fn create_app(&self, caller: &Caller, input: &NewApp) -> Result<CreatedApp> {
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let slug = validate::slug("slug", &input.slug)?;
        let name = validate::name(&input.name)?;
        validate::description(&input.description)?;
        validate::icon(&input.icon)?;
        let permissions = validate::permissions(&input.permissions)?;
        validate::endpoint(&input.endpoint)?;
        let state = self.authorize_org(caller, &org_id, "can_manage").await?;
        require_active(&org_id, state)?;

        let now = now_micros();
        let record = AppRecord {
            id: new_id(),
            organization_id: org_id,
            slug: slug.to_string(),
            name: name.to_string(),
            description: input.description.clone(),
            icon: input.icon.clone(),
            visibility: input.visibility.unwrap_or(Visibility::Internal),
            permissions,
            endpoint: input.endpoint.clone(),
            created_at: now,
            updated_at: now,
        };
        let service_token = tokens::generate_service_token();
        let token_hash = tokens::hash(service_token.expose());

        let mut tx = self.db.begin_write().await?;
        agyn_users::identity::register(&mut tx, &record.id, IdentityKind::App, now).await?;
        match store::insert_app(&mut tx, &record, &token_hash).await {
            Err(error) if error.is_unique_violation() => {
                return Err(slug_taken(&record.slug, &record.organization_id));
            }
            other => other?,
        }
        match tx.commit().await {
            Ok(()) => {}
            Err(error) if agyn_store::is_unique_violation(&error) => {
                return Err(slug_taken(&record.slug, &record.organization_id));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(
            app_id = %record.id,
            organization_id = %record.organization_id,
            slug = %record.slug,
            "App created"
        );
        Ok(CreatedApp {
            app: record,
            service_token,
        })
    }

    /// GetApp: any authenticated caller for a PUBLIC app. An INTERNAL app
    /// needs `can_read` on the owning organization, or the caller being
    /// the app.
    pub async fn get_app(&self, caller: &Caller, id: &str) -> Result<AppRecord> {
        let id = parse_id("id", id)?;
        let record = self.app_or_not_found(&id).await?;
        self.authorize_app_read(caller, &record).await?;
        Ok(record)
    }

    /// GetAppBySlug: as GetApp. An unknown slug is `not_found`.
    pub async fn get_app_by_slug(
        &self,
        caller: &Caller,
        organization_id: &str,
        slug: &str,
    ) -> Result<AppRecord> {
        let org_id = parse_id("organization_id", organization_id)?;
        let slug = validate::slug("slug", slug)?;
        let mut connection = self.db.pool().acquire().await?;
        let record = store::app_by_slug(&mut connection, &org_id, slug)
            .await?
            .ok_or_else(|| Error::not_found("app", slug))?;
        drop(connection);
        self.authorize_app_read(caller, &record).await?;
        Ok(record)
    }

    /// ListApps, ordered by `(created_at, id)`. With an organization it
    /// returns that organization's apps and needs `can_read`. Without one
    /// it returns the PUBLIC apps of every organization to any caller.
    pub async fn list_apps(
        &self,
        caller: &Caller,
        organization_id: Option<&str>,
        visibility: Option<Visibility>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<AppRecord>, String)> {
        let org_id = optional_id("organization_id", organization_id)?;
        let visibility_number = visibility.map_or(0, Visibility::number).to_string();
        let fingerprint = Fingerprint::new("agynio.api.apps.v1.ListApps")
            .with(&caller_key(caller))
            .with(org_id.as_deref().unwrap_or(""))
            .with(&visibility_number);
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        let scope = match &org_id {
            Some(org_id) => {
                self.authorize_org(caller, org_id, "can_read").await?;
                AppScope::Organization(org_id, visibility)
            }
            None if visibility == Some(Visibility::Internal) => {
                return Ok((Vec::new(), String::new()));
            }
            None => AppScope::Public,
        };
        let mut connection = self.db.pool().acquire().await?;
        store::list_apps(&mut connection, scope, &page).await
    }

    /// UpdateApp: `can_manage` on the owning organization. A visibility
    /// change leaves existing installations in place.
    pub async fn update_app(
        &self,
        caller: &Caller,
        id: &str,
        changes: &AppChanges,
    ) -> Result<AppRecord> {
        let id = parse_id("id", id)?;
        if changes.name.is_none()
            && changes.description.is_none()
            && changes.icon.is_none()
            && changes.visibility.is_none()
            && changes.endpoint.is_none()
        {
            return Err(no_fields());
        }
        let name = changes.name.as_deref().map(validate::name).transpose()?;
        if let Some(description) = &changes.description {
            validate::description(description)?;
        }
        if let Some(icon) = &changes.icon {
            validate::icon(icon)?;
        }
        if let Some(endpoint) = &changes.endpoint {
            validate::endpoint(endpoint)?;
        }
        let current = self.app_or_not_found(&id).await?;
        self.authorize_org(caller, &current.organization_id, "can_manage")
            .await?;

        let mut tx = self.db.begin_write().await?;
        let mut record = store::lock_app(&mut tx, self.db.backend(), &id)
            .await?
            .ok_or_else(|| Error::not_found("app", &id))?;
        if let Some(name) = name {
            record.name = name.to_string();
        }
        if let Some(description) = &changes.description {
            record.description = description.clone();
        }
        if let Some(icon) = &changes.icon {
            record.icon = icon.clone();
        }
        if let Some(visibility) = changes.visibility {
            record.visibility = visibility;
        }
        if let Some(endpoint) = &changes.endpoint {
            record.endpoint = endpoint.clone();
        }
        record.updated_at = now_micros().max(record.updated_at);
        store::update_app(&mut tx, &record).await?;
        tx.commit().await?;
        self.installations.forget_app(&id);
        tracing::info!(app_id = %id, "App updated");
        Ok(record)
    }

    /// DeleteApp: `can_manage` on the owning organization. Fails with
    /// `failed_precondition` (reason `REFERENCED`) while the app is
    /// installed anywhere. Otherwise revokes its certificates, unregisters
    /// its identity and deletes the row, in one transaction.
    pub async fn delete_app(&self, caller: &Caller, id: &str) -> Result<()> {
        let id = parse_id("id", id)?;
        let current = self.app_or_not_found(&id).await?;
        self.authorize_org(caller, &current.organization_id, "can_manage")
            .await?;

        let mut tx = self.db.begin_write().await?;
        if store::lock_app(&mut tx, self.db.backend(), &id)
            .await?
            .is_none()
        {
            return Err(Error::not_found("app", &id));
        }
        let installed = store::installation_ids_of_app(&mut tx, &id, MAX_REFERENCED_IDS).await?;
        if !installed.is_empty() {
            return Err(Error::failed_precondition(format!(
                "app has installations: {}",
                installed.join(", ")
            ))
            .with_reason("REFERENCED"));
        }
        self.pki
            .revoke_subject_in(&mut tx, CertificateKind::App, &id)
            .await?;
        store::delete_app(&mut tx, &id).await?;
        tx.commit().await?;
        self.installations.forget_app(&id);
        tracing::info!(app_id = %id, "App deleted");
        Ok(())
    }

    /// GetAppByIdentity: gateway only. An identity that is not an app is
    /// `not_found`.
    pub async fn get_app_by_identity(
        &self,
        caller: &Caller,
        identity_id: &str,
    ) -> Result<AppRecord> {
        require_component(caller, "GetAppByIdentity", &["gateway"])?;
        let identity_id = parse_id("identity_id", identity_id)?;
        self.app_or_not_found(&identity_id).await
    }

    /// Reads an app: PUBLIC apps are open to every authenticated caller,
    /// INTERNAL ones need `can_read` on the owning organization or the
    /// caller being the app.
    async fn authorize_app_read(&self, caller: &Caller, record: &AppRecord) -> Result<()> {
        if record.visibility == Visibility::Public || is_app(caller, &record.id) {
            return Ok(());
        }
        self.authorize_org(caller, &record.organization_id, "can_read")
            .await
            .map(|_| ())
    }

    pub(crate) async fn app_or_not_found(&self, id: &str) -> Result<AppRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::app_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("app", id))
    }
}
