//! Everything a connection does because time passed: keepalive pings and
//! dead-peer detection, the idle timeout and the close timeout. Time is
//! only ever an argument.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Connection, Initiator, State};
use crate::{CloseCode, CloseFrame, frame::OpCode};

/// Keepalive: after `interval` without receiving anything, send a ping; if
/// still nothing arrives within `timeout`, the peer is declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before a ping is sent; `None` turns keepalive off.
    pub interval: Option<Duration>,
    /// Further silence after the ping before the connection is given up.
    pub timeout: Duration,
}

impl Keepalive {
    /// No keepalive pings; a silent peer is never declared dead.
    pub const OFF: Self = Self {
        interval: None,
        timeout: Duration::ZERO,
    };
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(30)),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Connection {
    /// When bytes last arrived (the handshake's time until then).
    pub fn last_received(&self) -> Instant {
        self.last_received
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open => {
                let idle = self
                    .config
                    .idle_timeout
                    .map(|idle| self.last_received + idle);
                let keepalive = self.config.keepalive;
                let keepalive = keepalive.interval.map(|interval| match self.ping_sent {
                    Some(sent) => sent + keepalive.timeout,
                    None => self.last_received + interval,
                });
                match (idle, keepalive) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Closing => self.close_deadline,
            State::Closed => None,
        }
    }

    /// Runs whatever timer expired by `now`: keepalive pings, dead-peer
    /// detection and the close timeout. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Open if self.idle_expired(now) => {
                let frame = CloseFrame {
                    code: CloseCode::GOING_AWAY,
                    reason: "idle timeout".to_owned(),
                };
                self.start_close(now, frame.encode());
            }
            State::Open => self.keep_alive(now),
            State::Closing if self.close_deadline.is_some_and(|deadline| now >= deadline) => {
                self.abandon("the peer did not answer our close frame", Initiator::Local);
            }
            State::Closing | State::Closed => {}
        }
    }

    /// Whether nothing arrived for the idle timeout.
    fn idle_expired(&self, now: Instant) -> bool {
        self.config
            .idle_timeout
            .is_some_and(|idle| now >= self.last_received + idle)
    }

    /// Pings a silent peer, or gives up on one that did not answer.
    fn keep_alive(&mut self, now: Instant) {
        let keepalive = self.config.keepalive;
        let Some(interval) = keepalive.interval else {
            return;
        };
        match self.ping_sent {
            Some(sent) if now >= sent + keepalive.timeout => {
                self.abandon(
                    "keepalive timeout: the peer stopped answering",
                    Initiator::Local,
                );
            }
            None if now >= self.last_received + interval => {
                self.queue_frame(OpCode::Ping, Bytes::new());
                self.ping_sent = Some(now);
            }
            _ => {}
        }
    }
}
