//! permessage-deflate (RFC 7692): negotiation, compression and bounded
//! inflation.
//!
//! Off unless configured. The server side picks the first acceptable offer
//! ([`server::Request::negotiate_deflate`](crate::handshake::server::Request::negotiate_deflate)),
//! the client side offers one or more [`DeflateConfig`]s and checks the answer
//! ([`client::Response::deflate`](crate::handshake::client::Response::deflate));
//! either way the outcome is a [`PerMessageDeflate`] handed to
//! [`Connection::set_deflate`](crate::Connection::set_deflate).
//!
//! ```text
//!   offer ──► negotiate ──► PerMessageDeflate ──► Connection
//!                                    send: payload ──► deflate (≥ threshold) ──► RSV1 frame
//!                                 receive: RSV1 frame(s) ──► inflate, bounded by the message limit
//! ```
//!
//! Memory: a direction without context takeover borrows a per-thread pooled
//! zlib stream for the length of one message, so an idle connection holds no
//! zlib state at all. The server's default asks for no context takeover in
//! both directions. With context takeover the connection owns its stream.

mod codec;
mod encoded;
mod negotiate;

use std::fmt;

pub(crate) use codec::DeflateState;
pub(crate) use encoded::RSV1;
pub use encoded::{EncodedFrame, FrameEncoding};

/// The token of the extension.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The largest LZ77 window, in bits (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window this crate compresses with: zlib refuses a 256-byte
/// (8-bit) window for raw deflate streams, so offers that require the server
/// to compress with 8 bits are declined, and a client told to compress with 8
/// bits sends its messages uncompressed.
pub const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// What one endpoint is willing to negotiate. The same type serves both
/// roles; each field says what it means for a server and for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Server: always answer with `server_no_context_takeover`, so the server
    /// compresses each message afresh with a pooled stream (default true).
    /// Client: request it.
    pub server_no_context_takeover: bool,
    /// Server: always answer with `client_no_context_takeover`, so the server
    /// inflates each message with a pooled stream (default true).
    /// Client: promise it (and compress each message afresh).
    pub client_no_context_takeover: bool,
    /// Server: compress with at most this window (9–15; default 15).
    /// Client: request `server_max_window_bits` with this value. Values
    /// outside 9–15 count as the nearest bound.
    pub server_max_window_bits: Option<u8>,
    /// Server: ask a client that offered `client_max_window_bits` to use at
    /// most this window (8–15). Client: offer `client_max_window_bits` with
    /// this value (without one when `None`). Values outside 8–15 count as
    /// the nearest bound.
    pub client_max_window_bits: Option<u8>,
    /// Messages shorter than this many bytes are sent uncompressed (default
    /// 64): below it deflate rarely saves anything.
    pub threshold: usize,
    /// zlib compression level, 0–9 (default 6); higher counts as 9.
    pub level: u32,
}

impl DeflateConfig {
    /// This configuration with every value within its range: what the
    /// negotiation works with, whatever the fields were set to.
    fn clamped(&self) -> Self {
        Self {
            server_max_window_bits: self
                .server_max_window_bits
                .map(|bits| bits.clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS)),
            client_max_window_bits: self
                .client_max_window_bits
                .map(|bits| bits.clamp(8, MAX_WINDOW_BITS)),
            level: self.level.min(9),
            ..*self
        }
    }
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: None,
            client_max_window_bits: None,
            threshold: 64,
            level: 6,
        }
    }
}

/// One direction of a negotiated permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Direction {
    /// The sender compresses every message afresh.
    pub no_context_takeover: bool,
    /// The sender's LZ77 window, in bits (8–15).
    pub max_window_bits: u8,
}

/// The outcome of a successful negotiation, from this endpoint's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerMessageDeflate {
    /// How we compress what we send.
    pub outgoing: Direction,
    /// How the peer compresses what we receive.
    pub incoming: Direction,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// zlib compression level.
    pub level: u32,
}

/// A `permessage-deflate` response the client cannot accept: it fails the
/// connection (RFC 7692 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidResponse(pub(crate) String);

impl fmt::Display for InvalidResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
