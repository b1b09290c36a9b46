//! `tetherd echo`: every text and binary message goes back unchanged.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tether::{
    Error, Initiator, Keepalive, Limits, Message, OriginPolicy, ServerConfig, TrySendError,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{info, warn};

/// Options of `tetherd echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core).
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
}

impl Args {
    fn server_config(&self) -> io::Result<ServerConfig> {
        let limits = Limits::default()
            .max_frame_size(self.max_frame_size)
            .max_message_size(self.max_message_size)
            .max_fragments(self.max_fragments);
        let keepalive = match self.ping_interval {
            0 => Keepalive::OFF,
            secs => Keepalive {
                interval: Some(Duration::from_secs(secs)),
                timeout: Duration::from_secs(secs),
            },
        };
        let origin = OriginPolicy::from_list(&self.allow_origins).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--allow-origin: {error}"),
            )
        })?;
        let defaults = ServerConfig::default();
        let connection = defaults.connection.limits(limits).keepalive(keepalive);
        Ok(defaults
            .connection(connection)
            .handshake_timeout(Duration::from_secs(self.handshake_timeout))
            .origin(origin)
            .require_origin(self.require_origin))
    }
}

/// Serves until the process is killed.
pub(crate) fn run(args: Args) -> io::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> io::Result<()> {
    let config = Arc::new(args.server_config()?);
    let listener = listen(args.listen)?;
    match &config.origin {
        OriginPolicy::Any => {
            warn!("--allow-origin '*': any web page may connect with its visitors' cookies")
        }
        OriginPolicy::SameOrigin => info!("origin policy: same origin only"),
        policy => info!(?policy, "origin policy: allow-list"),
    }
    info!(listen = %listener.local_addr()?, "tetherd echo listening");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, config.clone()));
            }
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
/// default 128 drops SYNs when thousands of clients connect at once).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn connection(stream: TcpStream, peer: SocketAddr, config: Arc<ServerConfig>) {
    let _ = stream.set_nodelay(true);
    // Boxed so the handshake's state is freed once it is done, instead of
    // staying inside every connection's task for its whole life.
    let (mut ws, request) = match Box::pin(tether::accept(stream, &config)).await {
        Ok(accepted) => accepted,
        Err(Error::Handshake(refusal)) => {
            info!(%peer, status = refusal.http_status(), reason = %refusal, "handshake refused");
            return;
        }
        Err(error) => {
            info!(%peer, %error, "handshake failed");
            return;
        }
    };
    let origin = request.origin().unwrap_or("-").to_owned();
    let path = request.path().to_owned();
    drop(request);
    let mut close = None;
    let mut failure = None;
    // Errors do not end the loop: the stream still flushes our close frame
    // and shuts the transport down, then ends with `None`.
    while let Some(received) = ws.recv().await {
        match received {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                // Queue without waiting: the next recv() writes every queued
                // echo in one batch before it waits for more input.
                if let Err(TrySendError::Full(message)) = ws.try_send(message) {
                    if let Err(error) = ws.send(message).await {
                        failure.get_or_insert(error);
                    }
                }
            }
            Ok(Message::Close(frame)) => close = frame,
            Ok(_) => {}
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    let by = match ws.closed_by() {
        Some(Initiator::Local) => "server",
        Some(Initiator::Peer) => "client",
        None => "-",
    };
    match (failure, close) {
        (Some(Error::Protocol(error)), _) => {
            let code = error.close_code().0;
            info!(%peer, %origin, %path, code, reason = %error, closed_by = by, "connection failed");
        }
        (Some(error), _) => {
            info!(%peer, %origin, %path, %error, closed_by = by, "connection failed")
        }
        (None, Some(frame)) => {
            let (code, reason) = (frame.code.0, frame.reason);
            info!(%peer, %origin, %path, code, %reason, closed_by = by, "connection closed");
        }
        (None, None) => info!(%peer, %origin, %path, closed_by = by, "connection closed"),
    }
}
