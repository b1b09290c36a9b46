//! Where publications go between nodes, and what outlives a node.
//!
//! The guarantee: live fan-out is **at most once** (a publication reaches
//! every subscriber that is connected and keeping up, once). Each channel with
//! history keeps a stream of its latest publications with strictly increasing
//! offsets and an epoch that changes whenever history was lost; a client that
//! reconnects with its last `(offset, epoch)` gets exactly the publications it
//! missed, or learns that it cannot (`recovered: false`) — never silently less.
//!
//! Two engines: [`memory`] (the embedded default, one node) and [`redis`]
//! (many nodes, over one Redis, several, or a Redis Cluster). The hub reports a channel's first and last local
//! subscriber with [`Broker::subscribe`] / [`Broker::unsubscribe`], so an
//! engine with a network sees one subscription per node per channel.

pub(crate) mod memory;
#[cfg(test)]
mod paging_tests;
pub(crate) mod redis;
#[cfg(test)]
pub(crate) mod testing;

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Who published or joined: the connection's client id, user id and the
/// connection/channel info attached by tokens (raw JSON, stored as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    pub(crate) client: String,
    pub(crate) user: String,
    /// Raw JSON from the connection token's `info` claim.
    pub(crate) conn_info: Option<Bytes>,
    /// Raw JSON from the subscription token's `info` claim.
    pub(crate) chan_info: Option<Bytes>,
}

/// One publication in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publication {
    /// Position in the channel's stream (0 when the channel keeps no history).
    pub(crate) offset: u64,
    /// The payload as raw JSON (Centrifugo's protocol carries JSON values).
    pub(crate) data: Bytes,
    /// The publishing client, for client-side publications.
    pub(crate) info: Option<ClientInfo>,
    /// Optional key-value tags.
    pub(crate) tags: Vec<(String, String)>,
}

/// Where a channel's stream stands: the offset of its latest publication and
/// the epoch (a random id that changes when history was lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamPosition {
    pub(crate) offset: u64,
    pub(crate) epoch: String,
}

/// History kept for a channel (from its namespace's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryOptions {
    /// Most publications kept.
    pub(crate) size: usize,
    /// How long the stream is kept after its last publication.
    pub(crate) ttl: Duration,
}

/// What a history query returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct History {
    /// The publications [`HistoryQuery`] asked for, in its order.
    pub(crate) publications: Vec<Publication>,
    /// The channel's current position.
    pub(crate) position: StreamPosition,
}

/// A history query, with the meaning Centrifugo gives it:
///
/// | `since` | `reverse` | publications, at most `limit`                       |
/// |---------|-----------|-----------------------------------------------------|
/// | none    | no        | the oldest kept ones, oldest first                  |
/// | none    | yes       | the newest ones, newest first                       |
/// | given   | no        | the ones after it, oldest first: all of them or an error (recovery) |
/// | given   | yes       | the ones before it, newest first (paging backwards) |
///
/// A `since` position of another epoch, or past the channel's latest
/// offset, is [`BrokerError::UnrecoverablePosition`] either way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HistoryQuery {
    /// Where to start, if the epoch still matches.
    pub(crate) since: Option<StreamPosition>,
    /// At most this many (`None`: all; `Some(0)`: only the position).
    pub(crate) limit: Option<usize>,
    /// Newest first.
    pub(crate) reverse: bool,
}

impl HistoryQuery {
    /// Paging backwards from offset 0 asks for what comes before the first
    /// publication: Centrifugo answers "bad request" (107), before reading.
    pub(crate) fn pages_back_from_zero(&self) -> bool {
        self.reverse && self.since.as_ref().is_some_and(|since| since.offset == 0)
    }
}

/// Presence statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PresenceStats {
    pub(crate) clients: usize,
    pub(crate) users: usize,
}

/// A gateway node as it announces itself to the others (the fields of
/// Centrifugo's `info` result, plus the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeInfo {
    /// Unique for the life of the process.
    pub(crate) uid: String,
    pub(crate) name: String,
    /// Where the node listens.
    pub(crate) address: String,
    pub(crate) version: String,
    pub(crate) num_clients: u64,
    pub(crate) num_users: u64,
    pub(crate) num_subs: u64,
    pub(crate) num_channels: u64,
    /// Seconds since the node started.
    pub(crate) uptime: u64,
}

