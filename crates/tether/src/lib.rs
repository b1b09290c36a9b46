//! `tether` runs WebSocket servers and clients on tokio, driving the sans-IO `tether-proto` core.
//!
//! What it does **not** do: it has no protocol logic of its own (framing, the close handshake,
//! pongs and limits live in `tether-proto`), no routing, channels or authentication (that is the
//! `tetherd` gateway), and it never spawns tasks: you own the tasks, it owns the bytes.
//!
//! ```text
//!  TcpStream / TLS / hyper upgrade
//!        │  accept() / accept_with() / connect() / upgrade()      (handshake deadline, 4xx refusals)
//!        ▼
//!  WebSocket<S> ── Stream<Item = Result<Message, Error>> ──► your code
//!        ▲    └─── Sink<Message>, send, try_send, close  ◄──── your code
//!        │
//!  per-thread scratch read buffer → Connection::receive → events
//!  Connection::transmit_slices → one vectored write per batch → advance_transmit
//! ```
//!
//! A server that echoes every text and binary message:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tether::ServerConfig;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let config = ServerConfig::default();
//! loop {
//!     let (tcp, _peer) = listener.accept().await?;
//!     let config = config.clone();
//!     tokio::spawn(async move {
//!         let Ok((mut ws, _request)) = tether::accept(tcp, &config).await else { return };
//!         while let Some(Ok(message)) = ws.recv().await {
//!             if message.is_data() {
//!                 let _ = ws.send(message).await;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! A client: `let (mut ws, _response) = tether::connect("ws://127.0.0.1:8000/").await?;` (`wss://`
//! uses rustls; put your own `rustls::ClientConfig` in `ClientConfig::tls` to trust a private CA;
//! add `Origin`, `Cookie` or `Authorization` to `ClientConfig::headers`).
//!
//! Configurations are plain data: `ServerConfig`, `ClientConfig`, each connection's `Config` (with
//! its `Limits`, `Keepalive` and `RateLimit`), `DeflateConfig` and `HeadLimits` have public fields,
//! each with a safe default, and no builder methods. Start from `Default` and assign what differs:
//! `config.max_buffered = 256 << 10;`, or for every connection a server accepts,
//! `Arc::make_mut(&mut config.connection).idle_timeout = None;` (why fields: the "Configuration"
//! section of `tether-proto`'s docs).
//!
//! To decide who may connect, `tether::accept_with(io, &config, authorize)` runs your async
//! `authorize(&Request)` (path, query, headers, `request.cookie("session")`) after the Origin
//! policy and before the `101`; it returns per-connection data (a user) that comes back with the
//! socket, or a refusal with an HTTP status. `tether::server` also holds what decides before that:
//! `OriginPolicy`, and `ConnectionLimiter` with `reject` for a refusal that arrives as an HTTP
//! `503` rather than a reset.
//!
//! Compression (permessage-deflate, RFC 7692) is off unless configured: `config.deflate =
//! Some(DeflateConfig::default())` on a `ServerConfig` accepts it (every parameter, several offers
//! in preference order, invalid offers declined), by default without context takeover in either
//! direction, so an idle connection holds no zlib state (streams are pooled per thread); messages
//! under 64 bytes go uncompressed. Clients offer it by pushing a `DeflateConfig` onto
//! `ClientConfig::deflate`. Inflating counts against the message limit as it grows (1009 at most
//! one 32 KiB step past it), so a compression bomb costs no more than an honest message. `tetherd
//! echo --deflate` turns it on.
//!
//! Inside hyper or axum: `tether::upgrade(&mut request, &config)` validates the request and returns
//! the `101` response to send and a `PendingUpgrade` whose `wait()` yields the `WebSocket`.
//!
//! Idle connections hold no read or write buffer: reads land in a per-thread scratch buffer and
//! only a partial frame is kept; outgoing frames are queued only until written. Two modules serve
//! servers with many connections, outside the everyday API: `tether::broadcast` frames (and
//! compresses) a message once for every connection with the same encoding and queues the shared
//! bytes on each (`BroadcastExt`); `tether::idle` parks quiet connections without a task, timer or
//! buffer each, in one epoll (`IdleExt`, `IdlePool`). Each module's docs show it in use.

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
