//! The rules of apps and installations, called on [`Apps`] directly, on
//! SQLite and PostgreSQL.

mod support;

use agyn_apps::{AppChanges, InstallationChanges, NewApp, NewInstallation, Permission, Visibility};
use agyn_core::error::Code;
use agyn_core::{Caller, Secret};
use agyn_store::{Backend, on_both_backends};
use serde_json::json;
use support::*;

fn new_app(org: &str, slug: &str) -> NewApp {
    NewApp {
        organization_id: org.to_string(),
        slug: slug.to_string(),
        name: "Reporter".to_string(),
        ..NewApp::default()
    }
}

async fn create_app_validates_and_registers(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;

    let cases: Vec<(NewApp, &str)> = vec![
        (
            new_app(&org, "Bad_Slug"),
            "slug: must be 1 to 32 characters of a-z, 0-9 and '-', starting and ending with a \
             letter or digit",
        ),
        (
            NewApp {
                name: " ".to_string(),
                ..new_app(&org, "a")
            },
            "name: must not be empty",
        ),
        (
            NewApp {
                icon: "http://cdn.example.com/i.png".to_string(),
                ..new_app(&org, "a")
            },
            "icon: must be empty or an https URL",
        ),
        (
            NewApp {
                endpoint: "ftp://app".to_string(),
                ..new_app(&org, "a")
            },
            "endpoint: must be empty or an http(s) base URL without credentials, query or \
             fragment",
        ),
        (
            NewApp {
                permissions: vec!["thread:create".to_string(), "thread:delete".to_string()],
                ..new_app(&org, "a")
            },
            "permissions[1]: unknown permission \"thread:delete\"; use thread:create, \
             thread:write or participant:add",
        ),
        (
            NewApp {
                description: "d".repeat(1025),
                ..new_app(&org, "a")
            },
            "description: must be at most 1024 characters",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.apps.create_app(&owner, &input).await,
            Code::InvalidArgument,
            message,
        );
    }

    let member = w.user("member").await;
    w.join(&org, &owner, &member).await;
    let denied = w.apps.create_app(&member, &new_app(&org, "a")).await;
    assert_error(
        denied,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );

    let created = w
        .apps
        .create_app(
            &owner,
            &NewApp {
                permissions: vec!["thread:write".to_string(), "thread:create".to_string()],
                endpoint: "http://127.0.0.1:9".to_string(),
                ..new_app(&org, "reporter")
            },
        )
        .await
        .unwrap();
    let app = &created.app;
    assert_eq!(app.visibility, Visibility::Internal);
    assert_eq!(
        app.permissions,
        vec![Permission::ThreadCreate, Permission::ThreadWrite]
    );
    let token = created.service_token.expose();
    assert!(token.starts_with("agynsvc_"), "{token}");
    assert_eq!(token.len(), 52);
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &app.id).await.unwrap(),
        Some(agyn_core::IdentityKind::App)
    );
    assert_eq!(
        w.count("apps", "token_hash", &agyn_users::tokens::hash(token))
            .await,
        1
    );
    assert_eq!(w.count("apps", "token_hash", token).await, 0);

    let again = w.apps.create_app(&owner, &new_app(&org, "reporter")).await;
    assert_error(
        again,
        Code::AlreadyExists,
        &format!(
            "app slug \"reporter\" is already used in organization {org}; choose another slug"
        ),
    );
}

