//! One task per Redis connection that carries this node's subscriptions:
//! it delivers messages to the hub and keeps Redis subscribed to exactly
//! the channels the hub wants.
//!
//! [`Subscriptions::subscribe`] and [`Subscriptions::unsubscribe`] update
//! the set of wanted channels at call time and ask the task to bring Redis
//! in line with it, so calls that race still converge. The task delivers a
//! message only while its channel is wanted.
//!
//! A standalone Redis gets a dedicated pub/sub connection that the task
//! owns: it reconnects with capped backoff when the connection drops (or
//! stops answering pings) and subscribes every wanted channel again. It
//! logs when the connection is lost and when it is back, not each attempt.
//! Under Redis Cluster the client library keeps the sharded subscriptions
//! on the right nodes (see `cluster`). Messages published while a
//! subscription was down are lost (live fan-out is at most once), so once
//! it is made again every channel it carried is reported
//! [interrupted](BrokerEvents::interrupted): clients recover from history.
//! So is a channel whose message cannot be placed in its stream (see
//! `wire`).

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ::redis::{
    Client, Msg, RedisResult, Value,
    aio::{PubSub, PubSubSink, PubSubStream},
};
use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};

use super::{
    codec::{Decoded, decode},
    connection::{CALL_TIMEOUT, bounded, timed_out},
    keys::{ChannelKeys, channel_of_pubsub},
};
use crate::broker::{BrokerError, BrokerEvents, BrokerFuture};

/// The first and longest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often an idle pub/sub connection is pinged to detect a dead peer
/// (often under test, so tests see several pings).
pub(super) const PING_INTERVAL: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(5)
};

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 256;

/// The broker's handle on one subscriber task; dropping it stops the task.
pub(super) struct Subscriptions {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<SyncRequest>,
}

/// What the broker and a subscriber task share.
pub(super) struct Shared {
    events: OnceLock<Arc<dyn BrokerEvents>>,
    /// Whether the subscriptions are in place (not while reconnecting).
    connected: AtomicBool,
    /// Channels this node wants messages for (hub names, not Redis names).
    wanted: Mutex<HashSet<String>>,
}

/// Asks the task to make Redis match [`Shared::wanted`] for one channel,
/// and answers when it did (or could not).
pub(super) struct SyncRequest {
    channel: String,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// The two ways of (un)subscribing: plain pub/sub on a standalone Redis,
/// sharded pub/sub on a cluster.
pub(super) trait SubscribeCommands {
    fn add(&mut self, names: Vec<String>) -> impl Future<Output = RedisResult<()>> + Send;
    fn remove(&mut self, name: String) -> impl Future<Output = RedisResult<()>> + Send;
}

impl Subscriptions {
    /// Starts the task of a standalone Redis on its first connection.
    pub(super) fn standalone(client: Client, first: PubSub, label: String) -> Self {
        let (subscriptions, requests) = Self::new();
        tokio::spawn(run_standalone(
            client,
            subscriptions.shared.clone(),
            requests,
            first,
            label,
        ));
        subscriptions
    }

    /// A handle and the request queue for a task the caller starts.
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<SyncRequest>) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: OnceLock::new(),
            connected: AtomicBool::new(true),
            wanted: Mutex::new(HashSet::new()),
        });
        (Self { shared, requests }, receiver)
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Whether the subscriptions are in place now.
    pub(super) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Installs the hub; `false` if one was installed already.
    pub(super) fn set_events(&self, events: Arc<dyn BrokerEvents>) -> bool {
        self.shared.events.set(events).is_ok()
    }

    pub(super) fn subscribe(&self, channel: &str) -> BrokerFuture<'static, ()> {
        // Updated at call time, so the wanted set follows the hub's order.
        self.shared.wanted().insert(channel.to_owned());
        self.sync(channel)
    }

    pub(super) fn unsubscribe(&self, channel: &str) -> BrokerFuture<'static, ()> {
        self.shared.wanted().remove(channel);
        self.sync(channel)
    }

    /// Asks the task to apply the wanted state of `channel`.
    fn sync(&self, channel: &str) -> BrokerFuture<'static, ()> {
        let (done, answer) = oneshot::channel();
        let sent = self.requests.send(SyncRequest {
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
}

impl Shared {
    fn wanted(&self) -> MutexGuard<'_, HashSet<String>> {
        // A poisoned set is still a set: nothing panics mid-update.
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one message to the hub, if its channel is still wanted.
    pub(super) fn deliver(&self, pubsub_name: &[u8], payload: &[u8]) {
        let Some(channel) = channel_of_pubsub(pubsub_name) else {
            return;
        };
        let Some(events) = self.events.get() else {
            return;
        };
        if !self.wanted().contains(channel) {
            return;
        }
        let decoded = decode(payload);
        if channel.is_empty() {
            // The control channel (see `CONTROL_CHANNEL`): control messages
            // only, and a bad one is dropped, never taken for a channel's.
            match decoded {
                Some(Decoded::Control(message)) => events.control(message),
                _ => tracing::warn!("redis broker: undecodable control message dropped"),
            }
            return;
        }
        match decoded {
            Some(Decoded::Publication(publication, Some(epoch))) => {
                events.publication(channel, publication, &epoch);
            }
            Some(Decoded::Publication(publication, None)) if publication.offset == 0 => {
                events.publication(channel, publication, "");
            }
            Some(Decoded::Publication(..)) => {
                tracing::warn!(%channel, "redis broker: publication without its epoch (from an older node?); channel interrupted");
                events.interrupted(channel);
            }
            Some(Decoded::Join(info)) => events.join(channel, info),
            Some(Decoded::Leave(info)) => events.leave(channel, info),
            Some(Decoded::Control(_)) | None => {
                tracing::warn!(%channel, "redis broker: undecodable message; channel interrupted");
                events.interrupted(channel);
            }
        }
    }

    /// Tells the hub that messages of `channels` may have been lost, for
    /// those still wanted.
    pub(super) fn interrupt<'a>(&self, channels: impl IntoIterator<Item = &'a String>) {
        let Some(events) = self.events.get() else {
            return;
        };
        let wanted: Vec<&String> = {
            let wanted = self.wanted();
            channels
                .into_iter()
                // The control channel (the empty name) has no stream to
                // recover.
                .filter(|channel| !channel.is_empty() && wanted.contains(*channel))
                .collect()
        };
        for channel in wanted {
            events.interrupted(channel);
        }
    }

    /// Every wanted channel, to subscribe them again.
    fn wanted_now(&self) -> Vec<String> {
        self.wanted().iter().cloned().collect()
    }
}

