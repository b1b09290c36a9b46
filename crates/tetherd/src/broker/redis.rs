//! The many-node engine: one Redis instance fans publications out between
//! nodes and keeps history and presence.
//!
//! It does not shard channels over several Redis instances (no Cluster or
//! Sentinel) and keeps nothing in this process beyond the set of channels it
//! subscribed to. Redis may run without persistence: after a restart every
//! stream gets a new epoch, so positions handed out before it never recover.
//!
//! ```text
//!  publish ──► EVALSHA publish.lua ──► tether.meta.<ch>    { e: epoch, s: offset }
//!                                 ├──► tether.history.<ch> [oldest … newest], LTRIM size
//!                                 └──► PUBLISH tether.pub.<ch> ──► every node's subscriber
//!                                                                     │
//!  subscribe / unsubscribe ──► subscriber task ── SUBSCRIBE ──────────┘──► BrokerEvents
//! ```
//!
//! **Keys.** `tether.meta.<ch>` (hash: `e` epoch, `s` offset),
//! `tether.history.<ch>` (list of encoded publications, oldest first),
//! `tether.presence.<ch>` (hash: client id → encoded [`ClientInfo`]) and
//! `tether.presence.exp.<ch>` (sorted set: client id scored by its expiry in
//! Redis server milliseconds). Publish and history reads are Lua scripts, so
//! offset, epoch and list always agree.
//!
//! **Subscriber.** One dedicated pub/sub connection per broker, owned by a
//! task. [`Broker::subscribe`] and [`Broker::unsubscribe`] update the set of
//! wanted channels at call time and ask the task to bring Redis in line with
//! it, so calls that race still converge. The task delivers a message only
//! while its channel is wanted, reconnects with backoff when the connection
//! drops (or stops answering pings) and then subscribes every wanted channel
//! again. Messages published while it was disconnected are lost (live
//! fan-out is at most once); clients recover them from history.
//!
//! **Errors.** Every call is bounded by [`CALL_TIMEOUT`]; an unreachable Redis
//! gives [`BrokerError::Unavailable`]. A publish that timed out may still
//! have happened.

use std::{
    borrow::Cow,
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use ::redis::{
    AsyncCommands, Client, Msg, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig, PubSub, PubSubSink, PubSubStream},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use futures_core::Stream;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{
    Broker, BrokerError, BrokerEvents, BrokerFuture, ClientInfo, History, HistoryOptions,
    HistoryQuery, PresenceStats, Publication, StreamPosition,
};

/// Longest any broker call waits for Redis.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest a connection attempt takes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The subscriber's first and longest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often an idle subscriber connection is pinged to detect a dead peer.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 256;

/// Length of a stream epoch (alphanumeric characters).
const EPOCH_LEN: usize = 8;

/// TTLs are clamped to this (milliseconds, 100 years).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

const PUB_PREFIX: &str = "tether.pub.";

/// Appends a publication to a channel's stream and publishes it.
///
/// KEYS: meta, history. ARGV: pub/sub channel, new epoch (used when the
/// stream has none), encoded publication without its offset (a JSON object),
/// LTRIM start (`-size`, or empty to keep nothing), TTL in milliseconds.
/// Returns `{offset, epoch}`.
const PUBLISH_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local encoded = '{"o":' .. string.format('%d', offset) .. ',' .. string.sub(ARGV[3], 2)
if ARGV[4] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('RPUSH', KEYS[2], encoded)
  redis.call('LTRIM', KEYS[2], ARGV[4], -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], encoded)
return {offset, epoch}
"#;

/// Reads a channel's history, creating its epoch when it has none.
///
/// KEYS: meta, history. ARGV: new epoch, TTL in milliseconds of a stream
/// without publications, `1` when a since position is given, its offset, its
/// epoch, limit (`-1`: none), `1` for newest first. Returns
/// `{offset, epoch, ok, publications}`, `ok` 0 when the since position
/// cannot be recovered.
const HISTORY_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if offset == 0 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local kept = redis.call('LLEN', KEYS[2])
local first = 0
if ARGV[3] == '1' then
  local since = tonumber(ARGV[4])
  if ARGV[5] ~= epoch or since > offset or offset - since > kept then
    return {offset, epoch, 0, {}}
  end
  first = kept - (offset - since)
end
local limit = tonumber(ARGV[6])
local start = first
local stop = kept - 1
if limit >= 0 then
  if ARGV[7] == '1' then
    if kept - limit > start then start = kept - limit end
  else
    if first + limit - 1 < stop then stop = first + limit - 1 end
  end
