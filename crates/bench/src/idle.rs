//! `agyn-bench idle-streams`: the server memory held by idle Subscribe
//! streams.
//!
//! Reads the server's `VmRSS`, opens the streams over a fixed number of
//! HTTP/2 connections (each stream waits for its `ready`), lets them idle
//! for the settle time while reading their heartbeats, and reads `VmRSS`
//! again. The benchmark identities take turns, so that none exceeds the
//! per-identity stream limit. Each stream subscribes to
//! `thread_participant:me` and `identity:me`, as a signed-in client would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agyn_api_notifications::agynio::api::notifications::v1::{
    self as notifications_pb, SubscribeRequest,
};
use clap::Args;
use connectrpc::client::HttpClient;
use notifications_pb::__buffa::oneof::subscribe_response::Kind;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::process::status_bytes;
use crate::{BenchError, ServerArgs, connection, parse_seconds};

/// Open streams that one identity may hold on one replica; the value of
/// `agyn_notifications::MAX_STREAMS_PER_IDENTITY`.
const STREAMS_PER_IDENTITY: usize = 32;

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Number of streams to open.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Number of HTTP/2 connections that carry the streams. The server
    /// accepts 200 concurrent streams per connection.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Number of Subscribe calls waiting for `ready` at any time while opening.
    #[arg(long, default_value_t = 256)]
    open_concurrency: usize,
    /// Seconds between the last stream opening and the second memory reading.
    #[arg(long, default_value = "20", value_parser = parse_seconds)]
    settle: Duration,
    /// Seconds between closing the streams and the last memory reading.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    after_close: Duration,
}

pub async fn run(args: IdleArgs) -> Result<(), BenchError> {
    let pid = args
        .server
        .server_pid
        .ok_or("--server-pid is required to read the server's memory")?;
    if args.connections == 0 || args.open_concurrency == 0 {
        return Err("--connections and --open-concurrency must be at least 1".into());
    }
    let identities = connection::read_identities(&args.server.identities)?;
    let needed = args.streams.div_ceil(STREAMS_PER_IDENTITY);
    if identities.len() < needed {
        return Err(format!(
            "{} streams need at least {needed} identities ({STREAMS_PER_IDENTITY} streams each), \
             but {} has {}: run `agyn-bench identities --count {needed}`",
            args.streams,
            args.server.identities.display(),
            identities.len()
        )
        .into());
    }

    let rss_before = status_bytes(pid, "VmRSS")?;
    let transports: Vec<HttpClient> = (0..args.connections)
        .map(|_| HttpClient::plaintext_http2_only())
        .collect();
    let gate = Arc::new(Semaphore::new(args.open_concurrency));
    let heartbeats = Arc::new(AtomicU64::new(0));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut holders = tokio::task::JoinSet::new();
    let opening = Instant::now();
    for index in 0..args.streams {
        let identity = &identities[index % identities.len()];
        let client = connection::notifications_on(
            &transports[index % transports.len()],
            &args.server.url,
            &identity.token,
        )?;
        let gate = Arc::clone(&gate);
        let heartbeats = Arc::clone(&heartbeats);
        let opened_tx = opened_tx.clone();
        holders.spawn(async move {
            let permit = gate.acquire_owned().await;
            let request = SubscribeRequest {
                rooms: vec![
                    "thread_participant:me".to_string(),
                    "identity:me".to_string(),
                ],
                ..Default::default()
            };
            let mut stream = match client.subscribe(request).await {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = opened_tx.send(Err(format!("Subscribe failed: {error}")));
                    return;
                }
            };
            match stream.message().await {
                Ok(Some(message))
                    if matches!(message.to_owned_message().kind, Some(Kind::Ready(_))) =>
                {
                    let _ = opened_tx.send(Ok(()));
                }
                Ok(other) => {
                    let _ = opened_tx.send(Err(format!("first message is not ready: {other:?}")));
                    return;
                }
                Err(error) => {
                    let _ = opened_tx.send(Err(format!("Subscribe failed: {error}")));
                    return;
                }
            }
            drop(permit);
            // Idle: only heartbeats arrive until the task is aborted.
            while let Ok(Some(_)) = stream.message().await {
                heartbeats.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    drop(opened_tx);

    // Every holder task reports once, when its stream is ready or failed,
    // and keeps its sender for as long as its stream is open.
    let mut opened = 0usize;
    let mut errors = Vec::new();
    for _ in 0..args.streams {
        match opened_rx.recv().await {
            Some(Ok(())) => opened += 1,
            Some(Err(error)) => errors.push(error),
            None => break,
        }
        if (opened + errors.len()).is_multiple_of(1000) {
            eprintln!("{opened} streams open, {} failed", errors.len());
        }
    }
    let open_seconds = opening.elapsed().as_secs_f64();
    eprintln!(
        "Opened {opened} streams in {open_seconds:.1} s; idling for {:?}",
        args.settle
    );
    tokio::time::sleep(args.settle).await;
    let rss_open = status_bytes(pid, "VmRSS")?;
    let heartbeats_seen = heartbeats.load(Ordering::Relaxed);

    holders.abort_all();
    while holders.join_next().await.is_some() {}
    drop(transports);
    tokio::time::sleep(args.after_close).await;
    let rss_closed = status_bytes(pid, "VmRSS")?;
    let peak = status_bytes(pid, "VmHWM")?;

    let held = rss_open.saturating_sub(rss_before);
    let report = json!({
        "benchmark": "idle-streams",
        "streams_requested": args.streams,
        "streams_open": opened,
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "identities_used": identities.len().min(args.streams),
        "connections": args.connections,
        "open_seconds": open_seconds,
        "settle_seconds": args.settle.as_secs_f64(),
        "heartbeats_during_settle": heartbeats_seen,
        "rss_before_mb": megabytes(rss_before),
        "rss_open_mb": megabytes(rss_open),
        "rss_held_mb": megabytes(held),
        "rss_per_stream_kb": (held as f64 / opened.max(1) as f64 / 1024.0 * 10.0).round() / 10.0,
        "rss_after_close_mb": megabytes(rss_closed),
        "peak_rss_mb": megabytes(peak),
    });
    println!("{report}");
    Ok(())
}

/// `bytes` in megabytes (10^6 bytes), to one decimal.
fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1e5).round() / 10.0
}
