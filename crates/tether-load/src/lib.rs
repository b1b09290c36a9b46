//! `tether-load`'s library: what the load generator reads from the
//! operating system about itself and about the server it loads: the
//! open-file limit, CPU time (`getrusage`, `/proc/PID/stat`), resident
//! memory (`/proc/PID/status`), a clock shared by processes and the cores
//! this process may use. The side-by-side benchmarks in `benches/` read
//! their figures through it too, so that both sides are measured alike.
//!
//! What it does not do: generate load (the `tether-load` binary does),
//! run anywhere but Linux (it reads `/proc`), or sample over time: each
//! function reads once, and the caller subtracts. It is named apart from
//! the binary (`tether_load_os`) so that both get their docs built.

use std::{fs, io, time::Duration};

/// The open-file limit: the soft limit in force and the hard limit it may
/// be raised to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The limit in force (`ulimit -n`).
    pub soft: u64,
    /// How far an unprivileged process may raise it (`ulimit -Hn`).
    pub hard: u64,
}

/// The open-file limit of this process.
pub fn fd_limit() -> io::Result<FdLimit> {
    let limit = rlimit_nofile()?;
    Ok(FdLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

fn rlimit_nofile() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Raises the soft open-file limit to the hard limit; returns the new limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = rlimit_nofile()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid `rlimit`; raising the soft limit up to the
        // hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// User plus system CPU time this process has used so far (`getrusage`, all
/// threads). Without `CONFIG_IRQ_TIME_ACCOUNTING` this includes softirq work
/// that ran on its stack, such as the loopback receive path of the sockets
/// it writes to.
pub fn own_cpu_time() -> io::Result<Duration> {
    // SAFETY: `rusage` is plain old data; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the call's duration.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}

/// User plus system CPU time process `pid` has used so far (all threads;
/// fields 14 and 15 of `/proc/PID/stat`, in clock ticks).
pub fn cpu_time_of(pid: u32) -> io::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields from after its closing parenthesis: field 3 comes first.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |field: usize| -> io::Result<u64> {
        fields
            .get(field - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
    };
    // Fields 14 and 15: utime and stime, in clock ticks.
    let total = ticks(14)? + ticks(15)?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Ok(Duration::from_nanos(total * 1_000_000_000 / per_second))
}

/// Resident memory (`VmRSS`) of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

/// `CLOCK_MONOTONIC` in nanoseconds: unlike `Instant`, comparable between
/// processes on one machine, so a timestamp taken by one process can be
/// subtracted from a reading taken by another.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec` for the call's duration;
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// How many CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_of(pid).unwrap() > 0);
        cpu_time_of(pid).unwrap();
        assert!(raise_fd_limit().unwrap() > 0);
        let limit = fd_limit().unwrap();
        assert!(limit.soft > 0 && limit.soft <= limit.hard);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = own_cpu_time().unwrap();
        let busy_until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < busy_until {
            std::hint::spin_loop();
        }
        assert!(own_cpu_time().unwrap() > before);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let before = monotonic_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_ns() > before && before > 0);
    }
}
