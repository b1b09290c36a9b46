//! `tetherd echo`: every text and binary message goes back unchanged.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tether::{
    CloseFrame, Config, Error, Initiator, Limits, Message, ServerConfig, TrySendError, WebSocket,
    deflate::DeflateConfig,
    handshake::server::Request,
    idle::{Dormant, DormantWebSocket, IdleExt, IdlePool, Parker, Received},
    server::{ConnectionLimiter, ConnectionPermit, OriginPolicy},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::Semaphore,
    time::{Instant, timeout, timeout_at},
};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::{config::Security, tls};

/// Options of `tetherd echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core); 1 runs everything on
    /// one thread, without work stealing.
    #[arg(long)]
    threads: Option<usize>,
    /// Largest accepted frame payload, in bytes.
    #[arg(long, default_value_t = Limits::default().max_frame_size)]
    max_frame_size: usize,
    /// Largest accepted message, in bytes.
    #[arg(long, default_value_t = Limits::default().max_message_size)]
    max_message_size: usize,
    /// Most fragments in one message.
    #[arg(long, default_value_t = Limits::default().max_fragments)]
    max_fragments: usize,
    /// Seconds a client has to complete its upgrade request.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds of silence before a keepalive ping; 0 turns keepalive off.
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
    /// A browser origin allowed to connect (repeatable): `https://app.example`,
    /// `https://*.example.com`, `null`, or `*` for any. Without it, only
    /// same-origin pages may connect.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Refuse clients that send no `Origin` header.
    #[arg(long)]
    require_origin: bool,
    /// Most connections open at once; more are refused with 503.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Most connections open at once from one client address; more are
    /// refused with 503.
    #[arg(long, default_value_t = 10_000)]
    max_connections_per_ip: usize,
    /// Sustained messages per second one connection may send; beyond it the
    /// connection is closed with 1008. 0 turns the limit off. The default
    /// leaves room for load tests of this echo endpoint.
    #[arg(long, default_value_t = 100_000)]
    max_messages_per_second: u32,
    /// Messages one connection may send at once after a quiet period.
    #[arg(long, default_value_t = 200_000)]
    message_burst: u32,
    /// Seconds without any traffic (pings and pongs count) before a
    /// connection is closed with 1001; 0 turns it off.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Serve `wss://` with this PEM certificate chain (with --tls-key);
    /// SIGHUP re-reads both files.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept permessage-deflate (RFC 7692) from clients that offer it. By
    /// default without context takeover either way, so an idle connection
    /// holds no compression state.
    #[arg(long)]
    deflate: bool,
    /// With --deflate: keep the compression context between messages in
    /// both directions where the client allows it (better ratio, about
    /// 300 KiB of zlib state per connection).
    #[arg(long, requires = "deflate")]
    deflate_context_takeover: bool,
    /// With --deflate: messages shorter than this many bytes go uncompressed.
    #[arg(long, requires = "deflate", default_value_t = DeflateConfig::default().threshold)]
    deflate_threshold: usize,
}

impl Args {
    fn server_config(&self) -> io::Result<ServerConfig> {
        OriginPolicy::from_list(&self.allow_origins).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--allow-origin: {error}"),
            )
        })?;
        let secs = Duration::from_secs;
        let security = Security {
            allow_origins: self.allow_origins.clone(),
            require_origin: self.require_origin,
            handshake_timeout: secs(self.handshake_timeout),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            client_message_rate: self.max_messages_per_second,
            client_message_burst: self.message_burst,
            idle_timeout: secs(self.idle_timeout),
            // Ping after this much silence, and give up after as long again.
            ping_interval: secs(self.ping_interval),
            pong_timeout: secs(self.ping_interval),
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            max_fragments: self.max_fragments,
        };
        let mut config = security.server_config(false);
        config.deflate = self.deflate.then(|| {
            let reset = !self.deflate_context_takeover;
            let mut deflate = DeflateConfig::default();
            deflate.server_no_context_takeover = reset;
            deflate.client_no_context_takeover = reset;
            deflate.threshold = self.deflate_threshold;
            deflate
        });
        Ok(config)
    }
}

/// Serves until the process is killed.
pub(crate) fn run(args: Args) -> io::Result<()> {
    crate::runtime::run(args.threads, serve(args))
}

