//! The server side: accepting connections from a raw transport or a hyper
//! upgrade, and deciding who may connect (the `Origin` policy, connection
//! limits, refusals before the handshake).

mod limiter;
mod origin;

use std::{io, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tether_proto::{
    Config, Role,
    deflate::{DeflateConfig, PerMessageDeflate},
    handshake::{HandshakeError, HeadLimits, extensions::ExtensionOffer, server::Request},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout_at},
};

pub use self::{
    limiter::{ConnectionLimiter, ConnectionPermit},
    origin::{InvalidOrigin, OriginPattern, OriginPolicy},
};
use crate::{Error, WebSocket, stream::DEFAULT_MAX_BUFFERED};

/// How the server side of the handshake and the connection behave. Plain
/// data like every configuration: start from `Default` and assign the
/// fields that differ (see the [crate docs](crate)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Limits, close timeout and keepalive of each connection; one copy
    /// shared by every connection accepted with this configuration.
    pub connection: Arc<Config>,
    /// A client must finish its upgrade request within this time (default
    /// 10 s), so stalled handshakes cannot pile up.
    pub handshake_timeout: Duration,
    /// Size limits of the request head.
    pub head_limits: HeadLimits,
    /// Subprotocols we speak, in order of preference.
    pub subprotocols: Vec<String>,
    /// Outbound queue bound per connection, in bytes (default 1 MiB).
    pub max_buffered: usize,
    /// Which browser origins may connect (default: same origin only).
    pub origin: OriginPolicy,
    /// Refuse requests without an `Origin` header (default: accept them, as
    /// non-browser clients send none).
    pub require_origin: bool,
    /// Whether connections arrive over TLS, so same-origin expects `https`.
    pub secure: bool,
    /// permessage-deflate (RFC 7692) for clients that offer it; off by
    /// default.
    pub deflate: Option<DeflateConfig>,
}

impl ServerConfig {
    /// The permessage-deflate response element and parameters for
    /// `request`, if compression is on and one of its offers is acceptable.
    fn negotiate_deflate(&self, request: &Request) -> Option<(ExtensionOffer, PerMessageDeflate)> {
        request.negotiate_deflate(self.deflate.as_ref()?)
    }

    /// Runs the checks every upgrade passes before application code sees it.
    fn admit(&self, request: &Request) -> Result<(), HandshakeError> {
        self.origin.check(request, self.secure, self.require_origin)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            connection: Arc::default(),
            handshake_timeout: Duration::from_secs(10),
            head_limits: HeadLimits::default(),
            subprotocols: Vec::new(),
            max_buffered: DEFAULT_MAX_BUFFERED,
            origin: OriginPolicy::default(),
            require_origin: false,
            secure: false,
            deflate: None,
        }
    }
}

/// Performs the server handshake on `io` and returns the connection with the
/// client's request. Refusals are answered with their HTTP error before the
/// error is returned.
pub async fn accept<S>(io: S, config: &ServerConfig) -> Result<(WebSocket<S>, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, request, ()) = accept_with(io, config, async |_: &Request| Ok(())).await?;
    Ok((ws, request))
}

/// Like [`accept`], with an application hook: `authorize` sees the request
/// (path, query, headers, cookies) after the Origin policy passed and before
/// the 101, and either refuses it with an HTTP error (for example
/// `HandshakeError::Refused { status: 401, .. }`) or accepts it with
/// per-connection data `T` (a user id, a session) returned next to the
/// socket. The hook runs within the handshake deadline.
pub async fn accept_with<S, F, T>(
    mut io: S,
    config: &ServerConfig,
    authorize: F,
) -> Result<(WebSocket<S>, Request, T), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: AsyncFnOnce(&Request) -> Result<T, HandshakeError>,
{
    let deadline = Instant::now() + config.handshake_timeout;
    let (request, leftover) =
        match timeout_at(deadline, read_request(&mut io, &config.head_limits)).await {
            Err(_) => return Err(Error::HandshakeTimeout),
            Ok(Err(Error::Handshake(refusal))) => return Err(refuse(io, deadline, refusal).await),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(parsed)) => parsed,
        };
    if let Err(refusal) = config.admit(&request) {
        return Err(refuse(io, deadline, refusal).await);
    }
    let data = match timeout_at(deadline, authorize(&request)).await {
        Err(_) => return Err(Error::HandshakeTimeout),
        Ok(Err(refusal)) => return Err(refuse(io, deadline, refusal).await),
        Ok(Ok(data)) => data,
    };
    let subprotocol = request.negotiate_subprotocol(&config.subprotocols);
    let deflate = config.negotiate_deflate(&request);
    let extensions: Vec<ExtensionOffer> = deflate.iter().map(|(e, _)| e.clone()).collect();
    let response = request.accept_response(subprotocol, &extensions, &[]);
    match timeout_at(deadline, io.write_all(&response)).await {
        Err(_) => return Err(Error::HandshakeTimeout),
        Ok(result) => result?,
    }
    let mut ws = WebSocket::from_raw(io, Role::Server, config.connection.clone(), leftover);
    ws.set_max_buffered(config.max_buffered);
    if let Some((_, negotiated)) = deflate {
        ws.set_deflate(negotiated);
    }
    Ok((ws, request, data))
}

