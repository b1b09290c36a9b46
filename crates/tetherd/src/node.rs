//! One gateway node: its configuration, hub, broker, sessions and counters,
//! and its lifecycle (ready → draining → stopped). Its channels (namespaces,
//! history, publishing) are in [`channels`].

mod channels;
mod control;

pub(crate) use self::{
    channels::{PublishOptions, broker_error, history_options},
    control::ControlMessage,
};

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tether::server::ConnectionLimiter;
use tokio::sync::Notify;

use crate::{
    auth::Verifier,
    broker::{Broker, BrokerEvents, ClientInfo, NodeInfo, Publication},
    client_addr::TrustedProxies,
    config::Config,
    handle::{ConnId, Frame, Position, SessionHandle, epoch_tag},
    hub::Hub,
    metrics::Metrics,
    proxy::Proxies,
    wire::{self, Disconnect, PushBody},
};

/// Shared state of the node; one per process.
pub(crate) struct Node {
    pub(crate) config: Config,
    pub(crate) server_config: tether::ServerConfig,
    pub(crate) hub: Hub,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) verifier: Verifier,
    /// The application backend's hooks.
    pub(crate) proxies: Proxies,
    pub(crate) metrics: Metrics,
    /// Caps on open connections, in total and per client address.
    pub(crate) limiter: Arc<ConnectionLimiter>,
    /// Load balancers whose word on the client's address is taken.
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) name: String,
    pub(crate) started: Instant,
    /// Every session from its upgrade on, connected or not yet.
    sessions: Mutex<HashMap<ConnId, Arc<SessionHandle>>>,
    draining: AtomicBool,
    /// Wakes the announcer when draining starts, to withdraw at once.
    drain_started: Notify,
    /// The address the listener got (announced instead of the configured
    /// one, whose port may be 0).
    address: OnceLock<SocketAddr>,
    next_conn: AtomicU64,
    /// Cluster-wide reads waiting for other nodes' answers.
    pending: control::Pending,
    next_request: AtomicU64,
}

impl Node {
    /// How often a node announces itself in the registry of live nodes.
    const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

    /// How long an announcement lives: a node that stops announcing (it
    /// crashed or lost Redis) leaves the registry this long after its last
    /// announcement.
    const ANNOUNCE_TTL: Duration = Duration::from_secs(6);

    /// A node over `broker`, which it registers itself with; it announces
    /// itself in the broker's registry of live nodes until it drains. Must
    /// be called inside the runtime.
    pub(crate) fn new(config: Config, broker: Arc<dyn Broker>, verifier: Verifier) -> Arc<Self> {
        let node = Arc::new(Self {
            server_config: config.server_config(),
            limiter: ConnectionLimiter::new(
                config.security.max_connections,
                config.security.max_connections_per_ip,
            ),
            // Validated with the rest of the configuration.
            trusted_proxies: TrustedProxies::parse(&config.security.trusted_proxies)
                .unwrap_or_default(),
            proxies: Proxies::new(&config),
            config,
            hub: Hub::default(),
            broker,
            verifier,
            metrics: Metrics::default(),
            name: format!("tetherd-{:08x}", rand::random::<u32>()),
            started: Instant::now(),
            sessions: Mutex::default(),
            draining: AtomicBool::new(false),
            drain_started: Notify::new(),
            address: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            pending: control::Pending::default(),
            next_request: AtomicU64::new(1),
        });
        node.broker
            .set_events(Arc::new(Events(Arc::downgrade(&node))));
        tokio::spawn(announce(Arc::downgrade(&node)));
        tokio::spawn(tick(Arc::downgrade(&node)));
        node
    }

    /// Milliseconds since the node started: the clock of session deadlines.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The node clock's reading ([`Node::clock_ms`]) once `grace` has
    /// passed after the Unix time `unix_secs` (a token's expiry). Computed
    /// once and kept, so the deadline stays put however the clocks move.
    pub(crate) fn clock_ms_at(&self, unix_secs: u64, grace: Duration) -> u64 {
        let left = Duration::from_secs(unix_secs).saturating_sub(since_unix_epoch());
        self.clock_ms() + (left + grace).as_millis() as u64
    }

    /// Records the address the listener is bound to, for the registry.
    pub(crate) fn set_address(&self, address: SocketAddr) {
        let _ = self.address.set(address);
    }

    /// What this node announces: its identity and current counters.
    pub(crate) fn info(&self) -> NodeInfo {
        let sessions = self.sessions();
        let identities: Vec<_> = sessions.iter().filter_map(|s| s.identity()).collect();
        let users: HashSet<&str> = identities.iter().map(|id| id.user.as_str()).collect();
        NodeInfo {
            uid: self.name.clone(),
            name: self.name.clone(),
            address: self
                .address
                .get()
                .unwrap_or(&self.config.listen)
                .to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            num_clients: identities.len() as u64,
            num_users: users.len() as u64,
            num_subs: self.hub.subscriptions() as u64,
            num_channels: self.hub.channels().len() as u64,
            uptime: self.started.elapsed().as_secs(),
        }
    }

