//! Shared setup: a platform database with users, organizations and the
//! platform CA, the apps service over it, and helpers that read tuples and
//! certificates back.

#![allow(dead_code)]

use std::sync::Arc;

use agyn_apps::{Apps, AppsCleaner, CreatedApp, NewApp, NewInstallation, Visibility};
use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::id::new_id;
use agyn_core::{Caller, CredentialKind, Error, IdentityKind, Result};
use agyn_orgs::{Organizations, ResourceCleaner};
use agyn_pki::{MasterKey, Pki};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use agyn_users::Users;

pub struct World {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub pki: Pki,
    pub apps: Apps,
}

impl World {
    pub async fn new(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let pki = Pki::load_or_create(db.clone(), &MasterKey::generate())
            .await
            .unwrap();
        let cleaners: Vec<Arc<dyn ResourceCleaner>> =
            vec![Arc::new(AppsCleaner::new(db.clone(), pki.clone()))];
        let orgs = Organizations::new(db.clone(), cleaners);
        let apps = Apps::new(db.clone(), orgs.clone(), pki.clone());
        Self {
            users: Users::new(db.clone()),
            db,
            orgs,
            pki,
            apps,
        }
    }

    pub async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("apps|{name}"),
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

    /// Makes `who` an ACTIVE member (not an owner) of `org`.
    pub async fn join(&self, org: &str, owner: &Caller, who: &Caller) {
        let invitation = self
            .orgs
            .create_membership(
                owner,
                &agyn_orgs::ops::MembershipInput {
                    organization_id: org,
                    identity_id: id(who),
                    role: Some(agyn_orgs::Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap();
        self.orgs
            .accept_membership(who, &invitation.id)
            .await
            .unwrap();
    }

    /// Creates an app owned by `org` and returns it with its service token.
    pub async fn app(
        &self,
        owner: &Caller,
        org: &str,
        slug: &str,
        visibility: Visibility,
        permissions: &[&str],
    ) -> CreatedApp {
        self.apps
            .create_app(
                owner,
                &NewApp {
                    organization_id: org.to_string(),
                    slug: slug.to_string(),
                    name: format!("App {slug}"),
                    visibility: Some(visibility),
                    permissions: permissions.iter().map(|name| name.to_string()).collect(),
                    ..NewApp::default()
                },
            )
            .await
            .unwrap()
    }

    /// Installs `app_id` into `org` with the app's own slug.
    pub async fn install(
        &self,
        owner: &Caller,
        app_id: &str,
        org: &str,
    ) -> agyn_apps::InstallationRecord {
        self.apps
            .install_app(
                owner,
                &NewInstallation {
                    app_id: app_id.to_string(),
                    organization_id: org.to_string(),
                    ..NewInstallation::default()
                },
            )
            .await
            .unwrap()
    }

    /// Inserts an agent row in `org` with `nickname`, with the defaults of
    /// the agents service's schema, and returns its id.
    pub async fn agent(&self, org: &str, nickname: &str) -> String {
        let id = new_id();
        let mut tx = self.db.begin_write().await.unwrap();
        agyn_users::identity::register(&mut tx, &id, IdentityKind::Agent, 1)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO agents (id, organization_id, name, nickname, availability, \
             idle_timeout_ms, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'internal', 300000, 1, 1)",
        )
        .bind(&id)
        .bind(org)
        .bind(format!("agent {nickname}"))
        .bind(nickname)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        Authorizer::new(self.db.clone())
            .write(
                &[agyn_authz::Tuple::new(
                    ObjectRef::new("organization", org),
                    "org",
                    ObjectRef::new("agent", &id),
                )],
                &[],
            )
            .await
            .unwrap();
        id
    }

    /// Returns whether identity `who` has `relation` on organization `org`.
    pub async fn has(&self, who: &str, relation: &str, org: &str) -> bool {
        Authorizer::new(self.db.clone())
            .check(
                &ObjectRef::identity(who),
                relation,
                &ObjectRef::new("organization", org),
            )
            .await
            .unwrap()
    }

    /// Returns the direct tuples whose user is identity `who`, as
    /// `relation object_type:object_id`, sorted.
    pub async fn tuples_of(&self, who: &str) -> Vec<String> {
        let rows = sqlx::query(
            "SELECT relation, object_type, object_id FROM tuples \
             WHERE subject_type = 'identity' AND subject_id = $1",
        )
        .bind(who)
        .fetch_all(self.db.pool())
        .await
        .unwrap();
        let mut tuples: Vec<String> = rows
            .iter()
            .map(|row| {
                let relation: String = row.try_get("relation").unwrap();
                let object_type: String = row.try_get("object_type").unwrap();
                let object_id: String = row.try_get("object_id").unwrap();
                format!("{relation} {object_type}:{object_id}")
            })
            .collect();
        tuples.sort();
        tuples
    }

    /// Returns the serials and `revoked_at` of the app certificates of
    /// `app_id`, oldest first.
    pub async fn certificates(&self, app_id: &str) -> Vec<(String, Option<i64>)> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at FROM certificates \
             WHERE kind = 'app' AND subject_id = $1 ORDER BY created_at, serial",
        )
        .bind(app_id)
        .fetch_all(self.db.pool())
        .await
        .unwrap();
        rows.iter()
            .map(|row| {
                (
                    row.try_get("serial").unwrap(),
                    row.try_get("revoked_at").unwrap(),
                )
            })
            .collect()
    }

    /// Counts the rows of `table` where `column` equals `value`.
    pub async fn count(&self, table: &str, column: &str, value: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1");
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        row.try_get("n").unwrap()
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

pub fn app_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::App,
        workload_id: None,
        credential: CredentialKind::Certificate,
    }
}

pub fn agent_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::Agent,
        workload_id: None,
        credential: CredentialKind::Certificate,
    }
}

pub fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

/// Asserts the code and message of an error.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T>,
    code: agyn_core::error::Code,
    message: &str,
) {
    let error: Error = result.expect_err("the call should fail");
    assert_eq!(error.code(), code, "{error:?}");
    assert_eq!(error.message(), message, "{error:?}");
}
