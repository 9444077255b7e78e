//! `agyn-bench latency`: the time from issuing SendMessage to a
//! subscriber receiving that message's `message.created` event, at a fixed
//! send rate.
//!
//! The admin sends to threads whose only other participant is the first
//! benchmark identity, which has one Subscribe stream open on
//! `thread_participant:me`. Sends start on a fixed schedule, each in its
//! own task, so a slow response never delays the next send (an open
//! loop). Events are matched to sends by the `message_id` of their
//! payload. Sends of the warm-up are not measured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agyn_api_notifications::agynio::api::notifications::v1::{
    self as notifications_pb, SubscribeRequest,
};
use agyn_api_threads::agynio::api::threads::v1::SendMessageRequest;
use clap::Args;
use notifications_pb::__buffa::oneof::subscribe_response::Kind;
use serde_json::json;
use tokio::time::MissedTickBehavior;

use crate::stats::{Distribution, millis};
use crate::{BenchError, ServerArgs, connection, parse_seconds, send, setup};

#[derive(Args, Debug)]
pub struct LatencyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Sends per second, started on a fixed schedule.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Number of threads that the sends go to, in round-robin order.
    #[arg(long, default_value_t = 100)]
    threads: usize,
    /// Number of HTTP/2 connections for the sends; the subscriber has its own.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds of sending before measuring starts.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    warmup: Duration,
    /// Seconds of measured sending.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
    /// Seconds to wait after the last send for events still on their way.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    drain: Duration,
    /// Size of each message body in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
}

/// One completed send.
struct Sent {
    message_id: String,
    issued: Instant,
    responded: Instant,
    measured: bool,
}

/// Events and gap notices received by the subscriber so far.
#[derive(Default)]
struct Received {
    /// Receipt time by message id.
    events: Mutex<HashMap<String, Instant>>,
    gaps: AtomicU64,
    ended: Mutex<Option<String>>,
}

pub async fn run(args: LatencyArgs) -> Result<(), BenchError> {
    if args.rate == 0 || args.threads == 0 || args.connections == 0 {
        return Err("--rate, --threads and --connections must be at least 1".into());
    }
    let admin_token_file = args
        .server
        .admin_token_file
        .as_ref()
        .ok_or("--admin-token-file is required")?;
    let admin_token = connection::read_token(admin_token_file)?;
    let identities = connection::read_identities(&args.server.identities)?;
    let recipient = &identities[0];
    let threads = Arc::new(
        setup::create_threads(&args.server.url, &admin_token, &recipient.id, args.threads).await?,
    );

    let received = Arc::new(Received::default());
    let subscriber = subscribe(&args.server.url, &recipient.token, Arc::clone(&received)).await?;

    let clients = (0..args.connections)
        .map(|_| connection::threads(&args.server.url, &admin_token))
        .collect::<Result<Vec<_>, _>>()?;
    let body = send::message_body(args.body_bytes);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();

    eprintln!(
        "Sending {}/s for {:?} of warm-up and {:?} measured",
        args.rate, args.warmup, args.duration
    );
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let stop_at = measure_from + args.duration;
    let mut max_lag = Duration::ZERO;
    let mut sends = tokio::task::JoinSet::new();
    let mut index = 0usize;
    loop {
        let scheduled = ticker.tick().await.into_std();
        if scheduled >= stop_at {
            break;
        }
        let issued = Instant::now();
        max_lag = max_lag.max(issued.saturating_duration_since(scheduled));
        let client = clients[index % clients.len()].clone();
        let request = SendMessageRequest {
            thread_id: threads[index % threads.len()].clone(),
            body: body.clone(),
            ..Default::default()
        };
        let measured = scheduled >= measure_from;
        let sent = Arc::clone(&sent);
        let failures = Arc::clone(&failures);
        sends.spawn(async move {
            let result = client.send_message(request).await;
            let responded = Instant::now();
            match result {
                Ok(response) => {
                    let message_id = response.view().message.meta.id.to_string();
                    lock(&sent).push(Sent {
                        message_id,
                        issued,
                        responded,
                        measured,
                    });
                }
                Err(error) => lock(&failures).push(format!("SendMessage failed: {error}")),
            }
        });
        index += 1;
    }
    while sends.join_next().await.is_some() {}
    let sending_time = started.elapsed();

    wait_for_events(&sent, &received, args.drain).await;
    subscriber.abort();
    let report = report(&args, &sent, &received, &failures, max_lag, sending_time);
    println!("{report}");
    Ok(())
}

