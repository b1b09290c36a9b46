//! permessage-deflate in the gateway: off by default; when enabled, a
//! publication is compressed once per parameter set and the same bytes go
//! to every subscriber that negotiated it, while a client without
//! compression gets plain frames. Also Chromium against the gateway.
//!
//! The browser test needs `node`, `clients/browser-tests/node_modules` and
//! `/usr/bin/chromium` (or `$CHROMIUM`); `bash scripts/test.sh` installs them.

mod common;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use common::{Tetherd, run_browser_script};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tether::{ClientConfig, MaybeTls, Message, WebSocket, connect_with, deflate::DeflateConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

const API_KEY: &str = "deflate-test-api-key-0123";
const LIMIT: Duration = Duration::from_secs(60);
const CHANNEL: &str = "feed:big";

const CONFIG: &str = r#"
[auth]
api_key = "deflate-test-api-key-0123"
token_hmac_secret = "deflate-test-secret-0123456789abcdef"

[[namespace]]
name = "feed"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
"#;

fn with_compression() -> String {
    format!("{CONFIG}\n[compression]\nenabled = true\n")
}

/// A publication of about 20 KB of JSON, different for each `n`.
fn big_payload(n: u32) -> Value {
    let rows: Vec<Value> = (0..200)
        .map(|i| json!({ "n": n, "row": i, "symbol": "TTHR", "note": "a compressible row" }))
        .collect();
    json!({ "rows": rows })
}

fn publish(server: &Tetherd, data: &Value) {
    let body = json!({ "channel": CHANNEL, "data": data }).to_string();
    let response = server.http("POST", "/api/publish", API_KEY, &body);
    assert!(response.contains(r#""result""#), "{response}");
}

const SUBSCRIBE: &str =
    "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"feed:big\"}}";

/// A `tether` client subscribed to [`CHANNEL`], and what it negotiated.
async fn subscriber(
    server: &Tetherd,
    offer: Option<DeflateConfig>,
) -> (WebSocket<MaybeTls>, tether::handshake::client::Response) {
    let mut config = ClientConfig::default();
    if let Some(offer) = offer {
        config.deflate.push(offer);
    }
    let (mut ws, response) = connect_with(&server.gateway_url(), &config)
        .await
        .expect("connects");
    ws.send(Message::text(SUBSCRIBE)).await.unwrap();
    loop {
        match timeout(LIMIT, ws.recv())
            .await
            .unwrap()
            .expect("open")
            .unwrap()
        {
            Message::Text(text) if text.contains(r#""id":2"#) => break,
            Message::Close(frame) => panic!("closed while subscribing: {frame:?}"),
            _ => {}
        }
    }
    (ws, response)
}

/// The `data` of the next publication pushed to `ws`.
async fn next_publication(ws: &mut WebSocket<MaybeTls>) -> Value {
    loop {
        match timeout(LIMIT, ws.recv())
            .await
            .unwrap()
            .expect("open")
            .unwrap()
        {
            Message::Text(text) if text.contains(r#""pub""#) => {
                let push: Value = serde_json::from_str(&text).unwrap();
                return push["push"]["pub"]["data"].clone();
            }
            Message::Close(frame) => panic!("closed while waiting: {frame:?}"),
            _ => {}
        }
    }
}

/// A client on a bare TCP socket, to see the frames themselves: it offers
/// permessage-deflate with `extension` and subscribes to [`CHANNEL`].
struct RawClient {
    tcp: TcpStream,
    buf: BytesMut,
    /// The response's `Sec-WebSocket-Extensions`, lowercased.
    extensions: String,
}

/// One frame from the server.
struct ServerFrame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl RawClient {
    async fn subscribe(server: &Tetherd, extension: &str) -> Self {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {extension}\r\n\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let read = timeout(LIMIT, tcp.read_buf(&mut buf)).await.unwrap();
            assert!(read.unwrap() > 0, "the server answers the upgrade");
        };
        let head = String::from_utf8_lossy(&buf.split_to(end)).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        let extensions = head
            .lines()
            .find_map(|line| line.strip_prefix("sec-websocket-extensions:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut client = Self {
            tcp,
            buf,
            extensions,
        };
        client.send_text(SUBSCRIBE).await;
        while !client.next_message().await.contains(r#""id":2"#) {}
        client
    }

    /// Sends an uncompressed text frame.
    async fn send_text(&mut self, text: &str) {
        self.send_frame(false, text.as_bytes()).await;
    }

    /// Sends a masked text frame, with RSV1 (compressed) if `rsv1`.
    async fn send_frame(&mut self, rsv1: bool, payload: &[u8]) {
        let key = [7, 9, 11, 13];
        let mut frame = vec![0x81 | u8::from(rsv1) << 6];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.tcp.write_all(&frame).await.unwrap();
    }

    async fn next_frame(&mut self) -> ServerFrame {
        loop {
            if let Some(frame) = self.parse_frame() {
                return frame;
            }
            let read = timeout(LIMIT, self.tcp.read_buf(&mut self.buf))
                .await
                .unwrap();
            assert!(read.unwrap() > 0, "the connection stays open");
        }
    }

    /// A whole unmasked, unfragmented server frame from the buffer.
    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let (b0, b1) = (*self.buf.first()?, *self.buf.get(1)?);
        assert!(b0 & 0x80 != 0, "the gateway does not fragment pushes");
        let (header, len) = match b1 & 0x7f {
            126 => (
                4,
                usize::from(u16::from_be_bytes([*self.buf.get(2)?, *self.buf.get(3)?])),
            ),
            127 => (
                10,
                usize::try_from(u64::from_be_bytes(self.buf.get(2..10)?.try_into().ok()?)).ok()?,
            ),
            len => (2, usize::from(len)),
        };
        if self.buf.len() < header + len {
            return None;
        }
        self.buf.advance(header);
        let payload = self.buf.split_to(len).to_vec();
        Some(ServerFrame {
            rsv1: b0 & 0x40 != 0,
            opcode: b0 & 0x0f,
            payload,
        })
    }

    /// The next text message, inflated if it came compressed.
    async fn next_message(&mut self) -> String {
        let frame = self.next_frame().await;
        let bytes = if frame.rsv1 {
            inflate(&frame.payload)
        } else {
            frame.payload
        };
        String::from_utf8(bytes).expect("text")
    }
}

/// Inflates one message compressed without context takeover (RFC 7692
/// §7.2.2: the sender removed the trailing 00 00 ff ff).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        let before = inflater.total_in();
        inflater
            .decompress_vec(&input[before as usize..], &mut out, FlushDecompress::Sync)
            .expect("a valid deflate stream");
        if inflater.total_in() as usize == input.len() {
            return out;
        }
        out.reserve(64 << 10);
    }
}

#[tokio::test]
async fn a_publication_is_compressed_once_per_parameter_set() {
    let server = Tetherd::gateway(&with_compression(), &[]);
    // An offer that allows context takeover both ways: the gateway still
    // answers without it, in both directions.
    let mut takeover_allowed = DeflateConfig::default();
    takeover_allowed.server_no_context_takeover = false;
    takeover_allowed.client_no_context_takeover = false;
    let mut compressed = Vec::new();
    for _ in 0..3 {
        let (ws, response) = subscriber(&server, Some(takeover_allowed)).await;
        let negotiated = *response.deflate().expect("the gateway accepts deflate");
        assert!(
            negotiated.incoming.no_context_takeover && negotiated.outgoing.no_context_takeover,
            "{negotiated:?}"
        );
        assert_eq!(negotiated.incoming.max_window_bits, 15);
        compressed.push(ws);
    }
    let (mut plain, response) = subscriber(&server, None).await;
    assert!(response.deflate().is_none());
    assert!(response.header("Sec-WebSocket-Extensions").is_none());
    // A second parameter set: a 10-bit window.
    let mut raw =
        RawClient::subscribe(&server, "permessage-deflate; server_max_window_bits=10").await;
    assert_eq!(
        raw.extensions,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
    );

    for n in 1..=2 {
        let before = server.metric("deflate_compressions_total");
        let data = big_payload(n);
        publish(&server, &data);
        for ws in &mut compressed {
            assert_eq!(next_publication(ws).await, data);
        }
        assert_eq!(next_publication(&mut plain).await, data);
        let frame = raw.next_frame().await;
        assert!(frame.rsv1, "the publication arrives compressed (RSV1)");
        let text = String::from_utf8(inflate(&frame.payload)).unwrap();
        assert!(
            frame.payload.len() < text.len() / 4,
            "{} of {}",
            frame.payload.len(),
            text.len()
        );
        let push: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(push["push"]["pub"]["data"], data);
        assert_eq!(
            server.metric("deflate_compressions_total") - before,
            2,
            "one compression for the three 15-bit subscribers, one for the 10-bit one"
        );
    }
    let sent = server.metric("deflate_bytes_out_total");
    let stood_for = server.metric("deflate_bytes_out_uncompressed_total");
    assert!(
        sent > 0 && sent < stood_for / 4,
        "{sent} bytes for {stood_for}"
    );
}

/// A compressed command that inflates past `security.max_message_size`
/// (64 KiB by default) ends the connection with 1009: the gateway inflates
/// no further than its limit.
#[tokio::test]
async fn a_compressed_command_inflating_past_the_limit_is_closed_with_1009() {
    let server = Tetherd::gateway(&with_compression(), &[]);
    let mut raw = RawClient::subscribe(&server, "permessage-deflate").await;
    let mut compressor = Compress::new(Compression::best(), false);
    let mut bomb = Vec::with_capacity(64 << 10);
    compressor
        .compress_vec(&vec![b' '; 16 << 20], &mut bomb, FlushCompress::Sync)
        .unwrap();
    assert!(
        bomb.len() < 32 << 10,
        "16 MiB of spaces in {} bytes",
        bomb.len()
    );
    bomb.truncate(bomb.len() - 4);
    raw.send_frame(true, &bomb).await;
    let close = loop {
        let frame = raw.next_frame().await;
        if frame.opcode == 0x8 {
            break frame;
        }
    };
    let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
    assert_eq!(
        code,
        1009,
        "{}",
        String::from_utf8_lossy(&close.payload[2..])
    );
}

#[tokio::test]
async fn compression_is_off_by_default() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let (mut ws, response) = subscriber(&server, Some(DeflateConfig::default())).await;
    assert!(response.deflate().is_none(), "nothing negotiated");
    assert!(response.header("Sec-WebSocket-Extensions").is_none());
    let mut raw = RawClient::subscribe(&server, "permessage-deflate").await;
    assert_eq!(raw.extensions, "");
    let data = big_payload(1);
    publish(&server, &data);
    assert_eq!(next_publication(&mut ws).await, data);
    let frame = raw.next_frame().await;
    assert!(!frame.rsv1);
    let push: Value = serde_json::from_slice(&frame.payload).unwrap();
    assert_eq!(push["push"]["pub"]["data"], data);
    assert_eq!(server.metric("deflate_compressions_total"), 0);
    assert_eq!(server.metric("deflate_bytes_out_total"), 0);
}

#[test]
fn chromium_negotiates_permessage_deflate_with_the_gateway() {
    let server = Tetherd::gateway(CONFIG, &["--compression"]);
    let stdout = run_browser_script(
        "gateway-deflate.mjs",
        &[
            "--base",
            &server.http_url(),
            "--api-key",
            API_KEY,
            "--channel",
            CHANNEL,
            "--timeout",
            "30",
        ],
        Duration::from_secs(180),
    );
    let report: Value = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("gateway-deflate.mjs prints a JSON report:\n{stdout}"));
    assert_eq!(report["waits"], json!([]), "{report:#}");
    assert_eq!(report["errors"], json!([]), "{report:#}");
    let extensions = report["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.starts_with("permessage-deflate")
            && extensions.contains("server_no_context_takeover")
            && extensions.contains("client_no_context_takeover"),
        "{report:#}"
    );
    let expected = |kind: &str| json!({ "kind": kind, "text": "a compressible message through the gateway; ".repeat(100) });
    assert_eq!(report["api"], expected("api"), "{report:#}");
    assert_eq!(report["client"], expected("client"), "{report:#}");
    assert_eq!(report["close"], 1000, "a clean close: {report:#}");
    assert!(
        server.metric("deflate_compressions_total") >= 2,
        "both publications went out compressed"
    );
    let sent = server.metric("deflate_bytes_out_total");
    let stood_for = server.metric("deflate_bytes_out_uncompressed_total");
    assert!(
        sent > 0 && sent < stood_for / 4,
        "{sent} bytes for {stood_for}"
    );
}
