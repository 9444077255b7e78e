//! `agyn`: the platform binary.

mod config;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(config::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match config::Config::resolve(args) {
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
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("agyn: failed to start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "Server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
