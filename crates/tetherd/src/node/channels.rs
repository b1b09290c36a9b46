//! The node's channels: which namespace (and so which options) a channel
//! has, what history it keeps, and publishing into it. The HTTP API and
//! client sessions both publish here, with [`PublishOptions`].

use std::time::Instant;

use bytes::Bytes;

use super::Node;
use crate::{
    broker::{BrokerError, ClientInfo, HistoryOptions, Publication, StreamPosition},
    config::Namespace,
    wire::ReplyError,
};

/// Longest channel name, in bytes (Centrifugo's default `channel_max_length`).
const MAX_CHANNEL_BYTES: usize = 255;

/// How one publication is made, besides its channel and data.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishOptions {
    /// The publishing client, for client-side publications.
    pub(crate) info: Option<ClientInfo>,
    /// Key-value tags carried with the publication.
    pub(crate) tags: Vec<(String, String)>,
    /// Fan it out without keeping it in history.
    pub(crate) skip_history: bool,
}

impl Node {
    /// The options of a valid channel name's namespace: 107 for a name the
    /// protocol refuses (empty, or over 255 bytes), 102 for a namespace
    /// that is not configured.
    pub(crate) fn namespace(&self, channel: &str) -> Result<&Namespace, ReplyError> {
        if channel.is_empty() || channel.len() > MAX_CHANNEL_BYTES {
            return Err(ReplyError {
                message: format!("channel name must be 1 to {MAX_CHANNEL_BYTES} bytes").into(),
                ..ReplyError::BAD_REQUEST
            });
        }
        self.config
            .namespace_for(channel)
            .ok_or(ReplyError::UNKNOWN_CHANNEL)
    }

    /// Publishes `data` (raw JSON, one line) into `channel`: appended to
    /// its history unless the namespace keeps none or `skip_history`, then
    /// fanned out by the broker. Returns the new stream position.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        options: PublishOptions,
    ) -> Result<StreamPosition, ReplyError> {
        let namespace = self.namespace(channel)?;
        let history = if options.skip_history {
            None
        } else {
            history_options(namespace)
        };
        let started = Instant::now();
        let publication = Publication {
            offset: 0,
            data,
            info: options.info,
            tags: options.tags,
        };
        let position = self
            .broker
            .publish(channel, publication, history)
            .await
            .map_err(broker_error)?;
        self.metrics
            .publish_latency
            .observe(started.elapsed().as_secs_f64());
        self.metrics.publications.inc();
        Ok(position)
    }
}

/// The history a namespace keeps, if any.
pub(crate) fn history_options(namespace: &Namespace) -> Option<HistoryOptions> {
    (namespace.history_size > 0 && !namespace.history_ttl.is_zero()).then_some(HistoryOptions {
        size: namespace.history_size,
        ttl: namespace.history_ttl,
    })
}

/// A broker failure as the protocol reports it.
pub(crate) fn broker_error(error: BrokerError) -> ReplyError {
    match error {
        BrokerError::UnrecoverablePosition => ReplyError::UNRECOVERABLE_POSITION,
        BrokerError::Unavailable(why) => ReplyError {
            message: why.into(),
            ..ReplyError::INTERNAL
        },
    }
}
