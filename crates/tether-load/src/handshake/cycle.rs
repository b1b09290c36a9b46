//! One churn cycle on a raw socket: connect, upgrade, optionally one echo,
//! close (RFC 6455 §7.1.1: the client sends a masked close, reads the
//! server's close, and waits for the server to close TCP first).
//!
//! `tether`'s `WebSocket` would spend more CPU per cycle than the server it
//! measures (its connection state, queues and a shutdown call). Here the
//! request is one write, the response is checked by `tether_proto`'s
//! handshake (status, `Upgrade`, `Connection`, `Sec-WebSocket-Accept` for a
//! fresh random key), and frames go through the load generator's own client
//! framing ([`crate::framing`]), which enforces the rules a client enforces
//! on server frames (§5.1 unmasked, §5.2 no reserved bits, §5.4 fragment
//! order, §5.5 control frames); the server's close is checked here (§7.4
//! close codes).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tether_proto::{CloseCode, CloseFrame, frame::OpCode, handshake::client::ClientRequest};
use tokio::{io::AsyncReadExt as _, net::TcpStream, time::timeout};

use crate::{
    framing::{self, Frame, Outbox, ServerFrames, UpgradeError},
    sources::connect_from,
};

/// How long connect plus upgrade may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the echo and the close may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the message exchanged with `--message` holds.
const PROBE: &[u8] = b"tether-load handshake probe";

/// Longest data frame accepted; nothing this tool expects is longer, so a
/// longer one is an error rather than a reason to read on.
const MAX_FRAME: usize = 4096;

/// What a cycle reports when the server ends the connection too early.
const CLOSED: &str = "the server closed the connection";

/// What a cycle reports when the echo is not the message.
const DIFFERS: &str = "the reply differs from the message";

/// One cycle's handshake and whole-cycle latency, or what failed.
pub(super) type CycleResult = Result<(Duration, Duration), String>;

/// Where cycles go and the request they send (a fresh key per encode).
#[derive(Debug)]
pub(super) struct Churn {
    pub(super) addr: SocketAddr,
    pub(super) request: ClientRequest,
    pub(super) message: bool,
}

impl Churn {
    /// Opens a connection from `source`, optionally exchanges a message,
    /// and closes it.
    pub(super) async fn cycle(&self, source: IpAddr) -> CycleResult {
        let start = std::time::Instant::now();
        let (mut tcp, mut inbound) = timeout(HANDSHAKE_TIMEOUT, self.open(source))
            .await
            .unwrap_or_else(|_| Err("connect: timed out".to_owned()))?;
        let handshake = start.elapsed();
        let exchange = async {
            let mut outbox = Outbox::new();
            if self.message {
                inbound
                    .echo(&mut tcp, &mut outbox)
                    .await
                    .map_err(|error| format!("echo: {error}"))?;
            }
            inbound
                .close(&mut tcp, &mut outbox)
                .await
                .map_err(|error| format!("close: {error}"))
        };
        timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err("timed out after the handshake".to_owned()))?;
        Ok((handshake, start.elapsed()))
    }

    /// TCP connect from `source` and the upgrade (RFC 6455 §4.1).
    async fn open(&self, source: IpAddr) -> Result<(TcpStream, Inbound), String> {
        // No TCP_NODELAY: each write follows a read that acknowledged
        // everything sent before, so Nagle's algorithm never holds one.
        let mut tcp = connect_from(source, self.addr)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let mut inbound = Inbound::new();
        match framing::upgrade(&mut tcp, &self.request, &mut inbound.buf).await {
            Ok(consumed) => {
                inbound.start = consumed;
                Ok((tcp, inbound))
            }
            Err(UpgradeError::Io(error)) => Err(format!("upgrade: {error}")),
            Err(UpgradeError::Closed) => Err(format!("upgrade: {CLOSED}")),
            Err(UpgradeError::Refused(error)) => Err(format!("upgrade: {error}")),
        }
    }
}

