//! The connection state machine: frames in, events out.
//!
//! One [`Connection`] per WebSocket after the handshake, split by concern:
//!
//! ```text
//!   receive(now, bytes) ──► receive: header checks, unmasking, one handler per opcode
//!                              ├─► reassembly: fragmented and compressed messages
//!                              └─► rate_limit: one token per data message
//!                           ──► poll_event()
//!   send(now, message) ───► transmit: frames queued (queues), then
//!                           transmit_slices ──► the caller's write ──► advance_transmit
//!   handle_timeout(now) ──► timers: keepalive, idle timeout, close timeout
//! ```

mod config;
mod queues;
mod rate_limit;
mod reassembly;
mod receive;
mod timers;
mod transmit;

use std::{sync::Arc, time::Instant};

use bytes::Bytes;

pub use config::Config;
use queues::Queues;
use rate_limit::Bucket;
pub use rate_limit::RateLimit;
use reassembly::Partial;
pub use timers::Keepalive;

use crate::{
    CloseCode, CloseFrame, Message, ProtocolError, Role, UsageError,
    deflate::{DeflateState, EncodedFrame, FrameEncoding, PerMessageDeflate, RSV1},
    frame::OpCode,
};

/// What happened on the connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text or binary message.
    Message(Message),
    /// The peer pinged; the pong is already queued.
    Ping(Bytes),
    /// The peer ponged (an answer to our ping, or unsolicited).
    Pong(Bytes),
    /// The connection is closed; nothing more will be received.
    Closed {
        /// The peer's close code; 1005 if its close frame had none, 1006 if
        /// there was no close frame at all.
        code: CloseCode,
        /// The peer's reason, or why the connection was given up.
        reason: String,
        /// Who sent the first close frame (or gave up).
        initiator: Initiator,
    },
}

/// Who started the closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This endpoint: a local close, a protocol error or a timeout.
    Local,
    /// The remote endpoint.
    Peer,
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Nothing more is received or sent after the queued bytes; once they
    /// are written ([`Connection::is_finished`]) the transport can be closed.
    Closed,
}

/// One WebSocket connection after the handshake.
///
/// Call order: feed bytes with [`receive`](Self::receive), then drain
/// [`poll_event`](Self::poll_event) and write what
/// [`transmit_slices`](Self::transmit_slices) offers, reporting it with
/// [`advance_transmit`](Self::advance_transmit); after anything that may
/// have changed timers, re-arm with
/// [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout) when it expires.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared by every connection of a server.
    config: Arc<Config>,
    state: State,
    /// RSV bits an extension has claimed for the first frame of a message.
    extension_rsv: u8,
    message: Option<Box<Partial>>,
    /// permessage-deflate, once negotiated.
    deflate: Option<Box<DeflateState>>,
    /// `None` while nothing is in flight.
    queues: Option<Box<Queues>>,
    /// Bytes in `queues.outgoing` and `queues.coalesced`.
    buffered: usize,
    last_received: Instant,
    ping_sent: Option<Instant>,
    close_deadline: Option<Instant>,
    bucket: Option<Bucket>,
    /// Header and payload bytes of the last data frame received, saturated
    /// (a `u32` so it fits the padding after the one-byte fields).
    last_frame_len: u32,
}

impl Connection {
    /// A connection whose handshake completed at `now`. Pass an
    /// `Arc<Config>` to share one configuration between many connections.
    pub fn new(role: Role, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let config: Arc<Config> = config.into();
        let bucket = config.rate_limit.map(|limit| Bucket::full(limit, now));
        Self {
            role,
            config,
            state: State::Open,
            extension_rsv: 0,
            message: None,
            deflate: None,
            queues: None,
            buffered: 0,
            last_received: now,
            ping_sent: None,
            close_deadline: None,
            bucket,
            last_frame_len: 0,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The close handshake's progress.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns on permessage-deflate as negotiated in the handshake: RSV1 on a
    /// message's first frame then means "compressed", and outgoing messages
    /// from the threshold up are compressed. Call before any frame is
    /// received or sent.
    pub fn set_deflate(&mut self, negotiated: PerMessageDeflate) {
        self.extension_rsv |= RSV1;
        self.deflate = Some(Box::new(DeflateState::new(negotiated)));
    }

    /// The negotiated permessage-deflate, if any.
    pub fn deflate(&self) -> Option<&PerMessageDeflate> {
        self.deflate.as_deref().map(DeflateState::settings)
    }

    /// Whether a zlib stream is held between messages (only with context
    /// takeover); an idle connection without it holds none.
    pub fn holds_deflate_streams(&self) -> bool {
        self.deflate
            .as_deref()
            .is_some_and(DeflateState::holds_streams)
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.queues.as_mut()?.events.pop_front()
    }

    /// Queues a message, ping, pong or close frame. `now` starts the close
    /// timeout when `message` is a close.
    pub fn send(&mut self, now: Instant, message: Message) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::AlreadyClosing);
        }
        match message {
            Message::Text(text) => self.queue_data(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => self.queue_data(OpCode::Binary, data),
            Message::Ping(data) => self.queue_control(OpCode::Ping, data)?,
            Message::Pong(data) => self.queue_control(OpCode::Pong, data)?,
            Message::Close(frame) => {
                let payload = match frame {
                    Some(frame) if !frame.code.is_sendable() => {
                        return Err(UsageError::UnsendableCloseCode(frame.code.0));
                    }
                    Some(frame) => frame.encode(),
                    None => Bytes::new(),
                };
                // A held-back pong goes first: nothing follows our close.
                if let Some(pong) = self.take_pending_pong() {
                    self.queue_frame(OpCode::Pong, pong);
                }
                self.start_close(now, payload);
            }
        }
        Ok(())
    }