async fn serve(args: Args) -> io::Result<()> {
    let tls = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let mut config = args.server_config()?;
    config.secure = tls.is_some();
    let config = Arc::new(config);
    let listener = listen(args.listen)?;
    match &config.origin {
        OriginPolicy::Any => {
            warn!("--allow-origin '*': any web page may connect with its visitors' cookies")
        }
        OriginPolicy::SameOrigin => info!("origin policy: same origin only"),
        policy => info!(?policy, "origin policy: allow-list"),
    }
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    info!(listen = %listener.local_addr()?, scheme = %scheme, "tetherd echo listening");
    let limiter = ConnectionLimiter::new(args.max_connections, args.max_connections_per_ip);
    let mut idle: IdlePool<Parked> = IdlePool::new()?;
    let parker = idle.parker();
    let waking = async {
        loop {
            (*idle.next().await?).resume(parker.clone());
        }
    };
    tokio::select! {
        result = accept_loop(listener, tls, config, limiter, parker.clone()) => result,
        result = waking => result,
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    config: Arc<ServerConfig>,
    limiter: Arc<ConnectionLimiter>,
    parker: Parker<Parked>,
) -> io::Result<()> {
    // Refusals linger briefly to answer with a 503; cap how many at once so
    // a flood beyond the limits cannot grow without bound.
    let refusals = Arc::new(Semaphore::new(256));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match (limiter.try_acquire(peer.ip()), &tls) {
                (Ok(permit), None) => {
                    let parker = parker.clone();
                    tokio::spawn(connection(stream, peer, config.clone(), permit, parker));
                }
                (Ok(permit), Some(tls)) => {
                    let (tls, config) = (tls.clone(), config.clone());
                    tokio::spawn(tls_connection(stream, peer, tls, config, permit));
                }
                (Err(refusal), tls) => {
                    let status = refusal.http_status();
                    let refused_total = count_refusal(status);
                    info!(%peer, status, reason = %refusal, refused_total, "connection refused");
                    if let Ok(slot) = refusals.clone().try_acquire_owned() {
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let linger = Duration::from_secs(1);
                            match tls {
                                None => {
                                    tether::server::reject(stream, refusal, linger).await;
                                }
                                Some(tls) => {
                                    // The TLS handshake shares the linger.
                                    let deadline = Instant::now() + linger;
                                    if let Ok(Ok(stream)) =
                                        timeout_at(deadline, tls.accept(stream)).await
                                    {
                                        let left =
                                            deadline.saturating_duration_since(Instant::now());
                                        tether::server::reject(stream, refusal, left).await;
                                    }
                                }
                            }
                            drop(slot);
                        });
                    }
                }
            },
            Err(error) => {
                // Out of file descriptors or a transient network error: back
                // off instead of spinning, keep serving existing connections.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A listener with a backlog deep enough for bursts of new connections (the
/// default 128 drops SYNs when thousands of clients connect at once), whose
/// connections send small frames at once (`TCP_NODELAY`, see [`no_delay`]).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Turns Nagle's algorithm off on a connection accepted by [`listen`]: Linux
/// copies `TCP_NODELAY` from the listener to every accepted socket, which
/// saves a system call per connection; other systems get the call.
pub(crate) fn no_delay(stream: &TcpStream) {
    if !cfg!(target_os = "linux") {
        let _ = stream.set_nodelay(true);
    }
}

/// Holds what is written next until the shutdown that ends the connection,
/// so the close reply and the FIN leave in one segment rather than two: one
/// packet fewer for both ends of every closed connection. The shutdown
/// follows the close reply at once (or when the close timeout cuts it short),
/// and Linux sends a corked segment after 200 ms regardless.
fn cork(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(stream).set_tcp_cork(true);
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    permit: ConnectionPermit,
    parker: Parker<Parked>,
) {
    no_delay(&stream);
    let accepted = tether::accept(stream, &config).await;
    if let Some(echo) = unpack(accepted, peer, permit) {
        tokio::spawn(echo.run_parking(PARK_FRESH_AFTER, parker));
    }
}

/// How long an echo may wait for room in the outbound queue. A client that
/// keeps sending but stops reading is as dead as one that stops answering
/// pings, so it gets the keepalive timeout (30 s when keepalive is off).
fn send_timeout(config: &Config) -> Duration {
    let keepalive = config.keepalive;
    if keepalive.interval.is_some() && !keepalive.timeout.is_zero() {
        keepalive.timeout
    } else {
        Duration::from_secs(30)
    }
}

/// Like [`connection`], after a TLS handshake; the TLS handshake and the
/// upgrade share one `--handshake-timeout`.
async fn tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    config: Arc<ServerConfig>,
    permit: ConnectionPermit,
) {
    no_delay(&stream);
    let deadline = Instant::now() + config.handshake_timeout;
    let handshakes = async {
        let stream = match tls.accept(stream).await {
            Ok(stream) => stream,
            Err(error) => {
                info!(%peer, %error, "TLS handshake failed");
                return None;
            }
        };
        Some(tether::accept(stream, &config).await)
    };
    match Box::pin(timeout_at(deadline, handshakes)).await {
        Ok(Some(accepted)) => {
            if let Some(echo) = unpack(accepted, peer, permit) {
                tokio::spawn(echo.run());
            }
        }
        Ok(None) => {}
        Err(_) => info!(%peer, error = %Error::HandshakeTimeout, "handshake failed"),
    }
}

