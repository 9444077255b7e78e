//! `agyn-bench reply`: the time from a message to an agent until the
//! agent's reply, from cold (no workload yet) and warm (the workload runs
//! and waits for messages).
//!
//! The admin creates an agent on a scripted model that replies to every
//! request with the same text, and a number of conversations with it.
//! One Subscribe stream on `thread_participant:me`, opened before the
//! first send, receives the agent's replies. Each conversation first gets
//! one message while it has no workload (cold). Then, after the agent has
//! replied in every conversation, each gets a second message while its
//! workload still runs (warm). Sends go one at a time, so samples do not
//! queue behind each other. A sample is the time from issuing SendMessage
//! to receiving the `message.created` event of the agent's reply.
//!
//! With `--runner-dir` the samples are broken down by the times the
//! platform records on the way: the workload record, the built-in
//! runner's manifest and the agent's log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agyn_client::agents::{AgentAvailability, CreateAgentRequest, DeleteAgentRequest};
use agyn_client::chat::CreateConversationRequest;
use agyn_client::llm::{CreateModelRequest, CreateProviderRequest, Script};
use agyn_client::notifications::__buffa::oneof::subscribe_response::Kind;
use agyn_client::notifications::SubscribeRequest;
use agyn_client::organizations::CreateOrganizationRequest;
use agyn_client::runners::{ListWorkloadsByThreadRequest, Workload, WorkloadStatus};
use agyn_client::threads::SendMessageRequest;
use agyn_client::{Credential, Gateway, streaming};
use agyn_core::Secret;
use buffa_types::google::protobuf::Timestamp;
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::stats::{Distribution, millis};
use crate::{BenchError, connection, parse_seconds};

/// Target of the warm samples, which measure platform overhead alone
/// because the scripted model replies at once.
const WARM_TARGET: Duration = Duration::from_millis(100);

/// Target of the cold samples on the built-in runner.
const COLD_TARGET: Duration = Duration::from_millis(500);

/// Text of every reply of the scripted model.
const REPLY_TEXT: &str = "Done.";

#[derive(Args, Debug)]
pub struct ReplyArgs {
    /// Base URL of the server's public listener (plaintext HTTP/2 is used).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// File with the admin's API token, normally `<data-dir>/admin-token`.
    #[arg(long)]
    admin_token_file: PathBuf,
    /// Number of conversations; each gives one cold and one warm sample.
    #[arg(long, default_value_t = 20)]
    conversations: usize,
    /// Directory of the built-in runner, normally `<data-dir>/runner`. With
    /// it, the cold samples are broken down from the workload manifests
    /// and the agent logs.
    #[arg(long)]
    runner_dir: Option<PathBuf>,
    /// Seconds to wait for one reply before the run fails.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    timeout: Duration,
    /// Seconds of pause after each reply, so that the work a reply leaves
    /// behind (the ack, span export) does not overlap the next sample.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    pause: Duration,
    /// Seconds to wait at the end for the workloads to stop after the
    /// agent is deleted.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    stop_wait: Duration,
}

/// The agent's reply to one message, as the subscriber received it.
#[derive(Debug)]
struct Reply {
    thread_id: String,
    received: Instant,
    /// When the bus accepted the envelope, in µs since the Unix epoch.
    published_micros: i64,
}

/// One measured message.
#[derive(Debug)]
struct Sample {
    thread_id: String,
    /// Wall-clock time of the send, in µs since the Unix epoch, to compare
    /// with the times the server records.
    sent_micros: i64,
    to_response: Duration,
    to_reply: Duration,
    published_micros: i64,
    received_micros: i64,
}

/// The organization, agent and conversations of a run.
struct Fixture {
    agent_id: String,
    thread_ids: Vec<String>,
}

