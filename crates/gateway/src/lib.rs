//! The gateway: everything between a socket and a service.
//!
//! [`public_app`] builds the public listener's application: every
//! `<Service>Gateway` over Connect, gRPC and gRPC-Web at `/` and under
//! `/api/`, gRPC health and reflection, `GET /healthz`, `GET /readyz` and
//! CORS. [`internal_app`] builds the internal listener's application with
//! the internal `<Service>Service`s.

mod auth;
pub mod connector;
mod enroll;
mod guard;
mod http_auth;
mod layer;
mod llm_proxy;
mod llm_usage;
mod policy;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use agyn_agents::service::{AgentsGatewayRpc, AgentsRpc};
use agyn_api_agents::agynio::api::agents::v1::{
    AGENTS_GATEWAY_SERVICE_NAME, AGENTS_SERVICE_SERVICE_NAME,
};
use agyn_api_apps::agynio::api::apps::v1::{APPS_GATEWAY_SERVICE_NAME, APPS_SERVICE_SERVICE_NAME};
use agyn_api_authorization::agynio::api::authorization::v1::AUTHORIZATION_SERVICE_SERVICE_NAME;
use agyn_api_chat::agynio::api::chat::v1::{CHAT_GATEWAY_SERVICE_NAME, CHAT_SERVICE_SERVICE_NAME};
use agyn_api_files::agynio::api::files::v1::{
    FILES_GATEWAY_SERVICE_NAME, FILES_SERVICE_SERVICE_NAME,
};
use agyn_api_identity::agynio::api::identity::v1::IDENTITY_SERVICE_SERVICE_NAME;
use agyn_api_llm::agynio::api::llm::v1::{LLM_GATEWAY_SERVICE_NAME, LLM_SERVICE_SERVICE_NAME};
use agyn_api_notifications::agynio::api::notifications::v1::{
    NOTIFICATIONS_GATEWAY_SERVICE_NAME, NOTIFICATIONS_SERVICE_SERVICE_NAME,
};
use agyn_api_organizations::agynio::api::organizations::v1::{
    ORGANIZATIONS_GATEWAY_SERVICE_NAME, ORGANIZATIONS_SERVICE_SERVICE_NAME,
};
use agyn_api_runner::agynio::api::runner::v1::RUNNER_SERVICE_SERVICE_NAME;
use agyn_api_runners::agynio::api::runners::v1::{
    RUNNERS_GATEWAY_SERVICE_NAME, RUNNERS_SERVICE_SERVICE_NAME,
};
use agyn_api_secrets::agynio::api::secrets::v1::{
    SECRETS_GATEWAY_SERVICE_NAME, SECRETS_SERVICE_SERVICE_NAME,
};
use agyn_api_threads::agynio::api::threads::v1::{
    THREADS_GATEWAY_SERVICE_NAME, THREADS_SERVICE_SERVICE_NAME,
};
use agyn_api_tracing::agynio::api::tracing::v1::{
    TRACING_GATEWAY_SERVICE_NAME, TRACING_SERVICE_SERVICE_NAME,
};
use agyn_api_users::agynio::api::users::v1::{
    USERS_GATEWAY_SERVICE_NAME, USERS_SERVICE_SERVICE_NAME,
};
use agyn_apps::service::{AppsGatewayRpc, AppsRpc};
use agyn_authz::Authorizer;
use agyn_authz::service::AuthorizationRpc;
use agyn_chat::service::{ChatGatewayRpc, ChatRpc};
use agyn_files::service::{FilesGatewayRpc, FilesRpc};
use agyn_llm::service::{LlmGatewayRpc, LlmRpc};
use agyn_notifications::service::{NotificationsGatewayRpc, NotificationsRpc};
use agyn_orgs::Organizations;
use agyn_orgs::service::{OrganizationsGatewayRpc, OrganizationsRpc};
use agyn_runners::service::{RunnersGatewayRpc, RunnersRpc};
use agyn_secrets::service::{SecretsGatewayRpc, SecretsRpc};
use agyn_store::Db;
use agyn_threads::service::{ThreadsGatewayRpc, ThreadsRpc};
use agyn_tracing::service::{TraceServiceRpc, TracingGatewayRpc, TracingRpc};
use agyn_users::Users;
use agyn_users::identity::IdentityRpc;
use agyn_users::service::{UsersGatewayRpc, UsersRpc};
use axum::routing::get;
use connectrpc::{ConnectRpcService, DeadlinePolicy, Limits, Router};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::Authenticator;
pub use connector::PlatformConnector;
pub use layer::{GatewayLayer, Listener};

