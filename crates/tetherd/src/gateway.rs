//! `tetherd serve`: the gateway's listener, its lifecycle and graceful drain.
//!
//! start → ready (health 200) → SIGTERM/SIGINT: stop accepting, health 503,
//! every client told to reconnect elsewhere (disconnect push 3001, close
//! 1001) → exit when all are gone or the drain deadline passes.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tether::server::OriginPolicy;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::{Instant, sleep, timeout_at},
};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::{
    auth::Verifier,
    broker::{Broker, memory::MemoryBroker, redis::RedisBroker},
    client_addr::{Admission, read_proxy_header},
    config::{self, Config},
    echo::{listen, no_delay},
    http,
    node::Node,
    tls,
};

/// Serves until SIGTERM or SIGINT, then drains.
pub(crate) fn run(config: Config) -> io::Result<()> {
    let threads = (config.threads > 0).then_some(config.threads);
    crate::runtime::run(threads, serve(config))
}

async fn serve(config: Config) -> io::Result<()> {
    let broker: Arc<dyn Broker> = match &config.broker {
        config::Broker::Memory => Arc::new(MemoryBroker::new()),
        config::Broker::Redis { url } => {
            let broker = RedisBroker::connect(url).await.map_err(|error| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("broker {url}: {error}"),
                )
            })?;
            info!(%url, "broker: Redis");
            broker
        }
    };
    let verifier = Verifier::from_config(&config.auth)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let tls = match config.tls.files() {
        Some((cert, key)) => Some(tls::acceptor(cert.to_owned(), key.to_owned())?),
        None => None,
    };
    let listener = listen(config.listen)?;
    let drain_deadline = config.drain.deadline;
    let node = Node::new(config, broker, verifier);
    node.set_address(listener.local_addr()?);
    if node.server_config.origin == OriginPolicy::Any {
        warn!(
            "security.allow_origins has '*': any web page may connect with its visitors' cookies"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(listen = %listener.local_addr()?, scheme, node = %node.name, "tetherd gateway listening");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if node.trusted_proxies.trusts(peer.ip()) => {
                    tokio::spawn(proxied(node.clone(), stream, peer, tls.clone()));
                }
                Ok((stream, peer)) => {
                    tokio::spawn(admit(node.clone(), stream, peer, tls.clone()));
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    drain(&node, drain_deadline).await;
    Ok(())
}

/// Tells every client to go and waits for them, at most `deadline`.
async fn drain(node: &Node, deadline: Duration) {
    let clients = node.session_count();
    info!(
        clients,
        ?deadline,
        "draining: telling every client to reconnect elsewhere"
    );
    node.start_drain();
    // Leave the registry now: with no clients to wait for, the process may
    // exit before the announcer gets to it.
    if let Err(error) = node.broker.withdraw(&node.name).await {
        warn!(%error, "could not leave the node registry; the entry expires");
    }
    let until = Instant::now() + deadline;
    while node.session_count() > 0 && Instant::now() < until {
        sleep(Duration::from_millis(50)).await;
    }
    let left = node.session_count();
    if left > 0 {
        warn!(
            left,
            "drain deadline passed with clients still connected; exiting"
        );
    } else {
        info!("drained; exiting");
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = terminate => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

/// Serves `client`'s connection if the connection limits have room for
/// it; otherwise turns it away: a 503 where there is no TLS to go through
/// first, else just the close.
async fn admit(node: Arc<Node>, stream: TcpStream, client: SocketAddr, tls: Option<TlsAcceptor>) {
    match node.limiter.try_acquire(client.ip()) {
        Ok(permit) => {
            let admission = Admission::Counted(Arc::new(permit));
            connection(node, stream, client, tls, admission).await;
        }
        Err(refusal) => {
            node.metrics.refused(refusal.http_status());
            info!(peer = %client, reason = %refusal, "connection refused");
            if tls.is_none() {
                tether::server::reject(stream, refusal, Duration::from_secs(1)).await;
            }
        }
    }
}

/// A connection from a trusted proxy. With `security.proxy_protocol` its
/// PROXY header names the client, who is counted and logged from then on;
/// otherwise (and for the proxy's own health checks) each upgrade's
/// `X-Forwarded-For` does.
async fn proxied(
    node: Arc<Node>,
    mut stream: TcpStream,
    proxy: SocketAddr,
    tls: Option<TlsAcceptor>,
) {
    if !node.config.security.proxy_protocol {
        return connection(node, stream, proxy, tls, Admission::PerUpgrade).await;
    }
    let deadline = Instant::now() + node.server_config.handshake_timeout;
    match read_proxy_header(&mut stream, deadline).await {
        Ok(Some(client)) => admit(node, stream, client, tls).await,
        Ok(None) => connection(node, stream, proxy, tls, Admission::PerUpgrade).await,
        Err(error) => {
            info!(%proxy, %error, "no valid PROXY header from a trusted proxy (security.proxy_protocol)")
        }
    }
}

async fn connection(
    node: Arc<Node>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    admission: Admission,
) {
    no_delay(&stream);
    match tls {
        None => serve_http(node, stream, peer, admission).await,
        Some(tls) => {
            let deadline = Instant::now() + node.server_config.handshake_timeout;
            match timeout_at(deadline, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_http(node, stream, peer, admission).await,
                Ok(Err(error)) => info!(%peer, %error, "TLS handshake failed"),
                Err(_) => info!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1.1 on one connection, with WebSocket upgrades. The request head
/// must arrive within the handshake timeout.
pub(crate) async fn serve_http<S>(
    node: Arc<Node>,
    stream: S,
    peer: SocketAddr,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The WebSocket upgrade's limits, on every route: head size and header
    // count (431 beyond them), and the head must arrive within the
    // handshake timeout (also while a kept-alive connection waits for its
    // next request).
    let limits = node.server_config.head_limits;
    let head_timeout = node.server_config.handshake_timeout;
    let service =
        service_fn(move |request| http::handle(node.clone(), peer, admission.clone(), request));
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_head_bytes)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
}
