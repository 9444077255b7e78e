//! Installations of apps into organizations. Each operation states its
//! authorization rule first.

use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::id::{new_id, parse_id};
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, Result};
use agyn_store::request_keys;
use agyn_store::sqlx::AnyConnection;
use serde_json::Map;

use crate::cache::Routed;
use crate::model::{
    AppRecord, InstallationChanges, InstallationRecord, NewInstallation, Visibility,
};
use crate::store;
use crate::{
    Apps, caller_key, is_app, no_fields, optional_id, require_active, require_component, validate,
};

/// Idempotency scope of InstallApp request keys.
const INSTALL_SCOPE: &str = "apps.InstallApp";

/// Relations an app may hold on the agents of an organization it is
/// installed in, removed when it is uninstalled.
const AGENT_ROLES: [&str; 3] = ["owner", "maintainer", "participant"];

fn already_installed() -> Error {
    Error::already_exists("app is already installed in this organization")
}

fn slug_taken(slug: &str, org_id: &str) -> Error {
    Error::already_exists(format!(
        "installation slug {slug:?} is already used in organization {org_id}; choose another slug"
    ))
}

fn nickname_taken(slug: &str, org_id: &str) -> Error {
    Error::already_exists(format!(
        "nickname \"@{slug}\" is taken in organization {org_id}; choose another installation slug"
    ))
}

/// Returns the tuples an installation of `app` into `org_id` consists of:
/// membership plus one relation per declared permission.
fn installation_tuples(app: &AppRecord, org_id: &str) -> Vec<Tuple> {
    let user = ObjectRef::identity(&app.id);
    let org = agyn_orgs::org_object(org_id);
    let mut tuples = vec![Tuple::new(user.clone(), "member", org.clone())];
    for permission in &app.permissions {
        tuples.push(Tuple::new(user.clone(), permission.relation(), org.clone()));
    }
    tuples
}

/// Deletes the app's access to organization `org_id` inside the caller's
/// transaction: the installation tuples and the app's roles on the
/// organization's agents.
pub(crate) async fn revoke_access_in(
    authorizer: &Authorizer,
    connection: &mut AnyConnection,
    app: &AppRecord,
    org_id: &str,
) -> Result<()> {
    authorizer
        .write_in(connection, &[], &installation_tuples(app, org_id))
        .await?;
    authorizer
        .delete_user_relations_under_in(
            connection,
            &ObjectRef::identity(&app.id),
            "agent",
            &AGENT_ROLES,
            "org",
            &agyn_orgs::org_object(org_id),
        )
        .await?;
    Ok(())
}

/// Fails with `already_exists` when `slug` is used in `org_id` by another
/// installation than `except_id` or is an agent's nickname there.
async fn require_free_slug(
    connection: &mut AnyConnection,
    org_id: &str,
    slug: &str,
    except_id: Option<&str>,
) -> Result<()> {
    if let Some(holder) = store::installation_by_slug(connection, org_id, slug).await?
        && Some(holder.id.as_str()) != except_id
    {
        return Err(slug_taken(slug, org_id));
    }
    // NOTE: agents store their nicknames in their own rows, so only agent
    // nicknames are checked here, and an agent created later with this
    // nickname is not rejected by the agents service.
    if store::agent_nickname_taken(connection, org_id, slug).await? {
        return Err(nickname_taken(slug, org_id));
    }
    Ok(())
}

