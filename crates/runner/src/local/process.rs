//! Child processes: spawning a container in its own process group,
//! signalling groups, and telling whether a recorded pid is still the same
//! process.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};

/// Interval between two checks of an adopted process, which is not a
/// child of this runner and so cannot be waited for.
const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The program, arguments, directory and environment of a container
/// process. Environment values may be secret, so a launch lives only in
/// memory.
#[derive(Clone)]
pub(crate) struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub working_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub log_file: PathBuf,
}

/// A running container process.
pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub pid: i32,
    pub start_ticks: Option<u64>,
}

/// Starts `launch` as the leader of a new process group, with stdout and
/// stderr appended to its log file and stdin closed.
///
/// The process writes the log file itself, so its output keeps being
/// recorded while no runner runs.
pub(crate) fn spawn(launch: &Launch) -> std::io::Result<Spawned> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log_file)?;
    let log_for_stderr = log.try_clone()?;
    let mut command = tokio::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .current_dir(&launch.working_dir)
        .env_clear()
        .envs(launch.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_for_stderr))
        .process_group(0)
        .kill_on_drop(false);
    let child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| std::io::Error::other("the spawned process has no pid"))?;
    Ok(Spawned {
        child,
        pid,
        start_ticks: start_ticks(pid),
    })
}

/// Returns the start time of `pid` in clock ticks after boot, or `None`
/// when no such process exists or it is a zombie.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 is in parentheses and may itself contain
    // spaces or parentheses, so the fields are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (the state), so field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

/// Returns whether `pid` is alive and still the process that started at
/// `ticks`.
pub(crate) fn is_same_process(pid: i32, ticks: Option<u64>) -> bool {
    match (start_ticks(pid), ticks) {
        (Some(current), Some(recorded)) => current == recorded,
        _ => false,
    }
}

/// Sends `signal` to the process group led by `pid`. A group that no
/// longer exists is not an error.
pub(crate) fn signal_group(pid: i32, signal: Signal) {
    let Some(pid) = Pid::from_raw(pid) else {
        return;
    };
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) => {}
        Err(rustix::io::Errno::SRCH) => {}
        Err(error) => {
            tracing::warn!(pid = pid.as_raw_nonzero().get(), %error, ?signal, "Failed to signal a process group");
        }
    }
}

/// Waits until an adopted process (one started by an earlier runner on
/// the same directory) exits.
pub(crate) async fn wait_adopted(pid: i32, ticks: Option<u64>) {
    while is_same_process(pid, ticks) {
        tokio::time::sleep(ADOPTED_POLL_INTERVAL).await;
    }
}

/// Returns the exit code a shell would report: the code of a normal exit,
/// or 128 plus the signal number for a process killed by a signal.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Creates `path` and its parents with mode 0700.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
