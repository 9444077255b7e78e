//! The authorization matrix: every gateway method of the covered services,
//! called over Connect JSON on HTTP/2 by each kind of principal, with the
//! exact status each one must get.
//!
//! Each cell runs against fresh fixtures (new organizations, memberships
//! and tokens), so a call that deletes or changes something cannot leak
//! into the next cell. A service adds its methods by adding rows to
//! [`rows`] and its name to [`COVERED_SERVICES`]; the completeness check
//! fails while a method of a covered service has no row.

use agyn_api_runners::agynio::api::runners::v1 as runners_pb;
use agyn_core::{Caller, CredentialKind, IdentityKind};
use agyn_gateway::Platform;
use agyn_orgs::Organizations;
use agyn_orgs::Role;
use agyn_orgs::ops::MembershipInput;
use agyn_store::{Backend, on_both_backends};
use agyn_users::Users;
use futures::StreamExt as _;
use serde_json::{Value, json};

/// Services whose every gateway method must have a row.
const COVERED_SERVICES: &[&str] = &[
    "agynio.api.users.v1.UsersGateway",
    "agynio.api.organizations.v1.OrganizationsGateway",
    "agynio.api.threads.v1.ThreadsGateway",
    "agynio.api.chat.v1.ChatGateway",
    "agynio.api.notifications.v1.NotificationsGateway",
    "agynio.api.llm.v1.LLMGateway",
    "agynio.api.secrets.v1.SecretsGateway",
    "agynio.api.agents.v1.AgentsGateway",
    "agynio.api.runners.v1.RunnersGateway",
    "agynio.api.files.v1.FilesGateway",
    "agynio.api.tracing.v1.TracingGateway",
    "agynio.api.apps.v1.AppsGateway",
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
const UNAVAILABLE: &str = "unavailable";
const INVALID_ARGUMENT: &str = "invalid_argument";
const FAILED_PRECONDITION: &str = "failed_precondition";

/// How a row's method is called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    /// Server streaming: a call succeeds when its first message arrives,
    /// which must carry the named JSON field.
    ServerStream(&'static str),
    /// Client streaming: the row's body is a JSON array of the request
    /// messages, and a call succeeds when its response arrives, which must
    /// carry the named JSON field.
    ClientStream(&'static str),
}

/// One method and the outcome each column must get.
struct Row {
    method: &'static str,
    shape: Shape,
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
    member_id: String,
    owner_token: String,
    owner_device: String,
    /// A thread of `org` with the owner and the member, holding one
    /// message from the owner.
    thread: String,
    /// A conversation of `org` with the owner and the member.
    conversation: String,
    /// A scripted provider of `org` and a model on it.
    provider: String,
    model: String,
    /// A provider of `org` that no model uses.
    spare_provider: String,
    /// A Vault secret provider of `org` that nothing references, a local
    /// secret and a local image pull secret.
    secret_provider: String,
    secret: String,
    image_pull_secret: String,
    agents: AgentFixture,
    runners: RunnerFixture,
    files: FileFixture,
    traces: TraceFixture,
    apps: AppFixture,
}

/// The agents resources of a cell. Each one is created only for the
/// methods that use it, and an id that was not created is empty.
#[derive(Default)]
struct AgentFixture {
    /// An INTERNAL agent of `org` that the owner created, so the owner also
    /// has its `owner` role.
    agent: String,
    /// A second agent of the owner, on which the member is MAINTAINER.
    maintained_agent: String,
    /// A persistent volume definition of `org`.
    volume: String,
    /// An attachment of `volume` to `agent`.
    volume_attachment: String,
    /// An MCP server, a skill, a hook, an env and an init script of `agent`.
    mcp: String,
    skill: String,
    hook: String,
    env: String,
    init_script: String,
    /// An attachment to `agent` of a second image pull secret, which leaves
    /// [`Fixture::image_pull_secret`] free to attach or swap in.
    pull_secret_attachment: String,
}

/// The runners resources of a cell, created like [`AgentFixture`].
#[derive(Default)]
struct RunnerFixture {
    /// A PENDING runner of `org` and its service token.
    runner: String,
    runner_token: String,
    /// A PENDING cluster runner registered by the admin.
    cluster_runner: String,
    /// A STARTING workload of the fixture thread and agent on `runner`,
    /// with one container named `agent`, and a provisioned volume of it.
    workload: String,
    provisioned_volume: String,
}

/// The files resources of a cell, created like [`AgentFixture`]. Every
/// file contains [`FILE_CONTENT`] and was uploaded by the owner.
#[derive(Default)]
struct FileFixture {
    /// A file of `org`.
    org_file: String,
    /// A file without an organization.
    private_file: String,
    /// A file without an organization, attached to a message of the
    /// fixture thread.
    attached_file: String,
}

/// The tracing resources of a cell, created like [`AgentFixture`]: one
/// trace of `org` with one ended `llm.call` span, exported by the owner.
#[derive(Default)]
struct TraceFixture {
    /// The trace id as a UUID, which is also its run id.
    run_id: String,
    /// The trace and span ids as Connect JSON encodes bytes (base64).
    trace_id: String,
    span_id: String,
}

/// The apps resources of a cell, created like [`AgentFixture`].
#[derive(Default)]
struct AppFixture {
    /// An INTERNAL app of `org` with the slug [`APP_SLUG`], and its
    /// service token.
    internal_app: String,
    service_token: String,
    /// A PUBLIC app of `org` with the slug [`PUBLIC_APP_SLUG`], installed
    /// nowhere.
    public_app: String,
    /// The installation of `internal_app` into `org`. InstallApp cells
    /// install the app themselves and get none.
    installation: String,
}

/// Content of every fixture file, and its base64 for UploadFile chunks.
const FILE_CONTENT: &[u8] = b"hello";
const FILE_CONTENT_BASE64: &str = "aGVsbG8=";

const APP_SLUG: &str = "helper";
const PUBLIC_APP_SLUG: &str = "public-helper";

/// A trace id and a span id that no fixture exports, as base64.
const UNKNOWN_TRACE_ID: &str = "AQEBAQEBAQEBAQEBAQEBAQ==";
const UNKNOWN_SPAN_ID: &str = "AQEBAQEBAQE=";

/// Agents methods whose cells also get [`AgentFixture::maintained_agent`].
const MAINTAINER_METHODS: &[&str] = &[
    "UpdateAgent",
    "DeleteAgent",
    "SetAgentRole",
    "RemoveAgentRole",
    "ListAgentRoles",
    "CreateSkill",
    "ListSkills",
];

/// Returns a script that replies to TestModel's prompt.
fn test_script() -> Value {
    json!({"rules": [{"steps": [{"text": "Hello from the script"}]}]})
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
    let threads = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.threads.v1.ThreadsGateway/{method}").into_boxed_str())
    };
    let chat = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.chat.v1.ChatGateway/{method}").into_boxed_str())
    };
    let llm = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.llm.v1.LLMGateway/{method}").into_boxed_str())
    };
    let secrets = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.secrets.v1.SecretsGateway/{method}").into_boxed_str())
    };
    let agents = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.agents.v1.AgentsGateway/{method}").into_boxed_str())
    };
    let runners = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.runners.v1.RunnersGateway/{method}").into_boxed_str())
    };
    let files = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.files.v1.FilesGateway/{method}").into_boxed_str())
    };
    let tracing = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.tracing.v1.TracingGateway/{method}").into_boxed_str())
    };
    let apps = |method: &str| -> &'static str {
        Box::leak(format!("agynio.api.apps.v1.AppsGateway/{method}").into_boxed_str())
    };
    let every_user = [UNAUTHENTICATED, OK, OK, OK, OK, OK];
    // The member and the owner take part in the fixture thread; the admin
    // and the owner read it through `can_view_threads`.
    let thread_readers = [UNAUTHENTICATED, DENIED, OK, OK, DENIED, OK];
    let participants = [UNAUTHENTICATED, DENIED, OK, OK, DENIED, DENIED];
    let managers = [UNAUTHENTICATED, DENIED, DENIED, OK, DENIED, OK];
    let readers = [UNAUTHENTICATED, DENIED, OK, OK, DENIED, OK];
    // Cells whose agent makes the member MAINTAINER.
    let maintainers = [UNAUTHENTICATED, DENIED, OK, OK, DENIED, OK];
    let admins = [UNAUTHENTICATED, DENIED, DENIED, DENIED, DENIED, OK];
    let unknown = [
        UNAUTHENTICATED,
        NOT_FOUND,
        NOT_FOUND,
        NOT_FOUND,
        NOT_FOUND,
        NOT_FOUND,
    ];
    vec![
        // UsersGateway.
        Row {
            shape: Shape::Unary,
            method: users("GetMe"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: users("GetUser"),
            case: "",
            body: |f| json!({"id": f.owner_id}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: users("SearchUsers"),
            case: "",
            body: |_| json!({"prefix": "m"}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: users("CreateAPIToken"),
            case: "",
            body: |_| json!({"name": "ci"}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: users("ListAPITokens"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
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
            shape: Shape::Unary,
            method: users("CreateDevice"),
            case: "",
            body: |_| json!({"name": "laptop"}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: users("ListDevices"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
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
            shape: Shape::Unary,
            method: orgs("CreateOrganization"),
            case: "",
            body: |_| json!({"name": "Fresh"}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("GetOrganization"),
            case: "",
            body: |f| json!({"id": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
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
            shape: Shape::Unary,
            method: orgs("ListOrganizations"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("UpdateOrganization"),
            case: "",
            body: |f| json!({"id": f.org, "name": "Renamed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("DeleteOrganization"),
            case: "",
            body: |f| json!({"id": f.org}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("CreateMembership"),
            case: "owners invite, admins add",
            body: |f| json!({"organizationId": f.org, "identityId": f.target, "role": "MEMBERSHIP_ROLE_MEMBER"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
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
            shape: Shape::Unary,
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
            shape: Shape::Unary,
            method: orgs("RemoveMembership"),
            case: "the member's membership",
            body: |f| json!({"id": f.member_membership}),
            expect: [UNAUTHENTICATED, DENIED, OK, OK, DENIED, OK],
        },
        Row {
            shape: Shape::Unary,
            method: orgs("UpdateMembershipRole"),
            case: "promote the member",
            body: |f| json!({"id": f.member_membership, "role": "MEMBERSHIP_ROLE_OWNER"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("ListMembers"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("ListMembers"),
            case: "pending filter",
            body: |f| json!({"organizationId": f.org, "status": "MEMBERSHIP_STATUS_PENDING"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("ListMyMemberships"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: orgs("GetOrganization"),
            case: "another organization",
            body: |f| json!({"id": f.other_org}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, DENIED, OK, OK],
        },
        // ThreadsGateway.
        Row {
            shape: Shape::Unary,
            method: threads("CreateThread"),
            case: "members create threads",
            body: |f| json!({"organizationId": f.org, "participants": []}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: threads("GetThread"),
            case: "",
            body: |f| json!({"id": f.thread}),
            expect: thread_readers,
        },
        Row {
            shape: Shape::Unary,
            method: threads("ListThreads"),
            case: "mine",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: threads("ListThreads"),
            case: "organization view",
            body: |f| json!({"view": "THREAD_LIST_VIEW_ORGANIZATION", "organizationId": f.org}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: threads("SendMessage"),
            case: "",
            body: |f| json!({"threadId": f.thread, "body": "hello"}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: threads("AckMessages"),
            case: "acks only the caller's rows",
            body: |f| json!({"threadId": f.thread}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: threads("GetUnackedMessages"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: threads("GetMessages"),
            case: "",
            body: |f| json!({"threadId": f.thread}),
            expect: thread_readers,
        },
        Row {
            shape: Shape::Unary,
            method: threads("AddParticipant"),
            case: "",
            body: |f| json!({"threadId": f.thread, "participant": {"id": f.target}}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: threads("DegradeThread"),
            case: "cluster admins only",
            body: |f| json!({"id": f.thread, "reason": "operator"}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, DENIED, DENIED, OK],
        },
        // ChatGateway.
        Row {
            shape: Shape::Unary,
            method: chat("ListConversations"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: chat("GetConversation"),
            case: "",
            body: |f| json!({"id": f.conversation}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: chat("CreateConversation"),
            case: "",
            body: |f| json!({"organizationId": f.org, "participantIds": [f.target]}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: chat("UpdateConversation"),
            case: "",
            body: |f| json!({"id": f.conversation, "summary": "renamed"}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: chat("MarkRead"),
            case: "",
            body: |f| json!({"conversationId": f.conversation}),
            expect: participants,
        },
        Row {
            shape: Shape::Unary,
            method: chat("GetUnackedMessageCounts"),
            case: "",
            body: |_| json!({}),
            expect: every_user,
        },
        // NotificationsGateway.
        Row {
            shape: Shape::ServerStream("ready"),
            method: "agynio.api.notifications.v1.NotificationsGateway/Subscribe",
            case: "own room",
            body: |_| json!({"rooms": ["thread_participant:me", "identity:me"]}),
            expect: every_user,
        },
        Row {
            shape: Shape::ServerStream("ready"),
            method: "agynio.api.notifications.v1.NotificationsGateway/Subscribe",
            case: "organization room",
            body: |f| json!({"rooms": [format!("organization:{}", f.org)]}),
            expect: readers,
        },
        Row {
            shape: Shape::ServerStream("ready"),
            method: "agynio.api.notifications.v1.NotificationsGateway/Subscribe",
            case: "the owner's identity room",
            body: |f| json!({"rooms": [format!("identity:{}", f.owner_id)]}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, OK, DENIED, DENIED],
        },
        // LLMGateway.
        Row {
            shape: Shape::Unary,
            method: llm("CreateProvider"),
            case: "",
            body: |f| json!({"organizationId": f.org, "name": "created", "script": test_script()}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("GetProvider"),
            case: "",
            body: |f| json!({"id": f.provider}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("ListProviders"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("UpdateProvider"),
            case: "",
            body: |f| json!({"id": f.provider, "name": "renamed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("DeleteProvider"),
            case: "an unused provider",
            body: |f| json!({"id": f.spare_provider}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("CreateModel"),
            case: "",
            body: |f| {
                json!({"organizationId": f.org, "name": "second", "providerId": f.provider,
                       "remoteName": "scripted-2"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("GetModel"),
            case: "",
            body: |f| json!({"id": f.model}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("ListModels"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("UpdateModel"),
            case: "",
            body: |f| json!({"id": f.model, "name": "renamed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("DeleteModel"),
            case: "",
            body: |f| json!({"id": f.model}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: llm("TestModel"),
            case: "a scripted model",
            body: |f| json!({"modelId": f.model}),
            expect: readers,
        },
        // SecretsGateway.
        Row {
            shape: Shape::Unary,
            method: secrets("CreateSecretProvider"),
            case: "",
            body: |f| {
                json!({"organizationId": f.org, "name": "vault-2",
                       "providerType": "SECRET_PROVIDER_TYPE_VAULT",
                       "config": {"vault": {"address": "http://127.0.0.1:1", "token": "t"}}})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("GetSecretProvider"),
            case: "",
            body: |f| json!({"id": f.secret_provider}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("ListSecretProviders"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("UpdateSecretProvider"),
            case: "",
            body: |f| json!({"id": f.secret_provider, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("DeleteSecretProvider"),
            case: "",
            body: |f| json!({"id": f.secret_provider}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("CreateSecret"),
            case: "",
            body: |f| json!({"organizationId": f.org, "name": "second", "value": "v"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("GetSecret"),
            case: "",
            body: |f| json!({"id": f.secret}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("ListSecrets"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("UpdateSecret"),
            case: "",
            body: |f| json!({"id": f.secret, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("DeleteSecret"),
            case: "",
            body: |f| json!({"id": f.secret}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("CreateImagePullSecret"),
            case: "",
            body: |f| {
                json!({"organizationId": f.org, "registry": "ghcr.io", "username": "bot",
                       "value": "pw"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("GetImagePullSecret"),
            case: "",
            body: |f| json!({"id": f.image_pull_secret}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("ListImagePullSecrets"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("UpdateImagePullSecret"),
            case: "",
            body: |f| json!({"id": f.image_pull_secret, "username": "robot"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: secrets("DeleteImagePullSecret"),
            case: "",
            body: |f| json!({"id": f.image_pull_secret}),
            expect: managers,
        },
        // AgentsGateway. Sub-resources are read with `can_read_config` and
        // written with `can_edit_config` on their agent, which the member
        // lacks on an agent where it has no role.
        Row {
            shape: Shape::Unary,
            method: agents("CreateAgent"),
            case: "",
            body: |f| {
                json!({"organizationId": f.org, "name": "second",
                       "availability": "AGENT_AVAILABILITY_PRIVATE"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetAgent"),
            case: "metadata for every reader",
            body: |f| json!({"id": f.agents.agent}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetAgent"),
            case: "unknown id",
            body: |_| json!({"id": "00000000-0000-4000-8000-000000000000"}),
            expect: unknown,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListAgents"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateAgent"),
            case: "",
            body: |f| json!({"id": f.agents.agent, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateAgent"),
            case: "a maintainer edits",
            body: |f| json!({"id": f.agents.maintained_agent, "description": "changed"}),
            expect: maintainers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateAgent"),
            case: "availability needs can_delete",
            body: |f| {
                json!({"id": f.agents.maintained_agent,
                       "availability": "AGENT_AVAILABILITY_PRIVATE"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteAgent"),
            case: "",
            body: |f| json!({"id": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteAgent"),
            case: "maintainers cannot delete",
            body: |f| json!({"id": f.agents.maintained_agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("SetAgentRole"),
            case: "make the member maintainer",
            body: |f| {
                json!({"agentId": f.agents.agent, "identityId": f.member_id,
                       "role": "AGENT_ROLE_MAINTAINER"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("SetAgentRole"),
            case: "a maintainer promotes itself",
            body: |f| {
                json!({"agentId": f.agents.maintained_agent, "identityId": f.member_id,
                       "role": "AGENT_ROLE_OWNER"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("RemoveAgentRole"),
            case: "an identity without a role",
            body: |f| json!({"agentId": f.agents.agent, "identityId": f.member_id}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("RemoveAgentRole"),
            case: "a maintainer removes itself",
            body: |f| json!({"agentId": f.agents.maintained_agent, "identityId": f.member_id}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListAgentRoles"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListAgentRoles"),
            case: "maintainers cannot list roles",
            body: |f| json!({"agentId": f.agents.maintained_agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListMyAgentRoles"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateVolume"),
            case: "",
            body: |f| {
                json!({"organizationId": f.org, "name": "cache", "persistent": false,
                       "mountPath": "/cache"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetVolume"),
            case: "",
            body: |f| json!({"id": f.agents.volume}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListVolumes"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateVolume"),
            case: "",
            body: |f| json!({"id": f.agents.volume, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteVolume"),
            case: "an unattached volume",
            body: |f| json!({"id": f.agents.volume}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateVolumeAttachment"),
            case: "",
            body: |f| json!({"volumeId": f.agents.volume, "agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetVolumeAttachment"),
            case: "",
            body: |f| json!({"id": f.agents.volume_attachment}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListVolumeAttachments"),
            case: "agent filter",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListVolumeAttachments"),
            case: "volume filter alone",
            body: |f| json!({"volumeId": f.agents.volume}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateVolumeAttachment"),
            case: "",
            body: |f| json!({"id": f.agents.volume_attachment, "readOnly": true}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteVolumeAttachment"),
            case: "",
            body: |f| json!({"id": f.agents.volume_attachment}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateMcp"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent, "name": "search", "command": "mcp-search"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetMcp"),
            case: "",
            body: |f| json!({"id": f.agents.mcp}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListMcps"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateMcp"),
            case: "",
            body: |f| json!({"id": f.agents.mcp, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteMcp"),
            case: "",
            body: |f| json!({"id": f.agents.mcp}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateSkill"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent, "name": "second", "body": "Be brief."}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateSkill"),
            case: "a maintainer adds one",
            body: |f| {
                json!({"agentId": f.agents.maintained_agent, "name": "second",
                       "body": "Be brief."})
            },
            expect: maintainers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetSkill"),
            case: "",
            body: |f| json!({"id": f.agents.skill}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListSkills"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListSkills"),
            case: "a maintainer reads them",
            body: |f| json!({"agentId": f.agents.maintained_agent}),
            expect: maintainers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateSkill"),
            case: "",
            body: |f| json!({"id": f.agents.skill, "body": "Be thorough."}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteSkill"),
            case: "",
            body: |f| json!({"id": f.agents.skill}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateHook"),
            case: "",
            body: |f| {
                json!({"agentId": f.agents.agent, "event": "HOOK_EVENT_TURN_START",
                       "function": "echo start"})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetHook"),
            case: "",
            body: |f| json!({"id": f.agents.hook}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListHooks"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateHook"),
            case: "",
            body: |f| json!({"id": f.agents.hook, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteHook"),
            case: "",
            body: |f| json!({"id": f.agents.hook}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateEnv"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent, "name": "SECOND", "value": "v"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetEnv"),
            case: "",
            body: |f| json!({"id": f.agents.env}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListEnvs"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateEnv"),
            case: "",
            body: |f| json!({"id": f.agents.env, "value": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteEnv"),
            case: "",
            body: |f| json!({"id": f.agents.env}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateInitScript"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent, "script": "echo second"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetInitScript"),
            case: "",
            body: |f| json!({"id": f.agents.init_script}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListInitScripts"),
            case: "",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateInitScript"),
            case: "",
            body: |f| json!({"id": f.agents.init_script, "script": "echo changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteInitScript"),
            case: "",
            body: |f| json!({"id": f.agents.init_script}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("CreateImagePullSecretAttachment"),
            case: "",
            body: |f| json!({"imagePullSecretId": f.image_pull_secret, "agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("GetImagePullSecretAttachment"),
            case: "",
            body: |f| json!({"id": f.agents.pull_secret_attachment}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListImagePullSecretAttachments"),
            case: "agent filter",
            body: |f| json!({"agentId": f.agents.agent}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("ListImagePullSecretAttachments"),
            case: "secret filter alone",
            body: |f| json!({"imagePullSecretId": f.image_pull_secret}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("UpdateImagePullSecretAttachment"),
            case: "",
            body: |f| {
                json!({"id": f.agents.pull_secret_attachment,
                       "imagePullSecretId": f.image_pull_secret})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: agents("DeleteImagePullSecretAttachment"),
            case: "",
            body: |f| json!({"id": f.agents.pull_secret_attachment}),
            expect: managers,
        },
        // RunnersGateway. Workload and provisioned volume reads also admit
        // readers of the thread, which the member takes part in.
        Row {
            shape: Shape::Unary,
            method: runners("RegisterRunner"),
            case: "organization runner",
            body: |f| json!({"name": "second", "organizationId": f.org}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("RegisterRunner"),
            case: "cluster runner",
            // Cluster runner names are unique cluster-wide.
            body: |f| json!({"name": format!("cluster-{}", f.org)}),
            expect: admins,
        },
        Row {
            shape: Shape::Unary,
            method: runners("GetRunner"),
            case: "organization runner",
            body: |f| json!({"id": f.runners.runner}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("GetRunner"),
            case: "cluster runner",
            body: |f| json!({"id": f.runners.cluster_runner}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: runners("GetRunner"),
            case: "unknown id",
            body: |_| json!({"id": "00000000-0000-4000-8000-000000000000"}),
            expect: unknown,
        },
        Row {
            shape: Shape::Unary,
            method: runners("ListRunners"),
            case: "organization runners",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("ListRunners"),
            case: "cluster runners",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: runners("UpdateRunner"),
            case: "organization runner",
            body: |f| json!({"id": f.runners.runner, "name": "renamed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("UpdateRunner"),
            case: "cluster runner",
            body: |f| json!({"id": f.runners.cluster_runner, "labels": {"entries": {"zone": "a"}}}),
            expect: admins,
        },
        Row {
            shape: Shape::Unary,
            method: runners("DeleteRunner"),
            case: "organization runner",
            body: |f| json!({"id": f.runners.runner}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("DeleteRunner"),
            case: "cluster runner",
            body: |f| json!({"id": f.runners.cluster_runner}),
            expect: admins,
        },
        Row {
            shape: Shape::Unary,
            method: runners("EnrollRunner"),
            case: "the service token is the credential",
            body: |f| {
                json!({"serviceToken": f.runners.runner_token,
                       "endpoint": "https://127.0.0.1:1"})
            },
            expect: [OK; 6],
        },
        Row {
            shape: Shape::Unary,
            method: runners("ListWorkloads"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("GetWorkload"),
            case: "",
            body: |f| json!({"id": f.runners.workload}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("GetWorkload"),
            case: "unknown id",
            body: |_| json!({"id": "00000000-0000-4000-8000-000000000000"}),
            expect: unknown,
        },
        Row {
            shape: Shape::Unary,
            method: runners("ListWorkloadsByThread"),
            case: "",
            body: |f| json!({"threadId": f.thread}),
            expect: thread_readers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("TouchWorkload"),
            // NOTE: no column is an agent, so the allowed call is covered
            // only by the runners crate's tests.
            case: "only the workload's agent",
            body: |f| json!({"id": f.runners.workload}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, DENIED, DENIED, DENIED],
        },
        Row {
            shape: Shape::ServerStream("chunk"),
            method: runners("StreamWorkloadLogs"),
            // The workload's runner has no endpoint, so a call that passes
            // the authorization check fails when the service dials it.
            case: "an unreachable runner",
            body: |f| json!({"workloadId": f.runners.workload, "containerName": "agent"}),
            expect: [
                UNAUTHENTICATED,
                DENIED,
                DENIED,
                UNAVAILABLE,
                DENIED,
                UNAVAILABLE,
            ],
        },
        Row {
            shape: Shape::Unary,
            method: runners("GetVolume"),
            case: "",
            body: |f| json!({"id": f.runners.provisioned_volume}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("ListVolumes"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: runners("ListVolumesByThread"),
            case: "",
            body: |f| json!({"threadId": f.thread}),
            expect: thread_readers,
        },
        // FilesGateway. A file is readable by its uploader (the owner), by
        // readers of its organization, and by readers of a thread with a
        // message that references it.
        Row {
            shape: Shape::ClientStream("file"),
            method: files("UploadFile"),
            case: "no organization",
            body: |_| {
                json!([
                    {"metadata": {"filename": "notes.txt", "contentType": "text/plain",
                                  "sizeBytes": FILE_CONTENT.len()}},
                    {"chunk": {"data": FILE_CONTENT_BASE64}},
                ])
            },
            expect: every_user,
        },
        Row {
            shape: Shape::ClientStream("file"),
            method: files("UploadFile"),
            case: "into the organization",
            body: |f| {
                json!([
                    {"metadata": {"filename": "notes.txt", "contentType": "text/plain",
                                  "sizeBytes": FILE_CONTENT.len(), "organizationId": f.org}},
                    {"chunk": {"data": FILE_CONTENT_BASE64}},
                ])
            },
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: files("GetFileMetadata"),
            case: "organization file",
            body: |f| json!({"id": f.files.org_file}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: files("GetFileMetadata"),
            case: "only the uploader",
            body: |f| json!({"id": f.files.private_file}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, OK, DENIED, DENIED],
        },
        Row {
            shape: Shape::Unary,
            method: files("GetFileMetadata"),
            case: "attached in a thread",
            body: |f| json!({"id": f.files.attached_file}),
            expect: thread_readers,
        },
        Row {
            shape: Shape::Unary,
            method: files("GetFileMetadata"),
            case: "unknown id",
            body: |_| json!({"id": "00000000-0000-4000-8000-000000000000"}),
            expect: unknown,
        },
        Row {
            shape: Shape::Unary,
            method: files("GetDownloadUrl"),
            case: "organization file",
            body: |f| json!({"id": f.files.org_file}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: files("GetDownloadUrl"),
            case: "only the uploader",
            body: |f| json!({"id": f.files.private_file, "expiry": "60s"}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, OK, DENIED, DENIED],
        },
        Row {
            shape: Shape::ServerStream("chunkData"),
            method: files("GetFileContent"),
            case: "organization file",
            body: |f| json!({"id": f.files.org_file}),
            expect: readers,
        },
        Row {
            shape: Shape::ServerStream("chunkData"),
            method: files("GetFileContent"),
            case: "attached in a thread",
            body: |f| json!({"id": f.files.attached_file}),
            expect: thread_readers,
        },
        // TracingGateway.
        Row {
            shape: Shape::Unary,
            method: tracing("ListSpans"),
            case: "",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: tracing("GetSpan"),
            case: "",
            body: |f| json!({"traceId": f.traces.trace_id, "spanId": f.traces.span_id}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: tracing("GetSpan"),
            case: "unknown span",
            body: |_| json!({"traceId": UNKNOWN_TRACE_ID, "spanId": UNKNOWN_SPAN_ID}),
            expect: unknown,
        },
        Row {
            shape: Shape::Unary,
            method: tracing("GetTrace"),
            case: "",
            body: |f| json!({"traceId": f.traces.trace_id}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: tracing("GetTrace"),
            case: "unknown trace",
            body: |_| json!({"traceId": UNKNOWN_TRACE_ID}),
            expect: unknown,
        },
        Row {
            shape: Shape::ServerStream("kind"),
            method: tracing("StreamRunEvents"),
            case: "a run with spans",
            body: |f| json!({"runId": f.traces.run_id}),
            expect: readers,
        },
        Row {
            shape: Shape::ServerStream("kind"),
            method: tracing("StreamRunEvents"),
            // Without spans the workload read rule decides, which also
            // admits readers of the workload's thread.
            case: "a workload without spans",
            body: |f| json!({"runId": f.runners.workload}),
            expect: thread_readers,
        },
        Row {
            shape: Shape::ServerStream("kind"),
            method: tracing("StreamRunEvents"),
            case: "unknown run",
            body: |_| json!({"runId": "00000000-0000-4000-8000-000000000000"}),
            expect: unknown,
        },
        // AppsGateway. NOTE: no column is an app, so the rules that admit
        // the app itself are covered only by the apps crate's tests.
        Row {
            shape: Shape::Unary,
            method: apps("CreateApp"),
            case: "",
            body: |f| {
                json!({"organizationId": f.org, "slug": "second", "name": "Second",
                       "permissions": ["thread:create"]})
            },
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("GetApp"),
            case: "internal app",
            body: |f| json!({"id": f.apps.internal_app}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("GetApp"),
            case: "public app",
            body: |f| json!({"id": f.apps.public_app}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: apps("GetApp"),
            case: "unknown id",
            body: |_| json!({"id": "00000000-0000-4000-8000-000000000000"}),
            expect: unknown,
        },
        Row {
            shape: Shape::Unary,
            method: apps("GetAppBySlug"),
            case: "internal app",
            body: |f| json!({"organizationId": f.org, "slug": APP_SLUG}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("GetAppBySlug"),
            case: "public app",
            body: |f| json!({"organizationId": f.org, "slug": PUBLIC_APP_SLUG}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: apps("ListApps"),
            case: "one organization",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("ListApps"),
            case: "public apps",
            body: |_| json!({}),
            expect: every_user,
        },
        Row {
            shape: Shape::Unary,
            method: apps("UpdateApp"),
            case: "",
            body: |f| json!({"id": f.apps.internal_app, "description": "changed"}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("DeleteApp"),
            case: "an app installed nowhere",
            body: |f| json!({"id": f.apps.public_app}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("DeleteApp"),
            case: "an installed app",
            body: |f| json!({"id": f.apps.internal_app}),
            expect: [
                UNAUTHENTICATED,
                DENIED,
                DENIED,
                FAILED_PRECONDITION,
                DENIED,
                FAILED_PRECONDITION,
            ],
        },
        Row {
            shape: Shape::Unary,
            method: apps("InstallApp"),
            case: "internal app, own organization",
            body: |f| json!({"appId": f.apps.internal_app, "organizationId": f.org}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("InstallApp"),
            case: "internal app, another organization",
            body: |f| json!({"appId": f.apps.internal_app, "organizationId": f.other_org}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, DENIED, DENIED, DENIED],
        },
        Row {
            shape: Shape::Unary,
            method: apps("InstallApp"),
            case: "public app, another organization",
            body: |f| json!({"appId": f.apps.public_app, "organizationId": f.other_org}),
            expect: [UNAUTHENTICATED, DENIED, DENIED, DENIED, OK, OK],
        },
        Row {
            shape: Shape::Unary,
            method: apps("GetInstallation"),
            case: "",
            body: |f| json!({"id": f.apps.installation}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("ListInstallations"),
            case: "organization filter",
            body: |f| json!({"organizationId": f.org}),
            expect: readers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("ListInstallations"),
            case: "app filter alone",
            body: |f| json!({"appId": f.apps.internal_app}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("ListInstallations"),
            case: "no filter",
            body: |_| json!({}),
            expect: [
                UNAUTHENTICATED,
                INVALID_ARGUMENT,
                INVALID_ARGUMENT,
                INVALID_ARGUMENT,
                INVALID_ARGUMENT,
                INVALID_ARGUMENT,
            ],
        },
        Row {
            shape: Shape::Unary,
            method: apps("UpdateInstallation"),
            case: "",
            body: |f| json!({"id": f.apps.installation, "configuration": {"greeting": "hi"}}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("UninstallApp"),
            case: "",
            body: |f| json!({"id": f.apps.installation}),
            expect: managers,
        },
        Row {
            shape: Shape::Unary,
            method: apps("EnrollApp"),
            // Each server allows 10 EnrollApp calls per minute, and this
            // row makes six.
            case: "the service token is the credential",
            body: |f| json!({"serviceToken": f.apps.service_token}),
            expect: [OK; 6],
        },
    ]
}

/// The server under test and the principals' credentials.
struct World {
    base: String,
    client: reqwest::Client,
    users: Users,
    orgs: Organizations,
    runners: agyn_runners::Runners,
    /// `(identity id, API token)` per column; `None` for anonymous.
    principals: Vec<Option<(String, String)>>,
}

fn column_of(who: Who) -> usize {
    COLUMNS.iter().position(|column| *column == who).unwrap()
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
        let master_key = agyn_pki::MasterKey::generate();
        let pki = agyn_pki::Pki::load_or_create(db.clone(), &master_key)
            .await
            .unwrap();
        let events =
            agyn_events::Events::start(db.clone(), agyn_events::EventsConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files_dir =
            std::env::temp_dir().join(format!("agyn-matrix-files-{}", agyn_core::id::new_id()));
        let objects = std::sync::Arc::new(agyn_files::LocalStore::open(&files_dir).await.unwrap());
        let platform = Platform::new(db, pki, master_key, events, objects, &base);
        let orgs = platform.orgs.clone();
        let users = platform.users.clone();
        let runners = platform.runners.clone();
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
            runners,
            principals,
        }
    }

    fn id(&self, who: Who) -> &str {
        &self.principals[column_of(who)].as_ref().unwrap().0
    }

    fn token(&self, who: Who) -> &str {
        &self.principals[column_of(who)].as_ref().unwrap().1
    }

    /// Calls a fixture-building method that must succeed; returns its
    /// response.
    async fn post(&self, token: &str, method: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/{method}", self.base))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let value: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(status.is_success(), "fixture call {method} failed: {value}");
        value
    }

    /// Creates the organizations, memberships and tokens one cell uses,
    /// plus the resources of the service that `method` belongs to.
    async fn fixture(&self, method: &str) -> Fixture {
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
        // Concurrent cells that request one username race on it, so each
        // cell uses its own.
        let id = agyn_core::id::new_id();
        let target = new_user(&self.users, &format!("target{}", &id[id.len() - 12..])).await;
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
        let owner_credential = self.token(Who::Owner);
        // Threads, chat and notifications rows need a thread and a
        // conversation, and files and workload rows need the thread alone.
        // Creating them for every cell would double the run.
        let (mut thread, mut conversation) = Default::default();
        let messaging = ["threads", "chat", "notifications"]
            .iter()
            .any(|service| method.starts_with(&format!("agynio.api.{service}.")));
        let files_method = method.starts_with("agynio.api.files.");
        if messaging || files_method || is_workload_method(method) {
            thread = self
                .post(
                    owner_credential,
                    "agynio.api.threads.v1.ThreadsGateway/CreateThread",
                    json!({"organizationId": org, "participants": [{"id": self.id(Who::Member)}]}),
                )
                .await["thread"]["meta"]["id"]
                .as_str()
                .unwrap()
                .to_string();
            self.post(
                owner_credential,
                "agynio.api.threads.v1.ThreadsGateway/SendMessage",
                json!({"threadId": thread, "body": "welcome"}),
            )
            .await;
        }
        if messaging {
            conversation = self
                .post(
                    owner_credential,
                    "agynio.api.chat.v1.ChatGateway/CreateConversation",
                    json!({"organizationId": org, "participantIds": [self.id(Who::Member)]}),
                )
                .await["conversation"]["meta"]["id"]
                .as_str()
                .unwrap()
                .to_string();
        }
        let (mut provider, mut spare_provider, mut model) = Default::default();
        if method.starts_with("agynio.api.llm.") {
            provider = created(
                self.post(
                    owner_credential,
                    "agynio.api.llm.v1.LLMGateway/CreateProvider",
                    json!({"organizationId": org, "name": "scripted", "script": test_script()}),
                )
                .await,
                "provider",
            );
            spare_provider = created(
                self.post(
                    owner_credential,
                    "agynio.api.llm.v1.LLMGateway/CreateProvider",
                    json!({"organizationId": org, "name": "spare", "script": test_script()}),
                )
                .await,
                "provider",
            );
            model = created(
                self.post(
                    owner_credential,
                    "agynio.api.llm.v1.LLMGateway/CreateModel",
                    json!({"organizationId": org, "name": "scripted", "providerId": provider,
                           "remoteName": "scripted-1"}),
                )
                .await,
                "model",
            );
        }
        let (mut secret_provider, mut secret, mut image_pull_secret) = Default::default();
        if method.starts_with("agynio.api.secrets.") || method.contains("ImagePullSecretAttachment")
        {
            image_pull_secret = self
                .create(
                    "agynio.api.secrets.v1.SecretsGateway/CreateImagePullSecret",
                    json!({"organizationId": org, "registry": "ghcr.io", "username": "bot",
                           "value": "pw"}),
                    "imagePullSecret",
                )
                .await;
        }
        if method.starts_with("agynio.api.secrets.") {
            secret_provider = created(
                self.post(
                    owner_credential,
                    "agynio.api.secrets.v1.SecretsGateway/CreateSecretProvider",
                    json!({"organizationId": org, "name": "vault",
                           "providerType": "SECRET_PROVIDER_TYPE_VAULT",
                           "config": {"vault": {"address": "http://127.0.0.1:1", "token": "t"}}}),
                )
                .await,
                "secretProvider",
            );
            secret = created(
                self.post(
                    owner_credential,
                    "agynio.api.secrets.v1.SecretsGateway/CreateSecret",
                    json!({"organizationId": org, "name": "api-key", "value": "v"}),
                )
                .await,
                "secret",
            );
        }
        let agents = self.agent_fixture(method, &org).await;
        let runners = self.runner_fixture(method, &org, &thread, &agents).await;
        let files = self.file_fixture(method, &org, &thread).await;
        let traces = self.trace_fixture(method, &org).await;
        let apps = self.app_fixture(method, &org).await;
        Fixture {
            provider,
            model,
            spare_provider,
            secret_provider,
            secret,
            image_pull_secret,
            thread,
            conversation,
            owner_device,
            org,
            other_org,
            member_membership,
            invitation,
            target,
            owner_id: self.id(Who::Owner).to_string(),
            member_id: self.id(Who::Member).to_string(),
            owner_token,
            agents,
            runners,
            files,
            traces,
            apps,
        }
    }

    /// Calls a Create `method` as the owner and returns the id of the
    /// resource in the response's `field`.
    async fn create(&self, method: &str, body: Value, field: &str) -> String {
        created(self.post(self.token(Who::Owner), method, body).await, field)
    }

    /// Creates the agents resources that `method` uses: an agent for every
    /// agents method and every workload method, and the sub-resources that
    /// the method name mentions.
    async fn agent_fixture(&self, method: &str, org: &str) -> AgentFixture {
        let agents_method = method.starts_with("agynio.api.agents.");
        if !agents_method && !is_workload_method(method) {
            return AgentFixture::default();
        }
        let name = method_name(method);
        let agents = |method: &str| format!("agynio.api.agents.v1.AgentsGateway/{method}");
        let new_agent = |name: &str| {
            json!({"organizationId": org, "name": name,
                   "availability": "AGENT_AVAILABILITY_INTERNAL"})
        };

        let mut fixture = AgentFixture {
            agent: self
                .create(&agents("CreateAgent"), new_agent("helper"), "agent")
                .await,
            ..AgentFixture::default()
        };
        let agent = fixture.agent.clone();
        if name.contains("Volume") || is_workload_method(method) {
            fixture.volume = self
                .create(
                    &agents("CreateVolume"),
                    json!({"organizationId": org, "name": "data", "persistent": true,
                           "mountPath": "/data", "size": "1Gi"}),
                    "volume",
                )
                .await;
        }

        if !agents_method {
            return fixture;
        }

        if MAINTAINER_METHODS.contains(&name) {
            fixture.maintained_agent = self
                .create(&agents("CreateAgent"), new_agent("maintained"), "agent")
                .await;
            self.post(
                self.token(Who::Owner),
                &agents("SetAgentRole"),
                json!({"agentId": fixture.maintained_agent, "identityId": self.id(Who::Member),
                       "role": "AGENT_ROLE_MAINTAINER"}),
            )
            .await;
        }

        // Create rows attach on their own, and a fixture attachment would
        // collide with theirs (a volume) or go unused (a secret).
        if name.contains("VolumeAttachment") && name != "CreateVolumeAttachment" {
            fixture.volume_attachment = self
                .create(
                    &agents("CreateVolumeAttachment"),
                    json!({"volumeId": fixture.volume, "agentId": agent}),
                    "volumeAttachment",
                )
                .await;
        }

        if name.contains("ImagePullSecretAttachment") && name != "CreateImagePullSecretAttachment" {
            let image_pull_secret = self
                .create(
                    "agynio.api.secrets.v1.SecretsGateway/CreateImagePullSecret",
                    json!({"organizationId": org, "registry": "quay.io", "username": "bot",
                           "value": "pw"}),
                    "imagePullSecret",
                )
                .await;
            fixture.pull_secret_attachment = self
                .create(
                    &agents("CreateImagePullSecretAttachment"),
                    json!({"imagePullSecretId": image_pull_secret, "agentId": agent}),
                    "imagePullSecretAttachment",
                )
                .await;
        }

        // Each sub-resource of the agent, with the word in the method names
        // that selects it and the field of its Create response.
        let children = [
            (
                "Mcp",
                json!({"agentId": agent, "name": "files", "command": "mcp-files"}),
                "mcp",
                &mut fixture.mcp,
            ),
            (
                "Skill",
                json!({"agentId": agent, "name": "review", "body": "Check the diff."}),
                "skill",
                &mut fixture.skill,
            ),
            (
                "Hook",
                json!({"agentId": agent, "event": "HOOK_EVENT_TURN_END", "function": "echo done"}),
                "hook",
                &mut fixture.hook,
            ),
            (
                "Env",
                json!({"agentId": agent, "name": "GREETING", "value": "hello"}),
                "env",
                &mut fixture.env,
            ),
            (
                "InitScript",
                json!({"agentId": agent, "script": "echo ready"}),
                "initScript",
                &mut fixture.init_script,
            ),
        ];
        for (resource, body, field, id) in children {
            if name.contains(resource) {
                *id = self
                    .create(&agents(&format!("Create{resource}")), body, field)
                    .await;
            }
        }

        fixture
    }

    /// Creates the runners resources that `method` uses: an organization
    /// runner for every runners method and every workload method, a
    /// cluster runner for the runner methods, and a workload with a
    /// provisioned volume for the workload methods.
    async fn runner_fixture(
        &self,
        method: &str,
        org: &str,
        thread: &str,
        agents: &AgentFixture,
    ) -> RunnerFixture {
        if !method.starts_with("agynio.api.runners.") && !is_workload_method(method) {
            return RunnerFixture::default();
        }
        let register = "agynio.api.runners.v1.RunnersGateway/RegisterRunner";
        let registered = self
            .post(
                self.token(Who::Owner),
                register,
                json!({"name": "matrix", "organizationId": org}),
            )
            .await;
        let mut fixture = RunnerFixture {
            runner: registered["runner"]["meta"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
            runner_token: registered["serviceToken"].as_str().unwrap().to_string(),
            ..RunnerFixture::default()
        };

        if method_name(method).contains("Runner") {
            // Cluster runner names are unique cluster-wide.
            let body = json!({"name": format!("shared-{org}")});
            fixture.cluster_runner = created(
                self.post(self.token(Who::Admin), register, body).await,
                "runner",
            );
        }

        if is_workload_method(method) {
            fixture.workload = agyn_core::id::new_id();
            fixture.provisioned_volume = agyn_core::id::new_id();
            let workload = agyn_runners::NewWorkload {
                id: fixture.workload.clone(),
                runner_id: fixture.runner.clone(),
                thread_id: thread.to_string(),
                agent_id: agents.agent.clone(),
                organization_id: org.to_string(),
                containers: vec![runners_pb::Container {
                    name: "agent".to_string(),
                    role: runners_pb::ContainerRole::CONTAINER_ROLE_MAIN.into(),
                    image: "agyn/agyn:test".to_string(),
                    status: runners_pb::ContainerStatus::CONTAINER_STATUS_WAITING.into(),
                    ..Default::default()
                }],
                credential_id: format!("serial-{}", fixture.workload),
                provisioned_volumes: vec![agyn_runners::NewWorkloadVolume {
                    id: fixture.provisioned_volume.clone(),
                    volume_id: agents.volume.clone(),
                    size: "1Gi".to_string(),
                }],
                ..Default::default()
            };
            self.runners
                .create_workload(&Caller::Component("orchestrator"), &workload)
                .await
                .unwrap();
        }

        fixture
    }

    /// Uploads [`FILE_CONTENT`] as the owner with the `POST /files` route,
    /// into `org` when one is given, and returns the file id.
    async fn upload(&self, org: Option<&str>) -> String {
        let mut query = vec![("filename", "notes.txt")];
        if let Some(org) = org {
            query.push(("organization_id", org));
        }
        let response = self
            .client
            .post(format!("{}/files", self.base))
            .query(&query)
            .header("content-type", "text/plain")
            .bearer_auth(self.token(Who::Owner))
            .body(FILE_CONTENT)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "fixture upload failed: {text}");
        let file: Value = serde_json::from_str(&text).unwrap();
        file["meta"]["id"].as_str().unwrap().to_string()
    }

    /// Creates the files that the files methods use and attaches one of
    /// them to a message of `thread`.
    async fn file_fixture(&self, method: &str, org: &str, thread: &str) -> FileFixture {
        if !method.starts_with("agynio.api.files.") {
            return FileFixture::default();
        }
        let fixture = FileFixture {
            org_file: self.upload(Some(org)).await,
            private_file: self.upload(None).await,
            attached_file: self.upload(None).await,
        };
        self.post(
            self.token(Who::Owner),
            "agynio.api.threads.v1.ThreadsGateway/SendMessage",
            json!({"threadId": thread, "body": "notes attached",
                   "fileIds": [fixture.attached_file]}),
        )
        .await;
        fixture
    }

    /// Exports the fixture trace of the tracing methods over OTLP/HTTP as
    /// the owner, then reads the ids back in their Connect JSON encoding.
    async fn trace_fixture(&self, method: &str, org: &str) -> TraceFixture {
        if !method.starts_with("agynio.api.tracing.") {
            return TraceFixture::default();
        }
        let run = uuid::Uuid::new_v4();
        let export = json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "agyn.organization.id", "value": {"stringValue": org}}
            ]},
            "scopeSpans": [{
                "scope": {"name": "matrix"},
                "spans": [{
                    // OTLP/JSON encodes ids as hex.
                    "traceId": run.simple().to_string(),
                    "spanId": "0000000000000001",
                    "name": "llm.call",
                    "kind": 3,
                    "startTimeUnixNano": "1700000000000000000",
                    "endTimeUnixNano": "1700000001000000000"
                }]
            }]
        }]});
        let owner = self.token(Who::Owner);
        self.post(owner, "v1/traces", export).await;
        let listed = self
            .post(
                owner,
                "agynio.api.tracing.v1.TracingGateway/ListSpans",
                json!({"organizationId": org}),
            )
            .await;
        let span = &listed["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        TraceFixture {
            run_id: run.hyphenated().to_string(),
            trace_id: span["traceId"].as_str().unwrap().to_string(),
            span_id: span["spanId"].as_str().unwrap().to_string(),
        }
    }

    /// Creates the apps that the apps methods use, and installs the
    /// internal app into `org` unless `method` is InstallApp.
    async fn app_fixture(&self, method: &str, org: &str) -> AppFixture {
        if !method.starts_with("agynio.api.apps.") {
            return AppFixture::default();
        }
        let apps = |method: &str| format!("agynio.api.apps.v1.AppsGateway/{method}");
        let owner = self.token(Who::Owner);
        let internal = self
            .post(
                owner,
                &apps("CreateApp"),
                json!({"organizationId": org, "slug": APP_SLUG, "name": "Helper",
                       "visibility": "APP_VISIBILITY_INTERNAL",
                       "permissions": ["thread:create", "thread:write"]}),
            )
            .await;
        let mut fixture = AppFixture {
            service_token: internal["serviceToken"].as_str().unwrap().to_string(),
            internal_app: created(internal, "app"),
            public_app: created(
                self.post(
                    owner,
                    &apps("CreateApp"),
                    json!({"organizationId": org, "slug": PUBLIC_APP_SLUG,
                           "name": "Public helper", "visibility": "APP_VISIBILITY_PUBLIC"}),
                )
                .await,
                "app",
            ),
            ..AppFixture::default()
        };
        if method_name(method) != "InstallApp" {
            fixture.installation = created(
                self.post(
                    owner,
                    &apps("InstallApp"),
                    json!({"appId": fixture.internal_app, "organizationId": org}),
                )
                .await,
                "installation",
            );
        }
        fixture
    }

    /// Deletes what a cell left behind that counts against a limit: the
    /// owner's fixture device (a user may have at most 100) and API token
    /// (at most 1,000).
    async fn clean_up(&self, fixture: &Fixture) {
        let owner = user_caller(self.id(Who::Owner));
        // The cell may have deleted them already.
        let _ = self
            .users
            .delete_device(&owner, &fixture.owner_device)
            .await;
        let _ = self
            .users
            .revoke_api_token(&owner, &fixture.owner_token)
            .await;
    }

    /// Calls a streaming `method` with the Connect protocol (JSON
    /// envelopes), sending `messages` as the request stream. Returns `ok`
    /// once the first response message arrives and carries `field`, or the
    /// error code.
    async fn call_stream(
        &self,
        who: usize,
        method: &str,
        messages: &[Value],
        field: &str,
    ) -> String {
        let mut framed = Vec::new();
        for message in messages {
            let message = message.to_string().into_bytes();
            framed.push(0u8);
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
        }
        let mut request = self
            .client
            .post(format!("{}/{method}", self.base))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(framed);
        if let Some((_, token)) = &self.principals[who] {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.unwrap();
        let status = response.status();
        let mut buffer = Vec::new();
        while buffer.len() < 5 || buffer.len() < 5 + frame_len(&buffer) {
            match response.chunk().await.unwrap() {
                Some(chunk) => buffer.extend_from_slice(&chunk),
                None => break,
            }
        }
        if !status.is_success() || buffer.len() < 5 {
            let error: Value = serde_json::from_slice(&buffer).unwrap_or(Value::Null);
            return error["code"].as_str().unwrap_or("missing code").to_string();
        }
        let payload: Value = serde_json::from_slice(&buffer[5..5 + frame_len(&buffer)]).unwrap();
        if buffer[0] & 0x02 != 0 {
            // An end-of-stream message: the call failed or ended empty.
            return payload["error"]["code"]
                .as_str()
                .unwrap_or("ended without a message")
                .to_string();
        }
        assert!(
            payload.get(field).is_some(),
            "{method}: the first message has no {field}: {payload}"
        );
        OK.to_string()
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

/// Returns the id of the resource in a Create response's `field`.
fn created(reply: Value, field: &str) -> String {
    reply[field]["meta"]["id"].as_str().unwrap().to_string()
}

/// Returns the method part of a `package.Service/Method` path.
fn method_name(method: &str) -> &str {
    method.rsplit('/').next().unwrap_or_default()
}

/// Returns whether the cells of `method` get a workload: the runners
/// methods that read or change a workload or a provisioned volume, and
/// StreamRunEvents, whose run may be a workload without spans.
fn is_workload_method(method: &str) -> bool {
    let name = method_name(method);
    let runners = method.starts_with("agynio.api.runners.")
        && (name.contains("Workload") || name.contains("Volume"));
    runners || method == "agynio.api.tracing.v1.TracingGateway/StreamRunEvents"
}

/// Length of the first Connect envelope in `buffer` (at least 5 bytes).
fn frame_len(buffer: &[u8]) -> usize {
    u32::from_be_bytes(buffer[1..5].try_into().unwrap()) as usize
}

/// Cells that run at once. Each cell has its own fixtures, so this number
/// changes only the wall time.
const CONCURRENT_CELLS: usize = 8;

/// Runs the cell of `row` in `column` and returns a description of the
/// mismatch, if any.
async fn run_cell(world: &World, row: &Row, column: usize) -> Option<String> {
    let fixture = world.fixture(row.method).await;
    let body = (row.body)(&fixture);
    let got = match row.shape {
        Shape::Unary => world.call(column, row.method, &body).await,
        Shape::ServerStream(field) => {
            let messages = std::slice::from_ref(&body);
            world.call_stream(column, row.method, messages, field).await
        }
        Shape::ClientStream(field) => {
            let messages = body.as_array().expect("a client stream body is an array");
            world.call_stream(column, row.method, messages, field).await
        }
    };
    world.clean_up(&fixture).await;
    let expected = row.expect[column];
    (got != expected).then(|| {
        format!(
            "{} [{}] as {:?}: expected {expected}, got {got}",
            row.method, row.case, COLUMNS[column]
        )
    })
}

async fn matrix(backend: Backend) {
    let world = World::start(backend).await;
    let rows = rows();
    let cells: Vec<(&Row, usize)> = rows
        .iter()
        .flat_map(|row| (0..COLUMNS.len()).map(move |column| (row, column)))
        .collect();
    let cell_count = cells.len();
    let mismatches: Vec<String> = futures::stream::iter(cells)
        .map(|(row, column)| run_cell(&world, row, column))
        .buffered(CONCURRENT_CELLS)
        .filter_map(std::future::ready)
        .collect()
        .await;
    assert!(
        mismatches.is_empty(),
        "{} of {cell_count} cells differ:\n{}",
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
