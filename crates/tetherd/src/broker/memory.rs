//! The embedded single-node engine: channels, history and presence in this
//! process's memory.
//!
//! It does not talk to other nodes and keeps nothing across a restart: every
//! stream gets a new random epoch when it is created, so positions handed out
//! by an earlier process (or before a stream was removed or expired) never
//! recover against a new stream.
//!
//! ```text
//!  publish ──► shard(channel) ──► stream: offset += 1, keep the last `size`
//!                   │
//!                   └──► channel outbox ──► BrokerEvents (no lock held)
//! ```
//!
//! State is sharded by a hash of the channel name; each shard is a
//! `std::sync::Mutex` held only for synchronous bookkeeping, never across an
//! `.await` and never while calling into [`BrokerEvents`].
//!
//! **Event order.** A channel's events are queued under its shard's lock, in
//! offset order, and delivered by whichever call finds nobody delivering that
//! channel yet. Usually that is the publishing call itself, synchronously;
//! when another publisher (or an events callback publishing back into the
//! same channel) is already delivering, that one delivers the new event too,
//! so a channel's publications always reach the hub in offset order.
//!
//! **Expiry.** Streams expire `ttl` after their last publication and presence
//! entries `ttl` after their last refresh. Both are dropped lazily when their
//! channel is touched, and each shard sweeps all its channels once the number
//! of operations it saw since its last sweep reaches its number of channels
//! (at least [`SWEEP_MIN_OPS`]), which keeps sweeping O(1) amortised and the
//! memory held by expired channels within a constant factor of the live ones.
//! An operation counts for its own shard and for one more, round robin, so a
//! shard whose channels all went quiet is swept too.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use tokio::time::Instant;

use super::{
    Broker, BrokerError, BrokerEvents, BrokerFuture, ClientInfo, History, HistoryOptions,
    HistoryQuery, NodeInfo, PresenceStats, Publication, StreamPosition,
};

/// Number of independently locked shards.
const SHARDS: usize = 16;

/// A shard sweeps after at least this many operations.
const SWEEP_MIN_OPS: usize = 1024;

/// Length of a stream epoch (alphanumeric characters).
const EPOCH_LEN: usize = 8;

/// TTLs are clamped to this, so `now + ttl` cannot overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The embedded broker: one node, everything in memory.
pub(crate) struct MemoryBroker {
    events: OnceLock<Arc<dyn BrokerEvents>>,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// The shard that the next operation also ticks (round robin), so
    /// shards nobody touches any more get swept too.
    sweep_cursor: AtomicUsize,
    empty_stream_ttl: Duration,
    /// The node registry of a single node: its latest announcement.
    node: Mutex<Option<NodeInfo>>,
}

/// The channels whose names hash to one shard.
#[derive(Default)]
struct Shard {
    channels: HashMap<String, Channel>,
    ops_since_sweep: usize,
}

/// Everything the broker knows about one channel. Removed from its shard
/// once idle (see [`Channel::is_idle`]).
#[derive(Default)]
struct Channel {
    /// `subscribe` calls minus `unsubscribe` calls.
    subscriptions: usize,
    stream: Option<Stream>,
    /// Client id → presence entry.
    presence: HashMap<String, Presence>,
    /// Events waiting to be delivered, in order.
    outbox: VecDeque<Event>,
    /// Some call is draining `outbox`; others only append to it.
    delivering: bool,
}

/// A channel's history.
struct Stream {
    epoch: String,
    /// Offset of the latest publication (0: none yet).
    offset: u64,
    /// The latest publications; their offsets are consecutive and the last
    /// one is `offset`.
    publications: VecDeque<Publication>,
    expires_at: Instant,
}

struct Presence {
    info: ClientInfo,
    expires_at: Instant,
}

/// Something to tell the hub about a channel.
enum Event {
    /// A publication and its stream's epoch (empty without history).
    Publication(Publication, String),
    Join(ClientInfo),
    Leave(ClientInfo),
}

/// Clears a channel's delivery state if an events callback panics, so the
/// channel's later events are not stuck behind a delivery that never ends.
struct ResetOnPanic<'a> {
    shard: &'a Mutex<Shard>,
    channel: &'a str,
}

impl MemoryBroker {
    /// How long a stream without publications (created when a client asked
    /// for the position of an empty channel) is kept after its last read.
    pub(crate) const DEFAULT_EMPTY_STREAM_TTL: Duration = Duration::from_secs(10 * 60);

    /// A broker with no channels, no history and no presence.
    pub(crate) fn new() -> Self {
        Self::with_empty_stream_ttl(Self::DEFAULT_EMPTY_STREAM_TTL)
    }

