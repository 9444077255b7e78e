//! The authorization model and tuple store against real SQLite and
//! PostgreSQL databases. Every test runs once per backend.

use agyn_authz::{Authorizer, ObjectRef, Tuple, TupleFilter};
use agyn_core::error::Code;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_store::Backend;

use agyn_store::on_both_backends;

on_both_backends!(
    organization_roles_resolve,
    cluster_admin_reaches_every_organization,
    thread_and_agent_permissions_follow_org,
    writes_are_validated,
    writes_are_idempotent_and_atomic,
    read_pages_and_filters,
    list_objects_follows_computed_relations,
);

async fn authorizer(backend: Backend) -> Authorizer {
    Authorizer::new(agyn_store::testing::fresh(backend).await)
}

fn identity(id: &str) -> ObjectRef {
    ObjectRef::identity(id)
}

fn org(id: &str) -> ObjectRef {
    ObjectRef::new("organization", id)
}

fn cluster() -> ObjectRef {
    ObjectRef::new("cluster", "global")
}

/// Writes the tuples a new organization gets: its owner and its cluster.
async fn create_org(authz: &Authorizer, id: &str, owner: &str) {
    authz
        .write(
            &[
                Tuple::new(identity(owner), "owner", org(id)),
                Tuple::new(cluster(), "cluster", org(id)),
            ],
            &[],
        )
        .await
        .unwrap();
}

async fn assert_check(
    authz: &Authorizer,
    user: &ObjectRef,
    relation: &str,
    object: &ObjectRef,
    expected: bool,
) {
    let allowed = authz.check(user, relation, object).await.unwrap();
    assert_eq!(allowed, expected, "{user} {relation} {object}");
}

async fn organization_roles_resolve(backend: Backend) {
    let authz = authorizer(backend).await;
    create_org(&authz, "o1", "alice").await;
    authz
        .write(&[Tuple::new(identity("bob"), "member", org("o1"))], &[])
        .await
        .unwrap();
    let table = [
        ("alice", "can_manage", true),
        ("alice", "can_read", true),
        ("alice", "member", true),
        ("alice", "can_invite", true),
        ("alice", "can_add_member", false),
        ("bob", "can_read", true),
        ("bob", "can_create_thread", true),
        ("bob", "can_manage", false),
        ("bob", "can_invite", false),
        ("carol", "can_read", false),
        ("carol", "member", false),
    ];
    for (user, relation, expected) in table {
        assert_check(&authz, &identity(user), relation, &org("o1"), expected).await;
    }
    assert_check(
        &authz,
        &identity("alice"),
        "no_such_relation",
        &org("o1"),
        false,
    )
    .await;
}

async fn cluster_admin_reaches_every_organization(backend: Backend) {
    let authz = authorizer(backend).await;
    create_org(&authz, "o1", "alice").await;
    create_org(&authz, "o2", "bob").await;
    authz
        .write(&[Tuple::new(identity("root"), "admin", cluster())], &[])
        .await
        .unwrap();
    for organization in ["o1", "o2"] {
        for relation in [
            "can_read",
            "can_manage",
            "can_add_member",
            "can_view_threads",
        ] {
            assert_check(
                &authz,
                &identity("root"),
                relation,
                &org(organization),
                true,
            )
            .await;
        }
        assert_check(
            &authz,
            &identity("root"),
            "member",
            &org(organization),
            false,
        )
        .await;
    }
    assert_check(&authz, &identity("alice"), "can_read", &org("o2"), false).await;
    authz
        .write(&[], &[Tuple::new(identity("root"), "admin", cluster())])
        .await
        .unwrap();
    assert_check(&authz, &identity("root"), "can_manage", &org("o1"), false).await;
}

