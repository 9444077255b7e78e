//! Which platform components may call each internal method: the stand-in
//! for a service-mesh authorization policy on the internal listener.
//!
//! A component is named by its certificate (`agyn://component/<name>`).
//! Internal methods that mirror a gateway method (the internal service's
//! copy of a public method) accept the `gateway` component only, which
//! forwards the public caller. Every other method lists its callers in
//! [`ALLOW_LIST`]; a method that is not covered accepts no one.

/// Every component name the platform issues certificates to.
pub const COMPONENTS: &[&str] = &[
    "gateway",
    "bootstrap",
    "orchestrator",
    "users",
    "organizations",
    "agents",
    "runners",
    "threads",
    "chat",
    "files",
    "llm",
    "secrets",
    "tracing",
    "apps",
    "notifications",
    "admin",
];

/// Every component but `gateway`.
const AUTHORIZATION_WRITERS: &[&str] = &[
    "bootstrap",
    "orchestrator",
    "users",
    "organizations",
    "agents",
    "runners",
    "threads",
    "chat",
    "files",
    "llm",
    "secrets",
    "tracing",
    "apps",
    "notifications",
    "admin",
];

/// Every component but `gateway` and `bootstrap`.
const AUTHORIZATION_READERS: &[&str] = AUTHORIZATION_WRITERS.split_at(1).1;