/// What the broker tells the local hub.
pub(crate) trait BrokerEvents: Send + Sync + 'static {
    /// A publication arrived for a channel this node subscribed to;
    /// `epoch` is its stream's epoch (empty when the channel keeps no
    /// history, offset 0).
    fn publication(&self, channel: &str, publication: Publication, epoch: &str);
    /// Publications of `channel` may have been lost on their way to this
    /// node (its subscription at the broker broke and was made again):
    /// subscribers must recover from history.
    fn interrupted(&self, channel: &str);
    /// A client joined a channel (join/leave pushes).
    fn join(&self, channel: &str, info: ClientInfo);
    /// A client left a channel.
    fn leave(&self, channel: &str, info: ClientInfo);
    /// A control message from a node (this one included), as it was sent
    /// with [`Broker::publish_control`].
    fn control(&self, message: Bytes);
}

/// Why a broker call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerError {
    /// The backend cannot be reached (Redis down); the call may be retried.
    Unavailable(String),
    /// The query cannot be answered (for example a `since` position with a
    /// different epoch): the client's position is gone.
    UnrecoverablePosition,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "broker unavailable: {why}"),
            Self::UnrecoverablePosition => f.write_str("stream position is no longer in history"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// A boxed future, so the trait stays object safe (`Arc<dyn Broker>`).
pub(crate) type BrokerFuture<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// The engine behind channels. Every method is safe to call from any task.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Installs the hub that receives publications, joins and leaves for
    /// the channels this node subscribed to. Called once, before use.
    fn set_events(&self, events: Arc<dyn BrokerEvents>);

    /// Publishes to `channel`: appends to its history when `history` is
    /// given (returning the new position) and fans out to every node
    /// subscribed to the channel. Without history the offset is 0 and the
    /// epoch empty.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        history: Option<HistoryOptions>,
    ) -> BrokerFuture<'a, StreamPosition>;

    /// Sends `message` (JSON) to every node's [`BrokerEvents::control`],
    /// this one's included: the cluster's control channel, through which a
    /// server API call reaches the node that holds the connection. Messages
    /// from one node arrive everywhere in the order it sent them; like
    /// publications, at most once (a node whose subscription is being
    /// restored misses what is sent meanwhile).
    fn publish_control<'a>(&'a self, message: Bytes) -> BrokerFuture<'a, ()>;

    /// Sends a join push to the channel's subscribers on every node.
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()>;

    /// Sends a leave push to the channel's subscribers on every node.
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()>;

    /// This node has its first local subscriber to `channel`.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()>;

    /// This node's last local subscriber to `channel` left.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()>;

    /// Reads a channel's history as [`HistoryQuery`] describes. A `since`
    /// position whose epoch differs from the current one, that is past the
    /// latest offset, or (reading forward) whose successors fell out of the
    /// kept window, gives [`BrokerError::UnrecoverablePosition`].
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, History>;

    /// Drops a channel's publications but keeps its position (offset and
    /// epoch), as Centrifugo does, so clients at the top stay recoverable.
    fn remove_history<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()>;

    /// Adds or refreshes a client's presence in a channel; entries expire
    /// after `ttl` unless refreshed.
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BrokerFuture<'a, ()>;

    /// Removes a client's presence.
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()>;

    /// Who is in a channel, by client id.
    fn presence<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, Vec<ClientInfo>>;

    /// How many clients and distinct users are in a channel.
    fn presence_stats<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, PresenceStats>;

    /// Whether this node can use the broker now (its readiness): `Ok`, or
    /// [`BrokerError::Unavailable`] saying why not.
    fn ready(&self) -> BrokerFuture<'_, ()>;

    /// Adds or refreshes this node in the registry of live nodes; the
    /// entry expires after `ttl` unless announced again.
    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> BrokerFuture<'a, ()>;

    /// Removes a node from the registry (it is draining or gone).
    fn withdraw<'a>(&'a self, uid: &'a str) -> BrokerFuture<'a, ()>;

    /// The live nodes that announced themselves, this one included.
    fn nodes(&self) -> BrokerFuture<'_, Vec<NodeInfo>>;
}