/// Largest unary request message, after decompression.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Everything the listeners need from the rest of the platform.
#[derive(Clone)]
pub struct Platform {
    pub db: Db,
    pub users: Users,
    pub orgs: Organizations,
    pub threads: agyn_threads::Threads,
    pub chat: agyn_chat::Chat,
    /// LLM providers and models, and model resolution for the LLM proxy.
    pub llm: agyn_llm::Llm,
    /// Secret providers, secrets and image pull secrets.
    pub secrets: agyn_secrets::Secrets,
    /// Agents and their configuration.
    pub agents: agyn_agents::Agents,
    /// The runner registry, workload records and provisioned volumes.
    pub runners: agyn_runners::Runners,
    /// The runner connections of this process: its built-in runner in
    /// process, the others over mutual TLS.
    pub connector: PlatformConnector,
    /// Uploaded files, their object store and signed download links.
    pub files: agyn_files::Files,
    /// Span ingest, span queries and run-event streams.
    pub tracing: agyn_tracing::Tracing,
    /// Apps, their installations and the app proxy.
    pub apps: agyn_apps::Apps,
    /// The client TLS configuration the app proxy presents to https app
    /// endpoints (the `gateway` component certificate); `None` until
    /// `agyn serve` issues it.
    pub app_proxy_tls: Option<Arc<rustls::ClientConfig>>,
    /// The built-in runner this process hosts, served on the internal
    /// listener; `None` when it runs none.
    pub builtin_runner: Option<std::sync::Arc<dyn agyn_runner::Runner>>,
    /// The platform CA, which verifies client certificates.
    pub pki: agyn_pki::Pki,
    /// The notification streams and the event bus behind them.
    pub notifications: agyn_notifications::Notifications,
    /// OIDC sign-in; `None` when no issuer is configured.
    pub oidc: Option<agyn_oidc::SignIn>,
    /// Origins allowed by CORS, e.g. `http://127.0.0.1:8080`.
    pub cors_origins: Vec<String>,
}

impl Platform {
    /// Assembles every service over one database, CA, master key, event
    /// bus and file object store, with no CORS origins and no OIDC issuer.
    /// Download links start with `public_url`.
    pub fn new(
        db: Db,
        pki: agyn_pki::Pki,
        master_key: agyn_pki::MasterKey,
        events: agyn_events::Events,
        objects: Arc<dyn agyn_files::ObjectStore>,
        public_url: &str,
    ) -> Self {
        let users = Users::new(db.clone()).with_pki(pki.clone());
        // The organization purge runs these in its fixed step order.
        let sink: Arc<dyn agyn_core::events::EventSink> = Arc::new(events.clone());
        let cleaners: Vec<Arc<dyn agyn_orgs::ResourceCleaner>> = vec![
            Arc::new(agyn_agents::AgentsCleaner::new(
                db.clone(),
                Arc::clone(&sink),
            )),
            Arc::new(agyn_runners::RunnersCleaner::new(db.clone(), pki.clone())),
            Arc::new(agyn_apps::AppsCleaner::new(db.clone(), pki.clone())),
            Arc::new(agyn_chat::ChatCleaner::new(db.clone())),
            Arc::new(agyn_threads::ThreadsCleaner::new(db.clone())),
            Arc::new(agyn_llm::LlmCleaner::new(db.clone())),
            Arc::new(agyn_secrets::SecretsCleaner::new(db.clone())),
        ];
        let orgs = Organizations::new(db.clone(), cleaners).with_events(Arc::clone(&sink));
        let download_key = agyn_files::DownloadKey::from_master_key(&master_key);
        let files =
            agyn_files::Files::new(db.clone(), orgs.clone(), objects, download_key, public_url);
        let threads = agyn_threads::Threads::new(db.clone(), orgs.clone(), Arc::clone(&sink))
            .with_post_send_hook(Arc::new(agyn_chat::SummaryHook::new(db.clone())))
            .with_file_access(Arc::new(AttachableFiles(files.clone())));
        let chat = agyn_chat::Chat::new(db.clone(), threads.clone());
        let llm = agyn_llm::Llm::new(db.clone(), master_key.clone(), orgs.clone());
        let secrets = agyn_secrets::Secrets::new(db.clone(), master_key, orgs.clone())
            .with_references(Arc::new(agyn_agents::AgentSecretReferences::new(
                db.clone(),
            )));
        let agents = agyn_agents::Agents::new(db.clone(), orgs.clone(), secrets.clone())
            .with_events(Arc::clone(&sink));
        let connector = PlatformConnector::default();
        let runners = agyn_runners::Runners::new(db.clone(), orgs.clone(), pki.clone())
            .with_events(Arc::clone(&sink))
            .with_connector(Arc::new(connector.clone()));
        let tracing = agyn_tracing::Tracing::new(
            db.clone(),
            sink,
            Arc::new(events.clone()),
            Arc::new(agyn_tracing::PlatformDirectory::new(
                agents.clone(),
                threads.clone(),
                runners.clone(),
            )),
        );
        let apps = agyn_apps::Apps::new(db.clone(), orgs.clone(), pki.clone());
        let notifications =
            agyn_notifications::Notifications::new(events, Authorizer::new(db.clone()));
        Self {
            db,
            users,
            orgs,
            threads,
            chat,
            llm,
            secrets,
            agents,
            runners,
            connector,
            files,
            tracing,
            apps,
            app_proxy_tls: None,
            builtin_runner: None,
            pki,
            notifications,
            oidc: None,
            cors_origins: Vec::new(),
        }
    }
}

