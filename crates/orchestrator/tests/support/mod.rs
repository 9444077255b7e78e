//! Shared setup: every platform service over a fresh database, a built-in
//! runner (`LocalRunner`) whose `agyn` executable is a shell script in
//! place of the real binary, and an organization with a user, a
//! model, an agent and a thread in which the user has written to the
//! agent.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agyn_agents::{Availability, EnvSource, NewAgent, NewEnv, Target};
use agyn_core::{Caller, CredentialKind, IdentityKind, Secret};
use agyn_gateway::Platform;
use agyn_orchestrator::{Orchestrator, OrchestratorConfig, Services};
use agyn_runner::Runner;
use agyn_runners::{
    ListSort, PageRequest, RunnerRecord, WorkloadFilter, WorkloadRecord, WorkloadStatus,
};
use agyn_store::Backend;
use agyn_threads::{ParticipantEntry, ParticipantRef, SendInput};

/// Maximum wait for a state a test expects.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the stand-in `agyn agent` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// Writes its environment and files to `$DUMP_DIR`, then sleeps.
    Sleeps,
    /// Exits with code 1 at once.
    Crashes,
    /// `agyn install` never returns, so main never starts.
    InstallHangs,
}

/// Writes the script that replaces the `agyn` executable: `install <dir>` copies
/// the script to `<dir>/agyn`, `launch [options] -- <argv>` runs argv,
/// `agent` does what `agent` selects, `hook` sleeps.
fn write_fake_agyn(path: &Path, agent: Agent) {
    let install_tail = match agent {
        Agent::InstallHangs => "exec sleep 120",
        _ => "exit 0",
    };
    let agent_body = match agent {
        Agent::Crashes => "echo 'agent: giving up' >&2; exit 1".to_string(),
        _ => [
            "if [ -n \"$DUMP_DIR\" ]; then",
            "  env > \"$DUMP_DIR/env.$WORKLOAD_ID.tmp\"",
            "  cat \"$AGYN_TLS_CERT_FILE\" > \"$DUMP_DIR/cert.$WORKLOAD_ID\"",
            "  cat \"$AGYN_TLS_KEY_FILE\" > \"$DUMP_DIR/key.$WORKLOAD_ID\"",
            "  cat \"$AGYN_CA_FILE\" > \"$DUMP_DIR/ca.$WORKLOAD_ID\"",
            "  if [ -n \"$AGYN_INIT_DIR\" ]; then",
            "    ls \"$AGYN_INIT_DIR\" > \"$DUMP_DIR/init.$WORKLOAD_ID\"",
            "    for script in \"$AGYN_INIT_DIR\"/*.sh; do cat \"$script\"; echo; done >> \"$DUMP_DIR/init.$WORKLOAD_ID\"",
            "  fi",
            "  pwd > \"$DUMP_DIR/pwd.$WORKLOAD_ID\"",
            "  mv \"$DUMP_DIR/env.$WORKLOAD_ID.tmp\" \"$DUMP_DIR/env.$WORKLOAD_ID\"",
            "fi",
            "exec sleep 120",
        ]
        .join("\n"),
    };
    let script = format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
         install)\n\
         mkdir -p \"$2\" && cp \"$0\" \"$2/agyn\" && chmod 700 \"$2/agyn\" || exit 1\n\
         {install_tail}\n\
         ;;\n\
         launch)\n\
         while [ \"$#\" -gt 0 ] && [ \"$1\" != \"--\" ]; do shift; done\n\
         shift\n\
         exec \"$@\"\n\
         ;;\n\
         agent)\n\
         {agent_body}\n\
         ;;\n\
         hook)\n\
         exec sleep 120\n\
         ;;\n\
         *)\n\
         echo \"unknown command $1\" >&2\n\
         exit 2\n\
         ;;\n\
         esac\n"
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Timings short enough for tests.
pub fn fast_config() -> OrchestratorConfig {
    OrchestratorConfig {
        workload_gateway_url: "https://127.0.0.1:18443".to_string(),
        poll_interval: Duration::from_millis(200),
        reconcile_interval: Duration::from_millis(200),
        volume_reconcile_interval: Duration::from_millis(300),
        liveness_interval: Duration::from_secs(1),
        start_grace: Duration::from_secs(5),
        start_timeout: Duration::from_secs(60),
        missing_grace: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(2),
        stopping_timeout: Duration::from_secs(10),
        start_call_timeout: Duration::from_secs(10),
        backoff_schedule: vec![Duration::from_secs(1)],
        max_attempts: 3,
        keepalive_grace: Duration::from_secs(25),
        activity_sweep_interval: Duration::from_secs(1),
        offline_fail_after: Duration::from_secs(600),
        max_concurrent_starts: 16,
        default_init_image: "agyn/agyn:test".to_string(),
        default_agent_image: "agyn/agyn:test".to_string(),
    }
}

