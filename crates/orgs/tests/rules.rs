//! The organization and membership rules, on SQLite and PostgreSQL.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use agyn_authz::{Authorizer, ObjectRef, Tuple};
use agyn_core::error::Code;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_orgs::ops::MembershipInput;
use agyn_orgs::{DELETION_STEPS, OrgState, Organizations, ResourceCleaner, Role, Status};
use agyn_store::{Backend, Db, on_both_backends};
use agyn_users::Users;

struct World {
    db: Db,
    users: Users,
    orgs: Organizations,
    authz: Authorizer,
}

impl World {
    async fn new(backend: Backend) -> Self {
        Self::with_cleaners(backend, Vec::new()).await
    }

    async fn with_cleaners(backend: Backend, cleaners: Vec<Arc<dyn ResourceCleaner>>) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        Self {
            users: Users::new(db.clone()),
            orgs: Organizations::new(db.clone(), cleaners),
            authz: Authorizer::new(db.clone()),
            db,
        }
    }

    async fn user(&self, name: &str) -> Caller {
        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: format!("rules|{name}"),
            preferred_username: name.to_string(),
            ..Default::default()
        };
        let (user, _) = self.users.resolve_or_create_user(&request).await.unwrap();
        caller(&user.id)
    }

    async fn admin(&self, name: &str) -> Caller {
        let admin = self.user(name).await;
        self.users
            .set_cluster_admin(id(&admin), true, "admin")
            .await
            .unwrap();
        admin
    }

    async fn can(&self, who: &Caller, permission: &str, org: &str) -> bool {
        self.authz
            .check(
                &ObjectRef::identity(id(who)),
                permission,
                &agyn_orgs::org_object(org),
            )
            .await
            .unwrap()
    }
}

fn caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

fn id(caller: &Caller) -> &str {
    caller.identity_id().unwrap()
}

fn invite<'a>(org: &'a str, who: &'a Caller, role: Role) -> MembershipInput<'a> {
    MembershipInput {
        organization_id: org,
        identity_id: id(who),
        role: Some(role),
        expires_at: None,
        request_id: "",
    }
}

async fn slugs_are_derived_validated_and_unique(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let first = w
        .orgs
        .create_organization(&alice, "  Acme Corp  ", None, "")
        .await
        .unwrap();
    assert_eq!(
        (first.name.as_str(), first.slug.as_str()),
        ("Acme Corp", "acme-corp")
    );
    let second = w
        .orgs
        .create_organization(&alice, "ACME corp!", None, "")
        .await
        .unwrap();
    assert_eq!(second.slug, "acme-corp-2");
    let symbols = w
        .orgs
        .create_organization(&alice, "***", None, "")
        .await
        .unwrap();
    assert_eq!(symbols.slug, "org");

    let taken = w
        .orgs
        .create_organization(&alice, "Other", Some("acme-corp"), "")
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(taken.message(), "slug \"acme-corp\" is taken");
    for bad in ["-acme", "Acme", "a_b", "", &"a".repeat(64)] {
        let error = w
            .orgs
            .create_organization(&alice, "X", Some(bad), "")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{bad:?}");
    }
    for bad in ["", "   ", &"n".repeat(129)] {
        let error = w
            .orgs
            .create_organization(&alice, bad, None, "")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{bad:?}");
    }

    // Renaming a slug frees the old one at once.
    let renamed = w
        .orgs
        .update_organization(&alice, &first.id, None, Some("acme"))
        .await
        .unwrap();
    assert_eq!(renamed.slug, "acme");
    let reused = w
        .orgs
        .create_organization(&alice, "Acme Corp", Some("acme-corp"), "")
        .await
        .unwrap();
    assert_eq!(reused.slug, "acme-corp");
    let clash = w
        .orgs
        .update_organization(&alice, &second.id, None, Some("acme"))
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists);
    let nothing = w
        .orgs
        .update_organization(&alice, &second.id, None, None)
        .await
        .unwrap_err();
    assert_eq!(nothing.message(), "no fields to update");
}

