//! The CPU time a measuring program has used.

use std::{io, time::Duration};

/// User plus system CPU time this process has used so far. Without
/// `CONFIG_IRQ_TIME_ACCOUNTING` this includes softirq work that ran on its
/// stack, such as the loopback receive path of the sockets it writes to.
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn grows_with_work() {
        let before = own_cpu_time().unwrap();
        let busy_until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < busy_until {
            std::hint::spin_loop();
        }
        assert!(own_cpu_time().unwrap() > before);
    }
}
