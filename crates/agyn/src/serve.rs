//! `agyn serve`: bind the listeners, open the database, bootstrap, and
//! serve until SIGINT or SIGTERM.

use std::path::Path;
use std::time::Duration;

use agyn_gateway::Platform;
use agyn_store::Db;
use agyn_users::Users;
use agyn_users::bootstrap::Outcome;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

/// How long open connections may take to finish after the first signal.
/// A second signal, or the end of this period, stops the process at once.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        data_dir = %config.data_dir.display(),
        backend = backend_name(&config.database_url),
        "Starting agyn"
    );
    // Bind first, so that a busy port fails before anything is written.
    let public = bind("public", config.listen).await?;
    let internal = match config.internal_listen {
        Some(address) => Some((bind("internal", address).await?, address)),
        None => None,
    };

    prepare_data_dir(&config.data_dir)?;
    let db = Db::open(&config.database_url).await?;
    let users = Users::new(db.clone());
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

    let orgs = agyn_orgs::Organizations::new(db.clone(), Vec::new());
    let platform = Platform {
        db: db.clone(),
        users,
        orgs: orgs.clone(),
        cors_origins: config.cors_allowed_origins.clone(),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve(
        public,
        agyn_gateway::public_app(&platform),
        shutdown_rx.clone(),
    ));
    tracing::info!(address = %config.listen, "Public listener started");
    if let Some((listener, address)) = internal {
        tasks.spawn(serve(
            listener,
            agyn_gateway::internal_app(&platform),
            shutdown_rx,
        ));
        tracing::info!(%address, "Internal listener started");
    }

    let mut purge_stop = shutdown_tx.subscribe();
    let purges = tokio::spawn(async move {
        orgs.run_purges(async move {
            let _ = purge_stop.wait_for(|stop| *stop).await;
        })
        .await;
    });

    let signal = shutdown_signal().await;
    tracing::info!(signal, grace_s = SHUTDOWN_GRACE.as_secs(), "Shutting down");
    let _ = shutdown_tx.send(true);
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
        signal = shutdown_signal() => {
            tracing::warn!(signal, "Second signal; closing open connections");
        }
    }
    purges.abort();
    db.close().await;
    tracing::info!("Stopped");
    Ok(())
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
fn prepare_data_dir(dir: &Path) -> Result<(), String> {
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
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
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

async fn shutdown_signal() -> &'static str {
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