end
local items = {}
if start <= stop then
  items = redis.call('LRANGE', KEYS[2], start, stop)
end
return {offset, epoch, 1, items}
"#;

/// Adds or refreshes a presence entry, using the server's clock.
///
/// KEYS: presence hash, expiry zset. ARGV: client id, encoded info, TTL in
/// milliseconds.
const ADD_PRESENCE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
local keep = ttl
local current = redis.call('PTTL', KEYS[2])
if current > keep then keep = current end
if keep < 1 then keep = 1 end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return 1
"#;

/// Drops expired presence entries (server clock) and returns the live ones.
///
/// KEYS: presence hash, expiry zset.
const PRESENCE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #expired, 500 do
  redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 499, #expired)))
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
return redis.call('HVALS', KEYS[1])
"#;

/// The Redis broker: many nodes share one Redis instance.
pub(crate) struct RedisBroker {
    commands: ConnectionManager,
    shared: Arc<Shared>,
    /// Requests to the subscriber task; dropping it stops the task.
    subscriber: mpsc::UnboundedSender<SyncRequest>,
    empty_stream_ttl: Duration,
    publish_script: Script,
    history_script: Script,
    add_presence_script: Script,
    presence_script: Script,
}

/// What the broker and its subscriber task share.
struct Shared {
    events: OnceLock<Arc<dyn BrokerEvents>>,
    /// Channels this node wants messages for (hub names, not Redis names).
    wanted: Mutex<HashSet<String>>,
}

/// Asks the subscriber task to make Redis match [`Shared::wanted`] for one
/// channel, and answers when it did (or could not).
struct SyncRequest {
    channel: String,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// A message on a `tether.pub.<channel>` Redis channel, and a history entry.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// What this is (publications, joins and leaves share the channel).
    k: Kind,
    /// The publication's offset (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    o: u64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    d: Option<&'a RawValue>,
    /// The data in base64, when it is not exactly one JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    db: Option<String>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    i: Option<WireInfo<'a>>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    t: Cow<'a, [(String, String)]>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[serde(rename = "p")]
    Publication,
    #[serde(rename = "j")]
    Join,
    #[serde(rename = "l")]
    Leave,
}

#[derive(Serialize, Deserialize)]
struct WireInfo<'a> {
    c: Cow<'a, str>,
    u: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    ci: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cib: Option<String>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    hi: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hib: Option<String>,
}

impl RedisBroker {
    /// How long the position of a channel without publications (created
    /// when a client asked for it) is kept after its last read.
    pub(crate) const DEFAULT_EMPTY_STREAM_TTL: Duration = Duration::from_secs(10 * 60);

