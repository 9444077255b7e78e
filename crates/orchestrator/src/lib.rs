//! The orchestrator: keeps exactly one workload for every (thread, agent)
//! pair with unacked messages, starts and stops workloads through runners,
//! and reconciles the workload and volume records with what runners
//! report.
//!
//! [`Orchestrator::run`] runs every loop and is meant to run only on the
//! leader ([`Leadership`], [`run_while_leader`]):
//!
//! | Loop | Interval | Module |
//! |---|---|---|
//! | start passes, also on `message.created` in `agent_messages` | `poll_interval` | `pending`, `decide`, `assemble`, `select`, `launch` |
//! | idle stop | `poll_interval` | `idle` |
//! | workload reconciliation per runner | `reconcile_interval` | `reconcile` |
//! | volume reconciliation per runner | `volume_reconcile_interval` | `volumes` |
//! | runner liveness, then workloads of long-offline runners | `liveness_interval` | `idle` |
//! | activity sweep (PROCESSING → IDLE) | `activity_sweep_interval` | `idle` |
//!
//! Every step reads the records again and is guarded by their state, so a
//! pass that runs twice during a leadership hand-over repeats work but
//! never duplicates a workload. The runners service allows one
//! non-terminal workload per pair, and runners start each workload id
//! once.

mod assemble;
mod config;
mod decide;
mod idle;
mod launch;
pub mod leader;
mod pending;
mod quantity;
mod reconcile;
mod select;
mod spec;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agyn_core::Caller;
use agyn_runners::{RunnerConnector, RunnerRecord};
use tokio::sync::Semaphore;

pub use config::{OrchestratorConfig, default_image};
pub use leader::{LeaderTimings, Leadership, run_while_leader};

/// The caller every service call of the orchestrator acts as.
const ORCHESTRATOR: Caller = Caller::Component("orchestrator");

/// Minimum time between two log lines about the transient failures of one
/// pair.
const TRANSIENT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The services the orchestrator reads and writes.
#[derive(Clone)]
pub struct Services {
    pub agents: agyn_agents::Agents,
    pub runners: agyn_runners::Runners,
    pub threads: agyn_threads::Threads,
    pub secrets: agyn_secrets::Secrets,
    pub llm: agyn_llm::Llm,
    pub pki: agyn_pki::Pki,
    /// The bus that carries `message.created` to `agent_messages`.
    pub events: agyn_events::Events,
    /// The connections to runners: in process or over mutual TLS.
    pub connector: Arc<dyn RunnerConnector>,
}

/// A (thread, agent) pair with its organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Pair {
    pub thread_id: String,
    pub agent_id: String,
    pub organization_id: String,
}

/// The orchestrator. Cheap to clone; clones share their state.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    services: Services,
    config: OrchestratorConfig,
    /// Permits for start decisions running at once.
    starts: Semaphore,
    /// Pairs whose start decision runs now.
    deciding: Mutex<HashSet<(String, String)>>,
    /// When the last transient failure of each pair was logged.
    transient_logged: Mutex<HashMap<(String, String), Instant>>,
    liveness: agyn_runners::Liveness,
}

/// Locks a mutex and ignores poisoning: the guarded maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Orchestrator {
    /// Builds the orchestrator. Fails on an empty backoff schedule, a
    /// `max_attempts` or `max_concurrent_starts` of 0, or a zero interval.
    pub fn new(services: Services, config: OrchestratorConfig) -> Result<Self, String> {
        if config.backoff_schedule.is_empty() {
            return Err("orchestrator backoff: name at least one delay".to_string());
        }
        if config.max_attempts == 0 {
            return Err("orchestrator max_attempts: must be at least 1".to_string());
        }
        if config.max_concurrent_starts == 0 {
            return Err("orchestrator max_concurrent_starts: must be at least 1".to_string());
        }
        let intervals = [
            ("poll_interval", config.poll_interval),
            ("reconcile_interval", config.reconcile_interval),
            (
                "volume_reconcile_interval",
                config.volume_reconcile_interval,
            ),
            ("liveness_interval", config.liveness_interval),
            ("activity_sweep_interval", config.activity_sweep_interval),
        ];
        if let Some((name, _)) = intervals.iter().find(|(_, value)| value.is_zero()) {
            return Err(format!("orchestrator {name}: must be positive"));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                starts: Semaphore::new(config.max_concurrent_starts),
                services,
                config,
                deciding: Mutex::new(HashSet::new()),
                transient_logged: Mutex::new(HashMap::new()),
                liveness: agyn_runners::Liveness::default(),
            }),
        })
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.inner.config
    }

    fn services(&self) -> &Services {
        &self.inner.services
    }

    /// Runs every orchestrator loop until the future is dropped. Run it
    /// only on the leader.
    pub async fn run(&self) {
        tracing::info!(
            poll_interval_ms = self.inner.config.poll_interval.as_millis() as u64,
            reconcile_interval_ms = self.inner.config.reconcile_interval.as_millis() as u64,
            gateway = %self.inner.config.workload_gateway_url,
            "Orchestrator started"
        );
        tokio::join!(
            self.run_start_loop(),
            self.every(self.inner.config.poll_interval, "idle stop", || async {
                self.idle_pass().await
            }),
            self.every(
                self.inner.config.reconcile_interval,
                "reconciliation",
                || async {
                    self.reconcile_pass().await;
                    Ok(())
                }
            ),
            self.every(
                self.inner.config.volume_reconcile_interval,
                "volume reconciliation",
                || async {
                    self.volume_pass().await;
                    Ok(())
                }
            ),
            self.every(
                self.inner.config.liveness_interval,
                "runner liveness",
                || async { self.liveness_pass().await }
            ),
            self.every(
                self.inner.config.activity_sweep_interval,
                "activity sweep",
                || async { self.activity_sweep().await.map(|_| ()) }
            ),
        );
    }

    /// Runs `pass` every `interval`, logging its failures.
    async fn every<F, Fut>(&self, interval: Duration, name: &'static str, pass: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = agyn_core::Result<()>>,
    {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = pass().await {
                tracing::warn!(pass = name, %error, "Orchestrator pass failed");
            }
        }
    }

    /// Connects to `runner` through the connector.
    fn connect(&self, runner: &RunnerRecord) -> agyn_core::Result<Arc<dyn agyn_runner::Runner>> {
        self.services().connector.connect(runner)
    }

    /// Logs a transient start failure of `pair`, at most once per
    /// [`TRANSIENT_LOG_INTERVAL`].
    fn log_transient(&self, pair: &Pair, message: &str) {
        let key = (pair.thread_id.clone(), pair.agent_id.clone());
        let now = Instant::now();
        {
            let mut logged = lock(&self.inner.transient_logged);
            logged.retain(|_, at| now.duration_since(*at) < TRANSIENT_LOG_INTERVAL);
            if logged.contains_key(&key) {
                return;
            }
            logged.insert(key, now);
        }
        tracing::warn!(
            thread_id = %pair.thread_id,
            agent_id = %pair.agent_id,
            reason = message,
            "Workload not started; retrying on a later pass"
        );
    }
}
