//! The programs a workload's containers start with, before and around
//! their own command:
//!
//! - [`install`]: `agyn install <dir>` puts the running executable at
//!   `<dir>/agyn`, so that the other containers of the workload can run it
//!   from a shared volume.
//! - [`launch`]: `agyn launch -- <argv>` runs the container's init scripts,
//!   then replaces itself with `argv`. With `--mcp-stdio-bridge` it keeps
//!   running instead and serves the program's MCP stdio transport as MCP
//!   streamable HTTP on `127.0.0.1` ([`bridge`]).
//! - [`hook`]: `agyn hook serve` runs a hook's shell function for every
//!   `POST /run`.
//!
//! None of them writes log files: they log to stderr, which the runner
//! records as the container log.

pub mod bridge;
pub mod hook;
pub mod init;
pub mod install;
pub mod launch;

pub use hook::{HookArgs, HookCommand, HookServeArgs};
pub use install::InstallArgs;
pub use launch::LaunchArgs;

/// Returns the exit code a shell reports for `status`: the code of a
/// normal exit, or 128 plus the signal number for a process killed by a
/// signal (255 at most).
pub(crate) fn shell_exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    }
}
