//! One gateway node: its configuration, hub, broker, sessions and counters,
//! and its lifecycle (ready → draining → stopped).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;

use crate::{
    auth::Verifier,
    broker::{Broker, BrokerEvents, ClientInfo, Publication},
    config::Config,
    hub::{ConnId, Disconnect, Frame, Hub, Outbox},
    metrics::Metrics,
    wire::{self, Push, PushBody},
};

/// What the node knows about one connected client.
#[derive(Debug, Clone)]
pub(crate) struct SessionEntry {
    pub(crate) client: String,
    pub(crate) user: String,
    pub(crate) outbox: Arc<Outbox>,
}

/// Shared state of the node; one per process.
pub(crate) struct Node {
    pub(crate) config: Config,
    pub(crate) server_config: tether::ServerConfig,
    pub(crate) hub: Hub,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) verifier: Verifier,
    pub(crate) metrics: Metrics,
    pub(crate) name: String,
    pub(crate) started: Instant,
    sessions: Mutex<HashMap<ConnId, SessionEntry>>,
    draining: AtomicBool,
    next_conn: AtomicU64,
}

impl Node {
    /// A node over `broker`, which it registers itself with.
    pub(crate) fn new(config: Config, broker: Arc<dyn Broker>, verifier: Verifier) -> Arc<Self> {
        let node = Arc::new(Self {
            server_config: config.server_config(),
            config,
            hub: Hub::default(),
            broker,
            verifier,
            metrics: Metrics::default(),
            name: format!("tetherd-{:08x}", rand::random::<u32>()),
            started: Instant::now(),
            sessions: Mutex::default(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        });
        node.broker
            .set_events(Arc::new(Events(Arc::downgrade(&node))));
        node
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
        for session in self.sessions().values() {
            session.outbox.close(Disconnect::SHUTDOWN);
        }
    }

    pub(crate) fn register(&self, conn: ConnId, entry: SessionEntry) {
        self.lock_sessions().insert(conn, entry);
    }

    pub(crate) fn unregister(&self, conn: ConnId) {
        self.lock_sessions().remove(&conn);
    }

    /// A snapshot of the connected sessions.
    pub(crate) fn sessions(&self) -> HashMap<ConnId, SessionEntry> {
        self.lock_sessions().clone()
    }

    /// Number of connected sessions.
    pub(crate) fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an encoded push to every local subscriber of `channel`.
    fn fan_out(&self, channel: &str, frame: Frame) {
        let delivered = self.hub.broadcast(channel, &frame);
        self.metrics
            .messages_out
            .fetch_add(delivered as u64, Ordering::Relaxed);
        self.metrics
            .bytes_out
            .fetch_add((delivered * frame.bytes.len()) as u64, Ordering::Relaxed);
    }
}

/// The hub side of the broker: encode once, queue the same bytes to all.
struct Events(std::sync::Weak<Node>);

impl BrokerEvents for Events {
    fn publication(&self, channel: &str, publication: Publication) {
        if let Some(node) = self.0.upgrade() {
            let bytes = wire::encode_publication_push(channel, &publication);
            let position =
                (publication.offset > 0).then(|| (Arc::from(channel), publication.offset));
            node.fan_out(channel, Frame { bytes, position });
        }
    }

    fn join(&self, channel: &str, info: ClientInfo) {
        if let Some(node) = self.0.upgrade() {
            node.fan_out(
                channel,
                Frame::plain(encode_push(channel, PushBody::Join(&info))),
            );
        }
    }

    fn leave(&self, channel: &str, info: ClientInfo) {
        if let Some(node) = self.0.upgrade() {
            node.fan_out(
                channel,
                Frame::plain(encode_push(channel, PushBody::Leave(&info))),
            );
        }
    }
}

/// A push as its own JSON object.
pub(crate) fn encode_push(channel: &str, body: PushBody<'_>) -> Bytes {
    let mut out = Vec::with_capacity(64);
    Push { channel, body }.encode_into(&mut out);
    Bytes::from(out)
}
