//! The many-node engine: Redis fans publications out between nodes and
//! keeps history, presence and the node registry.
//!
//! It keeps nothing in this process beyond the set of channels it
//! subscribed to. Redis may run without persistence: after a restart every
//! stream gets a new epoch, so positions handed out before it never recover
//! (clients are told `recovered: false`).
//!
//! ```text
//!  publish ──► EVALSHA publish.lua ──► tether.meta.{h}ch    { e: epoch, s: offset }
//!                                 ├──► tether.history.{h}ch [oldest … newest], LTRIM size
//!                                 └──► (S)PUBLISH tether.pub.{h}ch ──► every node's subscriber
//!                                                                          │
//!  subscribe / unsubscribe ──► subscriber task ── (S)SUBSCRIBE ────────────┘──► BrokerEvents
//! ```
//!
//! **Where a channel lives.** With one Redis, there. With several
//! independent instances (`redis://a,redis://b`), jump consistent hashing
//! of the channel name picks one instance for all of a channel's traffic,
//! history and presence; instances should only ever be appended to the
//! list (then only the channels that move to the new instance start a new
//! epoch). With Redis Cluster (`redis+cluster://`), the hash tag in every
//! name (see [`keys`]) puts them in one slot, and publications go through
//! sharded pub/sub. The node registry lives on the first instance (or in
//! its own slot of the cluster).
//!
//! **Keys** are described in [`keys`]; publish and history reads are Lua
//! scripts ([`scripts`]), so offset, epoch and list always agree.
//!
//! **Errors.** Every call is bounded by [`connection::CALL_TIMEOUT`]; an
//! unreachable Redis gives [`BrokerError::Unavailable`] at once (the node
//! keeps its clients). Command connections reconnect by themselves, the
//! subscriber tasks with capped backoff. A publish that timed out may still
//! have happened.

mod cluster;
mod codec;
mod connection;
mod keys;
mod registry;
mod scripts;
mod subscriber;
#[cfg(test)]
mod tests;

use std::{collections::HashSet, sync::Arc, time::Duration};

use ::redis::{AsyncCommands, Client, aio::ConnectionManagerConfig};
use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};

use self::{
    codec::{
        Decoded, Kind, decode, decode_client_info, encode_client_info, encode_control,
        encode_presence_event, encode_publication,
    },
    connection::{CALL_TIMEOUT, CONNECT_TIMEOUT, Commands, bounded},
    keys::{ChannelKeys, channel_hash, jump_bucket},
    scripts::Scripts,
    subscriber::Subscriptions,
};
use super::{
    Broker, BrokerError, BrokerEvents, BrokerFuture, ClientInfo, History, HistoryOptions,
    HistoryQuery, NodeInfo, PresenceStats, Publication, StreamPosition,
};
use crate::config::RedisServers;

/// The channel that carries control messages between nodes: the empty
/// name, which no client can use (a channel name has 1 to 255 bytes), so
/// it goes through the same subscriptions, reconnects and shards as any
/// channel, and lives on one instance (or one cluster slot) for all nodes.
const CONTROL_CHANNEL: &str = "";

/// Length of a stream epoch (alphanumeric characters).
const EPOCH_LEN: usize = 8;

/// TTLs are clamped to this (milliseconds, 100 years).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// The Redis broker: many nodes share one Redis, several, or a cluster.
pub(crate) struct RedisBroker {
    /// The instances channels are spread over (one for a cluster, whose
    /// connection routes by slot itself).
    shards: Vec<Shard>,
    scripts: Scripts,
    empty_stream_ttl: Duration,
}

/// One Redis instance, or a whole cluster.
struct Shard {
    commands: Commands,
    subscriptions: Subscriptions,
    /// `PUBLISH`, or `SPUBLISH` under Redis Cluster.
    publish: &'static str,
}

impl RedisBroker {
    /// How long the position of a channel without publications (created
    /// when a client asked for it) is kept after its last read.
    pub(crate) const DEFAULT_EMPTY_STREAM_TTL: Duration = Duration::from_secs(10 * 60);