/// `(method path, allowed components)`; a path ending in `/` covers every
/// method of the service.
const ALLOW_LIST: &[(&str, &[&str])] = &[
    (
        "/agynio.api.identity.v1.IdentityService/RegisterIdentity",
        &["users", "agents", "runners", "apps", "bootstrap"],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/UnregisterIdentity",
        &["users", "agents", "runners", "apps", "bootstrap"],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/GetIdentityType",
        &[
            "gateway",
            "threads",
            "chat",
            "organizations",
            "notifications",
            "agents",
            "apps",
        ],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/BatchGetIdentityTypes",
        &[
            "gateway",
            "threads",
            "chat",
            "organizations",
            "notifications",
            "agents",
            "apps",
        ],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/SetNickname",
        &["organizations", "agents", "apps"],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/RemoveNickname",
        &["organizations", "agents", "apps"],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/ResolveNickname",
        &["threads"],
    ),
    (
        "/agynio.api.identity.v1.IdentityService/BatchGetNicknames",
        &["threads", "chat", "organizations"],
    ),
    (
        "/agynio.api.users.v1.UsersService/ResolveOrCreateUser",
        &["gateway"],
    ),
    (
        "/agynio.api.users.v1.UsersService/ResolveAPIToken",
        &["gateway"],
    ),
    (
        "/agynio.api.users.v1.UsersService/BatchGetUsers",
        &["chat", "organizations", "threads"],
    ),
    (
        "/agynio.api.users.v1.UsersService/SetClusterAdmin",
        &["bootstrap", "admin"],
    ),
    (
        "/agynio.api.organizations.v1.OrganizationsService/GetOrganizationState",
        &[
            "agents", "runners", "threads", "chat", "llm", "secrets", "apps", "files",
        ],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/GetUnackedMessageCounts",
        &["chat"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/BatchGetThreads",
        &["chat"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/ListPendingAgentWork",
        &["orchestrator", "chat"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/ArchiveThread",
        &["admin"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/ListThreadsReferencingFile",
        &["files"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/GetMessageInternal",
        &["tracing"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/DegradeThread",
        &["gateway", "orchestrator"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/CreateThread",
        &["gateway", "chat"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/SendMessage",
        &["gateway", "chat"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/AckMessages",
        &["gateway", "chat"],
    ),
    (
        "/agynio.api.threads.v1.ThreadsService/DeleteOrganizationResources",
        &["organizations"],
    ),
    (
        "/agynio.api.chat.v1.ChatService/DeleteOrganizationResources",
        &["organizations"],
    ),
    ("/agynio.api.llm.v1.LLMService/ResolveModel", &["gateway"]),
    (
        "/agynio.api.llm.v1.LLMService/GetModel",
        &["gateway", "agents"],
    ),
    (
        "/agynio.api.llm.v1.LLMService/DeleteOrganizationResources",
        &["organizations"],
    ),
    (
        "/agynio.api.secrets.v1.SecretsService/ResolveSecret",
        &["orchestrator"],
    ),
    (
        "/agynio.api.secrets.v1.SecretsService/ResolveImagePullSecret",
        &["orchestrator"],
    ),
    (
        "/agynio.api.secrets.v1.SecretsService/SecretExists",
        &["agents"],
    ),
    (
        "/agynio.api.secrets.v1.SecretsService/ImagePullSecretExists",
        &["agents"],
    ),
    (
        "/agynio.api.secrets.v1.SecretsService/DeleteOrganizationResources",
        &["organizations"],
    ),
    (
        "/agynio.api.agents.v1.AgentsService/ResolveAgentIdentity",
        &["gateway", "tracing", "notifications", "threads"],
    ),
    (
        "/agynio.api.agents.v1.AgentsService/GetAgentBundle",
        &["orchestrator"],
    ),
    (
        "/agynio.api.agents.v1.AgentsService/GetAgent",
        &["gateway", "orchestrator", "notifications"],
    ),
    (
        "/agynio.api.agents.v1.AgentsService/CountSecretReferences",
        &["secrets"],
    ),
    (
        "/agynio.api.agents.v1.AgentsService/CountImagePullSecretReferences",
        &["secrets"],
    ),
    (
        "/agynio.api.agents.v1.AgentsService/DeleteOrganizationResources",
        &["organizations"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/CreateWorkload",
        &["orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/UpdateWorkload",
        &["orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/CreateProvisionedVolume",
        &["orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/UpdateProvisionedVolume",
        &["orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/SetRunnerStatus",
        &["orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/ListWorkloadsInternal",
        &["orchestrator", "chat"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/ListVolumesInternal",
        &["orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/GetRunner",
        &["gateway", "orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/ListRunners",
        &["gateway", "orchestrator"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/GetWorkload",
        &["gateway", "notifications"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/ResolveWorkloadCredential",
        &["gateway"],
    ),
    (
        "/agynio.api.runners.v1.RunnersService/DeleteOrganizationResources",
        &["organizations"],
    ),
    (
        "/agynio.api.apps.v1.AppsService/GetInstallationBySlug",
        &["gateway"],
    ),
    (
        "/agynio.api.apps.v1.AppsService/GetAppByIdentity",
        &["gateway"],
    ),
    (
        "/agynio.api.apps.v1.AppsService/DeleteOrganizationResources",
        &["organizations"],
    ),
    (
        "/agynio.api.files.v1.FilesService/GetFileMetadata",
        &["gateway", "threads"],
    ),
    // The built-in runner's protocol on the internal listener: lifecycle
    // calls come from the orchestrator, log streams from the runners
    // service.
    (
        "/agynio.api.runner.v1.RunnerService/StreamWorkloadLogs",
        &["runners"],
    ),
    ("/agynio.api.runner.v1.RunnerService/", &["orchestrator"]),
    (
        "/agynio.api.notifications.v1.NotificationsService/Publish",
        &["threads", "agents", "runners", "tracing", "organizations"],
    ),
    (
        "/agynio.api.notifications.v1.NotificationsService/Subscribe",
        &["orchestrator", "gateway"],
    ),
    // Bootstrap writes tuples but reads none; the gateway never calls it.
    (
        "/agynio.api.authorization.v1.AuthorizationService/Write",
        AUTHORIZATION_WRITERS,
    ),
    (
        "/agynio.api.authorization.v1.AuthorizationService/",
        AUTHORIZATION_READERS,
    ),
    // Health and reflection serve every component.
    ("/grpc.health.v1.Health/", COMPONENTS),
    ("/grpc.reflection.v1.ServerReflection/", COMPONENTS),
    ("/grpc.reflection.v1alpha.ServerReflection/", COMPONENTS),
];

/// Returns the components allowed to call `path` on the internal listener.
pub fn allowed_components(path: &str) -> &'static [&'static str] {
    if let Some((_, allowed)) = ALLOW_LIST.iter().find(|(method, _)| *method == path) {
        return allowed;
    }
    if let Some((_, allowed)) = ALLOW_LIST
        .iter()
        .find(|(prefix, _)| prefix.ends_with('/') && path.starts_with(prefix))
    {
        return allowed;
    }
    if mirrors_gateway_method(path) {
        return &["gateway"];
    }
    &[]
}

/// Returns the `'static` name of a known component.
pub fn component(name: &str) -> Option<&'static str> {
    COMPONENTS.iter().copied().find(|known| *known == name)
}

/// Whether `/<package>.<Name>Service/<Method>` has a public twin
/// `/<package>.<Name>Gateway/<Method>`.
fn mirrors_gateway_method(path: &str) -> bool {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return false;
    };
    let Some(stem) = service.strip_suffix("Service") else {
        return false;
    };
    let twin = format!("/{stem}Gateway/{method}");
    agyn_api::GATEWAY_METHODS
        .iter()
        .any(|(gateway, ..)| *gateway == twin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_entries_win_over_service_entries() {
        let write = allowed_components("/agynio.api.authorization.v1.AuthorizationService/Write");
        assert!(write.contains(&"bootstrap"));
        let check = allowed_components("/agynio.api.authorization.v1.AuthorizationService/Check");
        assert!(!check.contains(&"bootstrap"));
        assert!(!check.contains(&"gateway"));
    }

    #[test]
    fn authorization_lists_follow_the_components() {
        for component in COMPONENTS {
            let writer = AUTHORIZATION_WRITERS.contains(component);
            let reader = AUTHORIZATION_READERS.contains(component);
            assert_eq!(writer, *component != "gateway", "{component}");
            assert_eq!(
                reader,
                !matches!(*component, "gateway" | "bootstrap"),
                "{component}"
            );
        }
    }

    #[test]
    fn gateway_twins_accept_the_gateway_only() {
        assert_eq!(
            allowed_components("/agynio.api.users.v1.UsersService/GetMe"),
            &["gateway"]
        );
        assert_eq!(
            allowed_components(
                "/agynio.api.organizations.v1.OrganizationsService/CreateOrganization"
            ),
            &["gateway"]
        );
    }

    #[test]
    fn unknown_methods_accept_no_one() {
        assert!(allowed_components("/agynio.api.users.v1.UsersService/Nope").is_empty());
        assert!(allowed_components("/other.Service/Method").is_empty());
    }
}