async fn create_is_idempotent_on_request_id(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let first = w
        .orgs
        .create_organization(&alice, "Acme", None, "req-1")
        .await
        .unwrap();
    let again = w
        .orgs
        .create_organization(&alice, "Acme", None, "req-1")
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    let reused = w
        .orgs
        .create_organization(&alice, "Other", None, "req-1")
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reused.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    let bad = w
        .orgs
        .create_organization(&alice, "Acme", None, "no spaces")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Concurrent retries with one key create one organization.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let orgs = w.orgs.clone();
        let alice = alice.clone();
        calls.spawn(async move {
            orgs.create_organization(&alice, "Race", None, "req-2")
                .await
        });
    }
    let mut ids = Vec::new();
    while let Some(result) = calls.join_next().await {
        ids.push(result.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (listed, _) = w.orgs.list_organizations(&alice, 0, "").await.unwrap();
    assert_eq!(listed.len(), 2);
}

async fn invitations_grant_nothing_until_accepted(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w
        .orgs
        .create_organization(&owner, "Acme", None, "")
        .await
        .unwrap()
        .id;

    let invitation = w
        .orgs
        .create_membership(&owner, &invite(&org, &bob, Role::Member))
        .await
        .unwrap();
    assert_eq!(invitation.status, Status::Pending);
    assert_eq!(invitation.username, "bob");
    assert_eq!(invitation.organization_slug, "acme");
    assert_eq!(invitation.invited_by, id(&owner));
    assert!(!w.can(&bob, "can_read", &org).await);
    let denied = w.orgs.get_organization(&bob, &org).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "permission denied: can_read on organization"
    );
    let (mine, _) = w.orgs.list_my_memberships(&bob, None, 0, "").await.unwrap();
    assert_eq!(mine.len(), 1);
    let (visible, _) = w.orgs.list_organizations(&bob, 0, "").await.unwrap();
    assert!(visible.is_empty());

    let duplicate = w
        .orgs
        .create_membership(&owner, &invite(&org, &bob, Role::Owner))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    // Only the invited user may accept or decline, and only once.
    for other in [&owner, &carol] {
        let error = w
            .orgs
            .accept_membership(other, &invitation.id)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
        let error = w
            .orgs
            .decline_membership(other, &invitation.id)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
    }
    let accepted = w
        .orgs
        .accept_membership(&bob, &invitation.id)
        .await
        .unwrap();
    assert_eq!(accepted.status, Status::Active);
    assert!(w.can(&bob, "can_read", &org).await);
    assert!(!w.can(&bob, "can_manage", &org).await);
    let again = w
        .orgs
        .accept_membership(&bob, &invitation.id)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(again.message(), "membership is not pending");
    let (visible, _) = w.orgs.list_organizations(&bob, 0, "").await.unwrap();
    assert_eq!(visible.len(), 1);

    // Declining deletes the invitation.
    let second = w
        .orgs
        .create_membership(&owner, &invite(&org, &carol, Role::Owner))
        .await
        .unwrap();
    w.orgs.decline_membership(&carol, &second.id).await.unwrap();
    let (members, _) = w
        .orgs
        .list_members(&owner, &org, None, 0, "")
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
    assert!(!w.can(&carol, "can_read", &org).await);
}

async fn admins_add_directly_and_members_see_active_only(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("root").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w
        .orgs
        .create_organization(&owner, "Acme", None, "")
        .await
        .unwrap()
        .id;

    let direct = w
        .orgs
        .create_membership(&admin, &invite(&org, &bob, Role::Member))
        .await
        .unwrap();
    assert_eq!(direct.status, Status::Active);
    assert!(w.can(&bob, "can_read", &org).await);
    w.orgs
        .create_membership(&owner, &invite(&org, &carol, Role::Member))
        .await
        .unwrap();

    let denied = w
        .orgs
        .create_membership(&bob, &invite(&org, &carol, Role::Member))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unspecified = MembershipInput {
        role: None,
        ..invite(&org, &carol, Role::Member)
    };
    let error = w
        .orgs
        .create_membership(&owner, &unspecified)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let unknown = MembershipInput {
        identity_id: "00000000-0000-4000-8000-000000000001",
        ..invite(&org, &carol, Role::Member)
    };
    let error = w
        .orgs
        .create_membership(&owner, &unknown)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    // A member lists ACTIVE rows only, and managers list every status.
    let (rows, _) = w.orgs.list_members(&bob, &org, None, 0, "").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.status == Status::Active));
    let error = w
        .orgs
        .list_members(&bob, &org, Some(Status::Pending), 0, "")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let (rows, _) = w
        .orgs
        .list_members(&owner, &org, Some(Status::Pending), 0, "")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (rows, _) = w
        .orgs
        .list_members(&admin, &org, None, 0, "")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);

    // The admin is not a member: no membership, no thread creation.
    assert!(w.can(&admin, "can_manage_members", &org).await);
    assert!(!w.can(&admin, "member", &org).await);
    assert!(!w.can(&admin, "can_create_thread", &org).await);
}