async fn app_reads_follow_visibility(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let outsider = w.user("outsider").await;
    let member = w.user("member").await;
    w.join(&org, &owner, &member).await;
    let public = w
        .app(&owner, &org, "public", Visibility::Public, &[])
        .await
        .app;
    let internal = w
        .app(&owner, &org, "internal", Visibility::Internal, &[])
        .await
        .app;

    assert_eq!(w.apps.get_app(&outsider, &public.id).await.unwrap(), public);
    assert_error(
        w.apps.get_app(&outsider, &internal.id).await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );
    assert_eq!(
        w.apps.get_app(&member, &internal.id).await.unwrap(),
        internal
    );
    let itself = app_caller(&internal.id);
    assert_eq!(
        w.apps.get_app(&itself, &internal.id).await.unwrap(),
        internal
    );
    assert_eq!(
        w.apps
            .get_app_by_slug(&member, &org, "internal")
            .await
            .unwrap(),
        internal
    );
    assert_error(
        w.apps.get_app_by_slug(&outsider, &org, "internal").await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );
    assert_error(
        w.apps.get_app_by_slug(&owner, &org, "missing").await,
        Code::NotFound,
        "app missing not found",
    );
    let unknown = agyn_core::id::new_id();
    assert_error(
        w.apps.get_app(&owner, &unknown).await,
        Code::NotFound,
        &format!("app {unknown} not found"),
    );
    assert_error(
        w.apps.get_app(&owner, "nope").await,
        Code::InvalidArgument,
        "id: must be a UUID",
    );
}

