//! This node's subscriptions: which local connections listen to which
//! channel, and each connection's bounded outbox.
//!
//! A publication is encoded once into shared `Bytes`, and the same bytes are
//! queued to every subscriber. A subscriber whose outbox would exceed its
//! byte bound is disconnected (slow client) instead of growing memory.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use tokio::sync::Notify;

pub(crate) use crate::wire::Disconnect;

/// Shards of the channel map, so publishers and subscribers on different
/// channels rarely contend for one lock.
const SHARDS: usize = 64;

/// What the node asks of a session besides delivering frames (HTTP API
/// server-side subscriptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Subscribe the session to this channel.
    Subscribe(String),
    /// Unsubscribe the session from this channel.
    Unsubscribe(String),
}

/// One encoded push or reply for a connection.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The JSON object, shared by every subscriber it goes to.
    pub(crate) bytes: Bytes,
    /// For a publication with history: its channel and offset, so a session
    /// that just recovered up to that offset can drop the duplicate.
    pub(crate) position: Option<(Arc<str>, u64)>,
}

impl Frame {
    /// A frame that is not a positioned publication.
    pub(crate) fn plain(bytes: Bytes) -> Self {
        Self {
            bytes,
            position: None,
        }
    }
}

/// Frames waiting for one connection's writer, bounded in bytes.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    limit: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Frame>,
    bytes: usize,
    commands: Vec<Command>,
    /// Set once: the connection must end with this disconnect.
    closed: Option<Disconnect>,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            limit,
        }
    }

    /// Queues `frame`; if that would pass the bound, the outbox closes with
    /// [`Disconnect::SLOW`] instead and `false` is returned.
    pub(crate) fn push(&self, frame: Frame) -> bool {
        let mut state = self.lock();
        if state.closed.is_some() {
            return false;
        }
        if state.bytes + frame.bytes.len() > self.limit {
            state.closed = Some(Disconnect::SLOW);
            state.frames.clear();
            state.bytes = 0;
            drop(state);
            self.ready.notify_one();
            return false;
        }
        state.bytes += frame.bytes.len();
        state.frames.push_back(frame);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Ends the connection with `disconnect` once the writer sees it; frames
    /// already queued are still delivered first.
    pub(crate) fn close(&self, disconnect: Disconnect) {
        self.lock().closed.get_or_insert(disconnect);
        self.ready.notify_one();
    }

    /// Queues a command for the session.
    pub(crate) fn command(&self, command: Command) {
        self.lock().commands.push(command);
        self.ready.notify_one();
    }

    /// Waits until there is something to take.
    pub(crate) async fn ready(&self) {
        loop {
            let notified = self.ready.notified();
            {
                let state = self.lock();
                if !state.frames.is_empty() || !state.commands.is_empty() || state.closed.is_some()
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Moves every queued frame into `frames` and command into `commands`;
    /// returns the disconnect once the outbox is closed.
    pub(crate) fn take(
        &self,
        frames: &mut Vec<Frame>,
        commands: &mut Vec<Command>,
    ) -> Option<Disconnect> {
        let mut state = self.lock();
        frames.extend(state.frames.drain(..));
        commands.append(&mut state.commands);
        state.bytes = 0;
        state.closed.clone()
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's id on this node.
pub(crate) type ConnId = u64;

/// Local subscribers of one channel.
type Subscribers = HashMap<ConnId, Arc<Outbox>>;

/// Channel → local subscribers, sharded by channel.
#[derive(Debug)]
pub(crate) struct Hub {
    shards: Box<[Mutex<HashMap<String, Subscribers>>]>,
    hasher: RandomState,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Hub {
    /// Adds a subscriber; `true` when it is the channel's first on this node
    /// (the caller then subscribes the node at the broker).
    pub(crate) fn subscribe(&self, channel: &str, conn: ConnId, outbox: Arc<Outbox>) -> bool {
        let mut shard = self.shard(channel);
        let subscribers = shard.entry(channel.to_owned()).or_default();
        let first = subscribers.is_empty();
        subscribers.insert(conn, outbox);
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
        let outboxes: Vec<_> = match self.shard(channel).get(channel) {
            Some(subscribers) => subscribers.values().cloned().collect(),
            None => return 0,
        };
        outboxes
            .iter()
            .filter(|outbox| outbox.push(frame.clone()))
            .count()
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
    use super::*;

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let hub = Hub::default();
        let outbox = Arc::new(Outbox::new(1024));
        assert!(hub.subscribe("chat:a", 1, outbox.clone()));
        assert!(!hub.subscribe("chat:a", 2, outbox.clone()));
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
        let fast = Arc::new(Outbox::new(1024));
        let slow = Arc::new(Outbox::new(10));
        hub.subscribe("c", 1, fast.clone());
        hub.subscribe("c", 2, slow.clone());
        let frame = Frame::plain(Bytes::from_static(b"{\"push\":{}}"));
        assert_eq!(hub.broadcast("c", &frame), 1);
        let (mut out, mut commands) = (Vec::new(), Vec::new());
        assert_eq!(fast.take(&mut out, &mut commands), None);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].bytes.as_ptr(),
            frame.bytes.as_ptr(),
            "the same bytes, not a copy"
        );
        out.clear();
        assert_eq!(slow.take(&mut out, &mut commands), Some(Disconnect::SLOW));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn ready_wakes_on_push_and_on_close() {
        let outbox = Arc::new(Outbox::new(100));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        tokio::task::yield_now().await;
        outbox.push(Frame::plain(Bytes::from_static(b"x")));
        waiter.await.unwrap();
        let (mut out, mut commands) = (Vec::new(), Vec::new());
        assert_eq!(outbox.take(&mut out, &mut commands), None);
        outbox.command(Command::Subscribe("c".into()));
        outbox.ready().await;
        assert_eq!(outbox.take(&mut out, &mut commands), None);
        assert_eq!(commands, [Command::Subscribe("c".into())]);
        outbox.close(Disconnect::SHUTDOWN);
        outbox.ready().await;
        assert_eq!(
            outbox.take(&mut out, &mut commands),
            Some(Disconnect::SHUTDOWN)
        );
    }
}