/// Refused handshakes since start, by HTTP status (400, 403, 405, 426, 431,
/// 503, other), for the logs now and the gateway's metrics later.
static REFUSALS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Counts a refusal; returns how many with this status so far.
fn count_refusal(status: u16) -> u64 {
    let slot = match status {
        400 => 0,
        403 => 1,
        405 => 2,
        426 => 3,
        431 => 4,
        503 => 5,
        _ => 6,
    };
    REFUSALS[slot].fetch_add(1, Ordering::Relaxed) + 1
}

/// Logs a failed handshake, or returns the connection to echo on.
fn unpack<S>(
    accepted: Result<(WebSocket<S>, Request), Error>,
    peer: SocketAddr,
    permit: ConnectionPermit,
) -> Option<Box<Echo<WebSocket<S>>>> {
    let (ws, request) = match accepted {
        Ok(accepted) => accepted,
        Err(Error::Handshake(refusal)) => {
            let status = refusal.http_status();
            let refused_total = count_refusal(status);
            info!(%peer, status, reason = %refusal, refused_total, "handshake refused");
            return None;
        }
        Err(error) => {
            info!(%peer, %error, "handshake failed");
            return None;
        }
    };
    Some(Box::new(Echo {
        ws,
        client: Client::new(
            peer.port(),
            request.path(),
            request.origin().unwrap_or("-"),
            permit,
        ),
        ending: None,
    }))
}

/// How long a plain connection stays on its task after its last input
/// before it is parked in the idle pool: long enough that a connection in
/// steady use is not parked between bursts (parking and waking cost four
/// system calls and a task spawn).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// The same for a connection that has said nothing since its upgrade: most
/// clients speak at once (or close at once), and those that do not are
/// parked before thousands of them pile up as tasks.
const PARK_FRESH_AFTER: Duration = Duration::from_millis(20);

/// An echo connection with nothing to do: no task, no timer, no buffers.
type Parked = Box<Echo<DormantWebSocket>>;

/// One echoing connection, `W` its socket: a [`WebSocket`] while it runs,
/// a [`DormantWebSocket`] while it waits in the idle pool. It lives in a
/// box, driven by a method that takes the box, so that a running
/// connection's task holds this and a small future: nothing of the
/// handshake's task, and no second copy of the socket (an async fn keeps
/// its arguments and its locals apart, so a socket passed by value is
/// stored twice).
struct Echo<W> {
    ws: W,
    client: Client,
    /// Boxed: set only as the connection ends.
    ending: Option<Box<Ending>>,
}

/// Who a connection is, for its log lines, packed tight: a parked
/// connection is mostly this and its protocol state, and 15,000 of them
/// should cost a few megabytes (`Echo<DormantWebSocket>` fits jemalloc's
/// 192-byte class).
struct Client {
    /// The connection counts against the limits until it ends; the permit
    /// holds the client's address too.
    permit: ConnectionPermit,
    port: u16,
    /// The request's path, a space, and its origin (or `-`): one allocation
    /// for both. A request target has no spaces, so the first one splits.
    request: Box<str>,
}

impl Client {
    fn new(port: u16, path: &str, origin: &str, permit: ConnectionPermit) -> Self {
        Self {
            permit,
            port,
            request: format!("{path} {origin}").into(),
        }
    }

    /// The peer's address, the origin and the path.
    fn parts(&self) -> (SocketAddr, &str, &str) {
        let (path, origin) = self.request.split_once(' ').unwrap_or((&self.request, "-"));
        (SocketAddr::new(self.permit.ip(), self.port), origin, path)
    }
}

/// How an echo connection ends, for its last log line.
enum Ending {
    /// The close frame received (`None` when it had no code).
    Closed(Option<CloseFrame>),
    /// The first error, which says more than a close frame after it.
    Failed(Error),
}

impl<W> Echo<W> {
    /// Puts `ws` in place of the socket, which it returns: with `()` to
    /// take the socket out, then with its other form.
    fn swap_ws<V>(self, ws: V) -> (W, Echo<V>) {
        let Self {
            ws: old,
            client,
            ending,
        } = self;
        (old, Echo { ws, client, ending })
    }

    fn dropped(&self, error: &io::Error, reason: &str) {
        let (peer, origin, path) = self.client.parts();
        info!(%peer, %origin, %path, %error, reason, "connection dropped");
    }
}

impl Dormant for Echo<DormantWebSocket> {
    fn deadline(&self) -> Option<std::time::Instant> {
        self.ws.deadline()
    }
}

impl AsRawFd for Echo<DormantWebSocket> {
    fn as_raw_fd(&self) -> RawFd {
        self.ws.as_raw_fd()
    }
}