impl Apps {
    /// InstallApp: `can_manage` on the installing organization, which must
    /// be active. An INTERNAL app installs only into its own organization.
    /// The row, the membership and permission tuples and the request key
    /// are written in one transaction.
    pub async fn install_app(
        &self,
        caller: &Caller,
        input: &NewInstallation,
    ) -> Result<InstallationRecord> {
        let app_id = parse_id("app_id", &input.app_id)?;
        let org_id = parse_id("organization_id", &input.organization_id)?;
        let requested_slug = match input.slug.as_deref() {
            None | Some("") => None,
            Some(slug) => Some(validate::slug("slug", slug)?),
        };
        let empty = Map::new();
        let configuration = input.configuration.as_ref().unwrap_or(&empty);
        let configuration_json = validate::configuration(configuration)?;
        request_keys::validate(&input.request_id)?;

        let app = self.app_or_not_found(&app_id).await?;
        let state = self.authorize_org(caller, &org_id, "can_manage").await?;
        if app.visibility == Visibility::Internal && app.organization_id != org_id {
            return Err(Error::permission_denied(
                "internal apps can only be installed in their own organization",
            ));
        }
        require_active(&org_id, state)?;
        let slug = requested_slug.unwrap_or(&app.slug);

        let caller_id = caller_key(caller);
        let fingerprint = request_keys::fingerprint([
            app_id.as_str(),
            org_id.as_str(),
            input.slug.as_deref().unwrap_or(""),
            configuration_json.as_str(),
        ]);
        let mut tx = self.db.begin_write().await?;
        if let Some(id) = request_keys::replayed(
            &mut tx,
            INSTALL_SCOPE,
            &caller_id,
            &input.request_id,
            &fingerprint,
        )
        .await?
        {
            return store::installation_by_id(&mut tx, &id)
                .await?
                .ok_or_else(|| Error::not_found("installation", &id));
        }
        if store::installation_of_app(&mut tx, &app_id, &org_id)
            .await?
            .is_some()
        {
            return Err(already_installed());
        }
        require_free_slug(&mut tx, &org_id, slug, None).await?;

        let now = now_micros();
        let record = InstallationRecord {
            id: new_id(),
            app_id: app.id.clone(),
            app_slug: app.slug.clone(),
            organization_id: org_id.clone(),
            slug: slug.to_string(),
            configuration: configuration.clone(),
            created_at: now,
            updated_at: now,
        };
        match store::insert_installation(&mut tx, &record, &configuration_json).await {
            Err(error) if error.is_unique_violation() => return Err(already_installed()),
            other => other?,
        }
        self.authorizer
            .write_in(&mut tx, &installation_tuples(&app, &org_id), &[])
            .await?;
        request_keys::record(
            &mut tx,
            INSTALL_SCOPE,
            &caller_id,
            &input.request_id,
            &fingerprint,
            &record.id,
        )
        .await?;
        match tx.commit().await {
            Ok(()) => {}
            Err(error) if agyn_store::is_unique_violation(&error) => {
                return Err(already_installed());
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(
            installation_id = %record.id,
            app_id = %record.app_id,
            organization_id = %record.organization_id,
            slug = %record.slug,
            "App installed"
        );
        Ok(record)
    }

    /// GetInstallation: `can_read` on the installing organization, or the
    /// caller being the installed app.
    pub async fn get_installation(&self, caller: &Caller, id: &str) -> Result<InstallationRecord> {
        let id = parse_id("id", id)?;
        let record = self.installation_or_not_found(&id).await?;
        if !is_app(caller, &record.app_id) {
            self.authorize_org(caller, &record.organization_id, "can_read")
                .await?;
        }
        Ok(record)
    }

    /// ListInstallations, ordered by `(created_at, id)`. The app itself may
    /// list its installations. Otherwise an organization filter needs
    /// `can_read` on it, and an app filter alone needs `can_manage` on the
    /// app's owning organization.
    pub async fn list_installations(
        &self,
        caller: &Caller,
        organization_id: Option<&str>,
        app_id: Option<&str>,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<InstallationRecord>, String)> {
        let org_id = optional_id("organization_id", organization_id)?;
        let app_id = optional_id("app_id", app_id)?;
        if org_id.is_none() && app_id.is_none() {
            return Err(Error::invalid_argument(
                "organization_id or app_id is required",
            ));
        }
        let fingerprint = Fingerprint::new("agynio.api.apps.v1.ListInstallations")
            .with(&caller_key(caller))
            .with(org_id.as_deref().unwrap_or(""))
            .with(app_id.as_deref().unwrap_or(""));
        let page = Page::parse(page_size, page_token, SortOrder::Ascending, fingerprint)?;
        match (&org_id, &app_id) {
            (_, Some(app_id)) if is_app(caller, app_id) => {}
            (Some(org_id), _) => {
                self.authorize_org(caller, org_id, "can_read").await?;
            }
            (None, Some(app_id)) => {
                let app = self.app_or_not_found(app_id).await?;
                self.authorize_org(caller, &app.organization_id, "can_manage")
                    .await?;
            }
            (None, None) => unreachable!("one filter is set"),
        }
        let mut connection = self.db.pool().acquire().await?;
        store::list_installations(&mut connection, org_id.as_deref(), app_id.as_deref(), &page)
            .await
    }

    /// UpdateInstallation: `can_manage` on the installing organization. A
    /// new slug is checked and stored in one transaction, and this
    /// replica's proxy routes by it at once.
    pub async fn update_installation(
        &self,
        caller: &Caller,
        id: &str,
        changes: &InstallationChanges,
    ) -> Result<InstallationRecord> {
        let id = parse_id("id", id)?;
        if changes.slug.is_none() && changes.configuration.is_none() {
            return Err(no_fields());
        }
        let slug = changes
            .slug
            .as_deref()
            .map(|slug| validate::slug("slug", slug))
            .transpose()?;
        let configuration_json = changes
            .configuration
            .as_ref()
            .map(validate::configuration)
            .transpose()?;
        let current = self.installation_or_not_found(&id).await?;
        self.authorize_org(caller, &current.organization_id, "can_manage")
            .await?;

        let mut tx = self.db.begin_write().await?;
        let mut record = store::installation_by_id(&mut tx, &id)
            .await?
            .ok_or_else(|| Error::not_found("installation", &id))?;
        if let Some(slug) = slug
            && slug != record.slug
        {
            require_free_slug(&mut tx, &record.organization_id, slug, Some(&id)).await?;
            record.slug = slug.to_string();
        }
        if let Some(configuration) = &changes.configuration {
            record.configuration = configuration.clone();
        }
        let configuration_json = match configuration_json {
            Some(json) => json,
            None => validate::configuration(&record.configuration)?,
        };
        record.updated_at = now_micros().max(record.updated_at);
        let slug_in_use = || slug_taken(&record.slug, &record.organization_id);
        match store::update_installation(&mut tx, &record, &configuration_json).await {
            Err(error) if error.is_unique_violation() => return Err(slug_in_use()),
            other => other?,
        }
        match tx.commit().await {
            Ok(()) => {}
            Err(error) if agyn_store::is_unique_violation(&error) => return Err(slug_in_use()),
            Err(error) => return Err(error.into()),
        }
        self.installations.forget_installation(&id);
        tracing::info!(installation_id = %id, slug = %record.slug, "Installation updated");
        Ok(record)
    }

    /// UninstallApp: `can_manage` on the installing organization. One
    /// transaction deletes the installation tuples, the app's roles on the
    /// organization's agents and the row.
    pub async fn uninstall_app(&self, caller: &Caller, id: &str) -> Result<()> {
        let id = parse_id("id", id)?;
        let current = self.installation_or_not_found(&id).await?;
        self.authorize_org(caller, &current.organization_id, "can_manage")
            .await?;
        let app = self.app_or_not_found(&current.app_id).await?;
        let mut tx = self.db.begin_write().await?;
        if !store::delete_installation(&mut tx, &id).await? {
            return Err(Error::not_found("installation", &id));
        }
        revoke_access_in(&self.authorizer, &mut tx, &app, &current.organization_id).await?;
        tx.commit().await?;
        self.installations.forget_installation(&id);
        tracing::info!(
            installation_id = %id,
            app_id = %app.id,
            organization_id = %current.organization_id,
            "App uninstalled"
        );
        Ok(())
    }

    /// GetInstallationBySlug: gateway only. Returns the installation with
    /// its app.
    pub async fn get_installation_by_slug(
        &self,
        caller: &Caller,
        organization_id: &str,
        slug: &str,
    ) -> Result<Routed> {
        require_component(caller, "GetInstallationBySlug", &["gateway"])?;
        let org_id = parse_id("organization_id", organization_id)?;
        let slug = validate::slug("slug", slug)?;
        self.installation_by_slug(&org_id, slug)
            .await?
            .ok_or_else(|| Error::not_found("installation", slug))
    }

    /// Returns the installation `slug` in `org_id` with its app, from this
    /// replica's cache when an entry is at most 10 s old.
    pub(crate) async fn route(&self, org_id: &str, slug: &str) -> Result<Option<Routed>> {
        if let Some(routed) = self.installations.get(org_id, slug) {
            return Ok(Some(routed));
        }
        let routed = self.installation_by_slug(org_id, slug).await?;
        if let Some(routed) = &routed {
            self.installations.put(routed);
        }
        Ok(routed)
    }

    async fn installation_by_slug(&self, org_id: &str, slug: &str) -> Result<Option<Routed>> {
        let mut connection = self.db.pool().acquire().await?;
        let Some(installation) = store::installation_by_slug(&mut connection, org_id, slug).await?
        else {
            return Ok(None);
        };
        let app = store::app_by_id(&mut connection, &installation.app_id)
            .await?
            .ok_or_else(|| Error::not_found("app", &installation.app_id))?;
        Ok(Some((installation, app)))
    }

    async fn installation_or_not_found(&self, id: &str) -> Result<InstallationRecord> {
        let mut connection = self.db.pool().acquire().await?;
        store::installation_by_id(&mut connection, id)
            .await?
            .ok_or_else(|| Error::not_found("installation", id))
    }
}
