//! Timing by this thread's CPU time instead of wall time: on a shared
//! machine, wall time also counts the time other processes hold the core.
//! (They still disturb the caches, so a quiet machine remains better.)
//! Used through criterion's `iter_custom`. Also: taking what a connection
//! queued the way a socket write does.

use std::{io::IoSlice, time::Duration};

use tether_proto::Connection;

/// Inputs made at once, before the clock starts, by [`cpu_time_batched`].
const BATCH: usize = 8;

/// CPU time this thread has used so far.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec` for the call's duration;
    // CLOCK_THREAD_CPUTIME_ID exists on every Linux the benchmarks run on.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// CPU time of `iters` runs of `routine`.
pub(crate) fn cpu_time(iters: u64, mut routine: impl FnMut()) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iters {
        routine();
    }
    thread_cpu_time() - start
}

/// CPU time of `iters` runs of `routine`, each on a fresh input from
/// `setup`; making and dropping the inputs is not counted.
pub(crate) fn cpu_time_batched<I, O>(
    iters: u64,
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(I) -> O,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let batch = left.min(BATCH);
        let inputs: Vec<I> = (0..batch).map(|_| setup()).collect();
        let mut outputs = Vec::with_capacity(batch);
        let start = thread_cpu_time();
        for input in inputs {
            outputs.push(routine(input));
        }
        total += thread_cpu_time() - start;
        drop(outputs);
        left -= batch;
    }
    total
}

/// Takes every byte `conn` has queued as the `tether` pump does, through
/// `transmit_slices` and `advance_transmit`, handing each slice to `write`.
pub(crate) fn write_out(conn: &mut Connection, mut write: impl FnMut(&[u8])) {
    loop {
        let mut slices = [IoSlice::new(&[]); 64];
        let count = conn.transmit_slices(&mut slices);
        if count == 0 {
            return;
        }
        let mut written = 0;
        for slice in &slices[..count] {
            write(slice);
            written += slice.len();
        }
        conn.advance_transmit(written);
    }
}