    /// Like [`MemoryBroker::new`], keeping the position of a channel that
    /// has no publications yet for `ttl` after it was last read.
    pub(crate) fn with_empty_stream_ttl(ttl: Duration) -> Self {
        Self {
            events: OnceLock::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            sweep_cursor: AtomicUsize::new(0),
            empty_stream_ttl: ttl,
            node: Mutex::new(None),
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<Shard> {
        let index = self.hasher.hash_one(channel) % SHARDS as u64;
        // `index < SHARDS`, so it fits in a usize.
        &self.shards[index as usize]
    }

    /// Ticks one more shard, round robin, unless it is busy: every shard
    /// sees at least a share of all operations and eventually sweeps, even
    /// when none of its own channels is touched any more.
    fn tick_another(&self, now: Instant) {
        let index = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) % SHARDS;
        match self.shards[index].try_lock() {
            Ok(mut shard) => shard.tick(now),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().tick(now),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    fn publish_now(
        &self,
        channel: &str,
        mut publication: Publication,
        history: Option<HistoryOptions>,
    ) -> StreamPosition {
        let Some(options) = history else {
            publication.offset = 0;
            self.fan_out(channel, Event::Publication(publication, String::new()));
            return StreamPosition {
                offset: 0,
                epoch: String::new(),
            };
        };
        let now = Instant::now();
        let events = self.events.get();
        let shard = self.shard(channel);
        let (position, deliver) = {
            let mut guard = lock(shard);
            guard.tick(now);
            let state = guard.channel_mut(channel, now);
            let stream = state
                .stream
                .get_or_insert_with(|| Stream::new(now, options.ttl));
            stream.offset += 1;
            stream.expires_at = deadline(now, options.ttl);
            publication.offset = stream.offset;
            if state.subscriptions > 0 && events.is_some() {
                state.outbox.push_back(Event::Publication(
                    publication.clone(),
                    stream.epoch.clone(),
                ));
            }
            stream.publications.push_back(publication);
            while stream.publications.len() > options.size {
                stream.publications.pop_front();
            }
            (stream.position(), state.start_delivery())
        };
        self.tick_another(now);
        if let (true, Some(events)) = (deliver, events) {
            deliver_events(shard, channel, events.as_ref());
        }
        position
    }

    /// Queues `event` for `channel` if this node subscribed to it, and
    /// delivers the queue unless someone else is already doing so.
    fn fan_out(&self, channel: &str, event: Event) {
        let Some(events) = self.events.get() else {
            return;
        };
        let shard = self.shard(channel);
        let deliver = {
            let mut guard = lock(shard);
            let Some(state) = guard.channels.get_mut(channel) else {
                return;
            };
            if state.subscriptions == 0 {
                return;
            }
            state.outbox.push_back(event);
            state.start_delivery()
        };
        if deliver {
            deliver_events(shard, channel, events.as_ref());
        }
    }

    fn subscribe_now(&self, channel: &str) {
        let now = Instant::now();
        let mut guard = lock(self.shard(channel));
        guard.channel_mut(channel, now).subscriptions += 1;
    }

    fn unsubscribe_now(&self, channel: &str) {
        let mut guard = lock(self.shard(channel));
        if let Some(state) = guard.channels.get_mut(channel) {
            state.subscriptions = state.subscriptions.saturating_sub(1);
        }
        guard.tidy(channel);
    }

    fn history_now(&self, channel: &str, query: &HistoryQuery) -> Result<History, BrokerError> {
        let now = Instant::now();
        let empty_ttl = self.empty_stream_ttl;
        let mut guard = lock(self.shard(channel));
        guard.tick(now);
        let state = guard.channel_mut(channel, now);
        let stream = state
            .stream
            .get_or_insert_with(|| Stream::new(now, empty_ttl));
        if stream.offset == 0 {
            // Keep the position of a channel without publications while
            // clients keep asking for it, so they can recover from it.
            stream.expires_at = stream.expires_at.max(deadline(now, empty_ttl));
        }
        let result = stream.read(query).map(|publications| History {
            publications,
            position: stream.position(),
        });
        drop(guard);
        self.tick_another(now);
        result
    }

    fn remove_history_now(&self, channel: &str) {
        let mut guard = lock(self.shard(channel));
        if let Some(stream) = guard
            .channels
            .get_mut(channel)
            .and_then(|state| state.stream.as_mut())
        {
            stream.publications.clear();
        }
    }

    fn add_presence_now(&self, channel: &str, info: ClientInfo, ttl: Duration) {
        let now = Instant::now();
        let mut guard = lock(self.shard(channel));
        guard.tick(now);
        let presence = Presence {
            expires_at: deadline(now, ttl),
            info,
        };
        guard
            .channel_mut(channel, now)
            .presence
            .insert(presence.info.client.clone(), presence);
        drop(guard);
        self.tick_another(now);
    }

    fn remove_presence_now(&self, channel: &str, client: &str) {
        let mut guard = lock(self.shard(channel));
        if let Some(state) = guard.channels.get_mut(channel) {
            state.presence.remove(client);
        }
        guard.tidy(channel);
    }

    /// Runs `read` on the channel's live presence entries (expired ones are
    /// dropped first).
    fn read_presence<T>(
        &self,
        channel: &str,
        read: impl FnOnce(&HashMap<String, Presence>) -> T,
    ) -> T {
        let now = Instant::now();
        let mut guard = lock(self.shard(channel));
        let result = match guard.channels.get_mut(channel) {
            Some(state) => {
                state.expire(now);
                read(&state.presence)
            }
            None => read(&HashMap::new()),
        };
        guard.tidy(channel);
        result
    }

    /// How many channels the broker holds state for, expired or not.
    #[cfg(test)]
    fn channel_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).channels.len())
            .sum()
    }
}

