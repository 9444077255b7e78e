//! A container's init scripts: the `*.sh` files of the directory named by
//! `AGYN_INIT_DIR`, run in file name order before the container's program.
//!
//! Each script runs as `/bin/sh -c <contents> <path>` (so `$0` is the
//! script's path) in the working directory and environment of this
//! process, with its output going to this process's stdout and stderr. A
//! script that fails, times out or cannot be read is logged and skipped.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Environment variable naming the directory of the init scripts.
pub const INIT_DIR_ENV: &str = "AGYN_INIT_DIR";

/// Time limit of one init script.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Maximum pause between two checks of a running script.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The result of one init script.
#[derive(Debug)]
pub enum Outcome {
    /// The shell exited with this status.
    Exited(ExitStatus),
    /// The shell outlived the time limit and was killed.
    TimedOut,
    /// The script could not be read or the shell not started.
    Failed(std::io::Error),
}

impl Outcome {
    /// Returns whether the script ran to a zero exit status.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(status) if status.success())
    }
}

/// Runs the scripts of the directory named by `AGYN_INIT_DIR`. An unset or
/// empty variable means there are none.
pub fn run_from_env() -> Vec<(PathBuf, Outcome)> {
    match std::env::var_os(INIT_DIR_ENV) {
        Some(dir) if !dir.is_empty() => run_scripts(Path::new(&dir), SCRIPT_TIMEOUT),
        _ => Vec::new(),
    }
}

/// Runs every `*.sh` file of `dir` in file name order, each for at most
/// `timeout`, and returns each script's path and outcome. A directory that
/// cannot be read is logged and yields no scripts.
pub fn run_scripts(dir: &Path, timeout: Duration) -> Vec<(PathBuf, Outcome)> {
    let scripts = match list_scripts(dir) {
        Ok(scripts) => scripts,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "Failed to read the init script directory; running no init scripts");
            return Vec::new();
        }
    };
    scripts
        .into_iter()
        .map(|script| {
            let outcome = run_script(&script, timeout);
            log_outcome(&script, &outcome, timeout);
            (script, outcome)
        })
        .collect()
}

/// Lists the regular `*.sh` files of `dir`, sorted by file name bytes.
pub fn list_scripts(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_script = path.extension().is_some_and(|extension| extension == "sh");
        if is_script && path.is_file() {
            scripts.push(path);
        }
    }
    scripts.sort();
    Ok(scripts)
}

fn run_script(script: &Path, timeout: Duration) -> Outcome {
    let contents = match std::fs::read(script) {
        Ok(contents) => OsString::from_vec(contents),
        Err(error) => return Outcome::Failed(error),
    };
    // NOTE: the script shares this process's process group, so background
    // processes it starts keep running after it ends, and a timeout kills
    // only the shell.
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(contents)
        .arg(script)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(error),
    };
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Outcome::Exited(status),
            Ok(None) => {}
            Err(error) => return Outcome::Failed(error),
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome::TimedOut;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

fn log_outcome(script: &Path, outcome: &Outcome, timeout: Duration) {
    let script = script.display();
    match outcome {
        Outcome::Exited(status) if status.success() => {
            tracing::info!(%script, "Ran an init script");
        }
        Outcome::Exited(status) => {
            let exit_code = crate::shell_exit_code(*status);
            tracing::warn!(%script, exit_code, "Init script failed; skipping it");
        }
        Outcome::TimedOut => {
            tracing::warn!(%script, ?timeout, "Init script timed out and was killed; skipping it");
        }
        Outcome::Failed(error) => {
            tracing::warn!(%script, %error, "Failed to run an init script; skipping it");
        }
    }
}
