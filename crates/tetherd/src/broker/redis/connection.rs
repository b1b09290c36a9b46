//! The command connection of one Redis (or of a whole Redis Cluster) and
//! the time bound on every call.

use std::{future::Future, time::Duration};

use ::redis::{
    Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};

use crate::broker::BrokerError;

/// Longest any broker call waits for Redis.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest a connection attempt takes.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A multiplexed command connection that reconnects by itself: to one
/// Redis, or to a cluster (routed by each command's keys).
#[derive(Clone)]
pub(super) enum Commands {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Runs a Redis call with [`CALL_TIMEOUT`], mapping failures to
/// [`BrokerError::Unavailable`].
pub(super) async fn bounded<T>(
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(BrokerError::Unavailable(format!("redis: {error}"))),
        Err(_) => Err(timed_out()),
    }
}

pub(super) fn timed_out() -> BrokerError {
    BrokerError::Unavailable(format!("redis did not answer within {CALL_TIMEOUT:?}"))
}
