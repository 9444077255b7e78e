//! `agyn serve`: bind the listeners, open the database, bootstrap, and
//! serve until SIGINT or SIGTERM.

use std::path::Path;
use std::time::Duration;

use agyn_gateway::Platform;
use agyn_gateway::transport::Transport;
use agyn_store::Db;
use agyn_users::Users;
use agyn_users::bootstrap::Outcome;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

/// How long open connections may take to finish after the first signal.
/// A second signal, or the end of this period, stops the process at once.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Time between two passes of the file object sweep and span retention.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

pub async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        data_dir = %config.data_dir.display(),
        backend = backend_name(&config.database_url),
        "Starting agyn"
    );
    // Handle SIGINT and SIGTERM from the start, so that a signal during
    // startup shuts down cleanly instead of killing the process.
    let mut signals = ShutdownSignals::install()?;
    // Bind first, so that a busy port fails before anything is written.
    let public = bind("public", config.listen).await?;
    let internal = match config.internal_listen {
        Some(address) => Some((bind("internal", address).await?, address)),
        None => None,
    };

    prepare_data_dir(&config.data_dir)?;
    let db = Db::open(&config.database_url).await?;
    let master_key = match &config.master_key {
        Some(encoded) => agyn_pki::MasterKey::from_base64(encoded.expose())
            .map_err(|error| format!("invalid --master-key: {error}"))?,
        None => {
            let (key, created) = agyn_pki::MasterKey::load_or_create(&config.data_dir)?;
            if created {
                tracing::info!(
                    file = %config.data_dir.join("master.key").display(),
                    "Master key created; back it up, the platform CA cannot be opened without it"
                );
            }
            key
        }
    };
    let pki = agyn_pki::Pki::load_or_create(db.clone(), &master_key).await?;
    let events = agyn_events::Events::start(
        db.clone(),
        agyn_events::EventsConfig {
            redis_url: config.redis_url.as_ref().map(|url| url.expose().clone()),
            ..agyn_events::EventsConfig::default()
        },
    )?;
    if config.redis_url.is_some() {
        tracing::info!("Events are shared with other replicas through Redis");
    }
    let objects: std::sync::Arc<dyn agyn_files::ObjectStore> = match &config.files_s3 {
        Some(settings) => std::sync::Arc::new(
            agyn_files::S3Store::new(settings)
                .map_err(|error| format!("invalid S3 settings for files: {error}"))?,
        ),
        None => std::sync::Arc::new(
            agyn_files::LocalStore::open(&config.data_dir)
                .await
                .map_err(|error| format!("failed to open the file store: {error}"))?,
        ),
    };
    let bus = events.clone();
    let mut platform = Platform::new(
        db.clone(),
        pki.clone(),
        master_key.clone(),
        events,
        objects,
        &config.public_url,
    );
    platform.files = platform
        .files
        .clone()
        .with_max_upload_bytes(config.files_max_upload_bytes);
    platform.cors_origins = config.cors_allowed_origins.clone();
    let users = platform.users.clone();
    let bootstrap = users
        .bootstrap(&config.data_dir)
        .await
        .map_err(|error| format!("bootstrap failed: {error:?}"))?;
    report_bootstrap(bootstrap, &config.data_dir);
    if config.reset_admin_token {
        let reset = users
            .reset_admin_token(&config.data_dir)
            .await
            .map_err(|error| format!("failed to reset the admin token: {error:?}"))?;
        report_bootstrap(reset, &config.data_dir);
    }

    if let Some(oidc) = config.oidc.clone() {
        platform.oidc = Some(oidc_sign_in(oidc, &users)?);
    }
    if config.runner_builtin {
        let runner = start_builtin_runner(&platform, &config.data_dir).await?;
        platform.builtin_runner = Some(runner);
    }
    let proxy_identity = issue_component(&pki, "gateway").await?;
    let proxy_key = proxy_identity
        .private_key_pem
        .ok_or("the gateway certificate was issued without a key")?;
    platform.app_proxy_tls =
        Some(pki.client_config(&proxy_identity.certificate_pem, proxy_key.expose())?);
    let dialer = issue_component(&pki, "runners").await?;
    platform.connector.set_client_identity(
        dialer.certificate_pem,
        dialer
            .private_key_pem
            .ok_or("the runners certificate was issued without a key")?
            .expose()
            .clone(),
        dialer.ca_certificate_pem,
    );
    write_admin_credentials(&pki, &config.data_dir).await?;
    let public_tls = pki
        .server_config(&config.tls, agyn_pki::ClientAuth::Optional)
        .await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve(
        public,
        agyn_gateway::public_app(&platform),
        Transport::Mixed(public_tls),
        shutdown_rx.clone(),
    ));
    tracing::info!(address = %config.listen, "Public listener started (plaintext and TLS)");
    if let Some((listener, address)) = internal {
        let mut hostnames = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !hostnames.contains(&address.ip().to_string()) {
            hostnames.push(address.ip().to_string());
        }
        let internal_tls = pki
            .server_config(
                &agyn_pki::ServerCertificate::Issue { hostnames },
                agyn_pki::ClientAuth::Optional,
            )
            .await?;
        tasks.spawn(serve(
            listener,
            agyn_gateway::internal_app(&platform),
            Transport::TlsOnly(internal_tls),
            shutdown_rx,
        ));
        tracing::info!(%address, "Internal listener started (mutual TLS)");
    }

    // Singleton jobs run only on the leader: always with SQLite, and with
    // PostgreSQL on the replica holding the advisory lock.
    let leadership = agyn_orchestrator::Leadership::start(&db);
    let orchestrator = agyn_orchestrator::Orchestrator::new(
        agyn_orchestrator::Services {
            agents: platform.agents.clone(),
            runners: platform.runners.clone(),
            threads: platform.threads.clone(),
            secrets: platform.secrets.clone(),
            llm: platform.llm.clone(),
            pki: pki.clone(),
            events: bus,
            connector: std::sync::Arc::new(platform.connector.clone()),
        },
        config.orchestrator.clone(),
    )?;
    let mut singletons = tokio::task::JoinSet::new();
    singletons.spawn(agyn_orchestrator::run_while_leader(
        "orchestrator",
        leadership.subscribe(),
        move || {
            let orchestrator = orchestrator.clone();
            async move { orchestrator.run().await }
        },
    ));
    let orgs = platform.orgs.clone();
    singletons.spawn(agyn_orchestrator::run_while_leader(
        "organization purges",
        leadership.subscribe(),
        move || {
            let orgs = orgs.clone();
            async move { orgs.run_purges(std::future::pending()).await }
        },
    ));
    let files = platform.files.clone();
    let tracing_store = platform.tracing.clone();
    let retention = config.tracing_retention;
    singletons.spawn(agyn_orchestrator::run_while_leader(
        "housekeeping",
        leadership.subscribe(),
        move || housekeeping(files.clone(), tracing_store.clone(), retention),
    ));

    let signal = signals.next().await;
    tracing::info!(signal, grace_s = SHUTDOWN_GRACE.as_secs(), "Shutting down");
    let _ = shutdown_tx.send(true);
    // Open streams would hold their connections past the grace period.
    platform.notifications.shutdown();
    let drained = async {
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    tokio::select! {
        result = drained => result?,
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("Connections still open after the grace period; closing them");
        }
        signal = signals.next() => {
            tracing::warn!(signal, "Second signal; closing open connections");
        }
    }
    singletons.abort_all();
    drop(leadership);
    db.close().await;
    tracing::info!("Stopped");
    Ok(())
}