/// Opens the subscriber's stream, waits for `ready`, and records every
/// `message.created` event in `received` from a background task.
async fn subscribe(
    url: &str,
    token: &str,
    received: Arc<Received>,
) -> Result<tokio::task::JoinHandle<()>, BenchError> {
    let client = connection::notifications(url, token)?;
    let mut stream = client
        .subscribe(SubscribeRequest {
            rooms: vec!["thread_participant:me".to_string()],
            ..Default::default()
        })
        .await
        .map_err(|error| format!("Subscribe failed: {error}"))?;
    match stream.message().await {
        Ok(Some(message)) if matches!(message.to_owned_message().kind, Some(Kind::Ready(_))) => {}
        Ok(other) => {
            return Err(format!("Subscribe did not start with ready: {other:?}").into());
        }
        Err(error) => return Err(format!("Subscribe failed: {error}").into()),
    }
    Ok(tokio::spawn(async move {
        loop {
            let message = stream.message().await;
            let now = Instant::now();
            let message = match message {
                Ok(Some(message)) => message.to_owned_message(),
                Ok(None) => {
                    *lock(&received.ended) = Some("the stream ended".to_string());
                    return;
                }
                Err(error) => {
                    *lock(&received.ended) = Some(format!("the stream failed: {error}"));
                    return;
                }
            };
            match message.kind {
                Some(Kind::Envelope(envelope)) if envelope.event == "message.created" => {
                    let payload = serde_json::to_value(&*envelope.payload).unwrap_or_default();
                    if let Some(id) = payload["message_id"].as_str() {
                        lock(&received.events).insert(id.to_string(), now);
                    }
                }
                Some(Kind::Gap(_)) => {
                    received.gaps.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }))
}

/// Waits until every sent message has its event, or `drain` passes.
async fn wait_for_events(sent: &Mutex<Vec<Sent>>, received: &Received, drain: Duration) {
    let deadline = Instant::now() + drain;
    loop {
        let missing = {
            let sent = lock(sent);
            let events = lock(&received.events);
            sent.iter()
                .filter(|send| !events.contains_key(&send.message_id))
                .count()
        };
        if missing == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(
    args: &LatencyArgs,
    sent: &Mutex<Vec<Sent>>,
    received: &Received,
    failures: &Mutex<Vec<String>>,
    max_lag: Duration,
    sending_time: Duration,
) -> serde_json::Value {
    let sent = lock(sent);
    let events = lock(&received.events);
    let failures = lock(failures);
    let mut event_latencies = Vec::new();
    let mut response_latencies = Vec::new();
    let mut missing = 0usize;
    for send in sent.iter().filter(|send| send.measured) {
        response_latencies.push(send.responded - send.issued);
        match events.get(&send.message_id) {
            Some(at) => event_latencies.push(at.saturating_duration_since(send.issued)),
            None => missing += 1,
        }
    }
    let measured = response_latencies.len();
    json!({
        "benchmark": "latency",
        "target_rate": args.rate,
        "threads": args.threads,
        "connections": args.connections,
        "body_bytes": args.body_bytes,
        "measured_seconds": args.duration.as_secs_f64(),
        "measured_sends": measured,
        "achieved_rate": (measured as f64 / args.duration.as_secs_f64()).round(),
        "sending_seconds": sending_time.as_secs_f64(),
        "max_schedule_lag_ms": millis(max_lag),
        "send_errors": failures.len(),
        "first_errors": failures.iter().take(5).collect::<Vec<_>>(),
        "missing_events": missing,
        "gaps": received.gaps.load(Ordering::Relaxed),
        "stream_end": *lock(&received.ended),
        "send_to_event": Distribution::new(event_latencies).summary_ms(),
        "send_to_response": Distribution::new(response_latencies).summary_ms(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
