//! The sessions a fan-out queued frames for while they slept, woken in
//! order, [`WAKE_SLICE`] at a time, by one task that yields between slices
//! so that everything else the runtime has to do (the publisher's next
//! request) runs in between.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::handle::SessionHandle;

/// Sessions woken before the waking task yields.
pub(super) const WAKE_SLICE: usize = 128;

/// Sessions to wake, first in first out, and whether a task is waking them.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    queue: Mutex<VecDeque<Arc<SessionHandle>>>,
    running: AtomicBool,
}

impl Wakes {
    /// Adds sessions that need a wake (each is added once per sleep: only
    /// the frame that ended its empty outbox adds it), and starts the
    /// waking task unless it runs. Outside a runtime (unit tests), wakes
    /// them at once.
    pub(super) fn add(self: &Arc<Self>, asleep: Vec<Arc<SessionHandle>>) {
        if asleep.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            asleep.iter().for_each(|handle| handle.wake_for_frames());
            return;
        };
        self.lock().extend(asleep);
        if !self.running.swap(true, Ordering::AcqRel) {
            runtime.spawn(self.clone().run());
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            // Yielded tasks run again after the runtime polled for I/O: a
            // request that arrived meanwhile is served before this slice.
            tokio::task::yield_now().await;
            let slice: Vec<_> = {
                let mut queue = self.lock();
                let end = queue.len().min(WAKE_SLICE);
                queue.drain(..end).collect()
            };
            if slice.is_empty() {
                self.running.store(false, Ordering::Release);
                // Added between the drain and the store: take them on,
                // unless a new task already did.
                if self.lock().is_empty() || self.running.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            slice.iter().for_each(|handle| handle.wake_for_frames());
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<SessionHandle>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
