//! The orchestrator against real services on SQLite and PostgreSQL and a
//! real built-in runner whose processes are shell scripts.
//!
//! Covered: one workload per pair under concurrency, STARTING to RUNNING,
//! the workload's environment and files, idle stop, crash loops with
//! backoff and thread degradation, the start watchdog, configuration
//! errors, runner selection, orphans and persistent volumes.

mod support;

use std::time::Duration;

use agyn_agents::{AgentChanges, EnvSource, McpTransport, NewHook, NewInitScript, NewMcp, Target};
use agyn_api_runners::agynio::api::runners::v1 as runners_pb;
use agyn_runners::{AgentState, FailureReason, WorkloadStatus};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, on_both_backends};
use support::*;

use WorkloadStatus::{Failed, Running, Starting, Stopped, Stopping};

const NON_TERMINAL: [WorkloadStatus; 3] = [Starting, Running, Stopping];

/// Polls `pass` and the thread's workloads until `done` holds.
macro_rules! settle {
    ($world:expr, $description:expr, $pass:expr, $done:expr) => {{
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            $pass;
            let workloads = $world.workloads().await;
            if $done(&workloads) {
                break workloads;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {}: {workloads:#?}",
                $description
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

async fn pair_gets_exactly_one_workload(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    // Two orchestrators stand for the old and the new leader during a
    // hand-over; the unique index must keep them to one workload.
    let first = w.orchestrator(fast_config());
    let second = w.orchestrator(fast_config());
    first.start_pass().await.unwrap();
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 1, "{workloads:#?}");
    assert_eq!(workloads[0].status, Starting);
    assert_eq!(workloads[0].agent_state, AgentState::Processing);
    assert_eq!(workloads[0].runner_id, w.runner.id);

    let mut tasks = Vec::new();
    let world = &w;
    for index in 0..20 {
        let orchestrator = if index % 2 == 0 { &first } else { &second };
        let w = world;
        tasks.push(async move {
            w.send(&format!("message {index}")).await;
            orchestrator.start_pass().await.unwrap();
        });
    }
    futures::future::join_all(tasks).await;
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 1, "{workloads:#?}");
    w.stop_all().await;
}

async fn concurrent_first_starts_make_one_workload(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let first = w.orchestrator(fast_config());
    let second = w.orchestrator(fast_config());
    let passes = (0..20).map(|index| {
        let orchestrator = if index % 2 == 0 { &first } else { &second };
        async move { orchestrator.start_pass().await.unwrap() }
    });
    futures::future::join_all(passes).await;
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 1, "{workloads:#?}");
    let on_runner = w.local.list_workloads().await.unwrap();
    assert_eq!(on_runner.len(), 1, "{on_runner:?}");
    assert_eq!(on_runner[0].workload_id, workloads[0].id);
    // The losers' certificates were revoked; only the winner's is live.
    let row = sqlx::query(
        "SELECT COUNT(*) AS live FROM certificates WHERE kind = 'workload' AND revoked_at IS NULL",
    )
    .fetch_one(w.platform.db.pool())
    .await
    .unwrap();
    let live: i64 = row.try_get("live").unwrap();
    assert_eq!(live, 1);
    w.stop_all().await;
}

async fn starting_becomes_running(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    let workloads = settle!(
        w,
        "RUNNING",
        orchestrator.reconcile_pass().await,
        |all: &[agyn_runners::WorkloadRecord]| all
            .iter()
            .any(|workload| workload.status == Running)
    );
    let workload = &workloads[0];
    assert!(workload.started_at.is_some());
    assert!(!workload.instance_id.is_empty());
    assert!(workload.last_activity_at >= workload.started_at.unwrap());
    let names: Vec<&str> = workload
        .containers
        .iter()
        .map(|container| container.name.as_str())
        .collect();
    assert_eq!(names, ["agyn-init", "agent"]);
    let init = &workload.containers[0];
    assert_eq!(
        init.status.as_known(),
        Some(runners_pb::ContainerStatus::CONTAINER_STATUS_TERMINATED)
    );
    assert_eq!(init.exit_code, 0);
    let main = &workload.containers[1];
    assert_eq!(
        main.status.as_known(),
        Some(runners_pb::ContainerStatus::CONTAINER_STATUS_RUNNING)
    );
    assert_eq!(
        main.role.as_known(),
        Some(runners_pb::ContainerRole::CONTAINER_ROLE_MAIN)
    );
    assert_eq!(main.image, "agyn/agyn:test");
    w.stop_all().await;
}

async fn environment_reaches_the_main_container(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let canary = "orchestrator-canary-3f9a";
    let secret = w.secret("api-key", canary).await;
    w.add_env_source(
        Target::Agent(w.agent.clone()),
        "API_KEY",
        EnvSource::Secret(secret),
    )
    .await;
    w.add_env("PLAIN", "plain value").await;
    let files = w
        .platform
        .agents
        .create_mcp(
            &w.owner,
            &NewMcp {
                agent_id: w.agent.clone(),
                name: "files".into(),
                command: "exec sleep 120".into(),
                transport: Some(McpTransport::Http),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.platform
        .agents
        .create_mcp(
            &w.owner,
            &NewMcp {
                agent_id: w.agent.clone(),
                name: "notes".into(),
                command: "exec sleep 120".into(),
                transport: Some(McpTransport::Stdio),
                http_path: Some("/rpc".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.add_env_source(
        Target::Mcp(files.id.clone()),
        "MCP_ONLY",
        EnvSource::Value("mcp".into()),
    )
    .await;
    let hook = w
        .platform
        .agents
        .create_hook(
            &w.owner,
            &NewHook {
                agent_id: w.agent.clone(),
                event: Some(agyn_agents::HookEvent::TurnEnd),
                function: "echo done".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for script in ["echo first", "echo second"] {
        w.platform
            .agents
            .create_init_script(
                &w.owner,
                &NewInitScript {
                    target: Some(Target::Agent(w.agent.clone())),
                    script: script.into(),
                    description: String::new(),
                    request_id: String::new(),
                },
            )
            .await
            .unwrap();
    }

    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    let workload = w.workloads().await.remove(0);
    let env = parse_env(&w.dumped(&format!("env.{}", workload.id)).await);
    let expect = |name: &str, value: &str| {
        assert_eq!(
            env.get(name).map(String::as_str),
            Some(value),
            "{name} in {env:#?}"
        );
    };
    expect("AGENT_ID", &w.agent);
    expect("AGENT_NAME", "Helper");
    expect("AGENT_ROLE", "assistant");
    expect("AGENT_MODEL", &w.model);
    expect("AGENT_CONFIG", r#"{"system_prompt":"Be brief."}"#);
    expect("THREAD_ID", &w.thread);
    expect("WORKLOAD_ID", &workload.id);
    expect("ORGANIZATION_ID", &w.org);
    expect("AGYN_GATEWAY_URL", "https://127.0.0.1:18443");
    expect("AGYN_LLM_BASE_URL", "https://127.0.0.1:18443/v1");
    expect("AGYN_OTLP_ENDPOINT", "https://127.0.0.1:18443");
    expect("AGYN_CONTAINER_NAME", "agent");
    expect("API_KEY", canary);
    expect("PLAIN", "plain value");
    assert!(!env.contains_key("MCP_ONLY"), "{env:#?}");
    assert!(!env.contains_key("MCP_PORT"), "{env:#?}");

    // Ports are substituted; servers are listed in id order.
    let servers = &env["AGENT_MCP_SERVERS"];
    let entries: Vec<&str> = servers.split(';').collect();
    assert_eq!(entries.len(), 2, "{servers}");
    for (entry, (name, path)) in entries.iter().zip([("files", "/mcp"), ("notes", "/rpc")]) {
        let rest = entry
            .strip_prefix(&format!("{name}=http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("{entry}"));
        let port = rest.strip_suffix(path).unwrap_or_else(|| panic!("{entry}"));
        assert!(port.parse::<u16>().is_ok(), "{entry}");
    }
    let hooks = &env["AGENT_HOOKS"];
    let port = hooks
        .strip_prefix("turn_end=http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/run"))
        .unwrap_or_else(|| panic!("{hooks}"));
    assert!(port.parse::<u16>().is_ok(), "{hooks}");

    // The runner rewrote the file paths to where it keeps them.
    for name in ["AGYN_TLS_CERT_FILE", "AGYN_TLS_KEY_FILE", "AGYN_CA_FILE"] {
        assert!(
            env[name].ends_with(&format!(
                "/agyn-bin/tls/{}",
                match name {
                    "AGYN_TLS_CERT_FILE" => "cert.pem",
                    "AGYN_TLS_KEY_FILE" => "key.pem",
                    _ => "ca.pem",
                }
            )),
            "{name}={}",
            env[name]
        );
    }
    assert!(
        env["AGYN_INIT_DIR"].ends_with("/agyn-bin/init/agent"),
        "{env:#?}"
    );
    assert!(
        w.dumped(&format!("pwd.{}", workload.id))
            .await
            .trim()
            .ends_with("/workspace")
    );

    let certificate = w.dumped(&format!("cert.{}", workload.id)).await;
    assert!(
        certificate.starts_with("-----BEGIN CERTIFICATE-----"),
        "{certificate}"
    );
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate.as_bytes()).unwrap();
    let parsed = pem.parse_x509().unwrap();
    assert_eq!(
        parsed.raw_serial_as_string().replace(':', ""),
        workload.credential_id
    );
    let uris: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        uris.contains(&format!("agyn://workload/{}", workload.id)),
        "{uris:?}"
    );
    let key = w.dumped(&format!("key.{}", workload.id)).await;
    assert!(key.contains("PRIVATE KEY"));
    let ca = w.dumped(&format!("ca.{}", workload.id)).await;
    assert_eq!(ca, w.services.pki.ca_certificate_pem());
    let init = w.dumped(&format!("init.{}", workload.id)).await;
    assert_eq!(init, "001.sh\n002.sh\necho first\necho second\n");

    // The sidecars run with their own names, and the hook's container is
    // named after its id.
    let names: Vec<&str> = workload
        .containers
        .iter()
        .map(|container| container.name.as_str())
        .collect();
    let hook_name = format!("hook-{}", &hook.id.replace('-', "")[..8]);
    assert_eq!(
        names,
        [
            "agyn-init",
            "agent",
            "mcp-files",
            "mcp-notes",
            hook_name.as_str()
        ]
    );

    // The secret value is in no record and in no runner file but the
    // process environment.
    let record = format!("{:?}", w.workload(&workload.id).await);
    assert!(!record.contains(canary));
    let manifest = std::fs::read_to_string(
        w.dir
            .path()
            .join("runner/workloads")
            .join(&workload.id)
            .join("manifest.json"),
    )
    .unwrap();
    assert!(!manifest.contains(canary), "{manifest}");
    w.stop_all().await;
}

async fn idle_workload_stops_and_next_message_restarts(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    // Agents accept idle timeouts from 30 s; the test shortens it in the
    // agents table, which the orchestrator reads on every idle check.
    sqlx::query("UPDATE agents SET idle_timeout_ms = 1000 WHERE id = $1")
        .bind(&w.agent)
        .execute(w.platform.db.pool())
        .await
        .unwrap();
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    // Acked before the workload runs, so that its stop leaves no backlog.
    w.ack_all().await;
    settle!(
        w,
        "RUNNING",
        orchestrator.reconcile_pass().await,
        |all: &[agyn_runners::WorkloadRecord]| all
            .iter()
            .any(|workload| workload.status == Running)
    );
    let workloads = settle!(
        w,
        "an idle stop",
        orchestrator.idle_pass().await.unwrap(),
        |all: &[agyn_runners::WorkloadRecord]| all.len() == 1 && all[0].status == Stopped
    );
    let stopped = &workloads[0];
    assert!(stopped.removed_at.is_some());
    assert_eq!(stopped.failure_reason, None);
    assert!(w.local.list_workloads().await.unwrap().iter().all(|summary| {
        summary.status.as_known()
            == Some(agyn_api_runner::agynio::api::runner::v1::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_STOPPED)
    }));

    // With every message acked nothing starts again.
    orchestrator.start_pass().await.unwrap();
    assert_eq!(w.workloads().await.len(), 1);

    // The full loop starts the next workload on the new message's event.
    let running = tokio::spawn({
        let orchestrator = orchestrator.clone();
        async move { orchestrator.run().await }
    });
    w.send("are you there?").await;
    let workloads = w
        .wait_for("a second workload", |all| {
            all.len() == 2 && all[0].status == Running
        })
        .await;
    assert_ne!(workloads[0].id, stopped.id);
    assert_eq!(workloads[0].runner_id, w.runner.id);
    running.abort();
    w.stop_all().await;
}

async fn crashing_agent_backs_off_then_degrades(backend: Backend) {
    let w = World::new(backend, Agent::Crashes).await;
    let config = fast_config();
    let backoff = config.backoff_schedule[0];
    let orchestrator = w.orchestrator(config);
    let running = tokio::spawn({
        let orchestrator = orchestrator.clone();
        async move { orchestrator.run().await }
    });
    let deadline = std::time::Instant::now() + WAIT;
    while w.thread_status().await.0 != agyn_threads::ThreadStatus::Degraded {
        assert!(
            std::time::Instant::now() < deadline,
            "thread not degraded: {:#?}",
            w.workloads().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, reason) = w.thread_status().await;
    assert_eq!(reason, "agent_start_failures_exhausted");
    running.abort();

    let mut workloads = w.workloads().await;
    assert_eq!(workloads.len(), 3, "{workloads:#?}");
    workloads.reverse();
    for workload in &workloads {
        assert_eq!(workload.status, Failed);
        assert_eq!(workload.failure_reason, Some(FailureReason::Crashloop));
        assert_eq!(
            workload.failure_message,
            "main container exited with code 1"
        );
    }
    // Each retry waited out the backoff after the previous failure.
    for pair in workloads.windows(2) {
        let waited = pair[1].created_at - pair[0].removed_at.unwrap();
        assert!(
            waited >= backoff.as_micros() as i64,
            "retry after {waited} µs, backoff {backoff:?}"
        );
    }
    w.stop_all().await;
}

async fn watchdog_fails_a_start_that_hangs(backend: Backend) {
    let w = World::new(backend, Agent::InstallHangs).await;
    let mut config = fast_config();
    config.start_timeout = Duration::from_secs(2);
    let orchestrator = w.orchestrator(config);
    orchestrator.start_pass().await.unwrap();
    let workloads = settle!(
        w,
        "the watchdog",
        orchestrator.reconcile_pass().await,
        |all: &[agyn_runners::WorkloadRecord]| all.iter().any(|workload| workload.status == Failed)
    );
    let failed = &workloads[0];
    assert_eq!(failed.failure_reason, Some(FailureReason::StartTimeout));
    assert_eq!(
        failed.failure_message,
        "workload did not become running within 2s"
    );
    assert!(failed.started_at.is_none());
    // The hanging init container was stopped on the runner.
    let observed = w
        .local
        .inspect_workload(
            agyn_api_runner::agynio::api::runner::v1::InspectWorkloadRequest {
                workload_id: failed.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        observed.status.as_known(),
        Some(agyn_api_runner::agynio::api::runner::v1::RunnerWorkloadStatus::RUNNER_WORKLOAD_STATUS_STOPPED)
    );
    w.stop_all().await;
}

async fn conflicting_registry_credentials_are_a_configuration_error(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let mcp = w
        .platform
        .agents
        .create_mcp(
            &w.owner,
            &NewMcp {
                agent_id: w.agent.clone(),
                name: "files".into(),
                command: "exec sleep 120".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut secrets = Vec::new();
    for (target, username) in [
        (Target::Agent(w.agent.clone()), "robot"),
        (Target::Mcp(mcp.id.clone()), "other-robot"),
    ] {
        let secret = w
            .platform
            .secrets
            .create_image_pull_secret(
                &w.owner,
                &agyn_secrets::NewImagePullSecret {
                    organization_id: w.org.clone(),
                    description: String::new(),
                    registry: "registry.example.com".into(),
                    username: username.into(),
                    source: Some(agyn_secrets::Source::Value(agyn_core::Secret::new(
                        "registry-password".into(),
                    ))),
                    request_id: String::new(),
                },
            )
            .await
            .unwrap()
            .id;
        w.platform
            .agents
            .create_image_pull_secret_attachment(&w.owner, &secret, Some(&target), "")
            .await
            .unwrap();
        secrets.push(secret);
    }
    let mut config = fast_config();
    config.backoff_schedule = vec![Duration::from_secs(300)];
    let orchestrator = w.orchestrator(config);
    orchestrator.start_pass().await.unwrap();
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 1, "{workloads:#?}");
    let failed = &workloads[0];
    assert_eq!(failed.status, Failed);
    assert_eq!(failed.failure_reason, Some(FailureReason::ConfigInvalid));
    assert_eq!(
        failed.failure_message,
        format!(
            "image pull secrets {} and {} give different credentials for registry \
             registry.example.com; attach one per registry",
            secrets[0], secrets[1]
        )
    );
    assert!(!failed.failure_message.contains("registry-password"));
    assert!(failed.runner_id.is_empty());
    assert!(w.local.list_workloads().await.unwrap().is_empty());

    // The backoff applies to configuration errors too.
    orchestrator.start_pass().await.unwrap();
    assert_eq!(w.workloads().await.len(), 1);
}

async fn agent_without_model_is_a_configuration_error(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    w.platform
        .agents
        .update_agent(
            &w.owner,
            &w.agent,
            &AgentChanges {
                model: Some(String::new()),
                ..AgentChanges::default()
            },
        )
        .await
        .unwrap();
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 1, "{workloads:#?}");
    assert_eq!(
        workloads[0].failure_reason,
        Some(FailureReason::ConfigInvalid)
    );
    assert_eq!(
        workloads[0].failure_message,
        format!("agent {} has no model; set one with UpdateAgent", w.agent)
    );

    // A configuration change retries at once, without waiting out the
    // backoff.
    w.platform
        .agents
        .update_agent(
            &w.owner,
            &w.agent,
            &AgentChanges {
                model: Some(w.model.clone()),
                ..AgentChanges::default()
            },
        )
        .await
        .unwrap();
    orchestrator.start_pass().await.unwrap();
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 2, "{workloads:#?}");
    assert_eq!(workloads[0].status, Starting);
    w.stop_all().await;
}

async fn no_schedulable_runner_records_nothing(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    w.platform
        .agents
        .update_agent(
            &w.owner,
            &w.agent,
            &AgentChanges {
                capabilities: Some(vec!["gpu".to_string()]),
                ..AgentChanges::default()
            },
        )
        .await
        .unwrap();
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    orchestrator.start_pass().await.unwrap();
    assert!(w.workloads().await.is_empty());
    assert!(w.local.list_workloads().await.unwrap().is_empty());
}

/// Returns an orchestrator of another replica, which does not host the
/// world's built-in runner and so cannot call it.
fn other_replica(w: &World) -> agyn_orchestrator::Orchestrator {
    let services = agyn_orchestrator::Services {
        connector: std::sync::Arc::new(agyn_gateway::PlatformConnector::default()),
        ..w.services.clone()
    };
    agyn_orchestrator::Orchestrator::new(services, fast_config()).unwrap()
}

async fn unreachable_runner_records_nothing(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let elsewhere = other_replica(&w);
    elsewhere.start_pass().await.unwrap();
    elsewhere.start_pass().await.unwrap();
    assert!(w.workloads().await.is_empty());
    assert!(w.local.list_workloads().await.unwrap().is_empty());

    // The replica that hosts the runner starts the pair's first workload.
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    let workloads = w.workloads().await;
    assert_eq!(workloads.len(), 1, "{workloads:#?}");
    assert_eq!(workloads[0].status, Starting);
    assert_eq!(workloads[0].runner_id, w.runner.id);
    w.stop_all().await;
}

async fn deleted_agent_stops_its_workload(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    settle!(
        w,
        "RUNNING",
        orchestrator.reconcile_pass().await,
        |all: &[agyn_runners::WorkloadRecord]| all
            .iter()
            .any(|workload| workload.status == Running)
    );
    w.platform
        .agents
        .delete_agent(&w.owner, &w.agent)
        .await
        .unwrap();
    orchestrator.idle_pass().await.unwrap();
    let workloads = w.workloads().await;
    assert_eq!(workloads[0].status, Stopped, "{workloads:#?}");
    // Its unacked messages start nothing.
    orchestrator.start_pass().await.unwrap();
    assert_eq!(with_status(&w.workloads().await, &NON_TERMINAL), 0);
    w.stop_all().await;
}

async fn orphan_workload_is_removed(backend: Backend) {
    use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
    let w = World::new(backend, Agent::Sleeps).await;
    let orphan = agyn_core::id::new_id();
    let main = runner_pb::ContainerSpec {
        name: "agent".into(),
        command: vec!["/bin/sh".into(), "-c".into(), "exec sleep 120".into()],
        ..Default::default()
    };
    let foreign = agyn_core::id::new_id();
    for (id, managed) in [(&orphan, true), (&foreign, false)] {
        let mut request = runner_pb::StartWorkloadRequest {
            workload_id: id.clone(),
            main: main.clone().into(),
            ..Default::default()
        };
        if managed {
            request
                .labels
                .insert("agyn.managed_by".to_string(), "agyn".to_string());
        }
        w.local.start_workload(request).await.unwrap();
    }
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.reconcile_pass().await;
    let left: Vec<String> = w
        .local
        .list_workloads()
        .await
        .unwrap()
        .into_iter()
        .map(|summary| summary.workload_id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&foreign));
    w.stop_all().await;
}

async fn persistent_volume_is_provisioned_and_reused(backend: Backend) {
    let w = World::new(backend, Agent::Sleeps).await;
    let volume = w
        .platform
        .agents
        .create_volume(
            &w.owner,
            &agyn_agents::NewVolume {
                organization_id: w.org.clone(),
                name: "data".into(),
                persistent: true,
                mount_path: "/data".into(),
                size: Some("1Gi".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.platform
        .agents
        .create_volume_attachment(
            &w.owner,
            &volume.id,
            Some(&Target::Agent(w.agent.clone())),
            false,
            "",
        )
        .await
        .unwrap();
    let orchestrator = w.orchestrator(fast_config());
    orchestrator.start_pass().await.unwrap();
    settle!(
        w,
        "RUNNING",
        orchestrator.reconcile_pass().await,
        |all: &[agyn_runners::WorkloadRecord]| all
            .iter()
            .any(|workload| workload.status == Running)
    );
    orchestrator.volume_pass().await;
    let volumes = thread_volumes(&w).await;
    assert_eq!(volumes.len(), 1, "{volumes:#?}");
    assert_eq!(volumes[0].status, agyn_runners::VolumeStatus::Active);
    assert_eq!(volumes[0].volume_id, volume.id);
    assert_eq!(volumes[0].runner_id, w.runner.id);
    assert_eq!(volumes[0].instance_id, volumes[0].persistent_name);

    // A second workload of the thread mounts the same disk.
    let first = w.workloads().await.remove(0);
    w.platform
        .runners
        .update_workload(
            &ORCHESTRATOR,
            &first.id,
            &agyn_runners::WorkloadChanges {
                status: Some(Stopping),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    settle!(
        w,
        "STOPPED",
        orchestrator.reconcile_pass().await,
        |all: &[agyn_runners::WorkloadRecord]| all
            .iter()
            .all(|workload| workload.status == Stopped)
    );
    // A replica that cannot call the runner holding the volume waits.
    other_replica(&w).start_pass().await.unwrap();
    assert_eq!(w.workloads().await.len(), 1);
    orchestrator.start_pass().await.unwrap();
    assert_eq!(w.workloads().await.len(), 2);
    let volumes = thread_volumes(&w).await;
    assert_eq!(volumes.len(), 1, "{volumes:#?}");
    w.stop_all().await;
}

async fn thread_volumes(w: &World) -> Vec<agyn_runners::VolumeRecord> {
    w.platform
        .runners
        .list_volumes_internal(
            &ORCHESTRATOR,
            &w.org,
            &agyn_runners::VolumeFilter {
                thread_ids: vec![w.thread.clone()],
                ..Default::default()
            },
            agyn_runners::ListSort::default(),
            agyn_runners::PageRequest {
                size: 100,
                token: "",
            },
        )
        .await
        .unwrap()
        .0
}

on_both_backends!(
    pair_gets_exactly_one_workload,
    concurrent_first_starts_make_one_workload,
    starting_becomes_running,
    environment_reaches_the_main_container,
    idle_workload_stops_and_next_message_restarts,
    crashing_agent_backs_off_then_degrades,
    watchdog_fails_a_start_that_hangs,
    conflicting_registry_credentials_are_a_configuration_error,
    agent_without_model_is_a_configuration_error,
    no_schedulable_runner_records_nothing,
    unreachable_runner_records_nothing,
    deleted_agent_stops_its_workload,
    orphan_workload_is_removed,
    persistent_volume_is_provisioned_and_reused,
);
