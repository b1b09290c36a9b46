//! What the modes read about CPU time and memory around their measured
//! intervals: this side's CPU time, the server's (given `--server-pid`) and
//! the server's resident memory, with the errors they report.

use std::time::Duration;

use tether_load_os as os;

use crate::report::Cpu;

/// CPU time over a measured interval: this side's (the load generator's, as
/// the caller counts it) and, given its pid, the server's.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    /// The server's pid and its CPU time at the start.
    server: Option<(u32, Duration)>,
    /// This side's CPU time at the start.
    own: Duration,
}

impl CpuMeter {
    /// Starts measuring: reads the server's CPU time so far, then this
    /// side's (`own`).
    pub(crate) fn start(
        server_pid: Option<u32>,
        own: impl FnOnce() -> Duration,
    ) -> Result<Self, String> {
        let server = server_pid
            .map(|pid| server_cpu_time(pid).map(|before| (pid, before)))
            .transpose()?;
        Ok(Self { server, own: own() })
    }

    /// Ends an interval that lasted `wall` on `cores`: reads this side's CPU
    /// time (`own`), then the server's.
    pub(crate) fn stop(
        self,
        wall: Duration,
        cores: usize,
        own: impl FnOnce() -> Duration,
    ) -> Result<Cpu, String> {
        let own = own().saturating_sub(self.own);
        let server = self
            .server
            .map(|(pid, before)| server_cpu_time(pid).map(|now| now.saturating_sub(before)))
            .transpose()?;
        Ok(Cpu {
            wall,
            own,
            cores,
            server,
        })
    }
}

/// This process's user + system CPU time so far (zero if the system cannot
/// say).
pub(crate) fn own_cpu_time() -> Duration {
    os::own_cpu_time().unwrap_or_default()
}

/// The server's user + system CPU time so far.
fn server_cpu_time(pid: u32) -> Result<Duration, String> {
    os::cpu_time_of(pid)
        .map_err(|error| format!("cannot read the CPU time of process {pid}: {error}"))
}

/// The server's resident memory, in bytes.
pub(crate) fn server_rss(pid: u32) -> Result<u64, String> {
    os::rss_of(pid).map_err(|error| format!("cannot read the memory of process {pid}: {error}"))
}