/// The files service's read rule, as SendMessage checks attachments.
struct AttachableFiles(agyn_files::Files);

impl agyn_threads::FileAccess for AttachableFiles {
    fn check_readable<'a>(
        &'a self,
        caller: &'a agyn_core::Caller,
        file_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = agyn_core::Result<()>> + Send + 'a>>
    {
        Box::pin(async move { self.0.get_file_metadata(caller, file_id).await.map(|_| ()) })
    }
}

fn connect_service(router: Router) -> ConnectRpcService {
    ConnectRpcService::new(router)
        .with_limits(Limits::default().with_max_message_size(MAX_MESSAGE_BYTES))
        .with_deadline_policy(DeadlinePolicy::new().with_max(Duration::from_secs(300)))
}

/// Builds the public listener's application.
pub fn public_app(platform: &Platform) -> axum::Router {
    let router = Router::new()
        .add_service(Arc::new(UsersGatewayRpc::new(platform.users.clone())))
        .add_service(Arc::new(OrganizationsGatewayRpc::new(
            platform.orgs.clone(),
        )))
        .add_service(Arc::new(NotificationsGatewayRpc::new(
            platform.notifications.clone(),
        )))
        .add_service(Arc::new(ThreadsGatewayRpc::new(platform.threads.clone())))
        .add_service(Arc::new(ChatGatewayRpc::new(platform.chat.clone())))
        .add_service(Arc::new(LlmGatewayRpc::new(platform.llm.clone())))
        .add_service(Arc::new(SecretsGatewayRpc::new(platform.secrets.clone())))
        .add_service(Arc::new(AgentsGatewayRpc::new(platform.agents.clone())))
        .add_service(Arc::new(RunnersGatewayRpc::new(platform.runners.clone())))
        .add_service(Arc::new(FilesGatewayRpc::new(platform.files.clone())))
        .add_service(Arc::new(TracingGatewayRpc::new(platform.tracing.clone())))
        .add_service(Arc::new(TraceServiceRpc::new(platform.tracing.clone())))
        .add_service(Arc::new(AppsGatewayRpc::new(platform.apps.clone())));
    let rpc = rpc_service(
        Listener::Public,
        router,
        &[
            USERS_GATEWAY_SERVICE_NAME,
            ORGANIZATIONS_GATEWAY_SERVICE_NAME,
            NOTIFICATIONS_GATEWAY_SERVICE_NAME,
            THREADS_GATEWAY_SERVICE_NAME,
            CHAT_GATEWAY_SERVICE_NAME,
            LLM_GATEWAY_SERVICE_NAME,
            SECRETS_GATEWAY_SERVICE_NAME,
            AGENTS_GATEWAY_SERVICE_NAME,
            RUNNERS_GATEWAY_SERVICE_NAME,
            FILES_GATEWAY_SERVICE_NAME,
            TRACING_GATEWAY_SERVICE_NAME,
            APPS_GATEWAY_SERVICE_NAME,
        ],
        Some(public_service_names()),
        &[],
        platform,
    );
    let db = platform.db.clone();
    let gateway = GatewayLayer::new(
        Listener::Public,
        Authenticator::new(platform.users.clone()).with_oidc(platform.oidc.clone()),
        platform.pki.clone(),
        platform.users.clone(),
        Vec::new(),
    );
    // The proxy reads its own, larger bodies, so it sits outside the
    // Connect body guard.
    let proxy =
        llm_proxy::LlmProxy::new(gateway.clone(), platform.llm.clone(), platform.db.clone())
            .router();
    // File transfers, OTLP over HTTP and the app proxy read their own
    // bodies, so they also sit outside the Connect body guard.
    let http_routes = platform
        .files
        .router()
        .merge(agyn_tracing::http::otlp_router(platform.tracing.clone()))
        .merge(
            agyn_apps::AppProxy::new(platform.apps.clone(), platform.app_proxy_tls.clone())
                .router(),
        )
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            http_auth::attach_caller,
        ));
    let rpc = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/api/healthz", get(healthz))
        .route("/readyz", get(move || readyz(db.clone())))
        .route("/me", get(me).with_state(gateway))
        .route(
            "/enroll",
            axum::routing::post(enroll::enroll)
                .with_state(enroll::Enrollment::new(platform.users.clone())),
        )
        .fallback_service(rpc)
        .layer(axum::middleware::from_fn(guard::require_json_objects));
    proxy
        .merge(http_routes)
        .merge(rpc)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            guard::BODY_IDLE_TIMEOUT,
        ))
        .layer(cors(&platform.cors_origins))
}

