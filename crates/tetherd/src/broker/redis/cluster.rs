//! Redis Cluster: one multiplexed connection (RESP3) routes each command
//! by its keys' hash slot and carries this node's sharded subscriptions
//! (`SSUBSCRIBE`, Redis 7). A channel's names share a hash tag, so its
//! history, presence and sharded pub/sub live on one master.
//!
//! The client library follows the cluster: it reconnects to nodes that
//! come back, follows `MOVED` redirections and moves sharded subscriptions
//! to a slot's new owner; this module only keeps the subscribed set equal
//! to the wanted one and delivers `smessage` pushes.
//!
//! It sees those repairs only through pushes: a lost node connection
//! (`Disconnection`, which does not say which node, so every subscribed
//! channel becomes suspect) or a subscription the server dropped
//! (`sunsubscribe` of a channel still subscribed, as when its slot moved).
//! A suspect channel is reported interrupted when its `ssubscribe`
//! confirmation comes back; one whose resubscription never succeeds is not
//! reported until it does.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use ::redis::{
    ProtocolVersion, PushInfo, PushKind, RedisResult, Value, cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use tokio::sync::mpsc;

use super::{
    connection::{CALL_TIMEOUT, CONNECT_TIMEOUT, Commands, bounded},
    keys::channel_of_pubsub,
    subscriber::{Shared, SubscribeCommands, Subscriptions, SyncRequest, answer},
};
use crate::broker::BrokerError;

/// Connects to the cluster through its seed nodes (`redis://host:port`)
/// and starts the subscriber task. Fails if no seed answers now.
pub(super) async fn connect(seeds: &[String]) -> Result<(Commands, Subscriptions), BrokerError> {
    let (push_sender, pushes) = mpsc::unbounded_channel();
    let client = ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(push_sender)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(CALL_TIMEOUT)
        .retries(2)
        .build()
        .map_err(|error| BrokerError::Unavailable(format!("bad redis cluster: {error}")))?;
    let connection = bounded(client.get_async_connection()).await?;
    let (subscriptions, requests) = Subscriptions::new();
    tokio::spawn(run(
        connection.clone(),
        pushes,
        subscriptions.shared(),
        requests,
    ));
    Ok((Commands::Cluster(connection), subscriptions))
}

/// Delivers sharded messages and applies subscription requests until the
/// broker is gone.
async fn run(
    mut connection: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<SyncRequest>,
) {
    let mut subscribed = HashSet::new();
    // Channels whose subscription broke and is not confirmed again yet.
    let mut suspect = HashSet::new();
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => handle(&shared, &subscribed, &mut suspect, &push),
                None => return,
            },
            request = requests.recv() => {
                let Some(request) = request else {
                    return;
                };
                // A failure is answered to the caller; the connection
                // recovers by itself, so there is nothing to reset here.
                answer(&mut connection, &shared, &mut subscribed, request).await;
                suspect.retain(|channel| subscribed.contains(channel));
            }
        }
    }
}

fn handle(
    shared: &Shared,
    subscribed: &HashSet<String>,
    suspect: &mut HashSet<String>,
    push: &PushInfo,
) {
    if push.kind == PushKind::Disconnection {
        suspect.extend(subscribed.iter().cloned());
        return;
    }
    let [Value::BulkString(name), rest @ ..] = push.data.as_slice() else {
        return;
    };
    match (&push.kind, rest) {
        (PushKind::SMessage, [Value::BulkString(payload), ..]) => shared.deliver(name, payload),
        (PushKind::SUnsubscribe, _) => {
            if let Some(channel) = channel_of_pubsub(name).filter(|c| subscribed.contains(*c)) {
                suspect.insert(channel.to_owned());
            }
        }
        (PushKind::SSubscribe, _) => {
            if let Some(channel) = channel_of_pubsub(name).and_then(|c| suspect.take(c)) {
                shared.interrupt([&channel]);
            }
        }
        _ => {}
    }
}

impl SubscribeCommands for ClusterConnection {
    fn add(&mut self, names: Vec<String>) -> impl Future<Output = RedisResult<()>> + Send {
        self.ssubscribe(names)
    }

    fn remove(&mut self, name: String) -> impl Future<Output = RedisResult<()>> + Send {
        self.sunsubscribe(name)
    }
}