/// Applies one request and answers it; `false` when it failed (the
/// connection is then considered lost).
pub(super) async fn answer(
    sink: &mut impl SubscribeCommands,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
    request: SyncRequest,
) -> bool {
    let result = apply(sink, shared, subscribed, &request.channel).await;
    let ok = result.is_ok();
    let _ = request.done.send(result);
    ok
}

/// SUBSCRIBEs or UNSUBSCRIBEs `channel` until Redis matches the wanted set
/// (which other calls may change meanwhile).
async fn apply(
    sink: &mut impl SubscribeCommands,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
    channel: &str,
) -> Result<(), BrokerError> {
    loop {
        let want = shared.wanted().contains(channel);
        if want == subscribed.contains(channel) {
            return Ok(());
        }
        let name = ChannelKeys::new(channel).pubsub;
        if want {
            bounded(sink.add(vec![name])).await?;
            subscribed.insert(channel.to_owned());
        } else {
            bounded(sink.remove(name)).await?;
            subscribed.remove(channel);
        }
    }
}

/// Subscribes every wanted channel, in batches.
pub(super) async fn resubscribe(
    sink: &mut impl SubscribeCommands,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
) -> Result<(), BrokerError> {
    let wanted = shared.wanted_now();
    for batch in wanted.chunks(RESUBSCRIBE_BATCH) {
        let names = batch
            .iter()
            .map(|channel| ChannelKeys::new(channel).pubsub)
            .collect();
        bounded(sink.add(names)).await?;
        subscribed.extend(batch.iter().cloned());
    }
    Ok(())
}

impl SubscribeCommands for PubSubSink {
    fn add(&mut self, names: Vec<String>) -> impl Future<Output = RedisResult<()>> + Send {
        self.subscribe(names)
    }

    fn remove(&mut self, name: String) -> impl Future<Output = RedisResult<()>> + Send {
        self.unsubscribe(name)
    }
}

/// The task of a standalone Redis: owns the pub/sub connection, delivers
/// messages and applies [`SyncRequest`]s; reconnects and resubscribes when
/// the connection drops.
async fn run_standalone(
    client: Client,
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<SyncRequest>,
    first: PubSub,
    label: String,
) {
    let mut next = Some(first);
    let mut backoff = MIN_BACKOFF;
    let mut lost = false;
    loop {
        let pubsub = match next.take() {
            Some(pubsub) => Ok(pubsub),
            None => bounded(client.get_async_pubsub()).await,
        };
        let connected = match pubsub {
            Ok(pubsub) => {
                let (mut sink, stream) = pubsub.split();
                let mut subscribed = HashSet::new();
                match resubscribe(&mut sink, &shared, &mut subscribed).await {
                    Ok(()) => Some((sink, stream, subscribed)),
                    Err(error) => {
                        tracing::debug!(redis = %label, %error, "redis subscriber: resubscribing failed");
                        if lost {
                            // Redis is back but refuses them: their
                            // clients must not wait for it in silence.
                            shared.interrupt(&shared.wanted_now());
                        }
                        None
                    }
                }
            }
            Err(error) => {
                tracing::debug!(redis = %label, %error, "redis subscriber: reconnect failed");
                None
            }
        };
        let Some((mut sink, mut stream, mut subscribed)) = connected else {
            if !refuse_for(&mut requests, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        shared.connected.store(true, Ordering::Relaxed);
        if lost {
            tracing::info!(redis = %label, channels = subscribed.len(), "redis subscriber: reconnected and resubscribed");
            shared.interrupt(&subscribed);
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
        lost = true;
        shared.connected.store(false, Ordering::Relaxed);
        tracing::warn!(redis = %label, "redis subscriber: connection lost; reconnecting with backoff");
    }
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
                Some(msg) => shared.deliver(msg.get_channel_name().as_bytes(), msg.get_payload_bytes()),
                None => return true,
            },
            request = requests.recv() => {
                let Some(request) = request else {
                    return false;
                };
                if !answer(sink, shared, subscribed, request).await {
                    return true;
                }
            }
            _ = ping.tick() => {
                if !bounded(sink.ping::<Value>()).await.is_ok_and(|reply| is_pong(&reply)) {
                    return true;
                }
            }
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

/// Whether `reply` answers PING: `PONG`, or `["pong", ""]` from a
/// connection in subscribed state.
fn is_pong(reply: &Value) -> bool {
    match reply {
        Value::SimpleString(pong) => pong.eq_ignore_ascii_case("pong"),
        Value::Array(items) => {
            matches!(items.first(), Some(Value::BulkString(pong)) if pong.eq_ignore_ascii_case(b"pong"))
        }
        _ => false,
    }
}

async fn next_message(stream: &mut PubSubStream) -> Option<Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}