/// Builds the internal listener's application. Serve it over TLS that
/// asks for client certificates ([`transport::Transport::TlsOnly`]): each
/// request must carry a platform-issued component certificate allowed to
/// call its method.
pub fn internal_app(platform: &Platform) -> axum::Router {
    let router = Router::new()
        .add_service(Arc::new(UsersRpc::new(platform.users.clone())))
        .add_service(Arc::new(IdentityRpc::new(platform.db.clone())))
        .add_service(Arc::new(OrganizationsRpc::new(platform.orgs.clone())))
        .add_service(Arc::new(NotificationsRpc::new(
            platform.notifications.clone(),
        )))
        .add_service(Arc::new(ThreadsRpc::new(platform.threads.clone())))
        .add_service(Arc::new(ChatRpc::new(platform.chat.clone())))
        .add_service(Arc::new(LlmRpc::new(platform.llm.clone())))
        .add_service(Arc::new(SecretsRpc::new(platform.secrets.clone())))
        .add_service(Arc::new(AgentsRpc::new(platform.agents.clone())))
        .add_service(Arc::new(RunnersRpc::new(platform.runners.clone())))
        .add_service(Arc::new(FilesRpc::new(platform.files.clone())))
        .add_service(Arc::new(TracingRpc::new(platform.tracing.clone())))
        .add_service(Arc::new(AppsRpc::new(platform.apps.clone())))
        .add_service(Arc::new(AuthorizationRpc::new(Authorizer::new(
            platform.db.clone(),
        ))));
    let mut healthy = vec![
        USERS_SERVICE_SERVICE_NAME,
        IDENTITY_SERVICE_SERVICE_NAME,
        ORGANIZATIONS_SERVICE_SERVICE_NAME,
        NOTIFICATIONS_SERVICE_SERVICE_NAME,
        THREADS_SERVICE_SERVICE_NAME,
        CHAT_SERVICE_SERVICE_NAME,
        LLM_SERVICE_SERVICE_NAME,
        SECRETS_SERVICE_SERVICE_NAME,
        AGENTS_SERVICE_SERVICE_NAME,
        RUNNERS_SERVICE_SERVICE_NAME,
        FILES_SERVICE_SERVICE_NAME,
        TRACING_SERVICE_SERVICE_NAME,
        APPS_SERVICE_SERVICE_NAME,
        AUTHORIZATION_SERVICE_SERVICE_NAME,
    ];
    let router = match &platform.builtin_runner {
        Some(runner) => {
            healthy.push(RUNNER_SERVICE_SERVICE_NAME);
            router.add_service(Arc::new(agyn_runner::RunnerRpc::new(Arc::clone(runner))))
        }
        None => router,
    };
    let rpc = rpc_service(Listener::Internal, router, &healthy, None, &[], platform);
    axum::Router::new()
        .route("/healthz", get(healthz))
        .fallback_service(rpc)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            guard::BODY_IDLE_TIMEOUT,
        ))
}

