//! The tokio runtime both modes run on.

use std::{future::Future, io};

/// Runs `serve` on a runtime with `threads` workers (`None`: one per core)
/// until it returns.
pub(crate) fn run<F>(threads: Option<usize>, serve: F) -> io::Result<()>
where
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let mut runtime = match threads {
        // One thread needs no work stealing: spawns and wakeups skip the
        // shared queues and their atomics.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = threads {
                runtime.worker_threads(threads);
            }
            runtime
        }
    };
    runtime.enable_all().build()?.block_on(async {
        // `serve` runs as a task: a multi-threaded runtime polls the
        // `block_on` future on this thread, outside its workers, so each
        // connection spawned from there woke a worker (a futex and an eventfd
        // write, two context switches). From a worker, a new connection goes
        // to that worker's own queue.
        tokio::spawn(serve).await?
    })
}