    /// A fresh connection id.
    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the node stopped accepting and is sending clients away.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining: health turns not-ready, every session is told to
    /// reconnect elsewhere.
    pub(crate) fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain_started.notify_one();
        for handle in self.sessions() {
            handle.close(Disconnect::SHUTDOWN);
        }
    }

    pub(crate) fn register(&self, conn: ConnId, handle: Arc<SessionHandle>) {
        self.lock_sessions().insert(conn, handle);
    }

    pub(crate) fn unregister(&self, conn: ConnId) {
        self.lock_sessions().remove(&conn);
    }

    /// A snapshot of the sessions, connected or not yet.
    pub(crate) fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.lock_sessions().values().cloned().collect()
    }

    /// Number of sessions, connected or not yet.
    pub(crate) fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an encoded push to every local subscriber of `channel`.
    fn fan_out(&self, channel: &str, frame: Option<Frame>) {
        let Some(mut frame) = frame else {
            return;
        };
        if self.config.compression.enabled {
            frame = frame.shared_encodings();
        }
        let delivered = self.hub.broadcast(channel, &frame);
        self.metrics.messages_out.inc_by(delivered as u64);
        self.metrics
            .bytes_out
            .inc_by((delivered * frame.text.len()) as u64);
    }
}

/// The wall clock, as tokens count time: since the Unix epoch.
pub(crate) fn since_unix_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whole seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    since_unix_epoch().as_secs()
}

/// Announces the node every [`Node::ANNOUNCE_INTERVAL`] until it drains
/// (then withdraws it) or is dropped. Logs when announcing starts failing
/// and when it works again, not every attempt.
async fn announce(node: Weak<Node>) {
    let mut failing = false;
    loop {
        let Some(live) = node.upgrade() else {
            return;
        };
        if live.is_draining() {
            if let Err(error) = live.broker.withdraw(&live.name).await {
                tracing::warn!(%error, "could not leave the node registry; the entry expires");
            }
            return;
        }
        match live.broker.announce(&live.info(), Node::ANNOUNCE_TTL).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("announcing in the node registry again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot announce in the node registry; retrying");
            }
            _ => {}
        }
        let woken = async { live.drain_started.notified().await };
        let _ = tokio::time::timeout(Node::ANNOUNCE_INTERVAL, woken).await;
    }
}

/// How often the ticker looks for sessions whose deadline passed: the
/// granularity of pings, pong timeouts, connect deadlines and expiry.
const TICK: Duration = Duration::from_millis(250);

/// Wakes the sessions whose deadline passed. One task for the node instead
/// of a timer per connection, which every idle connection would pay for.
async fn tick(node: Weak<Node>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let now = node.clock_ms();
        for handle in node.lock_sessions().values() {
            handle.tick(now);
        }
    }
}

/// The hub side of the broker: encode once, queue the same bytes to all.
struct Events(Weak<Node>);

impl BrokerEvents for Events {
    fn publication(&self, channel: &str, publication: Publication, epoch: &str) {
        if let Some(node) = self.0.upgrade() {
            let mut bytes = wire::encode_publication_push(channel, &publication);
            if node.hub.has_subscribers(channel) {
                bytes = node.metrics.timed_push(bytes);
            }
            let position = (publication.offset > 0).then(|| Position {
                channel: Arc::from(channel),
                offset: publication.offset,
                epoch: epoch_tag(epoch),
            });
            node.fan_out(channel, Frame::new(bytes, position));
        }
    }

    /// Sends the subscribers of a channel with recovery away to reconnect
    /// and recover (3010), as Centrifugo does: a silent gap is the one
    /// thing recovery must never allow. Without recovery, publications are
    /// at most once anyway.
    fn interrupted(&self, channel: &str) {
        let Some(node) = self.0.upgrade() else {
            return;
        };
        let recoverable = node
            .namespace(channel)
            .is_ok_and(|namespace| namespace.recovery && history_options(namespace).is_some());
        if recoverable {
            let closed = node
                .hub
                .close_subscribers(channel, &Disconnect::INSUFFICIENT_STATE);
            if closed > 0 {
                tracing::info!(%channel, clients = closed, "broker subscription interrupted; subscribers reconnect to recover");
            }
        }
    }

    fn join(&self, channel: &str, info: ClientInfo) {
        if let Some(node) = self.0.upgrade() {
            node.fan_out(
                channel,
                Frame::plain(wire::encode_push(channel, PushBody::Join(&info))),
            );
        }
    }

    fn control(&self, message: Bytes) {
        if let Some(node) = self.0.upgrade() {
            node.on_control(&message);
        }
    }

    fn leave(&self, channel: &str, info: ClientInfo) {
        if let Some(node) = self.0.upgrade() {
            node.fan_out(
                channel,
                Frame::plain(wire::encode_push(channel, PushBody::Leave(&info))),
            );
        }
    }
}