    /// Connects to every Redis of `servers` and starts the subscriber
    /// tasks. Fails if one cannot be reached now.
    pub(crate) async fn connect(servers: &RedisServers) -> Result<Arc<Self>, BrokerError> {
        let shards = match servers {
            RedisServers::Instances(urls) => {
                let mut shards = Vec::with_capacity(urls.len());
                for url in urls {
                    shards.push(Shard::standalone(url).await?);
                }
                shards
            }
            RedisServers::Cluster(seeds) => {
                let (commands, subscriptions) = cluster::connect(seeds).await?;
                vec![Shard {
                    commands,
                    subscriptions,
                    publish: "SPUBLISH",
                }]
            }
        };
        let broker = Self {
            shards,
            scripts: Scripts::new(),
            empty_stream_ttl: Self::DEFAULT_EMPTY_STREAM_TTL,
        };
        // For as long as the node lives: its messages are delivered once
        // the events are set.
        broker
            .shard(CONTROL_CHANNEL)
            .subscriptions
            .subscribe(CONTROL_CHANNEL)
            .await?;
        Ok(Arc::new(broker))
    }

    /// The instance that holds `channel`.
    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[jump_bucket(channel_hash(channel), self.shards.len())]
    }

    async fn publish_now(
        &self,
        channel: &str,
        mut publication: Publication,
        history: Option<HistoryOptions>,
    ) -> Result<StreamPosition, BrokerError> {
        publication.offset = 0;
        let body = encode_publication(&publication);
        let keys = ChannelKeys::new(channel);
        let shard = self.shard(channel);
        let Some(options) = history else {
            shard.publish_raw(&keys, body).await?;
            return Ok(StreamPosition {
                offset: 0,
                epoch: String::new(),
            });
        };
        let trim = if options.size == 0 {
            String::new()
        } else {
            format!("-{}", options.size.min(i64::MAX as usize))
        };
        let (offset, epoch): (u64, String) = bounded(
            self.scripts
                .publish
                .key(&keys.meta)
                .key(&keys.history)
                .arg(&keys.pubsub)
                .arg(new_epoch())
                .arg(body)
                .arg(trim)
                .arg(ttl_ms(options.ttl))
                .arg(shard.publish)
                .invoke_async(&mut shard.commands.clone()),
        )
        .await?;
        Ok(StreamPosition { offset, epoch })
    }

    async fn history_now(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        let keys = ChannelKeys::new(channel);
        let (since_given, since_offset, since_epoch) = match &query.since {
            Some(since) => ("1", since.offset.to_string(), since.epoch.as_str()),
            None => ("0", String::new(), ""),
        };
        let limit = query
            .limit
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let (offset, epoch, ok, items): (u64, String, i64, Vec<Vec<u8>>) = bounded(
            self.scripts
                .history
                .key(&keys.meta)
                .key(&keys.history)
                .arg(new_epoch())
                .arg(ttl_ms(self.empty_stream_ttl).max(1))
                .arg(since_given)
                .arg(since_offset)
                .arg(since_epoch)
                .arg(limit)
                .arg(if query.reverse { "1" } else { "0" })
                .invoke_async(&mut self.shard(channel).commands.clone()),
        )
        .await?;
        if ok == 0 {
            return Err(BrokerError::UnrecoverablePosition);
        }
        let mut publications = Vec::with_capacity(items.len());
        for item in &items {
            match decode(item) {
                Some(Decoded::Publication(publication, _)) => publications.push(publication),
                _ => {
                    return Err(BrokerError::Unavailable(format!(
                        "undecodable history entry in {channel}"
                    )));
                }
            }
        }
        if query.reverse {
            publications.reverse();
        }
        Ok(History {
            publications,
            position: StreamPosition { offset, epoch },
        })
    }

    async fn publish_presence_event(
        &self,
        channel: &str,
        kind: Kind,
        info: &ClientInfo,
    ) -> Result<(), BrokerError> {
        let body = encode_presence_event(kind, info);
        self.shard(channel)
            .publish_raw(&ChannelKeys::new(channel), body)
            .await
    }

    async fn read_presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let keys = ChannelKeys::new(channel);
        let values: Vec<Vec<u8>> = bounded(
            self.scripts
                .presence
                .key(&keys.presence)
                .key(&keys.presence_expiry)
                .invoke_async(&mut self.shard(channel).commands.clone()),
        )
        .await?;
        Ok(values
            .iter()
            .filter_map(|value| decode_client_info(value))
            .collect())
    }
}

