//! The authorization matrix: every gateway method of the covered services,
//! called over Connect JSON on HTTP/2 by each kind of principal, with the
//! exact status each one must get.
//!
//! Each cell runs against fresh fixtures (new organizations, memberships
//! and tokens), so a call that deletes or changes something cannot leak
//! into the next cell. A service adds its methods by adding rows to
//! [`rows`] and its name to [`COVERED_SERVICES`]; the completeness check
//! fails while a method of a covered service has no row.

use std::sync::Arc;

use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_gateway::Platform;
use agyn_orgs::Organizations;
use agyn_orgs::Role;
use agyn_orgs::ops::MembershipInput;
use agyn_store::{Backend, on_both_backends};
use agyn_users::Users;
use serde_json::{Value, json};

/// Services whose every gateway method must have a row.
const COVERED_SERVICES: &[&str] = &[
    "agynio.api.users.v1.UsersGateway",
    "agynio.api.organizations.v1.OrganizationsGateway",
];

/// The principals, in the column order of every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// A user with no membership anywhere.
    NonMember,
    /// An ACTIVE MEMBER of the fixture organization.
    Member,
    /// The creator and ACTIVE OWNER of the fixture organization.
    Owner,
    /// The owner of a different organization.
    OtherOwner,
    /// A cluster admin with no membership.
    Admin,
}

const COLUMNS: [Who; 6] = [
    Who::Anonymous,
    Who::NonMember,
    Who::Member,
    Who::Owner,
    Who::OtherOwner,
    Who::Admin,
];

const OK: &str = "ok";
const UNAUTHENTICATED: &str = "unauthenticated";
const DENIED: &str = "permission_denied";
const NOT_FOUND: &str = "not_found";