async fn the_last_owner_stays(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("root").await;
    let bob = w.user("bob").await;
    let org = w
        .orgs
        .create_organization(&owner, "Acme", None, "")
        .await
        .unwrap()
        .id;
    let (rows, _) = w
        .orgs
        .list_members(&owner, &org, None, 0, "")
        .await
        .unwrap();
    let owner_membership = rows[0].id.clone();
    assert_eq!(rows[0].role, Role::Owner);

    let error = w
        .orgs
        .remove_membership(&owner, &owner_membership)
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.reason()),
        (Code::FailedPrecondition, Some("LAST_OWNER"))
    );
    assert_eq!(error.message(), "cannot remove the last owner");
    let error = w
        .orgs
        .update_membership_role(&admin, &owner_membership, Some(Role::Member))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("LAST_OWNER"));

    // With a second owner, the first may step down; the role swap is atomic.
    let bob_membership = w
        .orgs
        .create_membership(&admin, &invite(&org, &bob, Role::Member))
        .await
        .unwrap();
    let same = w
        .orgs
        .update_membership_role(&owner, &bob_membership.id, Some(Role::Member))
        .await
        .unwrap();
    assert_eq!(same.updated_at, bob_membership.updated_at);
    w.orgs
        .update_membership_role(&owner, &bob_membership.id, Some(Role::Owner))
        .await
        .unwrap();
    assert!(w.can(&bob, "can_manage_organization", &org).await);
    let demoted = w
        .orgs
        .update_membership_role(&bob, &owner_membership, Some(Role::Member))
        .await
        .unwrap();
    assert_eq!(demoted.role, Role::Member);
    assert!(!w.can(&owner, "can_manage", &org).await);
    assert!(w.can(&owner, "can_read", &org).await);

    // Leaving: a member removes its own membership without management rights.
    w.orgs
        .remove_membership(&owner, &owner_membership)
        .await
        .unwrap();
    assert!(!w.can(&owner, "can_read", &org).await);
    let error = w
        .orgs
        .remove_membership(&bob, &bob_membership.id)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("LAST_OWNER"));
}

async fn removal_drops_agent_roles_in_the_org(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("root").await;
    let bob = w.user("bob").await;
    let org = w
        .orgs
        .create_organization(&owner, "Acme", None, "")
        .await
        .unwrap()
        .id;
    let other = w
        .orgs
        .create_organization(&owner, "Other", None, "")
        .await
        .unwrap()
        .id;
    let membership = w
        .orgs
        .create_membership(&admin, &invite(&org, &bob, Role::Member))
        .await
        .unwrap();
    let agent_here = ObjectRef::new("agent", "a1");
    let agent_there = ObjectRef::new("agent", "a2");
    let bob_ref = ObjectRef::identity(id(&bob));
    w.authz
        .write(
            &[
                Tuple::new(agyn_orgs::org_object(&org), "org", agent_here.clone()),
                Tuple::new(agyn_orgs::org_object(&other), "org", agent_there.clone()),
                Tuple::new(bob_ref.clone(), "maintainer", agent_here.clone()),
                Tuple::new(bob_ref.clone(), "participant", agent_there.clone()),
            ],
            &[],
        )
        .await
        .unwrap();
    w.orgs
        .remove_membership(&owner, &membership.id)
        .await
        .unwrap();
    assert!(
        !w.authz
            .check(&bob_ref, "maintainer", &agent_here)
            .await
            .unwrap()
    );
    assert!(
        w.authz
            .check(&bob_ref, "participant", &agent_there)
            .await
            .unwrap()
    );
}

/// Records the steps it was called for and fails the first call of one.
struct Recorder {
    step: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
    fail_once: Mutex<bool>,
}

impl ResourceCleaner for Recorder {
    fn step(&self) -> &'static str {
        self.step
    }

    fn delete_organization_resources<'a>(
        &'a self,
        organization_id: &'a str,
    ) -> Pin<Box<dyn std::future::Future<Output = agyn_core::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{}:{organization_id}", self.step));
            let mut fail = self.fail_once.lock().unwrap();
            if *fail {
                *fail = false;
                return Err(agyn_core::Error::unavailable("cleaner down"));
            }
            Ok(())
        })
    }
}

