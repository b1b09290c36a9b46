//! Shared helpers for the tokio-layer tests: frames built and read by hand
//! (an independent reading of RFC 6455 §5.2, so a raw socket can play a
//! well-behaved or a hostile peer), raw HTTP heads, an echo server and a
//! hang guard.
#![allow(
    dead_code,
    reason = "each test file is its own crate and uses a different subset; #[expect] would be unfulfilled in some"
)]

use std::{future::Future, io, net::SocketAddr, time::Duration};

use bytes::{Buf, BytesMut};
use tether::{Message, ServerConfig, WebSocket};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// FIN bit of the first header byte.
pub(crate) const FIN: u8 = 0x80;

/// The masking key of the RFC 6455 §5.7 examples.
pub(crate) const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A `Sec-WebSocket-Key` (RFC 6455 §1.3 sample) and its accept value.
pub(crate) const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub(crate) const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Generous bound that turns a hang into a failure; never a timing assertion.
pub(crate) const HANG: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`HANG`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(HANG, future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what}"),
    }
}

/// A frame as it goes on the wire. `b0` is the first header byte (FIN, RSV,
/// opcode), `declared` overrides the payload length written in the header.
pub(crate) fn encode_frame(
    b0: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    declared: Option<u64>,
) -> Vec<u8> {
    let len = declared.unwrap_or(payload.len() as u64);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(b0);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame, as a client sends it.
pub(crate) fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(b0, Some(KEY), payload, None)
}

/// An unmasked frame, as a server sends it.
pub(crate) fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(b0, None, payload, None)
}

/// A close payload: code then reason.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// One decoded frame, payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) masked: bool,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The code and reason of a close frame.
    pub(crate) fn close_code(&self) -> (u16, String) {
        assert_eq!(self.opcode, CLOSE, "expected a close frame, got {self:?}");
        assert!(self.payload.len() >= 2, "close frame without a code");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("UTF-8 close reason");
        (code, reason)
    }
}

/// Decodes one frame from the front of `buf`, if it is complete.
pub(crate) fn decode_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?), 10),
        126 | 127 => return None,
        short => (u64::from(short), 2),
    };
    let key = if masked {
        let key: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let len = usize::try_from(len).expect("frame length fits in memory");
    if buf.len() < at + len {
        return None;
    }
    buf.advance(at);
    let mut payload = buf.split_to(len).to_vec();
    if let Some(key) = key {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }
    Some(Frame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x07,
        opcode: b0 & 0x0f,
        masked,
        payload,
    })
}

/// A hand-driven WebSocket peer over a raw socket.
pub(crate) struct RawPeer<S = TcpStream> {
    pub(crate) io: S,
    pub(crate) buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    pub(crate) fn new(io: S, leftover: &[u8]) -> Self {
        Self {
            io,
            buf: BytesMut::from(leftover),
        }
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("raw write");
    }

    /// The next frame; `Ok(None)` at end of stream.
    pub(crate) async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf) {
                return Ok(Some(frame));
            }
            self.buf.reserve(64 * 1024);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                assert!(
                    self.buf.is_empty(),
                    "stream ended inside a frame: {:?}",
                    &self.buf[..]
                );
                return Ok(None);
            }
        }
    }

    /// The next frame, which must exist.
    pub(crate) async fn frame(&mut self) -> Frame {
        within("a frame from the peer", self.next_frame())
            .await
            .expect("read a frame")
            .expect("a frame, not the end of the stream")
    }

    /// Reads the next frame, asserts it is a close frame, returns its code.
    pub(crate) async fn close_code(&mut self) -> u16 {
        self.frame().await.close_code().0
    }

    /// Asserts the peer sends nothing more and closes the connection (end of
    /// stream, or a reset because we had sent bytes it never read).
    pub(crate) async fn expect_closed(&mut self) {
        match within("the peer to close the connection", self.next_frame()).await {
            Ok(None) => {}
            Err(error) if is_reset(&error) => {}
            Ok(Some(frame)) => panic!("expected the connection to close, got {frame:?}"),
            Err(error) => panic!("expected the connection to close, got {error}"),
        }
    }
}

pub(crate) fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// A valid upgrade request for `/` with the §1.3 sample key.
pub(crate) fn upgrade_request(host: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads an HTTP head; returns it (without the blank line) and the bytes
/// that followed it.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> (String, BytesMut) {
    let mut buf = BytesMut::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).expect("UTF-8 head");
            buf.advance(end + 4);
            return (head, buf);
        }
        buf.reserve(4096);
        let read = within("an HTTP head", io.read_buf(&mut buf))
            .await
            .expect("read an HTTP head");
        assert!(read > 0, "stream ended inside the HTTP head: {buf:?}");
    }
}

/// Reads everything until the peer closes (end of stream or reset).
pub(crate) async fn read_to_close<S: AsyncRead + Unpin>(io: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match within("the peer to close", io.read(&mut chunk)).await {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(error) if is_reset(&error) => return out,
            Err(error) => panic!("reading until close: {error}"),
        }
    }
}

/// A raw client that completed the upgrade with `addr`.
pub(crate) async fn raw_client(addr: SocketAddr) -> RawPeer {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(upgrade_request(&addr.to_string()).as_bytes())
        .await
        .expect("write the request");
    let (head, leftover) = read_head(&mut tcp).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("\r\nSec-WebSocket-Accept: {SAMPLE_ACCEPT}")));
    RawPeer::new(tcp, &leftover)
}

/// Reads a client's upgrade request from `tcp` and answers 101; `then` is
/// written in the same write as the response.
pub(crate) async fn raw_server_handshake(mut tcp: TcpStream, then: &[u8]) -> RawPeer {
    let (head, leftover) = read_head(&mut tcp).await;
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("request has a Sec-WebSocket-Key");
    let accept = tether::handshake::accept_key(key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(then);
    tcp.write_all(&response).await.expect("write the 101");
    RawPeer::new(tcp, &leftover)
}

/// Echoes every text and binary message until the stream ends.
pub(crate) async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    while let Some(received) = ws.recv().await {
        if let Ok(message @ (Message::Text(_) | Message::Binary(_))) = received {
            // A failed send means the connection is closing; keep receiving
            // so the stream can finish the close.
            let _ = ws.send(message).await;
        }
    }
}

/// A tether echo server on a loopback port.
pub(crate) async fn spawn_echo_server(config: ServerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok((mut ws, _)) = tether::accept(tcp, &config).await {
                    echo(&mut ws).await;
                }
            });
        }
    });
    addr
}

/// The next message, which must exist and not be an error.
pub(crate) async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Message {
    within("the next message", ws.recv())
        .await
        .expect("a message, not the end of the stream")
        .expect("a message, not an error")
}

/// Asserts the stream has ended.
pub(crate) async fn expect_end<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    match within("the end of the stream", ws.recv()).await {
        None => {}
        Some(other) => panic!("expected the end of the stream, got {other:?}"),
    }
}