    /// How this server connection frames data messages, so a broadcast can
    /// encode each message once per encoding; `None` for a client, which
    /// masks every frame itself.
    pub fn frame_encoding(&self) -> Option<FrameEncoding> {
        if self.role == Role::Client {
            return None;
        }
        Some(match self.deflate() {
            Some(d) => FrameEncoding::Deflate {
                max_window_bits: d.outgoing.max_window_bits,
                level: d.level,
                threshold: d.threshold,
            },
            None => FrameEncoding::Plain,
        })
    }

    /// Queues a frame encoded once for many connections (see
    /// [`FrameEncoding::encode`]). The bytes are shared, not copied, unless
    /// the frame is small enough to be coalesced.
    pub fn send_encoded(&mut self, frame: &EncodedFrame) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::AlreadyClosing);
        }
        if self.role == Role::Client {
            return Err(UsageError::EncodedFrameOnClient);
        }
        if let Some(bits) = frame.window_bits() {
            let deflate = self
                .deflate
                .as_deref_mut()
                .ok_or(UsageError::EncodingMismatch)?;
            if bits > deflate.settings().outgoing.max_window_bits {
                return Err(UsageError::EncodingMismatch);
            }
            deflate.reset_compression();
        }
        self.queue_bytes(frame.as_bytes().clone());
        Ok(())
    }

    /// Whether the transport can be closed: the close handshake is over (or
    /// was abandoned) and every queued byte was taken.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed && self.buffered_amount() == 0
    }

    fn start_close(&mut self, now: Instant, payload: Bytes) {
        self.queue_frame(OpCode::Close, payload);
        self.state = State::Closing;
        self.close_deadline = Some(now + self.config.close_timeout);
    }

    /// Fails the connection (§7.1.7): a close frame with the error's code if
    /// we have not sent one yet, then nothing more.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let frame = CloseFrame {
                code: error.close_code(),
                reason: error.to_string(),
            };
            self.queue_frame(OpCode::Close, frame.encode());
        }
        self.enter_closed();
        error
    }

    /// Gives up without a close handshake (dead peer, timeout, EOF).
    fn abandon(&mut self, reason: &str, initiator: Initiator) {
        self.enter_closed();
        self.push_event(Event::Closed {
            code: CloseCode::ABNORMAL,
            reason: reason.to_owned(),
            initiator,
        });
    }

    fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.message = None;
        self.take_pending_pong();
        self.close_deadline = None;
    }

    /// Inlined: it runs for every message received (callgrind: 29
    /// instructions per 16 B echo as a call of its own).
    #[inline]
    fn push_event(&mut self, event: Event) {
        self.queues().events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A starting point for the tests of every part of the connection.
    #[expect(
        clippy::disallowed_methods,
        reason = "a starting point; the core itself never reads the clock"
    )]
    pub(super) fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn connections_share_one_config() {
        let config = Arc::new(Config::default());
        let now = start();
        let a = Connection::new(Role::Server, config.clone(), now);
        let b = Connection::new(Role::Server, config.clone(), now);
        assert!(std::ptr::eq(a.config(), b.config()));
        // Idle per-connection state stays small: this is what a server
        // holding many idle connections pays for each, before the transport.
        assert!(
            size_of::<Connection>() <= 128,
            "Connection grew to {} bytes",
            size_of::<Connection>()
        );
    }
}