async fn thread_and_agent_permissions_follow_org(backend: Backend) {
    let authz = authorizer(backend).await;
    create_org(&authz, "o1", "alice").await;
    let thread = ObjectRef::new("thread", "t1");
    let agent = ObjectRef::new("agent", "a1");
    authz
        .write(
            &[
                Tuple::new(identity("bob"), "member", org("o1")),
                Tuple::new(org("o1"), "org", thread.clone()),
                Tuple::new(identity("dave"), "participant", thread.clone()),
                Tuple::new(org("o1"), "org", agent.clone()),
                Tuple::new(org("o1"), "internal_access", agent.clone()),
                Tuple::new(identity("a1"), "self", agent.clone()),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_check(&authz, &identity("dave"), "can_read", &thread, true).await;
    assert_check(&authz, &identity("dave"), "can_write", &thread, true).await;
    assert_check(&authz, &identity("alice"), "can_read", &thread, true).await;
    assert_check(&authz, &identity("alice"), "can_write", &thread, false).await;
    assert_check(&authz, &identity("bob"), "can_read", &thread, false).await;
    assert_check(&authz, &identity("bob"), "can_initiate", &agent, true).await;
    assert_check(&authz, &identity("bob"), "can_view", &agent, true).await;
    assert_check(&authz, &identity("bob"), "can_edit_config", &agent, false).await;
    assert_check(&authz, &identity("alice"), "can_edit_config", &agent, true).await;
    assert_check(&authz, &identity("a1"), "can_read_config", &agent, true).await;
    assert_check(&authz, &identity("carol"), "can_initiate", &agent, false).await;
}

async fn writes_are_validated(backend: Backend) {
    let authz = authorizer(backend).await;
    let undeclared = authz
        .write(&[Tuple::new(identity("a"), "can_read", org("o1"))], &[])
        .await
        .unwrap_err();
    assert_eq!(undeclared.code(), Code::InvalidArgument);
    assert_eq!(
        undeclared.message(),
        "writes[0].user: identity cannot hold organization#can_read directly"
    );
    let unknown = authz
        .write(&[Tuple::new(identity("a"), "boss", org("o1"))], &[])
        .await
        .unwrap_err();
    assert_eq!(
        unknown.message(),
        "writes[0].relation: \"boss\" is not a relation of organization"
    );
    let wrong_user = authz
        .write(&[], &[Tuple::new(org("o2"), "owner", org("o1"))])
        .await
        .unwrap_err();
    assert_eq!(
        wrong_user.message(),
        "deletes[0].user: organization cannot hold organization#owner directly"
    );
    let many: Vec<Tuple> = (0..101)
        .map(|index| Tuple::new(identity(&format!("u{index}")), "member", org("o1")))
        .collect();
    let too_many = authz.write(&many, &[]).await.unwrap_err();
    assert_eq!(
        too_many.message(),
        "writes and deletes: at most 100 tuples per call"
    );
    let parse = ObjectRef::parse("user", "nobody").unwrap_err();
    assert_eq!(parse.message(), "user: must be <type>:<id>");
    let parse = ObjectRef::parse("object", "planet:earth").unwrap_err();
    assert_eq!(parse.message(), "object: unknown object type \"planet\"");
}

async fn writes_are_idempotent_and_atomic(backend: Backend) {
    let authz = authorizer(backend).await;
    let tuple = Tuple::new(identity("bob"), "member", org("o1"));
    authz
        .write(std::slice::from_ref(&tuple), &[])
        .await
        .unwrap();
    authz
        .write(std::slice::from_ref(&tuple), &[])
        .await
        .unwrap();
    let missing = Tuple::new(identity("zed"), "member", org("o1"));
    authz.write(&[], &[missing]).await.unwrap();
    // One invalid tuple rejects the whole call: nothing is written.
    let batch = [
        Tuple::new(identity("carol"), "member", org("o1")),
        Tuple::new(identity("carol"), "can_read", org("o1")),
    ];
    authz.write(&batch, &[]).await.unwrap_err();
    assert_check(&authz, &identity("carol"), "member", &org("o1"), false).await;
    // A role change swaps tuples in one call.
    authz
        .write(
            &[Tuple::new(identity("bob"), "owner", org("o1"))],
            std::slice::from_ref(&tuple),
        )
        .await
        .unwrap();
    assert_check(&authz, &identity("bob"), "can_manage", &org("o1"), true).await;
    let page = page_of(0, "");
    let (tuples, _) = authz
        .read(
            &TupleFilter {
                object_type: "organization".into(),
                ..Default::default()
            },
            &page,
        )
        .await
        .unwrap();
    assert_eq!(
        tuples,
        vec![Tuple::new(identity("bob"), "owner", org("o1"))]
    );
}

fn page_of(size: i32, token: &str) -> Page {
    Page::parse(
        size,
        token,
        SortOrder::Ascending,
        Fingerprint::new("test").with("read"),
    )
    .unwrap()
}

async fn read_pages_and_filters(backend: Backend) {
    let authz = authorizer(backend).await;
    let mut expected = Vec::new();
    for organization in ["o1", "o2"] {
        create_org(&authz, organization, "alice").await;
        for index in 0..12 {
            let tuple = Tuple::new(
                identity(&format!("m{index:02}")),
                "member",
                org(organization),
            );
            authz
                .write(std::slice::from_ref(&tuple), &[])
                .await
                .unwrap();
        }
    }
    let filter = TupleFilter {
        object_type: "organization".into(),
        ..Default::default()
    };
    let mut token = String::new();
    let mut walked = Vec::new();
    loop {
        let (tuples, next) = authz.read(&filter, &page_of(5, &token)).await.unwrap();
        walked.extend(tuples);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    expected.extend(walked.iter().cloned());
    expected.sort_by(|a, b| {
        (&a.object.id, &a.relation, &a.user.object_type, &a.user.id).cmp(&(
            &b.object.id,
            &b.relation,
            &b.user.object_type,
            &b.user.id,
        ))
    });
    assert_eq!(
        walked.len(),
        28,
        "12 members, 1 owner and 1 cluster per org"
    );
    assert_eq!(
        walked, expected,
        "tuples come in (object, relation, user) order"
    );

    let members_of_o2 = TupleFilter {
        object_type: "organization".into(),
        object_id: Some("o2".into()),
        relation: Some("member".into()),
        user: None,
    };
    let (tuples, _) = authz.read(&members_of_o2, &page_of(0, "")).await.unwrap();
    assert_eq!(tuples.len(), 12);
    assert!(tuples.iter().all(|tuple| tuple.object.id == "o2"));
    let one_user = TupleFilter {
        object_type: "organization".into(),
        user: Some(identity("m03")),
        ..Default::default()
    };
    let (tuples, _) = authz.read(&one_user, &page_of(0, "")).await.unwrap();
    assert_eq!(tuples.len(), 2);
}

async fn list_objects_follows_computed_relations(backend: Backend) {
    let authz = authorizer(backend).await;
    create_org(&authz, "o2", "alice").await;
    create_org(&authz, "o1", "bob").await;
    authz
        .write(&[Tuple::new(identity("alice"), "member", org("o1"))], &[])
        .await
        .unwrap();
    let member_of = authz
        .list_objects("organization", "member", &identity("alice"))
        .await
        .unwrap();
    assert_eq!(member_of, ["o1", "o2"], "owner implies member");
    let owner_of = authz
        .list_objects("organization", "owner", &identity("alice"))
        .await
        .unwrap();
    assert_eq!(owner_of, ["o2"]);
    let error = authz
        .list_objects("organization", "nope", &identity("alice"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}
