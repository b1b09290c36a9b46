//! Sending one message to many server connections, framed (and compressed)
//! once rather than once per connection.
//!
//! A connection's [`FrameEncoding`] says how it frames data messages: plain,
//! or permessage-deflate with its window, level and threshold. Connections
//! with equal encodings accept the same [`EncodedFrame`], so a broadcast
//! encodes each message once per encoding ([`FrameEncoding::encode`]) and
//! queues the shared bytes on every connection
//! ([`BroadcastExt::try_send_encoded`]): no copy of a large frame, and no
//! compression per subscriber. Client connections mask every frame and
//! cannot take part ([`BroadcastExt::frame_encoding`] is `None`).
//!
//! This module does not keep subscriber lists or pick whom to send to; that
//! is the application's (in this workspace, `tetherd`'s hub).
//!
//! ```no_run
//! use std::collections::HashMap;
//!
//! use tether::{
//!     Message, WebSocket,
//!     broadcast::{BroadcastExt, EncodedFrame, FrameEncoding},
//! };
//! use tokio::net::TcpStream;
//!
//! /// Queues `message` on every subscriber that has room, encoding it once
//! /// per encoding; returns the subscribers that were full.
//! fn publish(subscribers: &mut [WebSocket<TcpStream>], message: &Message) -> Vec<usize> {
//!     let mut frames: HashMap<FrameEncoding, EncodedFrame> = HashMap::new();
//!     let mut full = Vec::new();
//!     for (index, ws) in subscribers.iter_mut().enumerate() {
//!         let Some(encoding) = ws.frame_encoding() else { continue };
//!         let frame = frames
//!             .entry(encoding)
//!             .or_insert_with(|| encoding.encode(message).expect("a data message"));
//!         if !matches!(ws.try_send_encoded(frame), Ok(true)) {
//!             full.push(index);
//!         }
//!     }
//!     full
//! }
//! ```

use std::future::Future;

pub use tether_proto::deflate::{EncodedFrame, FrameEncoding};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, WebSocket};

/// Queuing frames encoded once for many connections on a server
/// [`WebSocket`]; import it to use its methods.
pub trait BroadcastExt {
    /// How this server connection frames data messages: a message for many
    /// connections is framed (and compressed) once per encoding with
    /// [`FrameEncoding::encode`]. `None` for a client.
    fn frame_encoding(&self) -> Option<FrameEncoding>;

    /// Queues a frame encoded for this connection's
    /// [`frame_encoding`](Self::frame_encoding) without waiting; it goes out
    /// on the next poll of the stream or of flush. `Ok(false)` while the
    /// outbound queue is full.
    fn try_send_encoded(&mut self, frame: &EncodedFrame) -> Result<bool, Error>;

    /// Queues a frame encoded for this connection (waiting while the
    /// outbound queue is full) and flushes it.
    fn send_encoded(&mut self, frame: &EncodedFrame) -> impl Future<Output = Result<(), Error>>;
}

impl<S: AsyncRead + AsyncWrite + Unpin> BroadcastExt for WebSocket<S> {
    fn frame_encoding(&self) -> Option<FrameEncoding> {
        self.pump.conn.frame_encoding()
    }

    fn try_send_encoded(&mut self, frame: &EncodedFrame) -> Result<bool, Error> {
        if self.pump.buffered() >= self.pump.max_buffered {
            return Ok(false);
        }
        self.pump.conn.send_encoded(frame)?;
        Ok(true)
    }

    async fn send_encoded(&mut self, frame: &EncodedFrame) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.pump.poll_ready(&mut self.io, cx)).await?;
        self.pump.conn.send_encoded(frame)?;
        std::future::poll_fn(|cx| self.pump.poll_flush(&mut self.io, cx)).await
    }
}