    /// Connects to the Redis at `url` (`redis://host:port/db`) and starts the
    /// subscriber task. Fails if Redis cannot be reached now.
    pub(crate) async fn connect(url: &str) -> Result<Arc<Self>, BrokerError> {
        let client = Client::open(url)
            .map_err(|error| BrokerError::Unavailable(format!("bad redis url: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let commands = bounded(client.get_connection_manager_with_config(config)).await?;
        let pubsub = bounded(client.get_async_pubsub()).await?;
        let shared = Arc::new(Shared {
            events: OnceLock::new(),
            wanted: Mutex::new(HashSet::new()),
        });
        let (subscriber, requests) = mpsc::unbounded_channel();
        tokio::spawn(run_subscriber(client, shared.clone(), requests, pubsub));
        Ok(Arc::new(Self {
            commands,
            shared,
            subscriber,
            empty_stream_ttl: Self::DEFAULT_EMPTY_STREAM_TTL,
            publish_script: Script::new(PUBLISH_LUA),
            history_script: Script::new(HISTORY_LUA),
            add_presence_script: Script::new(ADD_PRESENCE_LUA),
            presence_script: Script::new(PRESENCE_LUA),
        }))
    }

    /// Asks the subscriber task to apply the wanted state of `channel`.
    fn sync(&self, channel: &str) -> BrokerFuture<'static, ()> {
        let (done, answer) = oneshot::channel();
        let sent = self.subscriber.send(SyncRequest {
            channel: channel.to_owned(),
            done,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(BrokerError::Unavailable("subscriber stopped".to_owned()));
            }
            match tokio::time::timeout(CALL_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(BrokerError::Unavailable("subscriber stopped".to_owned())),
                Err(_) => Err(timed_out()),
            }
        })
    }

    async fn publish_now(
        &self,
        channel: &str,
        mut publication: Publication,
        history: Option<HistoryOptions>,
    ) -> Result<StreamPosition, BrokerError> {
        publication.offset = 0;
        let body = encode_publication(&publication);
        let mut conn = self.commands.clone();
        let Some(options) = history else {
            let _: i64 = bounded(conn.publish(pub_channel(channel), body)).await?;
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
            self.publish_script
                .key(meta_key(channel))
                .key(history_key(channel))
                .arg(pub_channel(channel))
                .arg(new_epoch())
                .arg(body)
                .arg(trim)
                .arg(ttl_ms(options.ttl))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(StreamPosition { offset, epoch })
    }

    async fn history_now(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        let mut conn = self.commands.clone();
        let (since_given, since_offset, since_epoch) = match &query.since {
            Some(since) => ("1", since.offset.to_string(), since.epoch.as_str()),
            None => ("0", String::new(), ""),
        };
        let limit = query
            .limit
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let (offset, epoch, ok, items): (u64, String, i64, Vec<Vec<u8>>) = bounded(
            self.history_script
                .key(meta_key(channel))
                .key(history_key(channel))
                .arg(new_epoch())
                .arg(ttl_ms(self.empty_stream_ttl).max(1))
                .arg(since_given)
                .arg(since_offset)
                .arg(since_epoch)
                .arg(limit)
                .arg(if query.reverse { "1" } else { "0" })
                .invoke_async(&mut conn),
        )
        .await?;
        if ok == 0 {
            return Err(BrokerError::UnrecoverablePosition);
        }
        let mut publications = Vec::with_capacity(items.len());
        for item in &items {
            match decode(item) {
                Some(Decoded::Publication(publication)) => publications.push(publication),
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

    async fn read_presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let mut conn = self.commands.clone();
        let values: Vec<Vec<u8>> = bounded(
            self.presence_script
                .key(presence_key(channel))
                .key(presence_exp_key(channel))
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(values
            .iter()
            .filter_map(|value| serde_json::from_slice::<WireInfo<'_>>(value).ok())
            .map(WireInfo::into_info)
            .collect())
    }
}

impl Shared {
    fn wanted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A poisoned set is still a set: nothing panics mid-update.
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one pub/sub message to the hub, if its channel is still wanted.
    fn deliver(&self, msg: &Msg) {
        let Some(channel) = msg.get_channel_name().strip_prefix(PUB_PREFIX) else {
            return;
        };
        let Some(events) = self.events.get() else {
            return;
        };
        if !self.wanted().contains(channel) {
            return;
        }
        match decode(msg.get_payload_bytes()) {
            Some(Decoded::Publication(publication)) => events.publication(channel, publication),
            Some(Decoded::Join(info)) => events.join(channel, info),
            Some(Decoded::Leave(info)) => events.leave(channel, info),
            None => tracing::warn!(%channel, "redis broker: undecodable message dropped"),
        }
    }
}

impl<'a> WireInfo<'a> {
    fn from_info(info: &'a ClientInfo) -> Self {
        let (ci, cib) = raw(info.conn_info.as_ref());
        let (hi, hib) = raw(info.chan_info.as_ref());
        Self {
            c: Cow::Borrowed(&info.client),
            u: Cow::Borrowed(&info.user),
            ci,
            cib,
            hi,
            hib,
        }
    }

    fn into_info(self) -> ClientInfo {
        ClientInfo {
            client: self.c.into_owned(),
            user: self.u.into_owned(),
            conn_info: unraw(self.ci, self.cib),
            chan_info: unraw(self.hi, self.hib),
        }
    }
}

impl Broker for RedisBroker {
    fn set_events(&self, events: Arc<dyn BrokerEvents>) {
        if self.shared.events.set(events).is_err() {
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

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let body = encode_presence_event(Kind::Join, &info);
            let mut conn = self.commands.clone();
            let _: i64 = bounded(conn.publish(pub_channel(channel), body)).await?;
            Ok(())
        })
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let body = encode_presence_event(Kind::Leave, &info);
            let mut conn = self.commands.clone();
            let _: i64 = bounded(conn.publish(pub_channel(channel), body)).await?;
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        // Updated at call time, so the wanted set follows the hub's order.
        self.shared.wanted().insert(channel.to_owned());
        self.sync(channel)
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        self.shared.wanted().remove(channel);
        self.sync(channel)
    }

    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, History> {
        Box::pin(self.history_now(channel, query))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.commands.clone();
            let _: i64 = bounded(conn.del(history_key(channel))).await?;
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
            let encoded = serde_json::to_vec(&WireInfo::from_info(&info))
                .expect("a WireInfo always serializes: strings and valid raw JSON");
            let mut conn = self.commands.clone();
            let _: i64 = bounded(
                self.add_presence_script
                    .key(presence_key(channel))
                    .key(presence_exp_key(channel))
                    .arg(&info.client)
                    .arg(encoded)
                    .arg(ttl_ms(ttl))
                    .invoke_async(&mut conn),
            )
            .await?;
            Ok(())
        })
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.commands.clone();
            let () = bounded(
                ::redis::pipe()
                    .atomic()
                    .hdel(presence_key(channel), client)
                    .ignore()
                    .zrem(presence_exp_key(channel), client)
                    .ignore()
                    .query_async(&mut conn),
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
}

/// What a pub/sub message or history entry holds.
enum Decoded {
    Publication(Publication),
    Join(ClientInfo),
    Leave(ClientInfo),
}

/// The subscriber task: owns the pub/sub connection, delivers messages and
/// applies [`SyncRequest`]s; reconnects and resubscribes when it drops.
async fn run_subscriber(
    client: Client,
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<SyncRequest>,
    first: PubSub,
) {
    let mut next = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let pubsub = match next.take() {
            Some(pubsub) => pubsub,
            None => match bounded(client.get_async_pubsub()).await {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    tracing::debug!(%error, "redis subscriber: reconnect failed");
                    if !refuse_for(&mut requests, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed = HashSet::new();
        if let Err(error) = resubscribe(&mut sink, &shared, &mut subscribed).await {
            tracing::warn!(%error, "redis subscriber: resubscribing failed");
            if !refuse_for(&mut requests, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = MIN_BACKOFF;
        if !serve(
            &mut sink,
            &mut stream,
            &shared,
            &mut requests,
            &mut subscribed,
        )
        .await
        {
            return;
        }
        tracing::warn!("redis subscriber: connection lost; reconnecting");
    }
}

/// Subscribes every wanted channel on a new connection.
async fn resubscribe(
    sink: &mut PubSubSink,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
) -> Result<(), BrokerError> {
    let wanted: Vec<String> = shared.wanted().iter().cloned().collect();
    for batch in wanted.chunks(RESUBSCRIBE_BATCH) {
        let names: Vec<String> = batch.iter().map(|channel| pub_channel(channel)).collect();
        bounded(sink.subscribe(names)).await?;
        subscribed.extend(batch.iter().cloned());
    }
    Ok(())
}

/// Runs one connection until it fails (`true`) or the broker is gone
/// (`false`).
async fn serve(
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    shared: &Shared,
    requests: &mut mpsc::UnboundedReceiver<SyncRequest>,
    subscribed: &mut HashSet<String>,
) -> bool {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = next_message(stream) => match msg {
                Some(msg) => shared.deliver(&msg),
                None => return true,
            },
            request = requests.recv() => {
                let Some(request) = request else {
                    return false;
                };
                let result = apply(sink, shared, subscribed, &request.channel).await;
                let failed = result.is_err();
                let _ = request.done.send(result);
                if failed {
                    return true;
                }
            }
            _ = ping.tick() => {
                if bounded(sink.ping::<String>()).await.is_err() {
                    return true;
                }
            }
        }
    }
}

/// SUBSCRIBEs or UNSUBSCRIBEs `channel` until Redis matches the wanted set
/// (which other calls may change meanwhile).
async fn apply(
    sink: &mut PubSubSink,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
    channel: &str,
) -> Result<(), BrokerError> {
    loop {
        let want = shared.wanted().contains(channel);
        if want == subscribed.contains(channel) {
            return Ok(());
        }
        if want {
            bounded(sink.subscribe(pub_channel(channel))).await?;
            subscribed.insert(channel.to_owned());
        } else {
            bounded(sink.unsubscribe(pub_channel(channel))).await?;
            subscribed.remove(channel);
        }
    }
}

/// Waits `delay` while disconnected, refusing requests meanwhile (the
/// wanted set keeps them; they are applied on reconnect). `false` when the
/// broker is gone.
async fn refuse_for(requests: &mut mpsc::UnboundedReceiver<SyncRequest>, delay: Duration) -> bool {
    let deadline = tokio::time::sleep(delay);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return true,
            request = requests.recv() => match request {
                Some(request) => {
                    let _ = request.done.send(Err(BrokerError::Unavailable(
                        "redis subscriber is reconnecting".to_owned(),
                    )));
                }
                None => return false,
            },
        }
    }
}

async fn next_message(stream: &mut PubSubStream) -> Option<Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Runs a Redis call with [`CALL_TIMEOUT`], mapping failures to
/// [`BrokerError::Unavailable`].
async fn bounded<T>(call: impl Future<Output = Result<T, RedisError>>) -> Result<T, BrokerError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(BrokerError::Unavailable(error.to_string())),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> BrokerError {
    BrokerError::Unavailable(format!("redis did not answer within {CALL_TIMEOUT:?}"))
}

fn encode_publication(publication: &Publication) -> Vec<u8> {
    let (d, db) = raw(Some(&publication.data));
    let wire = Wire {
        k: Kind::Publication,
        o: publication.offset,
        d,
        db,
        i: publication.info.as_ref().map(WireInfo::from_info),
        t: Cow::Borrowed(&publication.tags),
    };
    serde_json::to_vec(&wire).expect("a Wire always serializes: strings and valid raw JSON")
}

fn encode_presence_event(kind: Kind, info: &ClientInfo) -> Vec<u8> {
    let wire = Wire {
        k: kind,
        o: 0,
        d: None,
        db: None,
        i: Some(WireInfo::from_info(info)),
        t: Cow::Borrowed(&[]),
    };
    serde_json::to_vec(&wire).expect("a Wire always serializes: strings and valid raw JSON")
}

fn decode(bytes: &[u8]) -> Option<Decoded> {
    let wire: Wire<'_> = serde_json::from_slice(bytes).ok()?;
    match wire.k {
        Kind::Publication => Some(Decoded::Publication(Publication {
            offset: wire.o,
            data: unraw(wire.d, wire.db).unwrap_or_default(),
            info: wire.i.map(WireInfo::into_info),
            tags: wire.t.into_owned(),
        })),
        Kind::Join => Some(Decoded::Join(wire.i?.into_info())),
        Kind::Leave => Some(Decoded::Leave(wire.i?.into_info())),
    }
}

/// Raw JSON as itself when it is exactly one JSON value (so it comes back
/// byte for byte), otherwise as base64.
fn raw(bytes: Option<&Bytes>) -> (Option<&RawValue>, Option<String>) {
    let Some(bytes) = bytes else {
        return (None, None);
    };
    match serde_json::from_slice::<&RawValue>(bytes) {
        Ok(value) if value.get().len() == bytes.len() => (Some(value), None),
        _ => (None, Some(BASE64.encode(bytes))),
    }
}

fn unraw(json: Option<&RawValue>, base64: Option<String>) -> Option<Bytes> {
    match (json, base64) {
        (Some(value), _) => Some(Bytes::copy_from_slice(value.get().as_bytes())),
        (None, Some(encoded)) => BASE64.decode(encoded).ok().map(Bytes::from),
        (None, None) => None,
    }
}

fn is_zero(offset: &u64) -> bool {
    *offset == 0
}

fn new_epoch() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), EPOCH_LEN)
}

/// A TTL in whole milliseconds, rounded up and clamped.
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_TTL_MS)
}