pub async fn run(args: ReplyArgs) -> Result<(), BenchError> {
    if args.conversations == 0 {
        return Err("--conversations must be at least 1".into());
    }
    let token = connection::read_token(&args.admin_token_file)?;
    let gateway = Gateway::connect(&args.url, Credential::Token(Secret::new(token)), None)
        .map_err(|error| format!("invalid --url {:?}: {error}", args.url))?;
    let load_before = load_average()?;
    let fixture = create_fixture(&gateway, args.conversations).await?;
    let mut replies = subscribe(&gateway, fixture.agent_id.clone()).await?;

    eprintln!(
        "Cold: one message to each of {} conversations",
        args.conversations
    );
    let cold = measure(&gateway, &fixture, &mut replies, &args).await?;
    eprintln!("Warm: a second message to each conversation");
    let warm = measure(&gateway, &fixture, &mut replies, &args).await?;
    let load_after = load_average()?;

    let workloads = list_workloads(&gateway, &fixture.thread_ids).await?;
    let cold_breakdown = args
        .runner_dir
        .as_deref()
        .map(|dir| cold_breakdown(dir, &cold, &workloads))
        .transpose()?;
    let warm_breakdown = args
        .runner_dir
        .as_deref()
        .map(|dir| warm_breakdown(dir, &warm, &workloads))
        .transpose()?;
    let report = report(
        &args,
        &cold,
        &warm,
        &workloads,
        cold_breakdown,
        warm_breakdown,
        [load_before, load_after],
    );
    stop_workloads(&gateway, &fixture, args.stop_wait).await?;
    println!("{report}");
    Ok(())
}