/// Sweeps file objects left by failed uploads and deletes spans past
/// `retention`, every [`HOUSEKEEPING_INTERVAL`].
async fn housekeeping(
    files: agyn_files::Files,
    tracing_store: agyn_tracing::Tracing,
    retention: Duration,
) {
    let mut ticks = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        ticks.tick().await;
        match files.sweep_orphans().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "Removed file objects left by failed uploads"),
            Err(error) => tracing::warn!(%error, "File object sweep failed"),
        }
        match tracing_store.prune(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "Deleted spans past their retention"),
            Err(error) => tracing::warn!(%error, "Span retention pass failed"),
        }
    }
}

/// Registers this host's built-in runner (once per host name) and opens
/// its state in `<data_dir>/runner`, adopting the workloads that kept
/// running while the process was down.
async fn start_builtin_runner(
    platform: &Platform,
    data_dir: &Path,
) -> Result<std::sync::Arc<dyn agyn_runner::Runner>, Box<dyn std::error::Error>> {
    let name = format!("local-{}", host_name());
    let record = platform
        .runners
        .ensure_builtin_runner(&name)
        .await
        .map_err(|error| format!("failed to register the built-in runner {name}: {error}"))?;
    let runner = agyn_runner::LocalRunner::new(
        data_dir.join("runner"),
        &record.id,
        env!("CARGO_PKG_VERSION"),
        std::env::current_exe()?,
    )
    .map_err(|error| format!("failed to open the built-in runner: {error}"))?;
    let runner: std::sync::Arc<dyn agyn_runner::Runner> = std::sync::Arc::new(runner);
    platform
        .connector
        .add_local(&record.id, std::sync::Arc::clone(&runner));
    tracing::info!(runner_id = %record.id, %name, "Built-in runner started");
    Ok(runner)
}

/// Returns the host name, cut to what a runner name allows, or
/// `localhost` when it cannot be read.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    name.chars().take(58).collect()
}