/// Bytes read from one connection, decoded from `start`; the steps of the
/// exchange that read them also send what the server is to answer.
struct Inbound {
    buf: Vec<u8>,
    start: usize,
    frames: ServerFrames,
}

impl Inbound {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(1024),
            start: 0,
            frames: ServerFrames::with_max_data_frame(MAX_FRAME as u64),
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads more; returns how many bytes came, 0 at end of stream.
    async fn fill(&mut self, tcp: &mut TcpStream) -> io::Result<usize> {
        // What is left is at most a partial frame header or control frame,
        // so the buffer stays bounded however many frames the server sends.
        self.buf.drain(..self.start);
        self.start = 0;
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(self.buf.len());
        }
        tcp.read_buf(&mut self.buf).await
    }

    /// Hands each piece the server sends to `on_frame`, reading as needed,
    /// until it returns a value; [`CLOSED`] if the connection ends first.
    async fn until<T>(
        &mut self,
        tcp: &mut TcpStream,
        mut on_frame: impl FnMut(Frame<'_>) -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        loop {
            let (used, frame) = self.frames.decode(&self.buf[self.start..])?;
            self.start += used;
            if let Some(frame) = frame {
                if let Some(done) = on_frame(frame)? {
                    return Ok(done);
                }
            } else if used == 0 && self.fill(tcp).await.map_err(|error| error.to_string())? == 0 {
                return Err(CLOSED.to_owned());
            }
        }
    }

    /// Sends [`PROBE`] and reads its echo, however the server fragments it.
    async fn echo(&mut self, tcp: &mut TcpStream, outbox: &mut Outbox) -> Result<(), String> {
        outbox.push_frame(OpCode::Binary, PROBE);
        outbox
            .write_all(tcp)
            .await
            .map_err(|error| error.to_string())?;
        let mut echoed = 0;
        self.until(tcp, |frame| match frame {
            Frame::Close(_) => Err(CLOSED.to_owned()),
            Frame::Ping(_) | Frame::Pong(_) => Ok(None),
            Frame::Data {
                start: Some(OpCode::Text),
                ..
            } => Err(DIFFERS.to_owned()),
            Frame::Data { bytes, last, .. } => {
                if PROBE.get(echoed..echoed + bytes.len()) != Some(bytes) {
                    return Err(DIFFERS.to_owned());
                }
                echoed += bytes.len();
                match last {
                    false => Ok(None),
                    true if echoed == PROBE.len() => Ok(Some(())),
                    true => Err(DIFFERS.to_owned()),
                }
            }
        })
        .await
    }

    /// Sends our close frame, reads the server's, then waits for the server
    /// to close TCP (§7.1.1); data frames still in flight are skipped.
    async fn close(&mut self, tcp: &mut TcpStream, outbox: &mut Outbox) -> Result<(), String> {
        outbox.push_close(CloseCode::NORMAL.0, "");
        outbox
            .write_all(tcp)
            .await
            .map_err(|error| error.to_string())?;
        let closed = self
            .until(tcp, |frame| match frame {
                Frame::Close(payload) => CloseFrame::parse(payload)
                    .map(|_| Some(()))
                    .map_err(|error| error.to_string()),
                _ => Ok(None),
            })
            .await;
        match closed {
            Err(error) if error == CLOSED => {
                return Err("no close frame from the server".to_owned());
            }
            closed => closed?,
        }
        if !self.unread().is_empty() {
            return Err("data after the server's close frame".to_owned());
        }
        match self.fill(tcp).await {
            Ok(0) => Ok(()),
            Ok(_) => Err("data after the server's close frame".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tether::{Message, ServerConfig};
    use tokio::{io::AsyncWriteExt as _, net::TcpListener};

    use super::*;

    fn churn(addr: SocketAddr, message: bool) -> Churn {
        Churn {
            addr,
            request: ClientRequest::new(addr.to_string(), "/"),
            message,
        }
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A `tether` echo server for `cycles` connections.
    async fn echo_server(cycles: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..cycles {
                let (tcp, _) = listener.accept().await.unwrap();
                let (mut ws, _) = tether::accept(tcp, &ServerConfig::default()).await.unwrap();
                while let Some(Ok(message)) = ws.recv().await {
                    if matches!(message, Message::Binary(_)) {
                        ws.send(message).await.unwrap();
                    }
                }
            }
        });
        addr
    }

    /// A scripted server: answers each upgrade with a 101 whose accept key
    /// `accept` computes from the client's key, then writes `frames` (after
    /// reading the client's first frame) and closes. Returns the keys the
    /// clients sent.
    async fn scripted_server(
        cycles: usize,
        accept: fn(&str) -> String,
        frames: &'static [u8],
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = tokio::spawn(async move {
            let mut keys = Vec::new();
            for _ in 0..cycles {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(tcp.read_u8().await.unwrap());
                }
                let head = String::from_utf8(head).unwrap();
                let key = head
                    .lines()
                    .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap()
                    .to_owned();
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept(&key)
                );
                tcp.write_all(response.as_bytes()).await.unwrap();
                let mut frame = [0; 64];
                if tcp.read(&mut frame).await.unwrap_or(0) > 0 {
                    tcp.write_all(frames).await.unwrap();
                }
                keys.push(key);
            }
            keys
        });
        (addr, keys)
    }

    fn right_accept(key: &str) -> String {
        tether_proto::handshake::accept_key(key.as_bytes())
    }

    #[tokio::test]
    async fn cycles_against_a_real_server_succeed_with_and_without_an_echo() {
        let addr = echo_server(4).await;
        for message in [false, true, false, true] {
            let (handshake, cycle) = churn(addr, message).cycle(LOOPBACK).await.unwrap();
            assert!(handshake <= cycle);
        }
    }

    #[tokio::test]
    async fn every_connection_sends_a_fresh_key() {
        // A close frame (code 1000), then the server closes TCP.
        let (addr, keys) = scripted_server(3, right_accept, &[0x88, 0x02, 0x03, 0xe8]).await;
        for _ in 0..3 {
            churn(addr, false).cycle(LOOPBACK).await.unwrap();
        }
        let keys = keys.await.unwrap();
        assert!(
            keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
            "{keys:?}"
        );
    }

    #[tokio::test]
    async fn a_wrong_accept_key_fails_the_cycle() {
        let (addr, _) = scripted_server(1, |_| right_accept("another key"), b"").await;
        let error = churn(addr, false).cycle(LOOPBACK).await.unwrap_err();
        assert!(
            error.starts_with("upgrade:") && error.contains("Sec-WebSocket-Accept"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_missing_close_frame_fails_the_cycle() {
        let (addr, _) = scripted_server(1, right_accept, b"").await;
        let error = churn(addr, false).cycle(LOOPBACK).await.unwrap_err();
        assert_eq!(error, "close: no close frame from the server");
    }

    #[tokio::test]
    async fn a_wrong_echo_fails_the_cycle() {
        let (addr, _) = scripted_server(1, right_accept, b"\x82\x05wrong").await;
        let error = churn(addr, true).cycle(LOOPBACK).await.unwrap_err();
        assert_eq!(error, "echo: the reply differs from the message");
    }

    #[tokio::test]
    async fn server_frames_that_break_the_rfc_fail_the_cycle() {
        let cases: [(&'static [u8], &str); 4] = [
            (&[0x88, 0x82, 1, 2, 3, 4, 2, 234], "masked"),
            (&[0xc8, 0x02, 0x03, 0xe8], "reserved"),
            (&[0x88, 0x01, 0x03], "close"),
            (&[0x88, 0x02, 0x03, 0xed], "close"),
        ];
        for (frames, why) in cases {
            let (addr, _) = scripted_server(1, right_accept, frames).await;
            let error = churn(addr, false).cycle(LOOPBACK).await.unwrap_err();
            assert!(
                error.starts_with("close:") && error.contains(why),
                "{error}"
            );
        }
    }
}
