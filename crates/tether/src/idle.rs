//! Parking quiet connections without a task, a timer or a buffer each: for
//! a server holding many connections that say little.
//!
//! A task per connection costs its future, the task's header and the
//! runtime's readiness record for the socket, even while the peer says
//! nothing for hours. [`IdleExt::recv_or_idle`] says when a connection has
//! nothing in flight, [`IdleExt::into_dormant`] takes its socket out of the
//! runtime ([`DormantWebSocket`]: a protocol state and a file descriptor),
//! and an [`IdlePool`] holds such connections, all watched by one epoll, until
//! bytes arrive or a deadline (a keepalive ping, the idle timeout) comes;
//! [`DormantWebSocket::wake`] turns one back into a [`WebSocket`].
//!
//! This module does not spawn tasks (you own them), and parks only plain
//! TCP connections: a TLS session holds buffers of its own.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use tether::{
//!     ServerConfig,
//!     idle::{DormantWebSocket, IdleExt, IdlePool, Parker, Received},
//! };
//! use tokio::net::{TcpListener, TcpStream};
//!
//! /// Echoes until `ws` is quiet for a second, then parks it.
//! async fn echo(mut ws: tether::WebSocket<TcpStream>, parker: Parker<DormantWebSocket>) {
//!     loop {
//!         match ws.recv_or_idle(Duration::from_secs(1)).await {
//!             Received::Message(message) if message.is_data() => {
//!                 let _ = ws.send(message).await;
//!             }
//!             Received::Message(_) => {}
//!             Received::Idle => {
//!                 if let Ok(dormant) = ws.into_dormant() {
//!                     let _ = parker.park(dormant);
//!                 }
//!                 return;
//!             }
//!             Received::Error(_) | Received::Ended => return,
//!         }
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:8000").await?;
//! let config = ServerConfig::default();
//! let mut pool: IdlePool<DormantWebSocket> = IdlePool::new()?;
//! let parker = pool.parker();
//! // One task hands woken connections back to tasks of their own.
//! let waker = parker.clone();
//! tokio::spawn(async move {
//!     while let Ok(dormant) = pool.next().await {
//!         if let Ok(ws) = dormant.wake() {
//!             tokio::spawn(echo(ws, waker.clone()));
//!         }
//!     }
//! });
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     if let Ok((ws, _request)) = tether::accept(tcp, &config).await {
//!         tokio::spawn(echo(ws, parker.clone()));
//!     }
//! }
//! # }
//! ```

#[cfg(unix)]
mod pool;

use std::{fmt, future::Future, io, net, time::Duration};

use tokio::net::TcpStream;

#[cfg(unix)]
pub use pool::{Dormant, IdlePool, Parker};

pub use crate::stream::Received;
use crate::{WebSocket, stream::Parked};

/// Idle detection and parking for a [`WebSocket`] over TCP. Implemented
/// for `WebSocket<TcpStream>` only: import it to use its methods.
pub trait IdleExt: Sized {
    /// Like [`WebSocket::recv`], but returns [`Received::Idle`] once the
    /// connection has nothing in flight either way and nothing arrived for
    /// `quiet` (at once with `Duration::ZERO`): the moment a server may park
    /// it with [`into_dormant`](Self::into_dormant). Cancellation safe.
    fn recv_or_idle(&mut self, quiet: Duration) -> impl Future<Output = Received> + Send;

    /// Takes the socket out of the runtime, so that a connection with
    /// nothing to do needs neither a task nor a timer: an [`IdlePool`]
    /// watches it and hands it back when bytes arrive or its
    /// [`deadline`](DormantWebSocket::deadline) comes. Meant for
    /// [`Received::Idle`]; anything still queued waits until then.
    fn into_dormant(self) -> io::Result<DormantWebSocket>;
}

impl IdleExt for WebSocket<TcpStream> {
    // Inlined into the caller's task, as an inherent method would be: this
    // runs once per received message.
    #[inline]
    async fn recv_or_idle(&mut self, quiet: Duration) -> Received {
        std::future::poll_fn(|cx| self.pump.poll_received(&mut self.io, cx, Some(quiet))).await
    }

    fn into_dormant(self) -> io::Result<DormantWebSocket> {
        Ok(DormantWebSocket {
            io: self.io.into_std()?,
            pump: self.pump.park(),
        })
    }
}

/// A WebSocket whose socket is out of the runtime: a protocol state and a
/// file descriptor, nothing else. [`wake`](Self::wake) turns it back into a
/// [`WebSocket`].
pub struct DormantWebSocket {
    io: net::TcpStream,
    pump: Parked,
}

impl DormantWebSocket {
    /// Registers the socket with the runtime again. Call it from within one.
    pub fn wake(self) -> io::Result<WebSocket<TcpStream>> {
        Ok(WebSocket {
            io: TcpStream::from_std(self.io)?,
            pump: self.pump.wake(),
        })
    }

    /// When the connection must run even if nothing arrives: a keepalive
    /// ping, the pong's deadline, the idle timeout.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.pump.conn().poll_timeout()
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for DormantWebSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.as_raw_fd()
    }
}

impl fmt::Debug for DormantWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DormantWebSocket")
            .field("peer", &self.io.peer_addr().ok())
            .finish_non_exhaustive()
    }
}