async fn list_apps_scopes_and_pages(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_owner = w.user("other").await;
    let other = w.org(&other_owner, "Other").await;
    let a = w.app(&owner, &org, "a", Visibility::Public, &[]).await.app;
    let b = w
        .app(&owner, &org, "b", Visibility::Internal, &[])
        .await
        .app;
    let c = w
        .app(&other_owner, &other, "c", Visibility::Public, &[])
        .await
        .app;

    let (apps, next) = w
        .apps
        .list_apps(&owner, Some(&org), None, 1, "")
        .await
        .unwrap();
    assert_eq!(apps, vec![a.clone()]);
    assert!(!next.is_empty());
    let (apps, next) = w
        .apps
        .list_apps(&owner, Some(&org), None, 1, &next)
        .await
        .unwrap();
    assert_eq!(apps, vec![b.clone()]);
    assert_eq!(next, "");

    let (internal, _) = w
        .apps
        .list_apps(&owner, Some(&org), Some(Visibility::Internal), 0, "")
        .await
        .unwrap();
    assert_eq!(internal, vec![b]);
    assert_error(
        w.apps
            .list_apps(&other_owner, Some(&org), None, 0, "")
            .await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );

    let (public, _) = w
        .apps
        .list_apps(&other_owner, None, None, 0, "")
        .await
        .unwrap();
    assert_eq!(public, vec![a, c]);
    let (none, _) = w
        .apps
        .list_apps(&other_owner, None, Some(Visibility::Internal), 0, "")
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn update_app_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let member = w.user("member").await;
    w.join(&org, &owner, &member).await;
    let app = w
        .app(&owner, &org, "app", Visibility::Internal, &[])
        .await
        .app;

    assert_error(
        w.apps
            .update_app(&owner, &app.id, &AppChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );
    let rename = AppChanges {
        name: Some("Renamed".to_string()),
        ..AppChanges::default()
    };
    assert_error(
        w.apps.update_app(&member, &app.id, &rename).await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    let changes = AppChanges {
        name: Some("Renamed".to_string()),
        description: Some(String::new()),
        icon: Some("https://cdn.example.com/icon.png".to_string()),
        visibility: Some(Visibility::Public),
        endpoint: Some("https://app.example.com/api".to_string()),
    };
    let updated = w.apps.update_app(&owner, &app.id, &changes).await.unwrap();
    assert_eq!(updated.name, "Renamed");
    assert_eq!(updated.icon, "https://cdn.example.com/icon.png");
    assert_eq!(updated.visibility, Visibility::Public);
    assert_eq!(updated.endpoint, "https://app.example.com/api");
    assert_eq!(updated.slug, "app");
    assert!(updated.updated_at >= app.updated_at);
    assert_eq!(w.apps.get_app(&owner, &app.id).await.unwrap(), updated);
}

async fn install_grants_and_uninstall_revokes(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let app = w
        .app(
            &owner,
            &org,
            "bot",
            Visibility::Internal,
            &["thread:create", "participant:add"],
        )
        .await
        .app;
    assert!(!w.has(&app.id, "can_read", &org).await);

    let installation = w
        .apps
        .install_app(
            &owner,
            &NewInstallation {
                app_id: app.id.clone(),
                organization_id: org.clone(),
                configuration: Some(json!({"channel": "ops"}).as_object().unwrap().clone()),
                ..NewInstallation::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(installation.slug, "bot");
    assert_eq!(installation.app_slug, "bot");
    assert_eq!(installation.configuration["channel"], "ops");
    assert_eq!(
        w.tuples_of(&app.id).await,
        vec![
            format!("member organization:{org}"),
            format!("participant_add organization:{org}"),
            format!("thread_create organization:{org}"),
        ]
    );
    assert!(w.has(&app.id, "can_read", &org).await);
    assert!(w.has(&app.id, "can_create_thread", &org).await);
    assert!(!w.has(&app.id, "thread_write", &org).await);

    // A role the app received on an agent of the organization goes with
    // the installation.
    let agent = w.agent(&org, "helper").await;
    agyn_authz::Authorizer::new(w.db.clone())
        .write(
            &[agyn_authz::Tuple::new(
                agyn_authz::ObjectRef::identity(&app.id),
                "participant",
                agyn_authz::ObjectRef::new("agent", &agent),
            )],
            &[],
        )
        .await
        .unwrap();

    let member = w.user("member").await;
    w.join(&org, &owner, &member).await;
    assert_error(
        w.apps.uninstall_app(&member, &installation.id).await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    w.apps
        .uninstall_app(&owner, &installation.id)
        .await
        .unwrap();
    assert!(w.tuples_of(&app.id).await.is_empty());
    assert!(!w.has(&app.id, "can_read", &org).await);
    assert_error(
        w.apps.get_installation(&owner, &installation.id).await,
        Code::NotFound,
        &format!("installation {} not found", installation.id),
    );
    assert_error(
        w.apps.uninstall_app(&owner, &installation.id).await,
        Code::NotFound,
        &format!("installation {} not found", installation.id),
    );
}

async fn install_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_owner = w.user("other").await;
    let other = w.org(&other_owner, "Other").await;
    let internal = w
        .app(&owner, &org, "internal", Visibility::Internal, &[])
        .await
        .app;
    let public = w
        .app(&owner, &org, "public", Visibility::Public, &[])
        .await
        .app;
    let install = |app_id: &str, org_id: &str, slug: Option<&str>| NewInstallation {
        app_id: app_id.to_string(),
        organization_id: org_id.to_string(),
        slug: slug.map(str::to_string),
        ..NewInstallation::default()
    };

    assert_error(
        w.apps
            .install_app(&other_owner, &install(&internal.id, &other, None))
            .await,
        Code::PermissionDenied,
        "internal apps can only be installed in their own organization",
    );
    assert_error(
        w.apps
            .install_app(&owner, &install(&public.id, &other, None))
            .await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    let elsewhere = w
        .apps
        .install_app(&other_owner, &install(&public.id, &other, None))
        .await
        .unwrap();
    assert_eq!(elsewhere.organization_id, other);

    w.install(&owner, &public.id, &org).await;
    assert_error(
        w.apps
            .install_app(&owner, &install(&public.id, &org, Some("again")))
            .await,
        Code::AlreadyExists,
        "app is already installed in this organization",
    );
    assert_error(
        w.apps
            .install_app(&owner, &install(&internal.id, &org, Some("public")))
            .await,
        Code::AlreadyExists,
        &format!(
            "installation slug \"public\" is already used in organization {org}; choose \
             another slug"
        ),
    );
    w.agent(&org, "helper").await;
    assert_error(
        w.apps
            .install_app(&owner, &install(&internal.id, &org, Some("helper")))
            .await,
        Code::AlreadyExists,
        &format!(
            "nickname \"@helper\" is taken in organization {org}; choose another installation \
             slug"
        ),
    );
    assert_error(
        w.apps
            .install_app(&owner, &install(&internal.id, &org, Some("Bad")))
            .await,
        Code::InvalidArgument,
        "slug: must be 1 to 32 characters of a-z, 0-9 and '-', starting and ending with a \
         letter or digit",
    );
    let huge = json!({"blob": "x".repeat(70_000)})
        .as_object()
        .unwrap()
        .clone();
    let too_big = w
        .apps
        .install_app(
            &owner,
            &NewInstallation {
                configuration: Some(huge),
                ..install(&internal.id, &org, None)
            },
        )
        .await;
    assert_eq!(too_big.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        w.count("app_installations", "app_id", &internal.id).await,
        0
    );
    assert!(w.tuples_of(&internal.id).await.is_empty());

    // A request key returns the first installation, and the same key with
    // another request is rejected.
    let keyed = NewInstallation {
        request_id: "install-1".to_string(),
        ..install(&internal.id, &org, Some("internal-bot"))
    };
    let first = w.apps.install_app(&owner, &keyed).await.unwrap();
    let replay = w.apps.install_app(&owner, &keyed).await.unwrap();
    assert_eq!(replay, first);
    let reused = w
        .apps
        .install_app(
            &owner,
            &NewInstallation {
                slug: Some("other-bot".to_string()),
                ..keyed.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reused.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
}

async fn install_needs_active_org(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let app = w
        .app(&owner, &org, "bot", Visibility::Internal, &[])
        .await
        .app;
    agyn_store::sqlx::query("UPDATE organizations SET state = 'deleting' WHERE id = $1")
        .bind(&org)
        .execute(w.db.pool())
        .await
        .unwrap();
    let state = w.orgs.organization_state(&org).await.unwrap();
    assert_eq!(state, agyn_orgs::OrgState::Deleting);
    let rejected = w
        .apps
        .install_app(
            &owner,
            &NewInstallation {
                app_id: app.id.clone(),
                organization_id: org.clone(),
                ..NewInstallation::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), Code::FailedPrecondition);
    assert_eq!(rejected.reason(), Some("ORGANIZATION_DELETING"));
}

async fn delete_app_needs_no_installations(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let created = w.app(&owner, &org, "bot", Visibility::Public, &[]).await;
    let app = created.app;
    let installation = w.install(&owner, &app.id, &org).await;
    w.apps
        .enroll_app("10.0.0.1", &created.service_token, None)
        .await
        .unwrap();

    let rejected = w.apps.delete_app(&owner, &app.id).await.unwrap_err();
    assert_eq!(rejected.code(), Code::FailedPrecondition);
    assert_eq!(
        rejected.message(),
        format!("app has installations: {}", installation.id)
    );
    assert_eq!(rejected.reason(), Some("REFERENCED"));

    w.apps
        .uninstall_app(&owner, &installation.id)
        .await
        .unwrap();
    w.apps.delete_app(&owner, &app.id).await.unwrap();
    assert_error(
        w.apps.get_app(&owner, &app.id).await,
        Code::NotFound,
        &format!("app {} not found", app.id),
    );
    assert_eq!(
        agyn_users::identity::kind_of(&w.db, &app.id).await.unwrap(),
        None
    );
    let certificates = w.certificates(&app.id).await;
    assert_eq!(certificates.len(), 1);
    assert!(certificates[0].1.is_some(), "{certificates:?}");
}

async fn enrollment_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let created = w.app(&owner, &org, "bot", Visibility::Internal, &[]).await;
    let app_id = created.app.id.clone();

    for token in [
        "agynsvc_".to_string() + &"a".repeat(44),
        "not a token".to_string(),
        String::new(),
    ] {
        assert_error(
            w.apps
                .enroll_app("10.0.0.1", &Secret::new(token), None)
                .await,
            Code::Unauthenticated,
            "invalid service token",
        );
    }

    let first = w
        .apps
        .enroll_app("10.0.0.2", &created.service_token, None)
        .await
        .unwrap();
    assert_eq!(first.identity_id, app_id);
    let identity: serde_json::Value = serde_json::from_slice(first.identity_json.expose()).unwrap();
    assert_eq!(identity["identity_id"], app_id.as_str());
    assert!(
        identity["certificate_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        identity["private_key_pem"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert!(
        identity["ca_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(identity["expires_at"].is_string());
    let certificates = w.certificates(&app_id).await;
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].1, None);

    w.apps
        .enroll_app("10.0.0.2", &created.service_token, None)
        .await
        .unwrap();
    let certificates = w.certificates(&app_id).await;
    assert_eq!(certificates.len(), 2);
    let revoked: Vec<bool> = certificates.iter().map(|(_, at)| at.is_some()).collect();
    assert_eq!(
        revoked.iter().filter(|revoked| **revoked).count(),
        1,
        "{certificates:?}"
    );

    // The first ten calls from one address pass the limiter; bad tokens
    // count too.
    for _ in 0..10 {
        let _ = w
            .apps
            .enroll_app("10.0.0.3", &Secret::new(String::new()), None)
            .await;
    }
    let limited = w
        .apps
        .enroll_app("10.0.0.3", &created.service_token, None)
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
}

async fn installation_reads(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_owner = w.user("other").await;
    let other = w.org(&other_owner, "Other").await;
    let app = w
        .app(&owner, &org, "bot", Visibility::Public, &[])
        .await
        .app;
    let home = w.install(&owner, &app.id, &org).await;
    let away = w.install(&other_owner, &app.id, &other).await;
    let itself = app_caller(&app.id);

    assert_eq!(
        w.apps.get_installation(&itself, &away.id).await.unwrap(),
        away
    );
    assert_eq!(
        w.apps
            .get_installation(&other_owner, &away.id)
            .await
            .unwrap(),
        away
    );
    assert_error(
        w.apps.get_installation(&other_owner, &home.id).await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );

    let (mine, _) = w
        .apps
        .list_installations(&itself, None, Some(&app.id), 0, "")
        .await
        .unwrap();
    assert_eq!(mine, vec![home.clone(), away.clone()]);
    let (managed, _) = w
        .apps
        .list_installations(&owner, None, Some(&app.id), 0, "")
        .await
        .unwrap();
    assert_eq!(managed.len(), 2);
    assert_error(
        w.apps
            .list_installations(&other_owner, None, Some(&app.id), 0, "")
            .await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    let (in_other, _) = w
        .apps
        .list_installations(&other_owner, Some(&other), None, 0, "")
        .await
        .unwrap();
    assert_eq!(in_other, vec![away.clone()]);
    let (both, _) = w
        .apps
        .list_installations(&other_owner, Some(&other), Some(&app.id), 0, "")
        .await
        .unwrap();
    assert_eq!(both, vec![away]);
    assert_error(
        w.apps
            .list_installations(&owner, Some(""), None, 0, "")
            .await,
        Code::InvalidArgument,
        "organization_id or app_id is required",
    );
}

async fn update_installation_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let app = w
        .app(&owner, &org, "bot", Visibility::Internal, &[])
        .await
        .app;
    let second = w
        .app(&owner, &org, "second", Visibility::Internal, &[])
        .await
        .app;
    let installation = w.install(&owner, &app.id, &org).await;
    w.install(&owner, &second.id, &org).await;
    w.agent(&org, "helper").await;

    assert_error(
        w.apps
            .update_installation(&owner, &installation.id, &InstallationChanges::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );
    let rename = |slug: &str| InstallationChanges {
        slug: Some(slug.to_string()),
        configuration: None,
    };
    // An empty slug, another installation's slug and an agent's nickname.
    let rejected_slugs = [
        ("", Code::InvalidArgument),
        ("second", Code::AlreadyExists),
        ("helper", Code::AlreadyExists),
    ];
    for (slug, code) in rejected_slugs {
        let error = w
            .apps
            .update_installation(&owner, &installation.id, &rename(slug))
            .await
            .unwrap_err();
        assert_eq!(error.code(), code, "{slug:?}: {error:?}");
    }
    let member = w.user("member").await;
    w.join(&org, &owner, &member).await;
    assert_error(
        w.apps
            .update_installation(&member, &installation.id, &rename("renamed"))
            .await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );

    let renamed = w
        .apps
        .update_installation(&owner, &installation.id, &rename("renamed"))
        .await
        .unwrap();
    assert_eq!(renamed.slug, "renamed");
    assert_eq!(renamed.configuration, serde_json::Map::new());
    let configured = w
        .apps
        .update_installation(
            &owner,
            &installation.id,
            &InstallationChanges {
                slug: None,
                configuration: Some(json!({"a": 1.0}).as_object().unwrap().clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(configured.slug, "renamed");
    assert_eq!(configured.configuration["a"], 1.0);
    let gateway = Caller::Component("gateway");
    let (routed, routed_app) = w
        .apps
        .get_installation_by_slug(&gateway, &org, "renamed")
        .await
        .unwrap();
    assert_eq!(routed, configured);
    assert_eq!(routed_app.id, app.id);
    assert_eq!(
        w.apps
            .get_installation_by_slug(&gateway, &org, "bot")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

async fn internal_methods_need_components(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let app = w
        .app(&owner, &org, "bot", Visibility::Internal, &[])
        .await
        .app;

    assert_error(
        w.apps.get_app_by_identity(&owner, &app.id).await,
        Code::PermissionDenied,
        "permission denied: only the gateway component may call GetAppByIdentity",
    );
    assert_error(
        w.apps
            .get_installation_by_slug(&Caller::Component("threads"), &org, "bot")
            .await,
        Code::PermissionDenied,
        "permission denied: only the gateway component may call GetInstallationBySlug",
    );
    assert_error(
        w.apps.delete_organization_resources(&owner, &org).await,
        Code::PermissionDenied,
        "permission denied: only the organizations component may call \
         DeleteOrganizationResources",
    );
    let gateway = Caller::Component("gateway");
    assert_eq!(
        w.apps.get_app_by_identity(&gateway, &app.id).await.unwrap(),
        app
    );
    let stranger = agyn_core::id::new_id();
    assert_error(
        w.apps.get_app_by_identity(&gateway, &stranger).await,
        Code::NotFound,
        &format!("app {stranger} not found"),
    );
}

async fn organization_purge_removes_apps(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let doomed = w.org(&owner, "Doomed").await;
    let other_owner = w.user("other").await;
    let other = w.org(&other_owner, "Other").await;
    // An app of `other` installed into `doomed`, and an app of `doomed`
    // installed into `other`.
    let visitor = w
        .app(
            &other_owner,
            &other,
            "visitor",
            Visibility::Public,
            &["thread:write"],
        )
        .await;
    let native = w
        .app(&owner, &doomed, "native", Visibility::Public, &[])
        .await;
    let visit = w.install(&owner, &visitor.app.id, &doomed).await;
    let still_installed = w.install(&other_owner, &visitor.app.id, &other).await;
    w.install(&other_owner, &native.app.id, &other).await;
    w.apps
        .enroll_app("10.0.0.9", &native.service_token, None)
        .await
        .unwrap();

    let organizations = Caller::Component("organizations");
    for _ in 0..2 {
        w.apps
            .delete_organization_resources(&organizations, &doomed)
            .await
            .unwrap();
    }
    assert_error(
        w.apps.get_installation(&other_owner, &visit.id).await,
        Code::NotFound,
        &format!("installation {} not found", visit.id),
    );
    assert!(!w.has(&visitor.app.id, "can_read", &doomed).await);
    assert!(w.has(&visitor.app.id, "thread_write", &other).await);
    assert_eq!(
        w.apps
            .get_installation(&other_owner, &still_installed.id)
            .await
            .unwrap(),
        still_installed
    );
    assert_eq!(w.count("apps", "id", &native.app.id).await, 0);
    assert_eq!(
        w.count("app_installations", "app_id", &native.app.id).await,
        0
    );
    assert!(w.tuples_of(&native.app.id).await.is_empty());
    let certificates = w.certificates(&native.app.id).await;
    assert!(certificates.iter().all(|(_, revoked)| revoked.is_some()));
}

on_both_backends!(
    create_app_validates_and_registers,
    app_reads_follow_visibility,
    list_apps_scopes_and_pages,
    update_app_rules,
    install_grants_and_uninstall_revokes,
    install_rules,
    install_needs_active_org,
    delete_app_needs_no_installations,
    enrollment_rules,
    installation_reads,
    update_installation_rules,
    internal_methods_need_components,
    organization_purge_removes_apps,
);
