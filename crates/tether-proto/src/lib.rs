//! The RFC 6455 WebSocket protocol, with RFC 7692 permessage-deflate, as plain
//! values: bytes in, events out.
//!
//! What this crate does **not** do: it never opens a socket, never reads a
//! clock and never spawns a task. Time is an argument (`now: Instant`), bytes
//! are handed in and taken out by the caller, so the same core runs under
//! tokio (the `tether` crate), in tests with a virtual clock, or in a fuzzer.
//!
//! ```text
//!   socket bytes ──► handshake::server::parse_request ──► 101 / 4xx bytes
//!                              │ (bytes after the head)
//!                              ▼
//!   socket bytes ──► Connection::receive ──► poll_event() ──► Message / Ping / Pong / Closed
//!   application ──► Connection::send(Message: data, ping, pong or close)
//!                              │
//!                              ▼
//!                    Connection::transmit_slices ──► socket write ──► advance_transmit(written)
//!   timer ──► Connection::poll_timeout / handle_timeout(now)
//! ```
#![deny(unsafe_code)]

pub mod close;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
mod limits;
mod message;
mod role;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Config, Connection, Event, Initiator, Keepalive, RateLimit, State};
pub use error::{ProtocolError, UsageError};
pub use limits::Limits;
pub use message::{Message, Utf8Bytes};
pub use role::Role;