impl Shard {
    /// A standalone Redis at `url`.
    async fn standalone(url: &str) -> Result<Self, BrokerError> {
        let client = Client::open(url)
            .map_err(|error| BrokerError::Unavailable(format!("bad redis url: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let commands = bounded(client.get_connection_manager_with_config(config)).await?;
        let pubsub = bounded(client.get_async_pubsub()).await?;
        let label = client.get_connection_info().addr().to_string();
        Ok(Self {
            commands: Commands::Standalone(commands),
            subscriptions: Subscriptions::standalone(client, pubsub, label),
            publish: "PUBLISH",
        })
    }

    /// Publishes an encoded message to the channel's subscribers only.
    async fn publish_raw(&self, keys: &ChannelKeys, body: Vec<u8>) -> Result<(), BrokerError> {
        let mut command = ::redis::cmd(self.publish);
        command.arg(&keys.pubsub).arg(body);
        let _: i64 = bounded(command.query_async(&mut self.commands.clone())).await?;
        Ok(())
    }
}

impl Broker for RedisBroker {
    fn set_events(&self, events: Arc<dyn BrokerEvents>) {
        let fresh = self
            .shards
            .iter()
            .all(|shard| shard.subscriptions.set_events(events.clone()));
        if !fresh {
            tracing::warn!("redis broker: events already set; ignoring the new ones");
        }
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        history: Option<HistoryOptions>,
    ) -> BrokerFuture<'a, StreamPosition> {
        Box::pin(self.publish_now(channel, publication, history))
    }

    fn publish_control<'a>(&'a self, message: Bytes) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.shard(CONTROL_CHANNEL)
                .publish_raw(&ChannelKeys::new(CONTROL_CHANNEL), encode_control(&message))
                .await
        })
    }

    fn ready(&self) -> BrokerFuture<'_, ()> {
        Box::pin(async move {
            for shard in &self.shards {
                if !shard.subscriptions.connected() {
                    return Err(BrokerError::Unavailable(
                        "redis subscriber is reconnecting".to_owned(),
                    ));
                }
                let command = ::redis::cmd("PING");
                let _: String = bounded(command.query_async(&mut shard.commands.clone())).await?;
            }
            Ok(())
        })
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.publish_presence_event(channel, Kind::Join, &info)
                .await
        })
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.publish_presence_event(channel, Kind::Leave, &info)
                .await
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        self.shard(channel).subscriptions.subscribe(channel)
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        self.shard(channel).subscriptions.unsubscribe(channel)
    }

    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, History> {
        Box::pin(self.history_now(channel, query))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.shard(channel).commands.clone();
            let _: i64 = bounded(conn.del(ChannelKeys::new(channel).history)).await?;
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
            let keys = ChannelKeys::new(channel);
            let _: i64 = bounded(
                self.scripts
                    .add_presence
                    .key(&keys.presence)
                    .key(&keys.presence_expiry)
                    .arg(&info.client)
                    .arg(encode_client_info(&info))
                    .arg(ttl_ms(ttl))
                    .invoke_async(&mut self.shard(channel).commands.clone()),
            )
            .await?;
            Ok(())
        })
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let keys = ChannelKeys::new(channel);
            let () = bounded(
                ::redis::pipe()
                    .atomic()
                    .hdel(&keys.presence, client)
                    .ignore()
                    .zrem(&keys.presence_expiry, client)
                    .ignore()
                    .query_async(&mut self.shard(channel).commands.clone()),
            )
            .await?;
            Ok(())
        })
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, Vec<ClientInfo>> {
        Box::pin(async move {
            let mut clients = self.read_presence(channel).await?;
            clients.sort_unstable_by(|a, b| a.client.cmp(&b.client));
            Ok(clients)
        })
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, PresenceStats> {
        Box::pin(async move {
            let clients = self.read_presence(channel).await?;
            Ok(PresenceStats {
                clients: clients.len(),
                users: clients
                    .iter()
                    .map(|info| info.user.as_str())
                    .collect::<HashSet<_>>()
                    .len(),
            })
        })
    }

    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> BrokerFuture<'a, ()> {
        Box::pin(registry::announce(self, node, ttl))
    }

    fn withdraw<'a>(&'a self, uid: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(registry::withdraw(self, uid))
    }

    fn nodes(&self) -> BrokerFuture<'_, Vec<NodeInfo>> {
        Box::pin(registry::nodes(self))
    }
}

fn new_epoch() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), EPOCH_LEN)
}

/// A TTL in whole milliseconds, rounded up and clamped.
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_TTL_MS)
}
