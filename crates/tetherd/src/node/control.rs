//! The cluster's control channel, as a node speaks it: server API calls
//! that act on users' connections wherever they are, and reads answered
//! by every node.
//!
//! ```text
//!  POST /api/disconnect (any node) ──▶ Node::control(ControlMessage)
//!      ──▶ Broker::publish_control ──▶ every node (this one too)
//!      ──▶ Node::on_control ──▶ the local sessions of that user (client)
//!
//!  POST /api/channels ──▶ Node::cluster_channels: ChannelsRequest {id}
//!      ──▶ every node answers ChannelsReply {id, to} with its channels
//!      ──▶ summed once every live node answered, or at the deadline (the
//!          silent ones are named in the result)
//! ```
//!
//! A message is JSON, `{"v":1,"from":NODE,"op":…}`; a node drops (and logs)
//! one it cannot read, and ignores a version it does not know. Delivery is
//! the broker's: in order per sending node, at most once.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, PoisonError, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Node;
use crate::{
    handle::ServerCommand,
    wire::{Disconnect, ReplyError},
};

/// The format's version; a node ignores messages of another.
const VERSION: u32 = 1;

/// How long a cluster-wide read waits for the nodes that have not answered.
pub(crate) const CLUSTER_READ_DEADLINE: Duration = Duration::from_secs(3);

/// What one node asks of the others (and of itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ControlMessage {
    /// Subscribe the user's connections (one of them, with `client`).
    Subscribe {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        channel: String,
    },
    /// Unsubscribe the user's connections from a channel.
    Unsubscribe {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        channel: String,
    },
    /// End the user's connections, except the clients in `whitelist`.
    Disconnect {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        code: u16,
        reason: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        whitelist: Vec<String>,
    },
    /// Expire the user's connections now, or move their expiry.
    Refresh {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        #[serde(default)]
        expired: bool,
        /// Unix seconds; absent: no longer expires.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expire_at: Option<u64>,
    },
    /// Every node answers with its channels matching `pattern`.
    ChannelsRequest { id: u64, pattern: String },
    /// One node's answer to the request `id` of the node `to`.
    ChannelsReply {
        id: u64,
        to: String,
        channels: Vec<(String, u32)>,
    },
}

/// A message on the wire: who sent it, in which version.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    from: String,
    #[serde(flatten)]
    message: ControlMessage,
}

/// The answers a node waits for: request id → where replies go.
pub(super) type Pending = std::sync::Mutex<HashMap<u64, mpsc::UnboundedSender<ChannelsAnswer>>>;

/// One node's channels, as it answered.
#[derive(Debug)]
pub(super) struct ChannelsAnswer {
    node: String,
    channels: Vec<(String, u32)>,
}

/// Channels over the whole cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterChannels {
    /// Channel → clients subscribed, summed over the nodes that answered.
    pub(crate) channels: BTreeMap<String, u32>,
    /// Live nodes that did not answer in time.
    pub(crate) missing_nodes: Vec<String>,
}

impl Node {
    /// Sends `message` to every node; returns once the broker took it.
    pub(crate) async fn control(&self, message: ControlMessage) -> Result<(), ReplyError> {
        let envelope = Envelope {
            v: VERSION,
            from: self.name.clone(),
            message,
        };
        // Invariant: strings, numbers and lists always serialize.
        let bytes = serde_json::to_vec(&envelope).expect("a control message serializes");
        self.broker
            .publish_control(Bytes::from(bytes))
            .await
            .map_err(super::broker_error)
    }