pub fn user_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

pub fn agent_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::Agent,
        workload_id: None,
        credential: CredentialKind::Certificate,
    }
}

pub const ORCHESTRATOR: Caller = Caller::Component("orchestrator");

pub struct World {
    pub platform: Platform,
    pub services: Services,
    pub runner: RunnerRecord,
    pub local: Arc<dyn Runner>,
    pub dir: tempfile::TempDir,
    /// Directory the stand-in agent writes its environment and files to.
    pub dump_dir: PathBuf,
    pub owner: Caller,
    pub org: String,
    pub model: String,
    pub agent: String,
    pub thread: String,
}

impl World {
    /// Builds the platform and a thread in which the owner wrote one
    /// message to the agent.
    pub async fn new(backend: Backend, agent: Agent) -> Self {
        let db = agyn_store::testing::fresh(backend).await;
        let master_key = agyn_pki::MasterKey::generate();
        let pki = agyn_pki::Pki::load_or_create(db.clone(), &master_key)
            .await
            .unwrap();
        let events =
            agyn_events::Events::start(db.clone(), agyn_events::EventsConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let objects = Arc::new(
            agyn_files::LocalStore::open(&dir.path().join("files"))
                .await
                .unwrap(),
        );
        let platform = Platform::new(
            db,
            pki.clone(),
            master_key,
            events.clone(),
            objects,
            "http://127.0.0.1:1",
        );
        let runner = platform
            .runners
            .ensure_builtin_runner("local-test")
            .await
            .unwrap();
        let fake_agyn = dir.path().join("agyn");
        write_fake_agyn(&fake_agyn, agent);
        let local: Arc<dyn Runner> = Arc::new(
            agyn_runner::LocalRunner::new(
                dir.path().join("runner"),
                &runner.id,
                "test",
                &fake_agyn,
            )
            .unwrap(),
        );
        platform.connector.add_local(&runner.id, Arc::clone(&local));
        let services = Services {
            agents: platform.agents.clone(),
            runners: platform.runners.clone(),
            threads: platform.threads.clone(),
            secrets: platform.secrets.clone(),
            llm: platform.llm.clone(),
            pki,
            events,
            connector: Arc::new(platform.connector.clone()),
        };
        let dump_dir = dir.path().join("dump");
        std::fs::create_dir_all(&dump_dir).unwrap();

        let request = agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest {
            oidc_subject: "orchestrator|owner".to_string(),
            preferred_username: "owner".to_string(),
            ..Default::default()
        };
        let (user, _) = platform
            .users
            .resolve_or_create_user(&request)
            .await
            .unwrap();
        let owner = user_caller(&user.id);
        let org = platform
            .orgs
            .create_organization(&owner, "Acme", None, "")
            .await
            .unwrap()
            .id;
        let model = create_model(&platform, &owner, &org).await;
        let agent = platform
            .agents
            .create_agent(
                &owner,
                &NewAgent {
                    organization_id: org.clone(),
                    name: "Helper".into(),
                    role: "assistant".into(),
                    availability: Some(Availability::Internal),
                    model: model.clone(),
                    configuration: r#"{"system_prompt":"Be brief."}"#.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .agent
            .id;
        let mut world = Self {
            platform,
            services,
            runner,
            local,
            dir,
            dump_dir,
            owner,
            org,
            model,
            agent,
            thread: String::new(),
        };
        world
            .add_env("DUMP_DIR", &world.dump_dir.display().to_string())
            .await;
        world.thread = world.new_thread().await;
        world.send("hello").await;
        world
    }

    /// Creates a thread of the owner and the agent.
    pub async fn new_thread(&self) -> String {
        let entries = [ParticipantEntry::listed(
            "participants",
            0,
            Some(ParticipantRef::Id(self.agent.clone())),
        )];
        self.platform
            .threads
            .create_thread(&self.owner, Some(&self.org), &entries, "")
            .await
            .unwrap()
            .id
    }

    /// Sends `body` from the owner to the thread; returns the message id.
    pub async fn send(&self, body: &str) -> String {
        self.platform
            .threads
            .send_message(
                &self.owner,
                &SendInput {
                    thread_id: &self.thread,
                    body,
                    file_ids: &[],
                    request_id: "",
                },
            )
            .await
            .unwrap()
            .id
    }

    /// Acknowledges every unacked message of the thread as the agent.
    pub async fn ack_all(&self) {
        let pending = self
            .platform
            .threads
            .unacked_messages(&agent_caller(&self.agent), Some(&self.thread), 100, "")
            .await
            .unwrap()
            .0;
        let ids: Vec<String> = pending.into_iter().map(|message| message.id).collect();
        self.platform
            .threads
            .ack_messages(&agent_caller(&self.agent), &ids, Some(&self.thread))
            .await
            .unwrap();
    }

    pub async fn add_env(&self, name: &str, value: &str) {
        self.add_env_source(
            Target::Agent(self.agent.clone()),
            name,
            EnvSource::Value(value.to_string()),
        )
        .await;
    }

    pub async fn add_env_source(&self, target: Target, name: &str, source: EnvSource) {
        self.platform
            .agents
            .create_env(
                &self.owner,
                &NewEnv {
                    target: Some(target),
                    name: name.to_string(),
                    description: String::new(),
                    source: Some(source),
                    request_id: String::new(),
                },
            )
            .await
            .unwrap();
    }

    /// Creates a local secret with `value` and returns its id.
    pub async fn secret(&self, name: &str, value: &str) -> String {
        self.platform
            .secrets
            .create_secret(
                &self.owner,
                &agyn_secrets::NewSecret {
                    organization_id: self.org.clone(),
                    name: name.to_string(),
                    description: String::new(),
                    source: Some(agyn_secrets::Source::Value(Secret::new(value.to_string()))),
                    request_id: String::new(),
                },
            )
            .await
            .unwrap()
            .id
    }

    pub fn orchestrator(&self, config: OrchestratorConfig) -> Orchestrator {
        Orchestrator::new(self.services.clone(), config).unwrap()
    }

    /// Returns every workload of the thread, newest first.
    pub async fn workloads(&self) -> Vec<WorkloadRecord> {
        let filter = WorkloadFilter {
            thread_ids: vec![self.thread.clone()],
            ..WorkloadFilter::default()
        };
        self.platform
            .runners
            .list_workloads_internal(
                &ORCHESTRATOR,
                &self.org,
                &filter,
                ListSort::default(),
                PageRequest {
                    size: 200,
                    token: "",
                },
            )
            .await
            .unwrap()
            .0
    }

    pub async fn workload(&self, id: &str) -> WorkloadRecord {
        self.platform
            .runners
            .get_workload(&ORCHESTRATOR, id)
            .await
            .unwrap()
    }

    /// Polls the thread's workloads until `done` holds, running `step`
    /// before each check, and returns them.
    pub async fn wait_for<F>(&self, description: &str, done: F) -> Vec<WorkloadRecord>
    where
        F: Fn(&[WorkloadRecord]) -> bool,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            let workloads = self.workloads().await;
            if done(&workloads) {
                return workloads;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {description}: {workloads:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a file the stand-in agent writes.
    pub async fn dumped(&self, name: &str) -> String {
        let path = self.dump_dir.join(name);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never wrote {}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns the thread's status and degrade reason.
    pub async fn thread_status(&self) -> (agyn_threads::ThreadStatus, String) {
        let thread = self
            .platform
            .threads
            .get_thread(&self.owner, &self.thread)
            .await
            .unwrap();
        (thread.status, thread.degrade_reason)
    }

    /// Stops every workload left on the runner, so that no test process
    /// outlives the test.
    pub async fn stop_all(&self) {
        for summary in self.local.list_workloads().await.unwrap() {
            let _ = self
                .local
                .stop_workload(
                    agyn_api_runner::agynio::api::runner::v1::StopWorkloadRequest {
                        workload_id: summary.workload_id,
                        timeout_sec: 0,
                        ..Default::default()
                    },
                )
                .await;
        }
    }
}

async fn create_model(platform: &Platform, owner: &Caller, org: &str) -> String {
    let provider = platform
        .llm
        .create_provider(
            owner,
            &agyn_llm::NewProvider {
                organization_id: org,
                name: "openai",
                endpoint: "https://llm.example.com/v1",
                token: "test-token",
                ..Default::default()
            },
        )
        .await
        .unwrap();
    platform
        .llm
        .create_model(
            owner,
            &agyn_llm::NewModel {
                organization_id: org,
                name: "Model",
                provider_id: &provider.id,
                remote_name: "gpt-test",
                request_id: "",
            },
        )
        .await
        .unwrap()
        .id
}

/// Returns the workloads in `statuses`.
pub fn with_status(workloads: &[WorkloadRecord], statuses: &[WorkloadStatus]) -> usize {
    workloads
        .iter()
        .filter(|workload| statuses.contains(&workload.status))
        .count()
}

/// Parses `env` output into name and value pairs.
pub fn parse_env(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}
