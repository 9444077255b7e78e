//! `agyn serve`: open the database, bootstrap, and run the listeners until
//! SIGINT or SIGTERM.

use agyn_gateway::Platform;
use agyn_store::Db;
use agyn_users::Users;
use agyn_users::bootstrap::Outcome;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

pub async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        data_dir = %config.data_dir.display(),
        backend = if config.database_url.starts_with("sqlite") { "sqlite" } else { "postgres" },
        "Starting agyn"
    );
    let db = Db::open(&config.database_url).await?;
    let users = Users::new(db.clone());
    report_bootstrap(users.bootstrap(&config.data_dir).await?);
    if config.reset_admin_token {
        report_bootstrap(users.reset_admin_token(&config.data_dir).await?);
    }

    let platform = Platform {
        db: db.clone(),
        users,
        cors_origins: config.cors_allowed_origins.clone(),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let public = TcpListener::bind(config.listen).await.map_err(|error| {
        format!(
            "failed to bind the public listener on {}: {error}",
            config.listen
        )
    })?;
    tracing::info!(address = %config.listen, "Public listener started");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve(
        public,
        agyn_gateway::public_app(&platform),
        shutdown_rx.clone(),
    ));

    if let Some(address) = config.internal_listen {
        let internal = TcpListener::bind(address).await.map_err(|error| {
            format!("failed to bind the internal listener on {address}: {error}")
        })?;
        tracing::info!(%address, "Internal listener started");
        tasks.spawn(serve(
            internal,
            agyn_gateway::internal_app(&platform),
            shutdown_rx,
        ));
    }

    let signal = shutdown_signal().await;
    tracing::info!(signal, "Shutting down");
    let _ = shutdown_tx.send(true);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    db.close().await;
    tracing::info!("Stopped");
    Ok(())
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

fn report_bootstrap(outcome: Outcome) {
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
            tracing::debug!(%admin_id, "Cluster already bootstrapped");
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