/// Turns a connection away before its handshake, for example when a
/// connection limit is reached: the request head is read (within
/// `linger`) so the refusal arrives as an HTTP response rather than a reset,
/// then `refusal` is answered and the connection closed.
pub async fn reject<S>(mut io: S, refusal: HandshakeError, linger: Duration) -> Error
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + linger;
    let _ = timeout_at(deadline, read_request(&mut io, &HeadLimits::default())).await;
    refuse(io, deadline, refusal).await
}

/// Reads until the request head is complete; returns it with the bytes that
/// followed it.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    limits: &HeadLimits,
) -> Result<(Request, Bytes), Error> {
    let mut buf = BytesMut::new();
    let mut scanned: usize = 0;
    loop {
        buf.reserve(1024);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed during the handshake",
            )
            .into());
        }
        // Parse the first read (to refuse garbage at once), then only when the
        // head may be complete or too long: a client dribbling one byte at a
        // time must not make us re-parse the whole head on every byte.
        let head_may_be_complete = buf[scanned.saturating_sub(3)..]
            .windows(4)
            .any(|w| w == b"\r\n\r\n");
        let first_read = scanned == 0;
        scanned = buf.len();
        if !(first_read || head_may_be_complete || buf.len() > limits.max_head_bytes) {
            continue;
        }
        if let Some((request, consumed)) =
            tether_proto::handshake::server::parse_request(&buf, limits)?
        {
            // Usually nothing follows the head: then the buffer is not split,
            // which would allocate to share it.
            let leftover = if consumed == buf.len() {
                Bytes::new()
            } else {
                buf.split_off(consumed).freeze()
            };
            return Ok((request, leftover));
        }
    }
}

/// Sends the refusal's HTTP response (best effort, within the deadline).
async fn refuse<S: AsyncWrite + Unpin>(
    mut io: S,
    deadline: Instant,
    refusal: HandshakeError,
) -> Error {
    let _ = timeout_at(deadline, async {
        io.write_all(&refusal.response()).await?;
        io.shutdown().await
    })
    .await;
    Error::Handshake(refusal)
}

/// The transport of a WebSocket accepted through hyper.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Validates a WebSocket upgrade request received by a hyper (or axum)
/// server. Returns the `101` response to send back and the upgrade to await
/// once it is sent; on refusal, the error's `http_status()` says what to
/// answer.
pub fn upgrade<B>(
    request: &mut http::Request<B>,
    config: &ServerConfig,
) -> Result<(http::Response<()>, PendingUpgrade), HandshakeError> {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let version = match request.version() {
        http::Version::HTTP_09 => (0, 9),
        http::Version::HTTP_10 => (1, 0),
        http::Version::HTTP_11 => (1, 1),
        _ => (2, 0),
    };
    let parsed = tether_proto::handshake::server::validate_upgrade(
        request.method().as_str(),
        version,
        target,
        headers,
    )?;
    // The same checks as `accept`: a hyper-mounted endpoint gets the Origin
    // policy too.
    config.admit(&parsed)?;
    let subprotocol = parsed.negotiate_subprotocol(&config.subprotocols);
    let deflate = config.negotiate_deflate(&parsed);
    let mut response = http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::SEC_WEBSOCKET_ACCEPT,
            tether_proto::handshake::accept_key(parsed.key().as_bytes()),
        );
    if let Some(protocol) = subprotocol {
        response = response.header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some((element, _)) = &deflate {
        response = response.header(http::header::SEC_WEBSOCKET_EXTENSIONS, element.to_string());
    }
    let response = response
        .body(())
        .map_err(|_| HandshakeError::Malformed("subprotocol is not a valid header value"))?;
    let pending = PendingUpgrade {
        on_upgrade: hyper::upgrade::on(request),
        config: config.connection.clone(),
        max_buffered: config.max_buffered,
        deflate: deflate.map(|(_, negotiated)| negotiated),
    };
    Ok((response, pending))
}

/// An upgrade hyper completes once the 101 response is sent.
#[derive(Debug)]
pub struct PendingUpgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    config: Arc<Config>,
    max_buffered: usize,
    deflate: Option<PerMessageDeflate>,
}

impl PendingUpgrade {
    /// Waits for hyper to hand over the connection.
    pub async fn wait(self) -> Result<WebSocket<Upgraded>, Error> {
        let upgraded = self.on_upgrade.await.map_err(io::Error::other)?;
        // hyper's Upgraded replays any bytes it read past the request itself,
        // so there is no leftover to pass here.
        let mut ws = WebSocket::from_raw(
            TokioIo::new(upgraded),
            Role::Server,
            self.config,
            Bytes::new(),
        );
        ws.set_max_buffered(self.max_buffered);
        if let Some(negotiated) = self.deflate {
            ws.set_deflate(negotiated);
        }
        Ok(ws)
    }
}
