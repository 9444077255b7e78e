//! CPU time and resident memory of a process, from Linux `/proc`.

use std::time::Duration;

use crate::BenchError;

/// Length of a clock tick in `/proc/<pid>/stat`.
///
/// NOTE: Linux reports these times in USER_HZ, which is 100 on every
/// mainstream architecture; it is not read from `sysconf(_SC_CLK_TCK)`.
const CLOCK_TICK: Duration = Duration::from_millis(10);

/// User plus system CPU time of every thread of `pid` (`self` for this
/// process).
pub fn cpu_time(pid: &str) -> Result<Duration, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read {path}: {error}"))?;
    // The command name in brackets may contain spaces, so fields are
    // counted from the closing bracket: state is field 3, utime field 14
    // and stime field 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected format of {path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64, BenchError> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| format!("unexpected format of {path}").into())
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(CLOCK_TICK * u32::try_from(total).unwrap_or(u32::MAX))
}

/// Reads a memory field of `/proc/<pid>/status` such as `VmRSS`, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|error| format!("failed to read {path}: {error}"))?;
    let prefix = format!("{field}:");
    let line = status
        .lines()
        .find(|line| line.starts_with(&prefix))
        .ok_or_else(|| format!("{path} has no {field} line"))?;
    let kilobytes: u64 = line[prefix.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| format!("unexpected {field} line in {path}: {line:?}"))?;
    Ok(kilobytes * 1024)
}

/// CPU time of the server (when its pid is known) and of this process,
/// read together.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub server: Option<Duration>,
    pub client: Duration,
}

impl CpuSample {
    pub fn take(server_pid: Option<u32>) -> Result<Self, BenchError> {
        Ok(Self {
            server: server_pid
                .map(|pid| cpu_time(&pid.to_string()))
                .transpose()?,
            client: cpu_time("self")?,
        })
    }

    /// CPU time used between `earlier` and `self`: (server, client).
    pub fn since(&self, earlier: &Self) -> (Option<Duration>, Duration) {
        let server = match (self.server, earlier.server) {
            (Some(now), Some(then)) => Some(now.saturating_sub(then)),
            _ => None,
        };
        (server, self.client.saturating_sub(earlier.client))
    }
}