impl Echo<DormantWebSocket> {
    /// Back from the idle pool: runs on a task of its own again.
    fn resume(self, parker: Parker<Parked>) {
        let (dormant, echo) = self.swap_ws(());
        match dormant.wake() {
            Ok(ws) => {
                tokio::spawn(Box::new(echo.swap_ws(ws).1).run_parking(PARK_AFTER, parker));
            }
            Err(error) => echo.dropped(&error, "the runtime refused the socket back"),
        }
    }
}

impl Echo<WebSocket<TcpStream>> {
    /// Echoes until the connection closes, parking it in the idle pool
    /// whenever nothing arrived for `quiet` and nothing is in flight.
    async fn run_parking(mut self: Box<Self>, mut quiet: Duration, parker: Parker<Parked>) {
        loop {
            let received = match self.ws.recv_or_idle(quiet).await {
                Received::Message(message) => Ok(message),
                Received::Error(error) => Err(error),
                Received::Idle => return self.park(&parker),
                Received::Ended => break,
            };
            if matches!(received, Ok(Message::Close(_))) {
                cork(self.ws.transport());
            }
            if !self.handle(received).await {
                return;
            }
            quiet = PARK_AFTER;
        }
        self.log_end();
    }

    fn park(self: Box<Self>, parker: &Parker<Parked>) {
        let (ws, echo) = (*self).swap_ws(());
        match ws.into_dormant() {
            Ok(dormant) => {
                if let Err((parked, error)) = parker.park(Box::new(echo.swap_ws(dormant).1)) {
                    parked.dropped(&error, "the idle pool refused the socket");
                }
            }
            Err(error) => echo.dropped(&error, "the runtime did not let the socket go"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Echo<WebSocket<S>> {
    /// Echoes until the connection closes, then logs how it ended.
    async fn run(mut self: Box<Self>) {
        // Errors do not end the loop: the stream still flushes our close
        // frame and shuts the transport down, then ends with `None`.
        while let Some(received) = self.ws.recv().await {
            if !self.handle(received).await {
                return;
            }
        }
        self.log_end();
    }

    /// Echoes a message or notes how the connection ends; `false` when the
    /// client stopped reading and the connection is dropped.
    async fn handle(&mut self, received: Result<Message, Error>) -> bool {
        match received {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                // Queue without waiting: the next recv() writes every
                // queued echo in one batch before it waits for more input.
                if let Err(TrySendError::Full(message)) = self.ws.try_send(message) {
                    // Boxed: the slow path's state and timer need not
                    // live in every idle connection's future.
                    return Box::pin(self.send_waiting(message)).await;
                }
            }
            Ok(Message::Close(frame)) => self.ended(Ending::Closed(frame)),
            Ok(_) => {}
            Err(error) => self.ended(Ending::Failed(error)),
        }
        true
    }

    /// Waits for room to queue `message`; `false` when the client stopped
    /// reading.
    async fn send_waiting(&mut self, message: Message) -> bool {
        let send_timeout = send_timeout(self.ws.config());
        match timeout(send_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                self.ended(Ending::Failed(error));
                true
            }
            Err(_) => {
                let (peer, origin, path) = self.client.parts();
                let reason = "the client stopped reading: outbound queue full";
                info!(%peer, %origin, %path, timeout = ?send_timeout, reason, "connection dropped");
                false
            }
        }
    }

    fn ended(&mut self, ending: Ending) {
        if !matches!(self.ending.as_deref(), Some(Ending::Failed(_))) {
            self.ending = Some(Box::new(ending));
        }
    }

    fn log_end(&self) {
        let (peer, origin, path) = self.client.parts();
        let by = match self.ws.closed_by() {
            Some(Initiator::Local) => "server",
            Some(Initiator::Peer) => "client",
            None => "-",
        };
        match self.ending.as_deref() {
            Some(Ending::Failed(Error::Protocol(error))) => {
                let code = error.close_code().0;
                info!(%peer, %origin, %path, code, reason = %error, closed_by = by, "connection failed");
            }
            Some(Ending::Failed(error)) => {
                info!(%peer, %origin, %path, %error, closed_by = by, "connection failed")
            }
            Some(Ending::Closed(Some(frame))) => {
                let (code, reason) = (frame.code.0, &frame.reason);
                info!(%peer, %origin, %path, code, %reason, closed_by = by, "connection closed");
            }
            Some(Ending::Closed(None)) | None => {
                info!(%peer, %origin, %path, closed_by = by, "connection closed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parked connection is this struct in its own allocation, which
    /// jemalloc rounds up to a size class: past 192 bytes it takes 224.
    #[test]
    fn a_parked_connection_fits_the_192_byte_class() {
        assert!(size_of::<Echo<DormantWebSocket>>() <= 192);
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        no_delay(&accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
