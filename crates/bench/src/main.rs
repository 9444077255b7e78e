//! `agyn-bench`: load generator for the threads and notifications
//! benchmarks of a running `agyn serve`.
//!
//! Subcommands:
//!
//! - `identities` creates benchmark users and their API tokens directly in
//!   the server's database, because no public method creates a user
//!   without OIDC sign-in.
//! - `send` measures `ThreadsGateway/SendMessage` throughput with a closed
//!   loop of concurrent requests.
//! - `latency` sends at a fixed rate and measures the time from issuing
//!   SendMessage to a subscriber receiving the `message.created` event.
//! - `idle-streams` opens many idle `NotificationsGateway/Subscribe`
//!   streams and reports the server's resident memory before and after.
//! - `reply` measures the time from a message to an agent until the
//!   agent's reply, with and without a running workload.
//!
//! Every measuring subcommand prints progress to stderr and one JSON
//! object with its results to stdout. The method and the results are
//! written down in `docs/benchmarks.md`.

mod connection;
mod identities;
mod idle;
mod latency;
mod process;
mod reply;
mod send;
mod setup;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agyn-bench", about = "Benchmarks of threads and notifications")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates benchmark users with one API token each and writes
    /// `<identity id> <token>` lines to a file.
    Identities(identities::IdentitiesArgs),
    /// Measures SendMessage throughput.
    Send(send::SendArgs),
    /// Measures the latency from SendMessage to the `message.created` event.
    Latency(latency::LatencyArgs),
    /// Measures the server memory held by idle Subscribe streams.
    IdleStreams(idle::IdleArgs),
    /// Measures the time from a message to an agent's reply, cold and warm.
    Reply(reply::ReplyArgs),
}

/// Options shared by the subcommands that talk to a running server.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Base URL of the server's public listener (plaintext HTTP/2 is used).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File with the admin's API token, normally `<data-dir>/admin-token`.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// File written by `agyn-bench identities`.
    #[arg(long)]
    pub identities: PathBuf,
    /// Process id of the server, for its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Parses a duration in seconds, such as `10` or `0.5`.
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    let seconds: f64 = value
        .parse()
        .map_err(|_| format!("invalid duration {value:?}: expected seconds, such as 10 or 0.5"))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!(
            "invalid duration {value:?}: must be zero or more seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Error type of the subcommands; each message names what failed.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("failed to start the tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Identities(args) => identities::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Latency(args) => latency::run(args).await,
            Command::IdleStreams(args) => idle::run(args).await,
            Command::Reply(args) => reply::run(args).await,
        }
    });
    if let Err(error) = result {
        eprintln!("agyn-bench: {error}");
        std::process::exit(1);
    }
}