/// Creates an organization with a scripted provider and model, an agent
/// on that model, and `count` conversations between the admin and the
/// agent.
async fn create_fixture(gateway: &Gateway, count: usize) -> Result<Fixture, BenchError> {
    let organization = gateway
        .organizations()
        .create_organization(CreateOrganizationRequest {
            name: format!("Reply benchmark {}", std::process::id()),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("CreateOrganization failed: {error}"))?
        .into_owned();
    let organization_id = organization.organization.meta.id.clone();

    let script: Script = serde_json::from_value(json!({
        "rules": [{"steps": [{"text": REPLY_TEXT}]}]
    }))?;
    let provider = gateway
        .llm()
        .create_provider(CreateProviderRequest {
            organization_id: organization_id.clone(),
            name: "scripted".to_string(),
            script: script.into(),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("CreateProvider failed: {error}"))?
        .into_owned();
    let model = gateway
        .llm()
        .create_model(CreateModelRequest {
            organization_id: organization_id.clone(),
            name: "Scripted".to_string(),
            provider_id: provider.provider.meta.id.clone(),
            remote_name: "scripted-1".to_string(),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("CreateModel failed: {error}"))?
        .into_owned();
    // The maximum idle timeout, so that no workload idles out between its
    // cold and its warm sample.
    let idle_timeout = buffa_types::google::protobuf::Duration {
        seconds: 24 * 60 * 60,
        ..Default::default()
    };
    let agent = gateway
        .agents()
        .create_agent(CreateAgentRequest {
            organization_id: organization_id.clone(),
            name: "Benchmark".to_string(),
            nickname: Some("benchmark".to_string()),
            model: model.model.meta.id.clone(),
            configuration: json!({"system_prompt": "Reply briefly."}).to_string(),
            idle_timeout: Some(idle_timeout).into(),
            availability: AgentAvailability::AGENT_AVAILABILITY_INTERNAL.into(),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("CreateAgent failed: {error}"))?
        .into_owned();
    let agent_id = agent.agent.meta.id.clone();

    let mut thread_ids = Vec::with_capacity(count);
    for _ in 0..count {
        let conversation = gateway
            .chat()
            .create_conversation(CreateConversationRequest {
                organization_id: organization_id.clone(),
                participant_ids: vec![agent_id.clone()],
                ..Default::default()
            })
            .await
            .map_err(|error| format!("CreateConversation failed: {error}"))?
            .into_owned();
        thread_ids.push(conversation.conversation.meta.id.clone());
    }
    eprintln!("Created organization {organization_id}, agent {agent_id} and {count} conversations");
    Ok(Fixture {
        agent_id,
        thread_ids,
    })
}

/// Opens the admin's Subscribe stream, waits for `ready`, and forwards
/// every `message.created` event sent by `agent_id` from a background
/// task.
async fn subscribe(
    gateway: &Gateway,
    agent_id: String,
) -> Result<mpsc::UnboundedReceiver<Reply>, BenchError> {
    let client = gateway.without_default_timeout().notifications();
    let mut stream = client
        .subscribe_with_options(
            SubscribeRequest {
                rooms: vec!["thread_participant:me".to_string()],
                ..Default::default()
            },
            streaming(),
        )
        .await
        .map_err(|error| format!("Subscribe failed: {error}"))?;
    match stream.message().await {
        Ok(Some(message)) if matches!(message.to_owned_message().kind, Some(Kind::Ready(_))) => {}
        Ok(other) => return Err(format!("Subscribe did not start with ready: {other:?}").into()),
        Err(error) => return Err(format!("Subscribe failed: {error}").into()),
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message.to_owned_message(),
                Ok(None) => {
                    eprintln!("The Subscribe stream ended");
                    return;
                }
                Err(error) => {
                    eprintln!("The Subscribe stream failed: {error}");
                    return;
                }
            };
            let received = Instant::now();
            let Some(Kind::Envelope(envelope)) = message.kind else {
                continue;
            };
            if envelope.event != "message.created" {
                continue;
            }
            let payload = serde_json::to_value(&*envelope.payload).unwrap_or_default();
            if payload["sender_id"].as_str() != Some(agent_id.as_str()) {
                continue;
            }
            let reply = Reply {
                thread_id: payload["thread_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                received,
                published_micros: envelope.ts.as_option().map_or(0, timestamp_micros),
            };
            if sender.send(reply).is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

/// Sends one message to each conversation in turn and waits for the
/// agent's reply before the next send.
async fn measure(
    gateway: &Gateway,
    fixture: &Fixture,
    replies: &mut mpsc::UnboundedReceiver<Reply>,
    args: &ReplyArgs,
) -> Result<Vec<Sample>, BenchError> {
    let threads = gateway.threads();
    let mut samples = Vec::with_capacity(fixture.thread_ids.len());
    for (index, thread_id) in fixture.thread_ids.iter().enumerate() {
        // A reply that arrives late for an earlier sample must not count
        // for this one.
        while replies.try_recv().is_ok() {}
        let sent_micros = now_micros();
        let issued = Instant::now();
        threads
            .send_message(SendMessageRequest {
                thread_id: thread_id.clone(),
                body: format!("Benchmark message {}", index + 1),
                ..Default::default()
            })
            .await
            .map_err(|error| format!("SendMessage to {thread_id} failed: {error}"))?;
        let to_response = issued.elapsed();
        let reply = wait_for_reply(replies, thread_id, issued + args.timeout).await?;
        let to_reply = reply.received - issued;
        let received_micros = sent_micros + micros(to_reply);
        eprintln!(
            "  {}/{}: reply after {:.1} ms",
            index + 1,
            fixture.thread_ids.len(),
            millis(to_reply)
        );
        samples.push(Sample {
            thread_id: thread_id.clone(),
            sent_micros,
            to_response,
            to_reply,
            published_micros: reply.published_micros,
            received_micros,
        });
        tokio::time::sleep(args.pause).await;
    }
    Ok(samples)
}

async fn wait_for_reply(
    replies: &mut mpsc::UnboundedReceiver<Reply>,
    thread_id: &str,
    deadline: Instant,
) -> Result<Reply, BenchError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, replies.recv()).await {
            Ok(Some(reply)) if reply.thread_id == thread_id => return Ok(reply),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the Subscribe stream ended before the reply".into()),
            Err(_) => {
                return Err(
                    format!("no reply in conversation {thread_id} within the timeout").into(),
                );
            }
        }
    }
}

/// Returns the workloads of each thread, newest first.
async fn list_workloads(
    gateway: &Gateway,
    thread_ids: &[String],
) -> Result<HashMap<String, Vec<Workload>>, BenchError> {
    let runners = gateway.runners();
    let mut all = HashMap::new();
    for thread_id in thread_ids {
        let page = runners
            .list_workloads_by_thread(ListWorkloadsByThreadRequest {
                thread_id: thread_id.clone(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .map_err(|error| format!("ListWorkloadsByThread({thread_id}) failed: {error}"))?
            .into_owned();
        all.insert(thread_id.clone(), page.workloads);
    }
    Ok(all)
}

/// Deletes the agent, which makes the orchestrator stop its workloads on
/// its next idle pass, and waits up to `wait` for every workload to stop.
async fn stop_workloads(
    gateway: &Gateway,
    fixture: &Fixture,
    wait: Duration,
) -> Result<(), BenchError> {
    gateway
        .agents()
        .delete_agent(DeleteAgentRequest {
            id: fixture.agent_id.clone(),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("DeleteAgent failed: {error}"))?;
    eprintln!("Deleted the agent; waiting for its workloads to stop");
    let deadline = Instant::now() + wait;
    loop {
        let workloads = list_workloads(gateway, &fixture.thread_ids).await?;
        let running = workloads
            .values()
            .flatten()
            .filter(|workload| !is_terminal(workload))
            .count();
        if running == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!("{running} workloads still run after {wait:?}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_terminal(workload: &Workload) -> bool {
    matches!(
        workload.status.as_known(),
        Some(WorkloadStatus::WORKLOAD_STATUS_STOPPED | WorkloadStatus::WORKLOAD_STATUS_FAILED)
    )
}

/// Times of one cold start, in µs since the Unix epoch, in the order the
/// steps happen. A time that could not be read is `None`.
#[derive(Debug, Default)]
struct ColdSteps {
    /// The orchestrator created the workload record.
    recorded: Option<i64>,
    /// The runner accepted StartWorkload and wrote the manifest.
    runner_accepted: Option<i64>,
    install_started: Option<i64>,
    install_finished: Option<i64>,
    main_started: Option<i64>,
    /// The agent logged `Agent starting`: `agyn launch` has run and the
    /// agent's runtime and logger are up.
    agent_starting: Option<i64>,
    /// The agent logged `Agent started`: GetAgent, ListSkills and ListMcps
    /// returned.
    agent_started: Option<i64>,
    /// The agent logged `Turn started`: it read the unacked messages and
    /// touched the workload.
    turn_started: Option<i64>,
}

/// Names of the cold steps, each measured from the step before it, the
/// first one from the send.
const COLD_PHASES: [&str; 10] = [
    "send_to_workload_record",
    "record_to_runner_start",
    "runner_start_to_install",
    "install",
    "install_to_main_container",
    "main_container_to_agent_log",
    "agent_startup_calls",
    "startup_to_turn",
    "turn_to_reply_published",
    "reply_published_to_received",
];

/// Breaks each cold sample down into [`COLD_PHASES`] and returns the p50
/// and maximum of each phase.
fn cold_breakdown(
    runner_dir: &Path,
    samples: &[Sample],
    workloads: &HashMap<String, Vec<Workload>>,
) -> Result<Value, BenchError> {
    let mut phases: Vec<Vec<Duration>> = vec![Vec::new(); COLD_PHASES.len()];
    for sample in samples {
        let Some(workload) = workloads
            .get(&sample.thread_id)
            .and_then(|list| list.last())
        else {
            continue;
        };
        let steps = cold_steps(runner_dir, workload)?;
        let times = [
            Some(sample.sent_micros),
            steps.recorded,
            steps.runner_accepted,
            steps.install_started,
            steps.install_finished,
            steps.main_started,
            steps.agent_starting,
            steps.agent_started,
            steps.turn_started,
            Some(sample.published_micros),
            Some(sample.received_micros),
        ];
        for (index, pair) in times.windows(2).enumerate() {
            if let [Some(from), Some(to)] = pair {
                phases[index].push(Duration::from_micros(u64::try_from(to - from).unwrap_or(0)));
            }
        }
    }
    Ok(phase_summary(&COLD_PHASES, phases))
}

/// Names of the warm steps, each measured from the step before it.
const WARM_PHASES: [&str; 3] = [
    "send_to_turn_started",
    "turn_to_reply_published",
    "reply_published_to_received",
];

/// Breaks each warm sample down by the second `Turn started` line of the
/// agent's log.
fn warm_breakdown(
    runner_dir: &Path,
    samples: &[Sample],
    workloads: &HashMap<String, Vec<Workload>>,
) -> Result<Value, BenchError> {
    let mut phases: Vec<Vec<Duration>> = vec![Vec::new(); WARM_PHASES.len()];
    for sample in samples {
        // Only a sample served by the cold sample's workload is warm.
        let Some([workload]) = workloads.get(&sample.thread_id).map(Vec::as_slice) else {
            continue;
        };
        let log = agent_log(runner_dir, &workload.meta.id)?;
        let turn_started = log_times(&log, "Turn started").get(1).copied();
        let times = [
            Some(sample.sent_micros),
            turn_started,
            Some(sample.published_micros),
            Some(sample.received_micros),
        ];
        for (index, pair) in times.windows(2).enumerate() {
            if let [Some(from), Some(to)] = pair {
                phases[index].push(Duration::from_micros(u64::try_from(to - from).unwrap_or(0)));
            }
        }
    }
    Ok(phase_summary(&WARM_PHASES, phases))
}

/// Returns one entry per phase, in the order of `names`.
fn phase_summary(names: &[&str], phases: Vec<Vec<Duration>>) -> Value {
    let entries = names
        .iter()
        .zip(phases)
        .map(|(name, samples)| {
            let distribution = Distribution::new(samples);
            json!({
                "phase": name,
                "samples": distribution.len(),
                "p50_ms": millis(distribution.percentile(50.0)),
                "max_ms": millis(distribution.max()),
            })
        })
        .collect();
    Value::Array(entries)
}

/// Reads the steps of `workload`'s start from its record, the runner's
/// `manifest.json` and the agent's log.
fn cold_steps(runner_dir: &Path, workload: &Workload) -> Result<ColdSteps, BenchError> {
    let workload_id = &workload.meta.id;
    let dir = runner_dir.join("workloads").join(workload_id);
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|error| format!("invalid JSON in {}: {error}", path.display()))?;
    let container = |name: &str, field: &str| -> Option<i64> {
        manifest["containers"]
            .as_array()?
            .iter()
            .find(|container| container["name"] == name)?[field]
            .as_i64()
    };
    let log = agent_log(runner_dir, workload_id)?;
    Ok(ColdSteps {
        recorded: workload.meta.created_at.as_option().map(timestamp_micros),
        runner_accepted: manifest["created_at"].as_i64(),
        install_started: container("agyn-init", "started_at"),
        install_finished: container("agyn-init", "finished_at"),
        main_started: container("agent", "started_at"),
        agent_starting: log_times(&log, "Agent starting").first().copied(),
        agent_started: log_times(&log, "Agent started").first().copied(),
        turn_started: log_times(&log, "Turn started").first().copied(),
    })
}

/// Reads the log of the main container of `workload_id`.
fn agent_log(runner_dir: &Path, workload_id: &str) -> Result<String, BenchError> {
    let path = runner_dir
        .join("workloads")
        .join(workload_id)
        .join("logs")
        .join("agent.log");
    std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()).into())
}

/// Returns the times of the log lines whose message is `message`, in µs
/// since the Unix epoch. The agent's text log starts each line with an
/// RFC 3339 UTC time, then the level, then the message.
fn log_times(log: &str, message: &str) -> Vec<i64> {
    log.lines()
        .filter_map(|line| {
            let (time, rest) = line.split_once(char::is_whitespace)?;
            let (_level, rest) = rest.trim_start().split_once(char::is_whitespace)?;
            rest.trim_start().starts_with(message).then_some(())?;
            parse_utc_micros(time)
        })
        .collect()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` into µs since the Unix epoch.
fn parse_utc_micros(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (
        clock_parts.next()??,
        clock_parts.next()??,
        clock_parts.next()??,
    );
    let mut fraction_micros = 0;
    let mut scale = 100_000;
    for digit in fraction.chars().take(6) {
        fraction_micros += i64::from(digit.to_digit(10)?) * scale;
        scale /= 10;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(seconds * 1_000_000 + fraction_micros)
}

/// Returns the days from 1970-01-01 to a date of the proleptic Gregorian
/// calendar, counting years from March so that leap days come last.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn timestamp_micros(timestamp: &Timestamp) -> i64 {
    timestamp.seconds * 1_000_000 + i64::from(timestamp.nanos) / 1_000
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, micros)
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Returns the 1-, 5- and 15-minute load averages of `/proc/loadavg`.
fn load_average() -> Result<Vec<f64>, BenchError> {
    let text = std::fs::read_to_string("/proc/loadavg")
        .map_err(|error| format!("failed to read /proc/loadavg: {error}"))?;
    Ok(text
        .split_whitespace()
        .take(3)
        .filter_map(|value| value.parse().ok())
        .collect())
}

fn report(
    args: &ReplyArgs,
    cold: &[Sample],
    warm: &[Sample],
    workloads: &HashMap<String, Vec<Workload>>,
    cold_breakdown: Option<Value>,
    warm_breakdown: Option<Value>,
    load: [Vec<f64>; 2],
) -> Value {
    let summary = |samples: &[Sample], target: Duration| {
        let replies = Distribution::new(samples.iter().map(|sample| sample.to_reply).collect());
        let responses =
            Distribution::new(samples.iter().map(|sample| sample.to_response).collect());
        json!({
            "samples": replies.len(),
            "send_to_reply": {
                "p50_ms": millis(replies.percentile(50.0)),
                "p90_ms": millis(replies.percentile(90.0)),
                "max_ms": millis(replies.max()),
            },
            "send_to_reply_ms": samples.iter().map(|sample| millis(sample.to_reply)).collect::<Vec<_>>(),
            "send_to_response_p50_ms": millis(responses.percentile(50.0)),
            "target_ms": millis(target),
            "p50_meets_target": replies.percentile(50.0) < target,
            "p90_meets_target": replies.percentile(90.0) < target,
            "max_meets_target": replies.max() < target,
        })
    };
    let total_workloads: usize = workloads.values().map(Vec::len).sum();
    json!({
        "benchmark": "reply",
        "conversations": args.conversations,
        "pause_seconds": args.pause.as_secs_f64(),
        "cold": summary(cold, COLD_TARGET),
        "warm": summary(warm, WARM_TARGET),
        "workloads_created": total_workloads,
        "warm_samples_on_a_new_workload": workloads.values().filter(|list| list.len() > 1).count(),
        "cold_breakdown": cold_breakdown,
        "warm_breakdown": warm_breakdown,
        "load_average_before": load[0],
        "load_average_after": load[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_parses_to_micros() {
        assert_eq!(parse_utc_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_micros("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000)
        );
        assert_eq!(
            parse_utc_micros("2024-02-29T23:59:59.123456Z"),
            Some(1_709_251_199_123_456)
        );
        assert_eq!(parse_utc_micros("2024-02-29 23:59:59"), None);
    }

    #[test]
    fn log_times_match_the_message() {
        let log = "2024-01-01T00:00:00.000001Z  INFO Agent starting agent_id=a\n\
                   2024-01-01T00:00:00.000002Z  INFO Agent started skills=0\n\
                   2024-01-01T00:00:01.000000Z  WARN Turn failed\n\
                   not a log line\n";
        let base = parse_utc_micros("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(log_times(log, "Agent starting"), vec![base + 1]);
        assert_eq!(log_times(log, "Agent started"), vec![base + 2]);
        assert!(log_times(log, "Turn started").is_empty());
    }
}