async fn deletion_closes_at_once_and_purges_in_order(backend: Backend) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let cleaners: Vec<Arc<dyn ResourceCleaner>> = ["secrets", "agents", "threads"]
        .into_iter()
        .map(|step| {
            Arc::new(Recorder {
                step,
                calls: Arc::clone(&calls),
                fail_once: Mutex::new(step == "threads"),
            }) as Arc<dyn ResourceCleaner>
        })
        .collect();
    let w = World::with_cleaners(backend, cleaners).await;
    let owner = w.user("owner").await;
    let admin = w.admin("root").await;
    let bob = w.user("bob").await;
    let carol = w.user("carol").await;
    let org = w
        .orgs
        .create_organization(&owner, "Acme", Some("acme"), "")
        .await
        .unwrap()
        .id;
    w.orgs
        .create_membership(&admin, &invite(&org, &bob, Role::Member))
        .await
        .unwrap();

    let error = w.orgs.delete_organization(&bob, &org).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    w.orgs.delete_organization(&owner, &org).await.unwrap();

    // Access is gone before any purge step runs.
    assert!(!w.can(&owner, "can_read", &org).await);
    assert!(!w.can(&bob, "can_read", &org).await);
    assert_eq!(
        w.orgs
            .get_organization(&bob, &org)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let seen = w.orgs.get_organization(&admin, &org).await.unwrap();
    assert_eq!(
        (seen.state, seen.deletion_step.as_str()),
        (OrgState::Deleting, DELETION_STEPS[0])
    );
    let (listed, _) = w.orgs.list_organizations(&admin, 0, "").await.unwrap();
    assert_eq!(listed.len(), 1);
    let (mine, _) = w.orgs.list_my_memberships(&bob, None, 0, "").await.unwrap();
    assert!(mine.is_empty());
    let error = w
        .orgs
        .update_organization(&admin, &org, Some("New"), None)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    let error = w
        .orgs
        .create_membership(&admin, &invite(&org, &carol, Role::Member))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    // Repeats succeed for the old owner and admins, not for others.
    w.orgs.delete_organization(&owner, &org).await.unwrap();
    w.orgs.delete_organization(&admin, &org).await.unwrap();
    assert_eq!(
        w.orgs
            .delete_organization(&bob, &org)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // The slug stays reserved until the purge finishes.
    let error = w
        .orgs
        .create_organization(&carol, "Acme", Some("acme"), "")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);

    // A failing step stops the purge where it is; the retry resumes there.
    assert!(w.orgs.purge(&org).await.is_err());
    let stuck = w.orgs.get_organization(&admin, &org).await.unwrap();
    assert_eq!(stuck.deletion_step, "threads");
    w.orgs.purge(&org).await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [
            format!("agents:{org}"),
            format!("threads:{org}"),
            format!("threads:{org}"),
            format!("secrets:{org}")
        ]
    );
    assert_eq!(
        w.orgs
            .get_organization(&admin, &org)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let mut connection = w.db.pool().acquire().await.unwrap();
    let left: i64 = agyn_store::sqlx::query_scalar(
        "SELECT COUNT(*) FROM tuples WHERE object_type = 'organization' AND object_id = $1",
    )
    .bind(&org)
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    assert_eq!(left, 0);
    let freed = w
        .orgs
        .create_organization(&carol, "Acme", Some("acme"), "")
        .await
        .unwrap();
    assert_eq!(freed.slug, "acme");
}

async fn the_purge_loop_runs_after_delete(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w
        .orgs
        .create_organization(&owner, "Acme", None, "")
        .await
        .unwrap()
        .id;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let orgs = w.orgs.clone();
    let runner = tokio::spawn(async move {
        orgs.run_purges(async {
            let _ = stopped.await;
        })
        .await;
    });
    w.orgs.delete_organization(&owner, &org).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if w.orgs.organization_state(&org).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    runner.await.unwrap();
}

async fn lists_paginate_in_creation_order(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let mut created = Vec::new();
    for index in 0..7 {
        created.push(
            w.orgs
                .create_organization(&owner, &format!("Org {index}"), None, "")
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = w.orgs.list_organizations(&owner, 3, &token).await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|org| org.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen, created);
    let other = w.user("other").await;
    let (_, next) = w.orgs.list_organizations(&owner, 3, "").await.unwrap();
    let error = w
        .orgs
        .list_organizations(&other, 3, &next)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = w.orgs.list_organizations(&owner, -1, "").await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}

on_both_backends!(
    slugs_are_derived_validated_and_unique,
    create_is_idempotent_on_request_id,
    invitations_grant_nothing_until_accepted,
    admins_add_directly_and_members_see_active_only,
    the_last_owner_stays,
    removal_drops_agent_roles_in_the_org,
    deletion_closes_at_once_and_purges_in_order,
    the_purge_loop_runs_after_delete,
    lists_paginate_in_creation_order,
);

/// Concurrent deletes all succeed: none waits for a connection while
/// holding the write lock.
async fn concurrent_deletes_queue(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let mut ids = Vec::new();
    for index in 0..12 {
        let org = w
            .orgs
            .create_organization(&owner, &format!("Org {index}"), None, "")
            .await
            .unwrap();
        ids.push(org.id);
    }
    let mut deletes = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let orgs = w.orgs.clone();
        let owner = owner.clone();
        deletes.spawn(async move { orgs.delete_organization(&owner, &id).await });
    }
    let (mine, _) = w
        .orgs
        .list_my_memberships(&owner, None, 0, "")
        .await
        .unwrap();
    assert!(mine.len() <= 12);
    while let Some(result) = deletes.join_next().await {
        result.unwrap().unwrap();
    }
    for id in &ids {
        assert_eq!(
            w.orgs.organization_state(id).await.unwrap(),
            OrgState::Deleting
        );
    }
}

on_both_backends!(concurrent_deletes_queue);
