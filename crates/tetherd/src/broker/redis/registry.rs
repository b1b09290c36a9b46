//! The node registry: each node announces itself with a TTL, like a
//! presence entry in a channel of nodes, so any node can list the live
//! ones. A node that stops announcing expires; a draining node withdraws.

use std::time::Duration;

use super::{RedisBroker, connection::bounded, keys::registry_keys, ttl_ms};
use crate::broker::{BrokerError, NodeInfo};

/// The instance that holds the registry: the first (under a cluster, the
/// connection routes to the registry's slot).
fn home(broker: &RedisBroker) -> super::connection::Commands {
    broker.shards[0].commands.clone()
}

pub(super) async fn announce(
    broker: &RedisBroker,
    node: &NodeInfo,
    ttl: Duration,
) -> Result<(), BrokerError> {
    let (entries, expiry) = registry_keys();
    let encoded = serde_json::to_vec(node).expect("a NodeInfo always serializes");
    let _: i64 = bounded(
        broker
            .scripts
            .add_presence
            .key(entries)
            .key(expiry)
            .arg(&node.uid)
            .arg(encoded)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut home(broker)),
    )
    .await?;
    Ok(())
}

pub(super) async fn withdraw(broker: &RedisBroker, uid: &str) -> Result<(), BrokerError> {
    let (entries, expiry) = registry_keys();
    let () = bounded(
        ::redis::pipe()
            .atomic()
            .hdel(entries, uid)
            .ignore()
            .zrem(expiry, uid)
            .ignore()
            .query_async(&mut home(broker)),
    )
    .await?;
    Ok(())
}

/// The live nodes, by name.
pub(super) async fn nodes(broker: &RedisBroker) -> Result<Vec<NodeInfo>, BrokerError> {
    let (entries, expiry) = registry_keys();
    let values: Vec<Vec<u8>> = bounded(
        broker
            .scripts
            .presence
            .key(entries)
            .key(expiry)
            .invoke_async(&mut home(broker)),
    )
    .await?;
    let mut nodes: Vec<NodeInfo> = values
        .iter()
        .filter_map(|value| serde_json::from_slice(value).ok())
        .collect();
    nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.uid.cmp(&b.uid)));
    Ok(nodes)
}