impl Shard {
    /// Counts an operation that may create state, and sweeps the shard
    /// when as many operations happened since the last sweep as it holds
    /// channels.
    fn tick(&mut self, now: Instant) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < self.channels.len().max(SWEEP_MIN_OPS) {
            return;
        }
        self.ops_since_sweep = 0;
        self.channels.retain(|_, state| {
            state.expire(now);
            !state.is_idle()
        });
        if self.channels.capacity() > 4 * self.channels.len().max(SWEEP_MIN_OPS) {
            self.channels.shrink_to_fit();
        }
    }

    /// The channel's state, created if missing, with expired parts dropped.
    fn channel_mut(&mut self, name: &str, now: Instant) -> &mut Channel {
        if !self.channels.contains_key(name) {
            self.channels.insert(name.to_owned(), Channel::default());
        }
        let state = self
            .channels
            .get_mut(name)
            .expect("the channel is present: inserted just above if it was missing");
        state.expire(now);
        state
    }

    /// Forgets the channel if nothing about it is left.
    fn tidy(&mut self, name: &str) {
        if self.channels.get(name).is_some_and(Channel::is_idle) {
            self.channels.remove(name);
        }
    }
}

impl Channel {
    /// Drops the stream and presence entries whose time is up.
    fn expire(&mut self, now: Instant) {
        if self.stream.as_ref().is_some_and(|s| s.expires_at <= now) {
            self.stream = None;
        }
        self.presence.retain(|_, entry| entry.expires_at > now);
    }

    fn is_idle(&self) -> bool {
        self.subscriptions == 0
            && self.stream.is_none()
            && self.presence.is_empty()
            && self.outbox.is_empty()
            && !self.delivering
    }

    /// Whether the caller should deliver the outbox (and is now the one
    /// delivering it).
    fn start_delivery(&mut self) -> bool {
        if self.delivering || self.outbox.is_empty() {
            return false;
        }
        self.delivering = true;
        true
    }

    /// The next event to deliver; events queued before the last unsubscribe
    /// are dropped.
    fn next_event(&mut self) -> Option<Event> {
        if self.subscriptions == 0 {
            self.outbox.clear();
        }
        self.outbox.pop_front()
    }
}

