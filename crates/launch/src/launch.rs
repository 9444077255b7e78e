//! `agyn launch [--mcp-stdio-bridge --port N --path P] -- <argv...>`: the
//! first program of every workload container.
//!
//! It runs the container's init scripts ([`crate::init`]), then either
//! replaces itself with `argv`, so that signals reach the program
//! directly, or, with `--mcp-stdio-bridge`, starts `argv` as a child and
//! serves its MCP stdio transport over HTTP ([`crate::bridge`]).

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use clap::Args;

/// Exit code when the program does not exist, as shells report it.
const EXIT_NOT_FOUND: u8 = 127;

/// Exit code when the program exists but cannot be run, as shells report
/// it.
const EXIT_NOT_EXECUTABLE: u8 = 126;

/// Exit code for invalid arguments, as clap reports them.
const EXIT_USAGE: u8 = 2;

/// Arguments of `agyn launch`.
#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Serve the program's MCP stdio transport as MCP streamable HTTP on 127.0.0.1:<PORT><PATH>.
    #[arg(long, requires = "port")]
    pub mcp_stdio_bridge: bool,
    /// TCP port of the bridge on 127.0.0.1; 0 picks a free port.
    #[arg(long, requires = "mcp_stdio_bridge")]
    pub port: Option<u16>,
    /// HTTP path of the bridge's MCP endpoint.
    #[arg(long, default_value = "/mcp", requires = "mcp_stdio_bridge")]
    pub path: String,
    /// Program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "ARGV")]
    pub command: Vec<String>,
}

/// Runs `agyn launch`. Without the bridge it returns only when `argv`
/// could not be started.
pub fn run(args: LaunchArgs) -> ExitCode {
    if args.mcp_stdio_bridge
        && let Err(message) = crate::bridge::check_path(&args.path)
    {
        eprintln!("agyn launch: invalid --path {:?}: {message}", args.path);
        return ExitCode::from(EXIT_USAGE);
    }
    crate::init::run_from_env();
    if !args.mcp_stdio_bridge {
        return exec(&args.command);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "Failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let port = args.port.unwrap_or_default();
    runtime.block_on(crate::bridge::run(port, args.path, args.command))
}

/// Replaces this process with `command`. Returns only on failure, with the
/// exit code a shell would report.
fn exec(command: &[String]) -> ExitCode {
    let Some((program, arguments)) = command.split_first() else {
        tracing::error!("No program to run; pass it after --");
        return ExitCode::from(EXIT_USAGE);
    };
    let error = Command::new(program).args(arguments).exec();
    tracing::error!(program, %error, "Failed to run the program");
    match error.kind() {
        std::io::ErrorKind::NotFound => ExitCode::from(EXIT_NOT_FOUND),
        _ => ExitCode::from(EXIT_NOT_EXECUTABLE),
    }
}
