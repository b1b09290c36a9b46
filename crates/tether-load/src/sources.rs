//! Where connections come from: the source addresses 127.0.0.1, 127.0.0.2,
//! … that spread connections past one address's ephemeral ports, and the
//! dialer that opens them with bounded concurrency and a few retries.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tether::{ClientConfig, Error, WebSocket};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::Semaphore,
    time::{Instant, sleep, timeout},
};

use crate::target::Target;

/// Connections per source address by default: well under the ~28,000
/// ephemeral ports (32768–60999) one source address has towards one target.
pub(crate) const DEFAULT_PER_SOURCE: usize = 10_000;

/// Connection attempts in flight at once by default, so the server's accept
/// queue is not overrun: 128 is the backlog tokio's `TcpListener::bind` (and
/// std's) asks for, and past it the kernel drops SYNs, which cost a 1 s
/// retransmission each.
pub(crate) const DEFAULT_CONCURRENCY: usize = 128;

/// Attempts per connection before it counts as failed.
const ATTEMPTS: u32 = 4;

/// The `index`-th source address for connections to `target`: 127.0.0.1,
/// 127.0.0.2, … for an IPv4 target; only `::1` exists for IPv6.
pub(crate) fn source(target: &Target, index: usize) -> Option<IpAddr> {
    match target.addr {
        SocketAddr::V4(_) => {
            let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
            let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
            let addr = first.checked_add(u32::try_from(index).ok()?)?;
            (addr <= last).then(|| IpAddr::V4(Ipv4Addr::from(addr)))
        }
        SocketAddr::V6(_) => (index == 0).then_some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    }
}

/// How many source addresses exist for `target`.
pub(crate) fn source_count(target: &Target) -> usize {
    match target.addr {
        SocketAddr::V4(_) => (1 << 24) - 2,
        SocketAddr::V6(_) => 1,
    }
}

/// Checks that `target` has the `needed` source addresses that `conns`
/// connections (`what` they are, in the error) take at `per_source` each.
pub(crate) fn check_source_count(
    target: &Target,
    needed: usize,
    conns: usize,
    what: &str,
    per_source: usize,
) -> Result<(), String> {
    if needed > source_count(target) {
        return Err(format!(
            "{conns} {what} at {per_source} per source address need {needed} source addresses; {} has {}",
            target.addr.ip(),
            source_count(target)
        ));
    }
    Ok(())
}

/// Opens connections to one target, `per_source` per source address starting
/// at source `first_source`, at most `concurrency` attempts at a time.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    target: Target,
    config: ClientConfig,
    first_source: usize,
    per_source: usize,
    attempts: Arc<Semaphore>,
}

/// A connection that is open, and how long its handshake took.
pub(crate) struct Dialed {
    pub(crate) ws: WebSocket<TcpStream>,
    /// TCP connect plus upgrade, of the attempt that succeeded.
    pub(crate) latency: Duration,
}

impl Dialer {
    pub(crate) fn new(
        target: Target,
        config: ClientConfig,
        first_source: usize,
        per_source: usize,
        concurrency: usize,
    ) -> Self {
        Self {
            target,
            config,
            first_source,
            per_source: per_source.max(1),
            attempts: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Checks that `conns` connections have source addresses.
    pub(crate) fn check_capacity(&self, conns: usize) -> Result<(), String> {
        let needed = self.first_source + conns.div_ceil(self.per_source);
        check_source_count(&self.target, needed, conns, "connections", self.per_source)
    }

    /// The target connections go to.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Opens connection number `index`, retrying refused, reset and
    /// timed-out attempts a few times.
    pub(crate) async fn dial(&self, index: usize) -> Result<Dialed, Error> {
        let (ws, latency) = self.dial_with(index, |tcp| self.upgrade(tcp)).await?;
        Ok(Dialed { ws, latency })
    }

    /// Like [`Dialer::dial`], with `upgrade` doing the handshake over the
    /// connected socket; also returns how long the attempt that succeeded
    /// took.
    pub(crate) async fn dial_with<T, Upgrading>(
        &self,
        index: usize,
        upgrade: impl Fn(TcpStream) -> Upgrading,
    ) -> Result<(T, Duration), Error>
    where
        Upgrading: Future<Output = Result<T, Error>>,
    {
        let source =
            source(&self.target, self.first_source + index / self.per_source).ok_or_else(|| {
                Error::InvalidUrl(format!("no source address left for connection {index}"))
            })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = {
                // Invariant: the semaphore is never closed.
                let _permit = self
                    .attempts
                    .acquire()
                    .await
                    .expect("semaphore is never closed");
                let start = Instant::now();
                self.attempt_with(source, &upgrade)
                    .await
                    .map(|upgraded| (upgraded, start.elapsed()))
            };
            match result {
                Err(error) if attempt < ATTEMPTS && is_transient(&error) => {
                    sleep(Duration::from_millis(50 << attempt)).await;
                }
                result => return result,
            }
        }
    }

    /// Connects from `source` and hands the socket to `upgrade`, all within
    /// the handshake timeout.
    async fn attempt_with<T, Upgrading>(
        &self,
        source: IpAddr,
        upgrade: impl Fn(TcpStream) -> Upgrading,
    ) -> Result<T, Error>
    where
        Upgrading: Future<Output = Result<T, Error>>,
    {
        let connecting = async {
            let tcp = connect_from(source, self.target.addr).await?;
            tcp.set_nodelay(true)?;
            upgrade(tcp).await
        };
        timeout(self.config.handshake_timeout, connecting)
            .await
            .map_err(|_| Error::HandshakeTimeout)?
    }

    /// The WebSocket handshake of `tether`'s client.
    async fn upgrade(&self, tcp: TcpStream) -> Result<WebSocket<TcpStream>, Error> {
        let (ws, _response) =
            tether::client::handshake(tcp, &self.target.host, &self.target.path, &self.config)
                .await?;
        Ok(ws)
    }
}

/// Connects to `addr` from `source`, on a port the kernel picks.
pub(crate) async fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Whether another attempt may succeed: the server was busy, not wrong.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::Io(error) => matches!(
            error.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::TimedOut
                | io::ErrorKind::AddrInUse
                | io::ErrorKind::AddrNotAvailable
        ),
        Error::ClientHandshake(_) | Error::HandshakeTimeout => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_sources() {
        let v4 = Target::parse("ws://127.0.0.1:1").unwrap();
        assert_eq!(
            source(&v4, 0),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(
            source(&v4, 300),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 45)))
        );
        assert_eq!(source(&v4, source_count(&v4)), None);
        let v6 = Target::parse("ws://[::1]:1").unwrap();
        assert_eq!(source(&v6, 1), None);
        let dialer = Dialer::new(v6, ClientConfig::default(), 0, 10, 1);
        assert!(dialer.check_capacity(10).is_ok());
        assert!(dialer.check_capacity(11).is_err());
    }
}