impl Stream {
    /// A stream with no publications and a new epoch.
    fn new(now: Instant, ttl: Duration) -> Self {
        Self {
            epoch: Alphanumeric.sample_string(&mut rand::rng(), EPOCH_LEN),
            offset: 0,
            publications: VecDeque::new(),
            expires_at: deadline(now, ttl),
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }

    /// The publications `query` asks for, in the order asked for. Without
    /// `since`: all kept ones, `limit` counted from the oldest (or with
    /// `reverse` the newest). With `since`: exactly the ones after it, or an
    /// error if any of them is gone (recovery); with `reverse`, the ones
    /// before it, newest first, as Centrifugo pages backwards; those no
    /// longer kept are simply absent, as at the end of any history.
    fn read(&self, query: &HistoryQuery) -> Result<Vec<Publication>, BrokerError> {
        let kept = self.publications.len();
        let wanted = match &query.since {
            None => 0..kept,
            Some(since) if since.epoch != self.epoch || since.offset > self.offset => {
                return Err(BrokerError::UnrecoverablePosition);
            }
            Some(since) => {
                // How many publications came after `since` (saturating).
                let after = usize::try_from(self.offset - since.offset).unwrap_or(usize::MAX);
                if query.reverse {
                    0..kept.saturating_sub(after.saturating_add(1))
                } else if after <= kept {
                    kept - after..kept
                } else {
                    return Err(BrokerError::UnrecoverablePosition);
                }
            }
        };
        let limit = query.limit.unwrap_or(usize::MAX);
        let wanted = self.publications.range(wanted);
        Ok(if query.reverse {
            wanted.rev().take(limit).cloned().collect()
        } else {
            wanted.take(limit).cloned().collect()
        })
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker for MemoryBroker {
    fn set_events(&self, events: Arc<dyn BrokerEvents>) {
        if self.events.set(events).is_err() {
            tracing::warn!("memory broker: events already set; ignoring the new ones");
        }
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        history: Option<HistoryOptions>,
    ) -> BrokerFuture<'a, StreamPosition> {
        Box::pin(async move { Ok(self.publish_now(channel, publication, history)) })
    }

    fn publish_control<'a>(&'a self, message: Bytes) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            // One process: every node is this one.
            if let Some(events) = self.events.get() {
                events.control(message);
            }
            Ok(())
        })
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.fan_out(channel, Event::Join(info));
            Ok(())
        })
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.fan_out(channel, Event::Leave(info));
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.subscribe_now(channel);
            Ok(())
        })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.unsubscribe_now(channel);
            Ok(())
        })
    }

    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, History> {
        Box::pin(async move { self.history_now(channel, &query) })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.remove_history_now(channel);
            Ok(())
        })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.add_presence_now(channel, info, ttl);
            Ok(())
        })
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.remove_presence_now(channel, client);
            Ok(())
        })
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, Vec<ClientInfo>> {
        Box::pin(async move {
            Ok(self.read_presence(channel, |entries| {
                let mut clients: Vec<ClientInfo> =
                    entries.values().map(|entry| entry.info.clone()).collect();
                clients.sort_unstable_by(|a, b| a.client.cmp(&b.client));
                clients
            }))
        })
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, PresenceStats> {
        Box::pin(async move {
            Ok(self.read_presence(channel, |entries| PresenceStats {
                clients: entries.len(),
                users: entries
                    .values()
                    .map(|entry| entry.info.user.as_str())
                    .collect::<HashSet<_>>()
                    .len(),
            }))
        })
    }

    fn ready(&self) -> BrokerFuture<'_, ()> {
        // In this process: there whenever the node is.
        Box::pin(async { Ok(()) })
    }

    fn announce<'a>(&'a self, node: &'a NodeInfo, _ttl: Duration) -> BrokerFuture<'a, ()> {
        // One process: the entry lives exactly as long as the node.
        *self.node.lock().unwrap_or_else(PoisonError::into_inner) = Some(node.clone());
        Box::pin(async { Ok(()) })
    }

    fn withdraw<'a>(&'a self, uid: &'a str) -> BrokerFuture<'a, ()> {
        let mut node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
        if node.as_ref().is_some_and(|node| node.uid == uid) {
            *node = None;
        }
        Box::pin(async { Ok(()) })
    }

    fn nodes(&self) -> BrokerFuture<'_, Vec<NodeInfo>> {
        let node = self
            .node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(node.into_iter().collect()) })
    }
}

impl Drop for ResetOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut guard = lock(self.shard);
        if let Some(state) = guard.channels.get_mut(self.channel) {
            state.outbox.clear();
            state.delivering = false;
        }
        guard.tidy(self.channel);
    }
}

/// Delivers `channel`'s outbox until it is empty. Only the caller that won
/// [`Channel::start_delivery`] calls this; the shard is locked only to take
/// the next event, never while `events` runs.
fn deliver_events(shard: &Mutex<Shard>, channel: &str, events: &dyn BrokerEvents) {
    let _reset = ResetOnPanic { shard, channel };
    loop {
        let event = {
            let mut guard = lock(shard);
            // A channel being delivered is not idle, so it is still there.
            let Some(state) = guard.channels.get_mut(channel) else {
                return;
            };
            match state.next_event() {
                Some(event) => event,
                None => {
                    state.delivering = false;
                    guard.tidy(channel);
                    return;
                }
            }
        };
        match event {
            Event::Publication(publication, epoch) => {
                events.publication(channel, publication, &epoch);
            }
            Event::Join(info) => events.join(channel, info),
            Event::Leave(info) => events.leave(channel, info),
        }
    }
}

/// Locks a shard. A poisoned lock is still consistent: no code panics
/// between the steps of an update, and events callbacks run unlocked.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `now + ttl`, clamped so it cannot overflow.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now + ttl.min(MAX_TTL)
}

#[cfg(test)]
mod tests;
