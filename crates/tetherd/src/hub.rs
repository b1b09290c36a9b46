//! This node's subscriptions: which local connections listen to which
//! channel.
//!
//! A publication is encoded once into shared `Bytes`, and the same bytes are
//! queued to every subscriber's [`SessionHandle`] (with compression,
//! compressed once per encoding: [`crate::compression`]). A subscriber whose
//! outbox would exceed its byte bound is disconnected (slow client) instead
//! of growing memory.
//!
//! Queuing and waking are apart. The frame is queued to every subscriber at
//! once, in publication order; subscribers that were asleep join one queue
//! of sessions to wake ([`wakes`]), woken a slice at a time by a task that
//! yields between slices. Woken all at once, 15,000 session tasks would run
//! before the publisher's next request is even read (the runtime's queue is
//! first in, first out), so every publication would cost every subscriber
//! a write of its own. Woken in slices, the publisher is served between
//! them, and a subscriber still waiting takes every publication queued
//! since in one write; the queue is first in, first out, so none waits
//! longer than one pass over the others.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

mod wakes;

use self::wakes::Wakes;
use crate::{
    handle::{ConnId, Frame, Queued, SessionHandle},
    wire::Disconnect,
};

/// Shards of the channel map, so publishers and subscribers on different
/// channels rarely contend for one lock.
const SHARDS: usize = 64;

/// Local subscribers of one channel.
type Subscribers = HashMap<ConnId, Arc<SessionHandle>>;

/// Channel → local subscribers, sharded by channel.
#[derive(Debug)]
pub(crate) struct Hub {
    shards: Box<[Mutex<HashMap<String, Subscribers>>]>,
    hasher: RandomState,
    wakes: Arc<Wakes>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            wakes: Arc::default(),
        }
    }
}

impl Hub {
    /// Adds a subscriber; `true` when it is the channel's first on this node
    /// (the caller then subscribes the node at the broker).
    pub(crate) fn subscribe(
        &self,
        channel: &str,
        conn: ConnId,
        handle: Arc<SessionHandle>,
    ) -> bool {
        let mut shard = self.shard(channel);
        let subscribers = shard.entry(channel.to_owned()).or_default();
        let first = subscribers.is_empty();
        subscribers.insert(conn, handle);
        first
    }

    /// Removes a subscriber; `true` when it was the channel's last on this
    /// node (the caller then unsubscribes the node at the broker).
    pub(crate) fn unsubscribe(&self, channel: &str, conn: ConnId) -> bool {
        let mut shard = self.shard(channel);
        let Some(subscribers) = shard.get_mut(channel) else {
            return false;
        };
        if subscribers.remove(&conn).is_none() {
            return false;
        }
        if subscribers.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Queues the same `frame` to every local subscriber of `channel`.
    /// Returns how many received it; the others were too slow and are being
    /// disconnected.
    pub(crate) fn broadcast(&self, channel: &str, frame: &Frame) -> usize {
        // Collect under the lock, push outside it: a push may wake a writer.
        let handles: Vec<_> = match self.shard(channel).get(channel) {
            Some(subscribers) => subscribers.values().cloned().collect(),
            None => return 0,
        };
        let mut queued = 0;
        let mut asleep = Vec::new();
        for handle in handles {
            match handle.queue(frame.clone()) {
                Queued::Asleep => asleep.push(handle),
                Queued::Awake => {}
                Queued::Refused => continue,
            }
            queued += 1;
        }
        self.wakes.add(asleep);
        queued
    }

    /// Whether `channel` has a local subscriber.
    pub(crate) fn has_subscribers(&self, channel: &str) -> bool {
        self.shard(channel).contains_key(channel)
    }

    /// Ends the connection of every local subscriber of `channel` with
    /// `disconnect`; returns how many.
    pub(crate) fn close_subscribers(&self, channel: &str, disconnect: &Disconnect) -> usize {
        let handles: Vec<_> = match self.shard(channel).get(channel) {
            Some(subscribers) => subscribers.values().cloned().collect(),
            None => return 0,
        };
        for handle in &handles {
            handle.close(disconnect.clone());
        }
        handles.len()
    }

    /// Local subscriber counts per channel.
    pub(crate) fn channels(&self) -> Vec<(String, usize)> {
        self.shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard
                    .iter()
                    .map(|(name, subs)| (name.clone(), subs.len()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Number of local subscriptions (a connection counts once per channel).
    pub(crate) fn subscriptions(&self) -> usize {
        self.channels().iter().map(|(_, count)| count).sum()
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, HashMap<String, Subscribers>> {
        let index = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::handle::Item;

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let hub = Hub::default();
        let handle = Arc::new(SessionHandle::new(1024));
        assert!(hub.subscribe("chat:a", 1, handle.clone()));
        assert!(!hub.subscribe("chat:a", 2, handle.clone()));
        assert!(!hub.unsubscribe("chat:a", 1));
        assert!(
            !hub.unsubscribe("chat:a", 1),
            "removing twice is not a last"
        );
        assert!(hub.unsubscribe("chat:a", 2));
        assert!(hub.channels().is_empty());
    }

    #[test]
    fn broadcast_shares_one_buffer_and_drops_slow_subscribers() {
        let hub = Hub::default();
        let fast = Arc::new(SessionHandle::new(1024));
        let slow = Arc::new(SessionHandle::new(10));
        hub.subscribe("c", 1, fast.clone());
        hub.subscribe("c", 2, slow.clone());
        let frame = Frame::plain(Bytes::from_static(b"{\"push\":{}}")).unwrap();
        assert_eq!(hub.broadcast("c", &frame), 1);
        let Some(Item::Frame(taken)) = fast.take() else {
            panic!("the frame was not queued");
        };
        assert_eq!(
            taken.text.as_ptr(),
            frame.text.as_ptr(),
            "the same bytes, not a copy"
        );
        assert!(fast.take().is_none());
        assert!(matches!(slow.take(), Some(Item::Closed(d)) if d == Disconnect::SLOW));
    }

    /// Counts its wakes.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_fanout_wakes_sleeping_subscribers_a_slice_at_a_time() {
        let hub = Hub::default();
        let woken = Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let subscribers = 3 * wakes::WAKE_SLICE + 1;
        let handles: Vec<_> = (0..subscribers)
            .map(|conn| {
                let handle = Arc::new(SessionHandle::new(1024));
                hub.subscribe("c", conn as ConnId, handle.clone());
                // The session waits: its waker is registered.
                let mut cx = std::task::Context::from_waker(&waker);
                assert!(handle.poll_ready(&mut cx).is_pending());
                handle
            })
            .collect();
        let frame = Frame::plain(Bytes::from_static(b"{\"push\":{}}")).unwrap();
        assert_eq!(hub.broadcast("c", &frame), subscribers);
        // A second publication finds every session due a wake already.
        assert_eq!(hub.broadcast("c", &frame), subscribers);
        let count = || woken.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(count(), 0, "nobody yet: the publisher goes on first");
        let mut seen = Vec::new();
        for _ in 0..20 {
            tokio::task::yield_now().await;
            seen.push(count());
        }
        assert_eq!(count(), subscribers, "every subscriber, each once");
        assert!(
            seen.iter()
                .all(|&n| n % wakes::WAKE_SLICE == 0 || n == subscribers),
            "a slice at a time: {seen:?}"
        );
        assert!(
            seen.iter().filter(|&&n| n > 0 && n < subscribers).count() >= 3,
            "with other tasks run in between: {seen:?}"
        );
        assert!(
            handles
                .iter()
                .all(|handle| handle.take().is_some() && handle.take().is_some())
        );
    }
}
