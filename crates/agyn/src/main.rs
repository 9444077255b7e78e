//! `agyn`: the platform binary.

mod config;
mod runner;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agyn",
    version,
    about = "Run AI agents that work with people in conversations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every platform service in this process.
    Serve(Box<config::ServeArgs>),
    /// Run workloads as local processes for a platform on another host.
    Runner(runner::RunnerArgs),
    /// Copy this executable into a directory as <DIR>/agyn (a workload's init container).
    Install(agyn_launch::InstallArgs),
    /// Run the init scripts of AGYN_INIT_DIR, then a workload container's program.
    Launch(agyn_launch::LaunchArgs),
    /// Serve a workload's hook function over HTTP.
    Hook(agyn_launch::HookArgs),
    /// Run the built-in agent inside a workload (reads its settings from the environment).
    Agent(agyn_agent::AgentArgs),
    // The command-line client: login, orgs, agents, send and the others.
    #[command(flatten)]
    Client(agyn_cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match config::Config::resolve(*args) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("agyn: {error}");
                    return ExitCode::from(2);
                }
            };
            if let Err(error) = config::init_logging(&config) {
                eprintln!("agyn: {error}");
                return ExitCode::from(2);
            }
            run_async("Server", serve::run(config))
        }
        Command::Runner(args) => {
            let logger = config::parse_log_format(&args.log_format)
                .and_then(|format| config::install_logger(&args.log_level, format));
            if let Err(error) = logger {
                eprintln!("agyn: {error}");
                return ExitCode::from(2);
            }
            run_async("Runner", runner::run(args))
        }
        // Install only copies a file, so it starts neither a logger nor a
        // runtime.
        Command::Install(args) => agyn_launch::install::run(args),
        Command::Launch(args) => {
            if let Err(error) = config::install_logger("info", config::LogFormat::Text) {
                eprintln!("agyn: {error}");
                return ExitCode::from(2);
            }
            agyn_launch::launch::run(args)
        }
        Command::Hook(args) => {
            if let Err(error) = config::install_logger("info", config::LogFormat::Text) {
                eprintln!("agyn: {error}");
                return ExitCode::from(2);
            }
            agyn_launch::hook::run(args)
        }
        Command::Agent(args) => {
            let logger = config::parse_log_format(&args.log_format)
                .and_then(|format| config::install_logger(&args.log_level, format));
            if let Err(error) = logger {
                eprintln!("agyn: {error}");
                return ExitCode::from(2);
            }
            run_async("Agent", agyn_agent::run_from_env())
        }
        Command::Client(command) => agyn_cli::run(command),
    }
}

/// Runs `task` on a new multi-threaded runtime; a failure is logged as
/// `<what> failed`.
fn run_async(
    what: &str,
    task: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agyn: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{what} failed");
            ExitCode::FAILURE
        }
    }
}