    /// Every channel with subscribers on any live node, with `pattern`
    /// (Centrifugo's: `*` matches any run), waiting at most
    /// [`CLUSTER_READ_DEADLINE`] for the nodes of the registry.
    pub(crate) async fn cluster_channels(
        self: &Arc<Self>,
        pattern: &str,
    ) -> Result<ClusterChannels, ReplyError> {
        let mut expected: HashSet<String> = match self.broker.nodes().await {
            Ok(nodes) => nodes.into_iter().map(|node| node.uid).collect(),
            Err(error) => {
                tracing::debug!(%error, "node registry unavailable; channels of the answering nodes");
                HashSet::new()
            }
        };
        expected.insert(self.name.clone());
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answers, mut receiver) = mpsc::unbounded_channel();
        self.pending().insert(id, answers);
        let request = ControlMessage::ChannelsRequest {
            id,
            pattern: pattern.to_owned(),
        };
        let sent = self.control(request).await;
        let mut result = ClusterChannels::default();
        let mut answered = HashSet::new();
        if sent.is_ok() {
            let deadline = tokio::time::Instant::now() + CLUSTER_READ_DEADLINE;
            while !expected.is_subset(&answered) {
                let Ok(Some(answer)) = tokio::time::timeout_at(deadline, receiver.recv()).await
                else {
                    break;
                };
                if answered.insert(answer.node) {
                    for (channel, clients) in answer.channels {
                        *result.channels.entry(channel).or_default() += clients;
                    }
                }
            }
        }
        self.pending().remove(&id);
        sent?;
        result.missing_nodes = expected.difference(&answered).cloned().collect();
        result.missing_nodes.sort_unstable();
        if !result.missing_nodes.is_empty() {
            tracing::warn!(missing = ?result.missing_nodes, "channels: nodes did not answer in time");
        }
        Ok(result)
    }

    /// A control message from the broker: acted on here, for this node's
    /// sessions.
    pub(super) fn on_control(self: &Arc<Self>, bytes: &[u8]) {
        let envelope: Envelope = match serde_json::from_slice(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(%error, "undecodable control message dropped");
                return;
            }
        };
        if envelope.v != VERSION {
            tracing::warn!(version = envelope.v, from = %envelope.from, "control message of another version ignored");
            return;
        }
        match envelope.message {
            ControlMessage::Subscribe {
                user,
                client,
                channel,
            } => self.command(&user, client.as_deref(), ServerCommand::Subscribe(channel)),
            ControlMessage::Unsubscribe {
                user,
                client,
                channel,
            } => self.command(
                &user,
                client.as_deref(),
                ServerCommand::Unsubscribe(channel),
            ),
            ControlMessage::Refresh {
                user,
                client,
                expired,
                expire_at,
            } => self.command(
                &user,
                client.as_deref(),
                ServerCommand::Refresh { expired, expire_at },
            ),
            ControlMessage::Disconnect {
                user,
                client,
                code,
                reason,
                whitelist,
            } => {
                let disconnect = match Disconnect::custom(code, reason) {
                    Ok(disconnect) => disconnect,
                    Err(why) => {
                        tracing::warn!(from = %envelope.from, "control message dropped: {why}");
                        return;
                    }
                };
                for handle in self.sessions() {
                    let kept = handle
                        .identity()
                        .is_some_and(|id| whitelist.iter().any(|c| id.client.is(c)));
                    if handle.belongs_to(&user, client.as_deref()) && !kept {
                        handle.close(disconnect.clone());
                    }
                }
            }
            ControlMessage::ChannelsRequest { id, pattern } => {
                let channels = self
                    .hub
                    .channels()
                    .into_iter()
                    .filter(|(name, _)| crate::auth::channel_matches(&pattern, name))
                    .map(|(name, clients)| (name, u32::try_from(clients).unwrap_or(u32::MAX)))
                    .collect();
                let reply = ControlMessage::ChannelsReply {
                    id,
                    to: envelope.from,
                    channels,
                };
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = node.control(reply).await {
                        tracing::warn!(%error.message, "could not answer a channels request");
                    }
                });
            }
            ControlMessage::ChannelsReply { id, to, channels } => {
                if to != self.name {
                    return;
                }
                if let Some(answers) = self.pending().get(&id) {
                    let _ = answers.send(ChannelsAnswer {
                        node: envelope.from,
                        channels,
                    });
                }
            }
        }
    }

    /// Queues `command` to this node's sessions of `user` (and `client`).
    fn command(&self, user: &str, client: Option<&str>, command: ServerCommand) {
        for handle in self.sessions() {
            if handle.belongs_to(user, client) {
                handle.command(command.clone());
            }
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<ChannelsAnswer>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_shape() {
        let message = Envelope {
            v: VERSION,
            from: "node-a".into(),
            message: ControlMessage::Disconnect {
                user: "42".into(),
                client: None,
                code: 4000,
                reason: "banned".into(),
                whitelist: vec![],
            },
        };
        let text = serde_json::to_string(&message).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"from":"node-a","op":"disconnect","user":"42","code":4000,"reason":"banned"}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.message, message.message);
    }
}