/// Issues a certificate with a new key to platform component `name`.
async fn issue_component(
    pki: &agyn_pki::Pki,
    name: &str,
) -> Result<agyn_pki::IssuedCertificate, Box<dyn std::error::Error>> {
    pki.issue(
        &agyn_pki::Subject::Component {
            name: name.to_string(),
        },
        agyn_pki::KeySource::Generate,
    )
    .await
    .map_err(|error| format!("failed to issue the {name} certificate: {error}").into())
}

/// Builds OIDC sign-in and fetches the issuer's keys in the background,
/// so that an unreachable or misconfigured issuer shows in the log at
/// start. Sign-in fetches them again on the first token if this fails.
fn oidc_sign_in(config: agyn_oidc::OidcConfig, users: &Users) -> Result<agyn_oidc::SignIn, String> {
    let issuer = config.issuer.clone();
    let verifier = agyn_oidc::Verifier::new(config).map_err(|error| error.to_string())?;
    tracing::info!(%issuer, "OIDC sign-in enabled");
    let prefetch = verifier.clone();
    tokio::spawn(async move {
        match prefetch.prefetch().await {
            Ok(keys) => tracing::info!(%issuer, keys, "OIDC signing keys loaded"),
            // The verifier has logged the cause.
            Err(error) => tracing::warn!(%issuer, %error, "OIDC signing keys not loaded at start"),
        }
    });
    Ok(agyn_oidc::SignIn::new(verifier, users.clone()))
}

fn backend_name(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "sqlite"
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        "postgres"
    } else {
        "unknown"
    }
}

async fn bind(
    name: &str,
    address: std::net::SocketAddr,
) -> Result<TcpListener, Box<dyn std::error::Error>> {
    TcpListener::bind(address)
        .await
        .map_err(|error| format!("failed to bind the {name} listener on {address}: {error}").into())
}

/// Creates the data directory readable by its owner only. An existing
/// directory keeps its permissions.
pub fn prepare_data_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        return Err(format!(
            "data directory {} is not a directory",
            dir.display()
        ));
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|error| format!("failed to create data directory {}: {error}", dir.display()))
}

async fn serve(
    listener: TcpListener,
    app: axum::Router,
    transport: Transport,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    agyn_gateway::transport::serve(listener, app, transport, async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
}

/// Files of the `admin` component credential, for operator tooling on
/// the internal listener.
const ADMIN_CERT_FILE: &str = "admin-client.crt";
const ADMIN_KEY_FILE: &str = "admin-client.key";
const CA_FILE: &str = "ca.crt";

/// Component certificates last a year; the admin credential is reissued
/// at startup once its files are older than this.
const ADMIN_REISSUE_AGE: Duration = Duration::from_secs(335 * 24 * 3600);

/// Writes the platform CA certificate and an `admin` component
/// certificate with its key to the data directory (key mode 0600), unless
/// a recent one is there.
async fn write_admin_credentials(
    pki: &agyn_pki::Pki,
    data_dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    write_atomically(
        &data_dir.join(CA_FILE),
        pki.ca_certificate_pem().as_bytes(),
        0o644,
    )?;
    let cert_path = data_dir.join(ADMIN_CERT_FILE);
    let fresh = std::fs::metadata(&cert_path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age < ADMIN_REISSUE_AGE);
    if fresh && data_dir.join(ADMIN_KEY_FILE).exists() {
        return Ok(());
    }
    let issued = issue_component(pki, "admin").await?;
    let key = issued
        .private_key_pem
        .ok_or("the admin certificate was issued without a key")?;
    write_atomically(
        &data_dir.join(ADMIN_KEY_FILE),
        key.expose().as_bytes(),
        0o600,
    )?;
    write_atomically(&cert_path, issued.certificate_pem.as_bytes(), 0o644)?;
    tracing::info!(
        serial = %issued.serial,
        certificate = %cert_path.display(),
        "Admin component certificate written"
    );
    Ok(())
}

/// Writes `contents` to `path` through a temporary file and a rename, so
/// that readers never see a partial file.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn report_bootstrap(outcome: Outcome, data_dir: &Path) {
    match outcome {
        Outcome::Created {
            admin_id,
            token_prefix,
            token_file,
        } => tracing::info!(
            %admin_id,
            token_prefix,
            token_file = %token_file.display(),
            "Bootstrap admin token written; the file holds the only copy"
        ),
        Outcome::AlreadyDone { admin_id } => {
            let token_file = data_dir.join("admin-token");
            if token_file.exists() {
                tracing::debug!(%admin_id, "Cluster already bootstrapped");
            } else {
                tracing::warn!(
                    %admin_id,
                    token_file = %token_file.display(),
                    "Admin token file is missing; run `agyn serve --reset-admin-token` to mint a new one"
                );
            }
        }
    }
}

/// SIGINT and SIGTERM handlers, installed when created.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal and returns its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            shutdown_signal().await
        }
    }
}

pub async fn shutdown_signal() -> &'static str {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("failed to install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        "interrupt"
    }
}
