//! [`IdlePool`]: connections with nothing to do, held without a task each.
//!
//! A parked connection is only its state and its file descriptor in a slot;
//! one epoll (via mio) watches all of them, and one task, the pool's owner,
//! hands back those whose socket turned readable or whose deadline passed.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Registry, Token, unix::SourceFd};
use tokio::io::unix::AsyncFd;

use super::DormantWebSocket;

/// How often deadlines of parked connections are checked: they are met to
/// within this (keepalive and idle timeouts are tens of seconds).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Readiness events taken from the kernel per call.
const EVENTS_PER_POLL: usize = 1024;

/// Something an [`IdlePool`] can hold: a socket to watch and a time to hand
/// it back anyway.
pub trait Dormant: AsRawFd + Send + 'static {
    /// When to hand it back even if nothing arrives.
    fn deadline(&self) -> Option<Instant>;
}

impl Dormant for DormantWebSocket {
    fn deadline(&self) -> Option<Instant> {
        Self::deadline(self)
    }
}

impl<T: Dormant> Dormant for Box<T> {
    fn deadline(&self) -> Option<Instant> {
        (**self).deadline()
    }
}

/// Holds parked connections until their socket turns readable or their
/// deadline passes, then returns them from [`next`](Self::next). Park with
/// a [`Parker`]; run `next` in one task and spawn a task for each
/// connection it returns (this crate spawns nothing itself); the
/// [module docs](super) show the whole loop.
pub struct IdlePool<T> {
    poll: AsyncFd<Poll>,
    events: Events,
    shared: Arc<Shared<T>>,
    ready: Vec<T>,
    next_sweep: tokio::time::Instant,
}

/// Parks connections in an [`IdlePool`]; cheap to clone.
pub struct Parker<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    registry: Registry,
    slots: Mutex<Slots<T>>,
}

struct Slots<T> {
    held: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T: Dormant> IdlePool<T> {
    /// An empty pool. Call it from within a tokio runtime.
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // SAFETY: a `mio::Poll` owns its epoll descriptor from creation to
        // drop and `as_raw_fd` always returns that one, so it stays open
        // and the same for as long as the `AsyncFd` holds the `Poll`.
        // Exercised by every test of this module.
        let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            shared: Arc::new(Shared {
                registry,
                slots: Mutex::new(Slots {
                    held: Vec::new(),
                    free: Vec::new(),
                }),
            }),
            ready: Vec::new(),
            next_sweep: tokio::time::Instant::now() + SWEEP_INTERVAL,
        })
    }

    /// A handle that parks connections in this pool.
    pub fn parker(&self) -> Parker<T> {
        Parker {
            shared: self.shared.clone(),
        }
    }

    /// How many connections are parked.
    pub fn len(&self) -> usize {
        let slots = self.shared.lock();
        slots.held.len() - slots.free.len()
    }

    /// Whether no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next parked connection whose socket turned readable (or closed)
    /// or whose deadline passed, out of the pool. Cancellation safe. Fails
    /// only when the runtime is shutting down or epoll itself fails.
    pub async fn next(&mut self) -> io::Result<T> {
        loop {
            if let Some(woken) = self.ready.pop() {
                return Ok(woken);
            }
            tokio::select! {
                guard = self.poll.readable_mut() => {
                    let mut guard = guard?;
                    guard.get_inner_mut().poll(&mut self.events, Some(Duration::ZERO))?;
                    // A full batch may have left events behind: poll again
                    // before waiting.
                    if self.events.iter().count() < EVENTS_PER_POLL {
                        guard.clear_ready();
                    }
                    let slots = self.events.iter().map(|event| event.token().0);
                    self.shared.take(slots, &mut self.ready);
                }
                () = tokio::time::sleep_until(self.next_sweep) => {
                    self.next_sweep = tokio::time::Instant::now() + SWEEP_INTERVAL;
                    self.shared.take_due(Instant::now(), &mut self.ready);
                }
            }
        }
    }
}

impl<T: Dormant> Parker<T> {
    /// Parks `dormant` until its socket turns readable or its deadline
    /// passes. Bytes that arrived before the call count: a socket already
    /// readable comes back at once. On error (the kernel refused to watch
    /// the socket) `dormant` is handed back.
    pub fn park(&self, dormant: T) -> Result<(), (T, io::Error)> {
        let fd = dormant.as_raw_fd();
        let mut slots = self.shared.lock();
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                slots.held.push(None);
                slots.held.len() - 1
            }
        };
        // Under the lock, so that the pool cannot see the socket's event
        // before the slot holds it.
        let registered =
            self.shared
                .registry
                .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE);
        match registered {
            Ok(()) => {
                slots.held[slot] = Some(dormant);
                Ok(())
            }
            Err(error) => {
                slots.free.push(slot);
                Err((dormant, error))
            }
        }
    }
}

impl<T> Clone for Parker<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Dormant> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slots<T>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the connections in `slots` to `out`, watched no more.
    fn take(&self, slots: impl Iterator<Item = usize>, out: &mut Vec<T>) {
        let mut held = self.lock();
        for slot in slots {
            if let Some(dormant) = held.held.get_mut(slot).and_then(Option::take) {
                self.release(&mut held, slot, &dormant);
                out.push(dormant);
            }
        }
    }

    /// Moves the connections whose deadline is `now` or earlier to `out`.
    fn take_due(&self, now: Instant, out: &mut Vec<T>) {
        let mut held = self.lock();
        for slot in 0..held.held.len() {
            let due = held.held[slot]
                .as_ref()
                .and_then(Dormant::deadline)
                .is_some_and(|deadline| deadline <= now);
            if let Some(dormant) = due.then(|| held.held[slot].take()).flatten() {
                self.release(&mut held, slot, &dormant);
                out.push(dormant);
            }
        }
    }

    fn release(&self, slots: &mut Slots<T>, slot: usize, dormant: &T) {
        let fd: RawFd = dormant.as_raw_fd();
        // Fails only if the socket is not registered, which cannot be: it
        // was, and only the pool removes it.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        slots.free.push(slot);
    }
}