/// One method and the outcome each column must get.
struct Row {
    method: &'static str,
    /// A label that distinguishes rows of the same method.
    case: &'static str,
    body: fn(&Fixture) -> Value,
    expect: [&'static str; 6],
}

/// What a cell's request may refer to, created fresh for each cell.
struct Fixture {
    org: String,
    other_org: String,
    member_membership: String,
    /// A PENDING invitation of the non-member to `org`.
    invitation: String,
    /// A user with no membership, used as the target of CreateMembership.
    target: String,
    owner_id: String,
    owner_token: String,
    owner_device: String,
}

fn rows() -> Vec<Row> {
    let users = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.users.v1.UsersGateway/{method}").into_boxed_str())
    };
    let orgs = |method: &str| -> &'static str {
        Box::leak(
            format!("agynio.api.organizations.v1.OrganizationsGateway/{method}").into_boxed_str(),
        )
    };
    let every_user = [UNAUTHENTICATED, OK, OK, OK, OK, OK];
    let managers = [UNAUTHENTICATED, DENIED, DENIED, OK, DENIED, OK];
    let readers = [UNAUTHENTICATED, DENIED, OK, OK, DENIED, OK];
    vec![
        // UsersGateway.
        Row {
            method: users("GetMe"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            method: users("GetUser"),
            case: "",
            body: |f| json!({"id": f.owner_id}),
            expect: every_user,
        },
        Row {
            method: users("SearchUsers"),
            case: "",
            body: |_| json!({"prefix": "m"}),
            expect: every_user,
        },
        Row {
            method: users("CreateAPIToken"),
            case: "",
            body: |_| json!({"name": "ci"}),
            expect: every_user,
        },
        Row {
            method: users("ListAPITokens"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            method: users("RevokeAPIToken"),
            case: "the owner's token",
            body: |f| json!({"id": f.owner_token}),
            expect: [
                UNAUTHENTICATED,
                NOT_FOUND,
                NOT_FOUND,
                OK,
                NOT_FOUND,
                NOT_FOUND,
            ],
        },
        Row {
            method: users("CreateDevice"),
            case: "",
            body: |_| json!({"name": "laptop"}),
            expect: every_user,
        },
        Row {
            method: users("ListDevices"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            method: users("DeleteDevice"),
            case: "the owner's device",
            body: |f| json!({"id": f.owner_device}),
            expect: [
                UNAUTHENTICATED,
                NOT_FOUND,
                NOT_FOUND,
                OK,
                NOT_FOUND,
                NOT_FOUND,
            ],
        },
        // OrganizationsGateway.
        Row {
            method: orgs("CreateOrganization"),
            case: "",
            body: |_| json!({"name": "Fresh"}),
            expect: every_user,
        },
        Row {
            method: orgs("GetOrganization"),
            case: "",
            body: |f| json!({"id": f.org}),
            expect: readers,
        },
        Row {
            method: orgs("GetOrganization"),
            case: "unknown id",
            body: |_| json!({"id": "00000000-0000-4000-8000-000000000000"}),
            expect: [
                UNAUTHENTICATED,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
            ],
        },
        Row {
            method: orgs("ListOrganizations"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            method: orgs("UpdateOrganization"),
            case: "",
            body: |f| json!({"id": f.org, "name": "Renamed"}),
            expect: managers,
        },
        Row {
            method: orgs("DeleteOrganization"),
            case: "",
            body: |f| json!({"id": f.org}),
            expect: managers,
        },
        Row {
            method: orgs("CreateMembership"),
            case: "owners invite, admins add",
            body: |f| json!({"organizationId": f.org, "identityId": f.target, "role": "MEMBERSHIP_ROLE_MEMBER"}),
            expect: managers,
        },
        Row {
            method: orgs("AcceptMembership"),
            case: "the non-member's invitation",
            body: |f| json!({"id": f.invitation}),
            expect: [
                UNAUTHENTICATED,
                OK,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
            ],
        },
        Row {
            method: orgs("DeclineMembership"),
            case: "the non-member's invitation",
            body: |f| json!({"id": f.invitation}),
            expect: [
                UNAUTHENTICATED,
                OK,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
                NOT_FOUND,
            ],
        },
        Row {
            method: orgs("RemoveMembership"),
            case: "the member's membership",
            body: |f| json!({"id": f.member_membership}),
            expect: [UNAUTHENTICATED, DENIED, OK, OK, DENIED, OK],
        },
        Row {
            method: orgs("UpdateMembershipRole"),
            case: "promote the member",
            body: |f| json!({"id": f.member_membership, "role": "MEMBERSHIP_ROLE_OWNER"}),
            expect: managers,
        },
        Row {
            method: orgs("ListMembers"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            method: orgs("ListMembers"),
            case: "pending filter",
            body: |f| json!({"organizationId": f.org, "status": "MEMBERSHIP_STATUS_PENDING"}),
            expect: managers,
        },
        Row {
            method: orgs("ListMyMemberships"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            method: orgs("GetOrganization"),
            case: "another organization",
            body: |f| json!({"id": f.other_org}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, DENIED, OK, OK],
        },
    ]
}

/// The server under test and the principals' credentials.
struct World {
    base: String,
    client: reqwest::Client,
    users: Users,
    orgs: Organizations,
    /// `(identity id, API token)` per column; `None` for anonymous.
    principals: Vec<Option<(String, String)>>,
}

fn user_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

async fn new_user(users: &Users, name: &str) -> String {
    let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
        oidc_subject: format!("matrix|{name}|{}", agyn_core::id::new_id()),
        preferred_username: name.to_string(),
        name: name.to_string(),
        ..Default::default()
    };
    users.resolve_or_create_user(&request).await.unwrap().0.id
}

impl World {
    async fn start(backend: Backend) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let pki = agyn_pki::Pki::load_or_create(db.clone(), &agyn_pki::MasterKey::generate())
            .await
            .unwrap();
        let events =
            agyn_events::Events::start(db.clone(), agyn_events::EventsConfig::default()).unwrap();
        let platform = Platform::new(db, pki, events);
        let orgs = platform.orgs.clone();
        let users = platform.users.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = agyn_gateway::public_app(&platform);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut principals = Vec::new();
        for who in COLUMNS {
            if who == Who::Anonymous {
                principals.push(None);
                continue;
            }
            let id = new_user(&users, &format!("{who:?}").to_lowercase()).await;
            if who == Who::Admin {
                users.set_cluster_admin(&id, true, "admin").await.unwrap();
            }
            let token = users
                .create_api_token(&user_caller(&id), "matrix", None)
                .await
                .unwrap()
                .plaintext
                .into_inner();
            principals.push(Some((id, token)));
        }
        Self {
            base,
            client: reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap(),
            users,
            orgs,
            principals,
        }
    }

    fn id(&self, who: Who) -> &str {
        let column = COLUMNS.iter().position(|column| *column == who).unwrap();
        &self.principals[column].as_ref().unwrap().0
    }

    /// Creates the organizations, memberships and tokens one cell uses.
    async fn fixture(&self) -> Fixture {
        let owner = user_caller(self.id(Who::Owner));
        let admin = user_caller(self.id(Who::Admin));
        let org = self
            .orgs
            .create_organization(&owner, "Matrix", None, "")
            .await
            .unwrap()
            .id;
        let other_org = self
            .orgs
            .create_organization(
                &user_caller(self.id(Who::OtherOwner)),
                "Elsewhere",
                None,
                "",
            )
            .await
            .unwrap()
            .id;
        let member_membership = self
            .orgs
            .create_membership(
                &admin,
                &MembershipInput {
                    organization_id: &org,
                    identity_id: self.id(Who::Member),
                    role: Some(Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap()
            .id;
        let invitation = self
            .orgs
            .create_membership(
                &owner,
                &MembershipInput {
                    organization_id: &org,
                    identity_id: self.id(Who::NonMember),
                    role: Some(Role::Member),
                    expires_at: None,
                    request_id: "",
                },
            )
            .await
            .unwrap()
            .id;
        let target = new_user(&self.users, "target").await;
        let owner_token = self
            .users
            .create_api_token(&owner, "revocable", None)
            .await
            .unwrap()
            .token
            .id;
        let owner_device = self
            .users
            .create_device(&owner, "workstation")
            .await
            .unwrap()
            .device
            .id;
        Fixture {
            owner_device,
            org,
            other_org,
            member_membership,
            invitation,
            target,
            owner_id: self.id(Who::Owner).to_string(),
            owner_token,
        }
    }

    /// Deletes what a cell left behind that counts against a limit: the
    /// owner's fixture device (users hold at most 100).
    async fn clean_up(&self, fixture: &Fixture) {
        let owner = user_caller(self.id(Who::Owner));
        // The cell may have deleted it already.
        let _ = self.users.delete_device(&owner, &fixture.owner_device).await;
    }

    /// Calls `method` with Connect JSON and returns `ok` or the error code.
    async fn call(&self, who: usize, method: &str, body: &Value) -> String {
        let mut request = self
            .client
            .post(format!("{}/{method}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some((_, token)) = &self.principals[who] {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        if status.is_success() {
            return OK.to_string();
        }
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method}: HTTP {status} without a Connect error: {text}"));
        error["code"].as_str().unwrap_or("missing code").to_string()
    }
}

async fn matrix(backend: Backend) {
    let world = Arc::new(World::start(backend).await);
    let rows = rows();
    let mut mismatches = Vec::new();
    let mut cells = 0;
    for row in &rows {
        for (column, expected) in row.expect.iter().enumerate() {
            let fixture = world.fixture().await;
            let body = (row.body)(&fixture);
            let got = world.call(column, row.method, &body).await;
            world.clean_up(&fixture).await;
            cells += 1;
            if got != *expected {
                mismatches.push(format!(
                    "{} [{}] as {:?}: expected {expected}, got {got}",
                    row.method, row.case, COLUMNS[column]
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {cells} cells differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    let missing: Vec<&str> = agyn_api::GATEWAY_METHODS
        .iter()
        .map(|(path, ..)| path.trim_start_matches('/'))
        .filter(|path| {
            COVERED_SERVICES
                .iter()
                .any(|service| path.starts_with(&format!("{service}/")))
        })
        .filter(|path| !rows.iter().any(|row| row.method == *path))
        .collect();
    assert!(
        missing.is_empty(),
        "methods without a matrix row: {missing:?}"
    );
}

on_both_backends!(matrix);
