//! `agyn-bench send`: SendMessage throughput with a closed loop of
//! concurrent requests.
//!
//! `concurrency` workers each keep one request in flight, spread evenly
//! over `connections` HTTP/2 connections. Each request goes to the next
//! thread in round-robin order, so with more workers than threads some
//! threads get concurrent sends. After the warm-up, the rounds follow one
//! another with no pause, and each reports the sends completed in it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agyn_api_threads::agynio::api::threads::v1::SendMessageRequest;
use clap::Args;
use serde_json::{Value, json};

use crate::process::CpuSample;
use crate::{BenchError, ServerArgs, connection, parse_seconds, setup};

/// Error messages kept for the report; later errors are only counted.
const MAX_KEPT_ERRORS: usize = 5;

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Number of threads that the sends go to, in round-robin order.
    #[arg(long, default_value_t = 100)]
    threads: usize,
    /// Number of HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Number of requests in flight at any time.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds of load before the first measured round.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    warmup: Duration,
    /// Seconds per measured round.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
    /// Number of measured rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Size of each message body in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
}

/// Counters that every worker updates.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    next_thread: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Progress {
    fn record_error(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if errors.len() < MAX_KEPT_ERRORS {
            errors.push(message);
        }
    }
}

/// Builds a message body of `bytes` bytes of ASCII text.
pub fn message_body(bytes: usize) -> String {
    let mut body = String::from("benchmark message ");
    body.truncate(bytes);
    while body.len() < bytes {
        body.push('x');
    }
    body
}

pub async fn run(args: SendArgs) -> Result<(), BenchError> {
    if args.threads == 0 || args.connections == 0 || args.concurrency == 0 {
        return Err("--threads, --connections and --concurrency must be at least 1".into());
    }
    let admin_token_file = args
        .server
        .admin_token_file
        .as_ref()
        .ok_or("--admin-token-file is required")?;
    let admin_token = connection::read_token(admin_token_file)?;
    let identities = connection::read_identities(&args.server.identities)?;
    let threads = Arc::new(
        setup::create_threads(
            &args.server.url,
            &admin_token,
            &identities[0].id,
            args.threads,
        )
        .await?,
    );
    let body = message_body(args.body_bytes);

    let clients = (0..args.connections)
        .map(|_| connection::threads(&args.server.url, &admin_token))
        .collect::<Result<Vec<_>, _>>()?;
    let progress = Arc::new(Progress::default());
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let client = clients[worker % clients.len()].clone();
        let progress = Arc::clone(&progress);
        let threads = Arc::clone(&threads);
        let body = body.clone();
        workers.spawn(async move {
            while !progress.stop.load(Ordering::Relaxed) {
                let index = progress.next_thread.fetch_add(1, Ordering::Relaxed);
                let request = SendMessageRequest {
                    thread_id: threads[index % threads.len()].clone(),
                    body: body.clone(),
                    ..Default::default()
                };
                match client.send_message(request).await {
                    Ok(_) => {
                        progress.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => progress.record_error(format!("SendMessage failed: {error}")),
                }
            }
        });
    }

    eprintln!(
        "Warming up for {:?} with {} requests in flight on {} connections",
        args.warmup, args.concurrency, args.connections
    );
    tokio::time::sleep(args.warmup).await;
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        let result = measure_round(&progress, args.duration, args.server.server_pid).await?;
        eprintln!(
            "Round {round}: {:.0} sends/s, {} errors",
            result["sends_per_s"].as_f64().unwrap_or_default(),
            result["errors"]
        );
        rounds.push(result);
    }
    progress.stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}

    let mean = rounds
        .iter()
        .filter_map(|round| round["sends_per_s"].as_f64())
        .sum::<f64>()
        / rounds.len().max(1) as f64;
    let errors: u64 = rounds
        .iter()
        .filter_map(|round| round["errors"].as_u64())
        .sum();
    let kept_errors = progress
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let report = json!({
        "benchmark": "send",
        "threads": args.threads,
        "connections": args.connections,
        "concurrency": args.concurrency,
        "body_bytes": args.body_bytes,
        "round_seconds": args.duration.as_secs_f64(),
        "rounds": rounds,
        "mean_sends_per_s": mean.round(),
        "errors": errors,
        "warmup_and_total_errors": progress.failed.load(Ordering::Relaxed),
        "first_errors": kept_errors,
    });
    println!("{report}");
    Ok(())
}

/// Counts the sends completed during `duration`, with the CPU time that
/// the server and this process used meanwhile.
async fn measure_round(
    progress: &Progress,
    duration: Duration,
    server_pid: Option<u32>,
) -> Result<Value, BenchError> {
    let cpu_before = CpuSample::take(server_pid)?;
    let sent_before = progress.sent.load(Ordering::Relaxed);
    let failed_before = progress.failed.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let sent = progress.sent.load(Ordering::Relaxed) - sent_before;
    let failed = progress.failed.load(Ordering::Relaxed) - failed_before;
    let elapsed = started.elapsed().as_secs_f64();
    let (server_cpu, client_cpu) = CpuSample::take(server_pid)?.since(&cpu_before);
    let server_cpu_s = server_cpu.map(|cpu| cpu.as_secs_f64());
    Ok(json!({
        "sends": sent,
        "errors": failed,
        "seconds": elapsed,
        "sends_per_s": sent as f64 / elapsed,
        "server_cpu_s": server_cpu_s,
        "server_cpu_us_per_send": server_cpu_s
            .filter(|_| sent > 0)
            .map(|cpu| (cpu * 1e6 / sent as f64).round()),
        "client_cpu_s": client_cpu.as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_body_has_requested_size() {
        assert_eq!(message_body(64).len(), 64);
        assert_eq!(message_body(5), "bench");
        assert!(message_body(64).starts_with("benchmark message x"));
    }
}
