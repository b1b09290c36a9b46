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
//!
//! # Configuration
//!
//! Every configuration type of this crate and of `tether` ([`Config`],
//! [`Limits`], [`Keepalive`], [`RateLimit`], [`deflate::DeflateConfig`],
//! [`handshake::HeadLimits`], `tether::ServerConfig`,
//! `tether::ClientConfig`) is plain data: public fields, each documented
//! with its default, and no builder methods. Start from `Default` and
//! assign what differs:
//!
//! ```
//! use std::time::Duration;
//! use tether_proto::{Config, Keepalive};
//!
//! let mut config = Config::default();
//! config.keepalive = Keepalive::OFF;
//! config.limits.max_message_size = 1 << 20;
//! config.idle_timeout = Some(Duration::from_secs(60));
//! ```
//!
//! Fields rather than builders because a configuration is read as often as
//! it is written (a server logs it, derives its own timeouts from it,
//! validates it), and a public field is one name for both where a builder
//! needs a getter beside each setter. `#[non_exhaustive]` keeps a new field a
//! compatible change, and the few ranges a builder used to clamp (deflate
//! window bits and level) are clamped where the values are used.
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
