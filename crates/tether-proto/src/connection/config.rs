//! What a connection needs to know besides its role.

use std::time::Duration;

use super::{Keepalive, RateLimit};
use crate::Limits;

/// What a connection needs to know besides its role.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Config {
    /// Size limits on received frames and messages.
    pub limits: Limits,
    /// How long the side that sent the first close frame waits for the reply
    /// before reporting an abnormal closure (default 5 s).
    pub close_timeout: Duration,
    /// Pings sent when the peer is silent, to detect dead peers.
    pub keepalive: Keepalive,
    /// Close with 1001 after this long without receiving anything (pings
    /// and pongs count). Default 10 minutes; `None` turns it off.
    pub idle_timeout: Option<Duration>,
    /// Most data messages per second the peer may send; beyond it the
    /// connection is closed with 1008. Default: unlimited.
    pub rate_limit: Option<RateLimit>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            close_timeout: Duration::from_secs(5),
            keepalive: Keepalive::default(),
            idle_timeout: Some(Duration::from_secs(600)),
            rate_limit: None,
        }
    }
}
