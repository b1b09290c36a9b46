//! [`WebSocket`]: a connection over any async transport, as a `Stream` of
//! received messages and a `Sink` of messages to send.
//!
//! The work happens in the [`pump`], which is not generic over the
//! transport; this module is the thin generic wrapper around it, and
//! [`split`] shares one connection between two tasks.

mod pump;
mod split;

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tether_proto::{
    CloseCode, CloseFrame, Config, Initiator, Message, Role, UsageError, deflate::PerMessageDeflate,
};
use tokio::io::{AsyncRead, AsyncWrite};

pub use pump::Received;
pub(crate) use pump::{Parked, Pump};
pub use split::{ReadHalf, WriteHalf};

use crate::Error;

/// Bytes the outbound queue may hold before [`Sink::poll_ready`] waits and
/// [`WebSocket::try_send`] hands messages back (default 1 MiB).
pub(crate) const DEFAULT_MAX_BUFFERED: usize = 1 << 20;

/// A WebSocket over any async transport `S` (TCP, TLS, a hyper upgrade).
///
/// Receive with the [`Stream`] impl or [`recv`](Self::recv) (cancellation
/// safe: a dropped `recv()` loses nothing), send with the [`Sink`] impl,
/// [`send`](Self::send) or [`try_send`](Self::try_send). Pings are answered
/// and close frames replied to automatically, but only while the stream is
/// polled: keep a task receiving.
pub struct WebSocket<S> {
    pub(crate) io: S,
    pub(crate) pump: Pump,
}

/// The message could not be queued; it is handed back.
#[derive(Debug)]
pub enum TrySendError {
    /// The outbound queue is full: wait with [`WebSocket::send`] or poll flush.
    Full(Message),
    /// The connection is closing or closed.
    Closed(Message),
    /// The message itself cannot be sent (a control payload over 125 bytes,
    /// an unsendable close code).
    Invalid(UsageError),
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a transport whose handshake is already done. `leftover` holds
    /// bytes read past the handshake (the first frames); they are decoded
    /// before anything is read from `io`.
    /// Pass an `Arc<Config>` to share one configuration between many
    /// connections.
    pub fn from_raw(io: S, role: Role, config: impl Into<Arc<Config>>, leftover: Bytes) -> Self {
        Self {
            io,
            pump: Pump::new(role, config.into(), &leftover),
        }
    }

    /// Turns on permessage-deflate as the handshake negotiated it.
    pub(crate) fn set_deflate(&mut self, negotiated: PerMessageDeflate) {
        self.pump.conn.set_deflate(negotiated);
    }

    /// The permessage-deflate negotiated in the handshake, if any.
    pub fn deflate(&self) -> Option<&PerMessageDeflate> {
        self.pump.conn.deflate()
    }

    /// Sets how many bytes may wait in the outbound queue before senders wait.
    pub fn set_max_buffered(&mut self, bytes: usize) {
        self.pump.max_buffered = bytes;
    }

    /// The next message, ping, pong or close; `None` once the connection is
    /// closed and the transport shut down. Cancellation safe.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.pump.poll_next(&mut self.io, cx)).await
    }

    /// Queues `message` (waiting while the outbound queue is full) and
    /// flushes it.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.pump.poll_ready(&mut self.io, cx)).await?;
        self.pump.start_send(message)?;
        std::future::poll_fn(|cx| self.pump.poll_flush(&mut self.io, cx)).await
    }

    /// Queues `message` without waiting; it goes out on the next poll of the
    /// stream or of flush.
    pub fn try_send(&mut self, message: Message) -> Result<(), TrySendError> {
        self.pump.try_send(message)
    }

    /// Bytes queued for the peer and not yet written to the transport, as a
    /// browser's `bufferedAmount`: what this connection holds in memory on
    /// the peer's behalf.
    pub fn buffered_amount(&self) -> usize {
        self.pump.buffered()
    }

    /// Starts the close handshake with `code` and `reason`, and flushes the
    /// close frame. Keep receiving to see the peer's reply. Like
    /// [`send`](Self::send) it waits while the outbound queue is full; to
    /// give up on a peer that stopped reading, drop the connection instead.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned(),
        };
        self.send(Message::Close(Some(frame))).await
    }

    /// The connection's configuration (limits, keepalive, timeouts).
    pub fn config(&self) -> &Config {
        self.pump.conn.config()
    }

    /// Who started the closing, once the connection is closed.
    pub fn closed_by(&self) -> Option<Initiator> {
        self.pump.closed_by
    }

    /// The transport, for peer addresses and socket options.
    pub fn transport(&self) -> &S {
        &self.io
    }

    /// Splits into a receiving and a sending half that can live in different
    /// tasks.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        split::split(self)
    }
}

impl<S> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("role", &self.pump.conn.role())
            .field("state", &self.pump.conn.state())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.pump.poll_next(&mut this.io, cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.pump.poll_ready(&mut this.io, cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        self.get_mut().pump.start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.pump.poll_flush(&mut this.io, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.pump.poll_close(&mut this.io, cx)
    }
}
