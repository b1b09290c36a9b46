//! Connecting to `ws://` and `wss://` servers.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tether_proto::{
    Config, Role,
    deflate::DeflateConfig,
    handshake::client::{ClientRequest, Response},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::timeout,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{Error, WebSocket, stream::DEFAULT_MAX_BUFFERED};

/// How the client handshake and connection behave. Plain data like every
/// configuration: start from `Default` and assign the fields that differ
/// (see the [crate docs](crate)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Limits, close timeout and keepalive of the connection.
    pub connection: Config,
    /// Connecting, TLS and the upgrade must finish within this time (default 10 s).
    pub handshake_timeout: Duration,
    /// Subprotocols to offer, in order of preference; none by default.
    pub subprotocols: Vec<String>,
    /// Extra request headers, such as `Origin`, `Cookie` or `Authorization`;
    /// none by default.
    pub headers: Vec<(String, String)>,
    /// TLS settings for `wss://`; `None` trusts the bundled web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Outbound queue bound, in bytes (default 1 MiB).
    pub max_buffered: usize,
    /// permessage-deflate offers, in order of preference; none by default.
    pub deflate: Vec<DeflateConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connection: Config::default(),
            handshake_timeout: Duration::from_secs(10),
            subprotocols: Vec::new(),
            headers: Vec::new(),
            tls: None,
            max_buffered: DEFAULT_MAX_BUFFERED,
            deflate: Vec::new(),
        }
    }
}

/// Connects to `url` with the default configuration.
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTls>, Response), Error> {
    connect_with(url, &ClientConfig::default()).await
}

/// Connects to `url` (`ws://host[:port]/path` or `wss://…`).
pub async fn connect_with(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<MaybeTls>, Response), Error> {
    let target = Target::parse(url)?;
    let connecting = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(true)?;
        let io = if target.secure {
            let tls = config.tls.clone().unwrap_or_else(default_tls);
            let name = ServerName::try_from(target.host.clone()).map_err(|_| {
                Error::InvalidUrl(format!("{} is not a valid TLS server name", target.host))
            })?;
            MaybeTls::Tls(Box::new(TlsConnector::from(tls).connect(name, tcp).await?))
        } else {
            MaybeTls::Plain(tcp)
        };
        handshake(io, &target.authority, &target.path, config).await
    };
    timeout(config.handshake_timeout, connecting)
        .await
        .map_err(|_| Error::HandshakeTimeout)?
}

/// Performs the client handshake over an already connected transport.
/// `host` is the `Host` header value, `path` the request target.
pub async fn handshake<S>(
    mut io: S,
    host: &str,
    path: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = ClientRequest::new(host, path);
    for protocol in &config.subprotocols {
        request = request.subprotocol(protocol);
    }
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    for offer in &config.deflate {
        request = request.deflate(*offer);
    }
    let (bytes, pending) = request.encode();
    io.write_all(&bytes).await?;
    let mut buf = BytesMut::new();
    let (response, consumed) = loop {
        buf.reserve(1024);
        if io.read_buf(&mut buf).await? == 0 {
            let eof = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed during the handshake",
            );
            return Err(eof.into());
        }
        if let Some(parsed) = pending.parse(&buf)? {
            break parsed;
        }
    };
    let leftover: Bytes = buf.split_off(consumed).freeze();
    let mut ws = WebSocket::from_raw(io, Role::Client, config.connection, leftover);
    ws.set_max_buffered(config.max_buffered);
    if let Some(negotiated) = response.deflate() {
        ws.set_deflate(*negotiated);
    }
    Ok((ws, response))
}

fn default_tls() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Invariant: the ring provider supports rustls's default versions.
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Where a `ws://` or `wss://` URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    secure: bool,
    host: String,
    port: u16,
    /// The `Host` header: host, and the port when it is not the default.
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::InvalidUrl(format!("{url}: {why}"));
        let (secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(invalid("the scheme must be ws:// or wss://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if authority.contains('@') {
            return Err(invalid("user information is not supported"));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed IPv6 bracket"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().map_err(|_| invalid("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(invalid("junk after the IPv6 address")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (
                    host.to_owned(),
                    port.parse().map_err(|_| invalid("bad port"))?,
                ),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Self {
            secure,
            host,
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// A plain or TLS TCP stream, as [`connect`] returns.
#[derive(Debug)]
pub enum MaybeTls {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let target = Target::parse("wss://example.test:8443/chat?room=1#frag").unwrap();
        assert_eq!(
            target,
            Target {
                secure: true,
                host: "example.test".into(),
                port: 8443,
                authority: "example.test:8443".into(),
                path: "/chat?room=1".into(),
            }
        );
        let target = Target::parse("ws://[::1]/").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 80));
        let target = Target::parse("ws://127.0.0.1:9001").unwrap();
        assert_eq!((target.port, target.path.as_str()), (9001, "/"));
        assert!(Target::parse("http://example.test/").is_err());
        assert!(Target::parse("ws://:80/").is_err());
        assert!(Target::parse("ws://host:port/").is_err());
    }
}
