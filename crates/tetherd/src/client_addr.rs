//! Who the client is when a load balancer stands in front of the gateway:
//! the address a trusted proxy says, through a PROXY protocol header
//! (HAProxy's `send-proxy` / `send-proxy-v2`) or `X-Forwarded-For`, so that
//! per-address limits, logs and (later) the connect hook see the client,
//! not the proxy. Only peers listed in `security.trusted_proxies` are
//! believed; what anyone else sends is ignored.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use tether::server::ConnectionPermit;
use tokio::{io::AsyncReadExt, net::TcpStream, time::Instant};

/// Longest PROXY header read: v1's 107 bytes, v2's 16 plus addresses and
/// a little room for TLVs. A longer one is refused.
const MAX_PROXY_HEADER: usize = 536;

/// How long to wait before peeking again at a PROXY header that arrived
/// in pieces.
const PROXY_HEADER_RETRY: Duration = Duration::from_millis(5);

/// Where an HTTP connection's clients are counted under the connection
/// limits.
#[derive(Debug, Clone)]
pub(crate) enum Admission {
    /// At accept: the connection is one client's, and holds its place.
    Counted(Arc<ConnectionPermit>),
    /// A trusted proxy's connection, shared by the clients it forwards:
    /// each WebSocket upgrade is counted for the client its
    /// `X-Forwarded-For` names.
    PerUpgrade,
}

/// The networks whose connections may say who the client is.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Reads `security.trusted_proxies`: addresses (`10.0.0.5`, `::1`) and
    /// networks (`10.0.0.0/8`).
    pub(crate) fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a network (10.0.0.0/8)"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether connections from `ip` may say who the client is.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that a trusted proxy at `peer` forwarded
    /// with `X-Forwarded-For: header`: the rightmost address no trusted
    /// proxy added (each proxy appends the address it received the request
    /// from), or `peer` itself when the header is absent, unreadable or
    /// names trusted proxies only.
    pub(crate) fn forwarded_client(&self, peer: IpAddr, header: Option<&[u8]>) -> IpAddr {
        let Some(header) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return peer;
        };
        for entry in header.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // Past what a trusted proxy wrote: nothing further is believed.
                return peer;
            };
            if !self.trusts(ip) {
                return ip;
            }
        }
        peer
    }
}

/// Reads the PROXY protocol header (v1 or v2) a trusted proxy sends first
/// on `stream`, consuming exactly the header, by `deadline`. Returns the
/// client's address, or `None` for a header without one (`LOCAL`, as in
/// HAProxy's own health checks, or `UNKNOWN`): the proxy speaks for itself.
pub(crate) async fn read_proxy_header(
    stream: &mut TcpStream,
    deadline: Instant,
) -> io::Result<Option<SocketAddr>> {
    let mut peeked = [0u8; MAX_PROXY_HEADER];
    loop {
        let available = tokio::time::timeout_at(deadline, stream.peek(&mut peeked))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"))??;
        if available == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = HeaderResult::parse(&peeked[..available]);
        if header.is_incomplete() {
            if available == peeked.len() {
                return Err(invalid("PROXY header too long"));
            }
            // The rest is on its way. Peeking leaves the socket readable, so
            // waiting for readiness would spin: wait a moment instead (a
            // proxy sends the header in one segment; this is the rare case).
            // The peek above answers at once while bytes wait, so the
            // deadline is checked here.
            if Instant::now() + PROXY_HEADER_RETRY >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "PROXY header incomplete in time",
                ));
            }
            tokio::time::sleep(PROXY_HEADER_RETRY).await;
            continue;
        }
        let (length, client) = match header {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_source(&header.addresses)),
            HeaderResult::V2(Ok(header)) => (header.len(), v2_source(&header)),
            HeaderResult::V1(Err(error)) => return Err(invalid(&format!("PROXY header: {error}"))),
            HeaderResult::V2(Err(error)) => return Err(invalid(&format!("PROXY header: {error}"))),
        };
        // Consumed for real now: exactly the header's bytes, already peeked.
        stream.read_exact(&mut peeked[..length]).await?;
        return Ok(client);
    }
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v1::Addresses::Tcp6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match &header.addresses {
        v2::Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v2::Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        let proxies = trusted(&["10.0.0.0/8", "192.168.1.5", "::1"]);
        assert!(proxies.trusts("10.2.3.4".parse().unwrap()));
        assert!(proxies.trusts("192.168.1.5".parse().unwrap()));
        assert!(!proxies.trusts("192.168.1.6".parse().unwrap()));
        assert!(proxies.trusts("::1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_added() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let client = |header: &str| proxies.forwarded_client(peer, Some(header.as_bytes()));
        assert_eq!(
            client("203.0.113.7"),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // A client may send its own header: only what the proxies appended
        // counts, from the right.
        assert_eq!(
            client("1.2.3.4, 203.0.113.7, 10.0.0.9"),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client("10.0.0.3"), peer, "trusted proxies only");
        assert_eq!(client("garbage, 10.0.0.3"), peer, "an unreadable entry");
        assert_eq!(proxies.forwarded_client(peer, None), peer);
    }

    /// A proxy's header and then the request: the header is consumed
    /// exactly, the request is left for HTTP.
    async fn sent_through(header: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(header).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = read_proxy_header(&mut server, deadline).await;
        let mut rest = vec![0; 16];
        if result.is_ok() {
            server.read_exact(&mut rest).await.unwrap();
        }
        (result, rest)
    }

    #[tokio::test]
    async fn v1_and_v2_headers_name_the_client() {
        let (client, rest) = sent_through(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n").await;
        assert_eq!(client.unwrap(), Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "198.51.100.9:4000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:80".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let (client, rest) = sent_through(&v2).await;
        assert_eq!(client.unwrap(), Some("198.51.100.9:4000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        let (client, _) = sent_through(&local).await;
        assert_eq!(client.unwrap(), None, "the proxy's own check");

        let (refused, _) = sent_through(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_header_in_pieces_is_awaited_until_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"10.0.0.1 5555 80\r\n").await.unwrap();
            client
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let client_addr = read_proxy_header(&mut server, deadline).await.unwrap();
        assert_eq!(client_addr, Some("203.0.113.7:5555".parse().unwrap()));

        // Half a header and then nothing: refused at the deadline.
        drop(writer.await.unwrap());
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let stalled = read_proxy_header(&mut server, deadline).await;
        assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
