//! WebSocket server and client on tokio, driving the sans-IO `tether-proto` core.
//!
//! What this crate does **not** do: it has no protocol logic of its own
//! (framing, close handshake, pongs and limits live in `tether-proto`), no
//! routing, channels or authentication (that is the `tetherd` gateway), and
//! it never spawns tasks: you own the tasks, it owns the bytes.
//!
//! ```text
//!  TcpStream / TLS / hyper upgrade
//!        │  accept() / connect() / upgrade()      (handshake, deadline)
//!        ▼
//!  WebSocket<S> ── Stream<Item = Result<Message>> ──► application
//!        ▲   └──── Sink<Message>, send, try_send ◄── application
//!        │
//!  per-thread scratch read buffer → Connection::receive → events
//!  Connection::transmit_slices → one vectored write per batch → advance_transmit
//! ```
//!
//! Idle connections hold no read or write buffer: reads land in a
//! per-thread scratch buffer and only a partial frame is kept; outgoing
//! frames are queued only until written. A server can go further and park
//! quiet connections without a task or timer each ([`idle`]).

pub mod broadcast;
pub mod client;
mod error;
pub mod idle;
pub mod server;
mod stream;

pub use client::{ClientConfig, MaybeTls, connect, connect_with};
pub use error::Error;
pub use server::{ServerConfig, accept, accept_with, upgrade};
pub use stream::{ReadHalf, TrySendError, WebSocket, WriteHalf};
pub use tether_proto::{
    CloseCode, CloseFrame, Config, Initiator, Keepalive, Limits, Message, ProtocolError, RateLimit,
    Role, Utf8Bytes, handshake,
};

/// permessage-deflate (RFC 7692): what to offer or accept, and what was
/// negotiated. Frames encoded once for many connections are in
/// [`broadcast`].
pub mod deflate {
    pub use tether_proto::deflate::{
        DeflateConfig, Direction, EXTENSION_NAME, InvalidResponse, MAX_WINDOW_BITS,
        MIN_COMPRESS_WINDOW_BITS, PerMessageDeflate,
    };
}