/// Adds gRPC health (reporting `healthy` as serving) and reflection to
/// `router`, and wraps it in the gateway layer of `listener`.
///
/// Reflection lists `reflected` services, or the whole descriptor set
/// when it is `None`. Methods in `not_built` are routed like the methods
/// of services that are not built yet.
fn rpc_service(
    listener: Listener,
    router: Router,
    healthy: &[&str],
    reflected: Option<Vec<String>>,
    not_built: &[&str],
    platform: &Platform,
) -> layer::GatewayService<ConnectRpcService> {
    let implemented: Vec<String> = router
        .methods()
        .filter(|path| !not_built.contains(&format!("/{}", path.trim_start_matches('/')).as_str()))
        .map(str::to_string)
        .collect();
    let (router, _health) = connectrpc_health::install_static(router, healthy.iter().copied());
    let mut reflector =
        connectrpc_reflection::Reflector::from_descriptor_set_bytes(agyn_api::DESCRIPTOR_SET)
            .expect("the embedded descriptor set is valid");
    if let Some(services) = reflected {
        reflector = reflector.with_services(services);
    }
    let router = connectrpc_reflection::install(router, reflector);
    let gateway = GatewayLayer::new(
        listener,
        Authenticator::new(platform.users.clone()).with_oidc(platform.oidc.clone()),
        platform.pki.clone(),
        platform.users.clone(),
        implemented,
    );
    gateway.layer(connect_service(router))
}

/// Service names listed by reflection on the public listener: the
/// gateways, health and reflection, never the internal services.
fn public_service_names() -> Vec<String> {
    let mut names: Vec<String> = agyn_api::GATEWAY_METHODS
        .iter()
        .filter_map(|(path, ..)| path.trim_start_matches('/').split('/').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names.push("grpc.health.v1.Health".to_string());
    names.push("grpc.reflection.v1.ServerReflection".to_string());
    names.push("grpc.reflection.v1alpha.ServerReflection".to_string());
    names
}

/// `GET /me`: the caller's identity for any valid credential, as JSON, or
/// 401 with the reason.
async fn me(
    axum::extract::State(gateway): axum::extract::State<GatewayLayer>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let peer = request
        .extensions()
        .get::<agyn_pki::PeerCertificate>()
        .cloned();
    match gateway.authenticate(peer, request.headers()).await {
        Ok(agyn_core::Caller::Identity {
            identity_id,
            kind,
            workload_id,
            ..
        }) => axum::Json(serde_json::json!({
            "identity_id": identity_id,
            "identity_type": kind.as_str(),
            "workload_id": workload_id.unwrap_or_default(),
        }))
        .into_response(),
        Ok(agyn_core::Caller::Component(_)) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid credential"})),
        )
            .into_response(),
        Err(error) => {
            let status = match error.code() {
                agyn_core::error::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                agyn_core::error::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            // Internal errors are logged once here and reach the caller as
            // a reference only.
            let message = connectrpc::ConnectError::from(error)
                .message
                .unwrap_or_default();
            (status, axum::Json(serde_json::json!({"error": message}))).into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(db: Db) -> (StatusCode, &'static str) {
    match tokio::time::timeout(Duration::from_secs(2), db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database timed out\n"),
    }
}

/// CORS for browser clients: the configured origins, no cookies, and the
/// Connect and gRPC-Web headers exposed to scripts.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok())
        .collect();
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header("authorization"),
            header("content-type"),
            header("connect-protocol-version"),
            header("connect-timeout-ms"),
            header("grpc-timeout"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("x-agyn-filename"),
            header("x-agyn-organization-id"),
            header("x-request-id"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            header("connect-content-encoding"),
            header("x-request-id"),
        ])
        .max_age(Duration::from_secs(3600))
}
