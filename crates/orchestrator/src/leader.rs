//! Leader election: which replica runs the singleton jobs.
//!
//! With SQLite the process opens the database alone, so it is always the
//! leader. With PostgreSQL the leader is the replica whose dedicated
//! connection holds the session advisory lock [`LOCK_KEY`]. A replica
//! without it tries again every [`LeaderTimings::retry_interval`]; the
//! leader checks its connection every [`LeaderTimings::check_interval`]
//! and gives up leadership as soon as a check fails, before the next
//! check would have run. PostgreSQL releases the lock when the session
//! ends, so another replica takes over on its next try.

use std::future::Future;
use std::time::Duration;

use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use tokio::sync::watch;

/// Key of the advisory lock, the bytes of `agyn` (0x6167796e).
pub const LOCK_KEY: i64 = 0x6167_796e;

/// Intervals of the election on PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub struct LeaderTimings {
    /// Time between two tries to take the lock.
    pub retry_interval: Duration,
    /// Time between two checks of the lock connection while leading.
    pub check_interval: Duration,
    /// Maximum wait for one check; a slower one counts as failed.
    pub check_timeout: Duration,
}

impl Default for LeaderTimings {
    fn default() -> Self {
        Self {
            retry_interval: Duration::from_secs(5),
            check_interval: Duration::from_secs(2),
            check_timeout: Duration::from_secs(2),
        }
    }
}

/// This replica's leadership. Dropping it ends the election task, which
/// closes the lock connection and so releases the lock.
pub struct Leadership {
    leader: watch::Receiver<bool>,
    /// The sender on SQLite, where no task owns it. Receivers see the
    /// election end when it drops.
    _fixed: Option<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// Starts the election on `db` with the default timings. Must be
    /// called within a Tokio runtime.
    pub fn start(db: &Db) -> Self {
        Self::start_with(db, LeaderTimings::default())
    }

    /// Starts the election on `db` with `timings`.
    pub fn start_with(db: &Db, timings: LeaderTimings) -> Self {
        match db.backend() {
            Backend::Sqlite => {
                tracing::info!("This replica is the leader: SQLite has a single process");
                let (sender, leader) = watch::channel(true);
                Self {
                    leader,
                    _fixed: Some(sender),
                    task: None,
                }
            }
            Backend::Postgres => {
                let (sender, leader) = watch::channel(false);
                let task = tokio::spawn(elect(db.clone(), timings, sender));
                Self {
                    leader,
                    _fixed: None,
                    task: Some(task),
                }
            }
        }
    }

    /// Returns whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Returns a receiver of every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Takes the lock, keeps it while the connection responds, and starts
/// over when it stops responding.
async fn elect(db: Db, timings: LeaderTimings, leader: watch::Sender<bool>) {
    let mut last_error: Option<String> = None;
    loop {
        let mut connection = match db.pool().acquire().await {
            // The lock lives as long as this session, so the connection
            // leaves the pool, which opens another in its place.
            Ok(connection) => connection.detach(),
            Err(error) => {
                let text = error.to_string();
                note_failure(
                    &mut last_error,
                    "Failed to open the leader lock connection",
                    text,
                );
                tokio::time::sleep(timings.retry_interval).await;
                continue;
            }
        };
        // Try on this session until the lock is taken or the session fails.
        let locked = loop {
            let attempt = tokio::time::timeout(timings.check_timeout, try_lock(&mut connection));
            match attempt.await {
                Ok(Ok(true)) => break true,
                Ok(Ok(false)) => tokio::time::sleep(timings.retry_interval).await,
                Ok(Err(error)) => {
                    note_failure(
                        &mut last_error,
                        "Failed to try the leader lock",
                        error.to_string(),
                    );
                    break false;
                }
                Err(_) => {
                    let waited = timings.check_timeout.as_millis();
                    let text = format!("no answer within {waited} ms");
                    note_failure(&mut last_error, "Failed to try the leader lock", text);
                    break false;
                }
            }
        };
        if locked {
            last_error = None;
            tracing::info!(lock_key = LOCK_KEY, "This replica is the leader");
            leader.send_replace(true);
            hold(&mut connection, timings).await;
            leader.send_replace(false);
            tracing::warn!(
                lock_key = LOCK_KEY,
                "This replica lost leadership because its lock connection failed; singleton jobs stop"
            );
        }
        drop(connection);
        tokio::time::sleep(timings.retry_interval).await;
    }
}

/// Checks the lock connection every `check_interval` and returns when a
/// check fails or times out.
async fn hold(connection: &mut sqlx::AnyConnection, timings: LeaderTimings) {
    loop {
        tokio::time::sleep(timings.check_interval).await;
        let check = sqlx::query("SELECT 1 AS alive").fetch_one(&mut *connection);
        match tokio::time::timeout(timings.check_timeout, check).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Leader lock connection check failed");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = timings.check_timeout.as_millis() as u64,
                    "Leader lock connection check timed out"
                );
                return;
            }
        }
    }
}

async fn try_lock(connection: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind(LOCK_KEY)
        .fetch_one(&mut *connection)
        .await?;
    row.try_get("locked")
}

/// Logs an election failure once until it changes or the lock is taken,
/// so a database that stays down does not repeat it every retry.
fn note_failure(last: &mut Option<String>, message: &'static str, text: String) {
    if last.as_deref() != Some(text.as_str()) {
        tracing::warn!(error = %text, "{message}");
        *last = Some(text);
    }
}

/// Time before a singleton job that ended by itself is started again.
const JOB_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs `job` while `leader` is true: starts it on every gain of
/// leadership and aborts it on every loss, so a singleton job runs on one
/// replica at a time, except briefly during a hand-over. A job that ends
/// by itself is started again after a second while the replica leads.
/// Returns when the election ends (its [`Leadership`] dropped). `name`
/// appears in the logs.
pub async fn run_while_leader<F, Fut>(name: &'static str, mut leader: watch::Receiver<bool>, job: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        if !wait_until(&mut leader, true).await {
            return;
        }
        tracing::info!(job = name, "Singleton job started on the leader");
        let mut running = tokio::spawn(job());
        tokio::select! {
            open = wait_until(&mut leader, false) => {
                running.abort();
                if !open {
                    return;
                }
                tracing::info!(job = name, "Singleton job stopped because leadership was lost");
            }
            finished = &mut running => {
                match finished {
                    Ok(()) => tracing::warn!(job = name, "Singleton job ended; starting it again"),
                    Err(error) => {
                        tracing::error!(job = name, %error, "Singleton job failed; starting it again")
                    }
                }
                tokio::time::sleep(JOB_RESTART_DELAY).await;
            }
        }
    }
}

/// Waits until `leader` is `leading`; returns false when the election
/// ended first.
async fn wait_until(leader: &mut watch::Receiver<bool>, leading: bool) -> bool {
    leader.wait_for(|value| *value == leading).await.is_ok()
}