fn pub_channel(channel: &str) -> String {
    format!("{PUB_PREFIX}{channel}")
}

fn meta_key(channel: &str) -> String {
    format!("tether.meta.{channel}")
}

fn history_key(channel: &str) -> String {
    format!("tether.history.{channel}")
}

fn presence_key(channel: &str) -> String {
    format!("tether.presence.{channel}")
}

fn presence_exp_key(channel: &str) -> String {
    format!("tether.presence.exp.{channel}")
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        process::{Child, Command, Stdio},
        time::Instant,
    };

    use super::*;

    /// A `redis-server` child on a loopback port, killed on drop.
    struct RedisServer {
        port: u16,
        child: Option<Child>,
    }

    impl RedisServer {
        fn start() -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let mut server = Self { port, child: None };
            server.restart();
            server
        }

        /// Starts (again) on the same port, without persistence.
        fn restart(&mut self) {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot start redis-server ({error}); these tests need it installed \
                         (Debian: apt-get install -y redis-server)"
                    )
                });
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.answers_ping() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn answers_ping(&self) -> bool {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0; 7];
            stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Publication(String, Publication),
        Join(String, ClientInfo),
        Leave(String, ClientInfo),
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Seen>>);

    impl Recorder {
        fn seen(&self) -> Vec<Seen> {
            self.0.lock().expect("no test panics holding it").clone()
        }

        fn take(&self) -> Vec<Seen> {
            std::mem::take(&mut self.0.lock().expect("no test panics holding it"))
        }

        fn push(&self, seen: Seen) {
            self.0.lock().expect("no test panics holding it").push(seen);
        }

        /// Waits until at least `count` events arrived, then takes them.
        async fn wait_for(&self, count: usize) -> Vec<Seen> {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.seen().len() < count {
                assert!(
                    Instant::now() < deadline,
                    "only {:?} arrived, expected {count}",
                    self.seen()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.take()
        }
    }

    impl BrokerEvents for Recorder {
        fn publication(&self, channel: &str, publication: Publication) {
            self.push(Seen::Publication(channel.to_owned(), publication));
        }
        fn join(&self, channel: &str, info: ClientInfo) {
            self.push(Seen::Join(channel.to_owned(), info));
        }
        fn leave(&self, channel: &str, info: ClientInfo) {
            self.push(Seen::Leave(channel.to_owned(), info));
        }
    }

    async fn node(server: &RedisServer) -> (Arc<RedisBroker>, Arc<Recorder>) {
        let broker = RedisBroker::connect(&server.url())
            .await
            .expect("redis-server is running");
        let recorder = Arc::new(Recorder::default());
        broker.set_events(recorder.clone());
        (broker, recorder)
    }

    fn publication(data: &str) -> Publication {
        Publication {
            offset: 0,
            data: Bytes::from(format!("\"{data}\"")),
            info: None,
            tags: Vec::new(),
        }
    }

    fn client(id: &str, user: &str) -> ClientInfo {
        ClientInfo {
            client: id.to_owned(),
            user: user.to_owned(),
            conn_info: Some(Bytes::from_static(br#"{"name":"Ann"}"#)),
            chan_info: None,
        }
    }

    const KEEP: HistoryOptions = HistoryOptions {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    fn offsets(publications: &[Publication]) -> Vec<u64> {
        publications.iter().map(|p| p.offset).collect()
    }

    fn since(position: &StreamPosition, offset: u64) -> HistoryQuery {
        HistoryQuery {
            since: Some(StreamPosition {
                offset,
                epoch: position.epoch.clone(),
            }),
            ..HistoryQuery::default()
        }
    }

    /// Lets messages in flight arrive (to check that none does).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    #[test]
    fn wire_round_trips_json_and_other_bytes() {
        let mut with_everything = publication("x");
        with_everything.offset = 7;
        with_everything.info = Some(ClientInfo {
            chan_info: Some(Bytes::from_static(b" not json")),
            ..client("c1", "u1")
        });
        with_everything.tags = vec![("k".to_owned(), "v\"".to_owned())];
        let not_json = Publication {
            data: Bytes::from_static(b"\xff{"),
            ..publication("y")
        };
        for original in [with_everything, not_json, publication("z")] {
            let Some(Decoded::Publication(decoded)) = decode(&encode_publication(&original)) else {
                panic!("a publication decodes as one");
            };
            assert_eq!(decoded, original);
        }
        let info = client("c1", "u1");
        let Some(Decoded::Leave(decoded)) = decode(&encode_presence_event(Kind::Leave, &info))
        else {
            panic!("a leave decodes as one");
        };
        assert_eq!(decoded, info);
    }

    #[tokio::test]
    async fn publications_reach_other_nodes_only_while_subscribed() {
        let server = RedisServer::start();
        let (a, _) = node(&server).await;
        let (b, seen_by_b) = node(&server).await;

        a.publish("chat", publication("before"), None)
            .await
            .unwrap();
        settle().await;
        assert!(seen_by_b.take().is_empty(), "B did not subscribe yet");

        b.subscribe("chat").await.unwrap();
        let position = a.publish("chat", publication("live"), None).await.unwrap();
        assert_eq!(position.offset, 0);
        assert!(position.epoch.is_empty());
        a.publish_join("chat", client("c1", "u1")).await.unwrap();
        a.publish_leave("chat", client("c1", "u1")).await.unwrap();
        assert_eq!(
            seen_by_b.wait_for(3).await,
            vec![
                Seen::Publication("chat".to_owned(), publication("live")),
                Seen::Join("chat".to_owned(), client("c1", "u1")),
                Seen::Leave("chat".to_owned(), client("c1", "u1")),
            ]
        );

        b.unsubscribe("chat").await.unwrap();
        a.publish("chat", publication("after"), None).await.unwrap();
        settle().await;
        assert!(seen_by_b.take().is_empty(), "B unsubscribed");
    }

    #[tokio::test]
    async fn racing_subscribe_and_unsubscribe_follow_the_last_call() {
        let server = RedisServer::start();
        let (a, _) = node(&server).await;
        let (b, seen_by_b) = node(&server).await;
        for (calls, last_subscribes) in [(51, true), (50, false), (7, true)] {
            // All calls are made before any is awaited; they are answered
            // in reverse, as racing sessions might.
            let pending: Vec<_> = (0..calls)
                .map(|i| {
                    if i % 2 == 0 {
                        b.subscribe("c")
                    } else {
                        b.unsubscribe("c")
                    }
                })
                .collect();
            for call in pending.into_iter().rev() {
                call.await.unwrap();
            }
            a.publish("c", publication("x"), None).await.unwrap();
            if last_subscribes {
                assert_eq!(seen_by_b.wait_for(1).await.len(), 1);
            } else {
                settle().await;
                assert!(seen_by_b.take().is_empty());
            }
        }
    }

    #[tokio::test]
    async fn offsets_increase_across_publishers() {
        let server = RedisServer::start();
        let (a, seen_by_a) = node(&server).await;
        let (b, seen_by_b) = node(&server).await;
        a.subscribe("c").await.unwrap();
        b.subscribe("c").await.unwrap();
        let history = HistoryOptions {
            size: 100,
            ttl: Duration::from_secs(60),
        };
        let publish_from = |broker: Arc<RedisBroker>| async move {
            let mut offsets = Vec::new();
            for i in 0..20 {
                let position = broker
                    .publish("c", publication(&i.to_string()), Some(history))
                    .await
                    .unwrap();
                offsets.push(position.offset);
            }
            offsets
        };
        let (from_a, from_b) = tokio::join!(publish_from(a.clone()), publish_from(b.clone()));
        assert!(from_a.windows(2).all(|w| w[0] < w[1]));
        assert!(from_b.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<u64> = from_a.into_iter().chain(from_b).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=40).collect::<Vec<_>>());
        for seen in [seen_by_a, seen_by_b] {
            let delivered: Vec<u64> = seen
                .wait_for(40)
                .await
                .into_iter()
                .map(|seen| match seen {
                    Seen::Publication(_, p) => p.offset,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(delivered, (1..=40).collect::<Vec<_>>(), "in offset order");
        }
    }

    #[tokio::test]
    async fn history_recovers_exactly_or_says_it_cannot() {
        let server = RedisServer::start();
        let (a, _) = node(&server).await;
        let (b, _) = node(&server).await;

        // A channel without a stream: offset 0 and an epoch to recover from.
        let empty = b
            .history(
                "c",
                HistoryQuery {
                    limit: Some(0),
                    ..HistoryQuery::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(empty.position.offset, 0);
        assert_eq!(empty.position.epoch.len(), EPOCH_LEN);
        let mut last = StreamPosition {
            offset: 0,
            epoch: String::new(),
        };
        for i in 1..=5 {
            last = a
                .publish("c", publication(&i.to_string()), Some(KEEP))
                .await
                .unwrap();
            assert_eq!(last.offset, i);
            assert_eq!(last.epoch, empty.position.epoch);
        }

        let recovered = b.history("c", since(&last, 2)).await.unwrap();
        assert_eq!(offsets(&recovered.publications), [3, 4, 5]);
        assert_eq!(recovered.publications[0].data, publication("3").data);
        assert_eq!(recovered.position, last);
        assert!(
            b.history("c", since(&last, 5))
                .await
                .unwrap()
                .publications
                .is_empty()
        );
        for gone in [since(&last, 1), since(&last, 0), since(&last, 6)] {
            assert_eq!(
                b.history("c", gone).await,
                Err(BrokerError::UnrecoverablePosition)
            );
        }
        let other_epoch = HistoryQuery {
            since: Some(StreamPosition {
                offset: 4,
                epoch: "other".to_owned(),
            }),
            ..HistoryQuery::default()
        };
        assert_eq!(
            b.history("c", other_epoch).await,
            Err(BrokerError::UnrecoverablePosition)
        );

        let oldest = HistoryQuery {
            limit: Some(2),
            ..HistoryQuery::default()
        };
        assert_eq!(
            offsets(&b.history("c", oldest).await.unwrap().publications),
            [3, 4]
        );
        let newest = HistoryQuery {
            limit: Some(2),
            reverse: true,
            ..HistoryQuery::default()
        };
        assert_eq!(
            offsets(&b.history("c", newest).await.unwrap().publications),
            [5, 4]
        );
        let position_only = HistoryQuery {
            limit: Some(0),
            ..since(&last, 3)
        };
        let history = b.history("c", position_only).await.unwrap();
        assert!(history.publications.is_empty());
        assert_eq!(history.position, last);
        let all_reversed = HistoryQuery {
            reverse: true,
            ..since(&last, 3)
        };
        assert_eq!(
            offsets(&b.history("c", all_reversed).await.unwrap().publications),
            [5, 4]
        );
    }

    #[tokio::test]
    async fn remove_history_keeps_the_position() {
        let server = RedisServer::start();
        let (a, _) = node(&server).await;
        let (b, _) = node(&server).await;
        let mut last = None;
        for i in 0..3 {
            last = Some(
                a.publish("c", publication(&i.to_string()), Some(KEEP))
                    .await
                    .unwrap(),
            );
        }
        let last = last.expect("published three times");
        b.remove_history("c").await.unwrap();
        let history = b.history("c", HistoryQuery::default()).await.unwrap();
        assert!(history.publications.is_empty());
        assert_eq!(history.position, last);
        assert!(
            b.history("c", since(&last, 3))
                .await
                .unwrap()
                .publications
                .is_empty()
        );
        assert_eq!(
            b.history("c", since(&last, 2)).await,
            Err(BrokerError::UnrecoverablePosition)
        );
        let next = a
            .publish("c", publication("next"), Some(KEEP))
            .await
            .unwrap();
        assert_eq!((next.offset, next.epoch), (4, last.epoch.clone()));
        assert_eq!(
            offsets(&b.history("c", since(&last, 3)).await.unwrap().publications),
            [4]
        );
    }

    #[tokio::test]
    async fn presence_is_shared_and_expires() {
        let server = RedisServer::start();
        let (a, _) = node(&server).await;
        let (b, _) = node(&server).await;
        a.add_presence("c", client("c1", "u1"), Duration::from_secs(60))
            .await
            .unwrap();
        b.add_presence("c", client("c3", "u2"), Duration::from_millis(300))
            .await
            .unwrap();
        b.add_presence("c", client("c2", "u1"), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(
            a.presence("c").await.unwrap(),
            [client("c1", "u1"), client("c2", "u1"), client("c3", "u2")]
        );
        assert_eq!(
            b.presence_stats("c").await.unwrap(),
            PresenceStats {
                clients: 3,
                users: 2
            }
        );

        tokio::time::sleep(Duration::from_millis(400)).await;
        // A refresh keeps an entry alive; the others expired.
        a.add_presence("c", client("c1", "u1"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(b.presence("c").await.unwrap(), [client("c1", "u1")]);
        assert_eq!(
            a.presence_stats("c").await.unwrap(),
            PresenceStats {
                clients: 1,
                users: 1
            }
        );

        b.remove_presence("c", "c1").await.unwrap();
        assert!(a.presence("c").await.unwrap().is_empty());
        assert_eq!(
            b.presence_stats("other").await.unwrap(),
            PresenceStats::default()
        );
    }

    #[tokio::test]
    async fn a_redis_restart_is_reported_and_survived() {
        let mut server = RedisServer::start();
        let (a, _) = node(&server).await;
        let (b, seen_by_b) = node(&server).await;
        b.subscribe("c").await.unwrap();
        let before = a
            .publish("c", publication("before"), Some(KEEP))
            .await
            .unwrap();
        seen_by_b.wait_for(1).await;

        server.stop();
        let started = Instant::now();
        let down = a.publish("c", publication("down"), Some(KEEP)).await;
        assert!(matches!(down, Err(BrokerError::Unavailable(_))), "{down:?}");
        assert!(
            started.elapsed() <= CALL_TIMEOUT + Duration::from_secs(1),
            "fails quickly"
        );
        assert!(matches!(
            b.history("c", HistoryQuery::default()).await,
            Err(BrokerError::Unavailable(_))
        ));

        server.restart();
        // The command connection reconnects, and B's subscriber
        // resubscribes: a publication after the restart reaches B.
        let deadline = Instant::now() + Duration::from_secs(15);
        let after = loop {
            assert!(
                Instant::now() < deadline,
                "no publication reached B after the restart"
            );
            if let Ok(position) = a.publish("c", publication("after"), Some(KEEP)).await {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if seen_by_b.take().iter().any(|seen| {
                    matches!(seen, Seen::Publication(_, p) if p.data == publication("after").data)
                }) {
                    break position;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        assert_ne!(
            after.epoch, before.epoch,
            "history was lost, so the epoch changed"
        );
        assert_eq!(
            b.history("c", since(&before, before.offset)).await,
            Err(BrokerError::UnrecoverablePosition)
        );
    }

    #[tokio::test]
    async fn connect_fails_when_redis_is_down() {
        let mut server = RedisServer::start();
        server.stop();
        let result = RedisBroker::connect(&server.url()).await;
        assert!(matches!(result, Err(BrokerError::Unavailable(_))));
    }
}
