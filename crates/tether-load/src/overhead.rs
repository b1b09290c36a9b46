//! `tether-load overhead`: what one message stream costs on the wire when
//! delivered by HTTP polling and by one WebSocket.
//!
//! Both sides carry the same stream, `--rate` messages per second of
//! `--size` payload bytes for `--duration` seconds, at the same time:
//!
//! - **HTTP polling**: this process serves `GET /poll?since=N` on a loopback
//!   port of its own and polls it every 1/rate seconds over one keep-alive
//!   connection, with the headers a browser's `fetch` sends (User-Agent,
//!   Accept, Accept-Language, Accept-Encoding, Referer, Sec-Fetch-*, a
//!   session Cookie) and a typical JSON API response (Date, Content-Type,
//!   Content-Length, Cache-Control, Vary, X-Content-Type-Options; the
//!   messages in a `{"messages":[…],"next":N}` envelope).
//! - **WebSocket**: one connection to the echo server at `--url` (upgraded
//!   with the same browser headers); each message is sent and comes back.
//!   Server to client is the delivery. The frames the client sends only so
//!   that the echo server has something to send back are subtracted from
//!   the client-to-server bytes (a push server needs none of them); the
//!   total written is reported too.
//!
//! Bytes are counted on the client's sockets, through a wrapper around each
//! TCP stream that adds up every byte read and written: HTTP heads and
//! bodies, the WebSocket handshake, frame headers, masks and close frames.
//! TCP/IP headers (about 52 bytes per segment on both sides) are not
//! included.

use std::{
    fmt::Write as _,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::BytesMut;
use serde_json::{Value, json};
use tether::{ClientConfig, CloseCode, Keepalive, Message};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, sleep_until, timeout},
};

use crate::{
    http1, progress,
    report::{HumanTable, Report},
    target::Target,
};

/// How long the last echoes and the close may take.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The headers a browser's `fetch` sends to its own origin, besides `Host`
/// (Chrome on Linux, with a session and a CSRF cookie).
const BROWSER_HEADERS: &[(&str, &str)] = &[
    ("Connection", "keep-alive"),
    ("Accept", "application/json, text/plain, */*"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "cors"),
    ("Sec-Fetch-Dest", "empty"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US,en;q=0.9"),
    (
        "Cookie",
        "session=6f1c9a7e3b2d48f0a5c4e1b7d9f2a3c8; csrftoken=Zx8Qw2Lk5Jr7Np1Vb4Hs9Tm3Cd6Fg0Ye; theme=dark",
    ),
];

/// Response headers of a typical JSON API, besides `Content-Length`.
/// (An IMF-fixdate `Date` always has this length; its value does not
/// change the counts.)
const RESPONSE_HEADERS: &[(&str, &str)] = &[
    ("Date", "Tue, 24 Nov 2026 08:00:00 GMT"),
    ("Content-Type", "application/json; charset=utf-8"),
    ("Cache-Control", "no-cache, no-store, must-revalidate"),
    ("Vary", "Accept-Encoding"),
    ("X-Content-Type-Options", "nosniff"),
];

/// Options of `tether-load overhead`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Echo server for the WebSocket side: `ws://HOST[:PORT][/PATH]`, HOST a
    /// loopback address (e.g. `tetherd echo`).
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    /// Messages per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds the stream lasts.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    duration: Duration,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `tether-load overhead --help` says about the method.
pub(crate) const LONG_HELP: &str = "\
The same message stream (--rate messages per second of --size payload bytes, for
--duration seconds) delivered by HTTP polling and by one WebSocket, side by side:
bytes on the wire per second in each direction, payload versus headers and framing.

HTTP polling: tether-load serves GET /poll?since=N on a loopback port of its own and
polls it every 1/rate seconds over one keep-alive connection, with the headers a
browser's fetch sends (User-Agent, Accept, Accept-Language, Accept-Encoding,
Sec-Fetch-*, a session Cookie) and a typical JSON API response.

WebSocket: one connection to the echo server at --url, upgraded with the same
browser headers; every message is sent and echoed. Server to client is the delivery;
the frames the client sends only to make the echo server answer are subtracted from
client to server (a push server needs none), and the raw total is shown as well.

Bytes are counted on the client's sockets, through a wrapper around each TCP stream
that adds up every byte read and written (HTTP heads and bodies, the WebSocket
handshake, frame headers, masks, close frames). TCP/IP headers are not included.";

/// Runs `tether-load overhead` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be a positive number of messages per second".into());
    }
    let messages = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64;
    let stream = Stream {
        period: Duration::from_secs_f64(1.0 / args.rate),
        messages,
        size: args.size,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let (polling, websocket) = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let (polling, websocket, ()) = tokio::join!(
            poll(&stream, start),
            websocket(&args.url, &stream, start),
            show_clock(start, args.duration)
        );
        (polling, websocket)
    });
    let report = OverheadReport {
        target: args.url.to_string(),
        rate: args.rate,
        size: args.size,
        seconds: args.duration.as_secs_f64(),
        messages,
        polling: polling?,
        websocket: websocket?,
    };
    report.print(args.json);
    Ok(())
}

/// Shows the seconds passed on stderr, if it is a terminal.
async fn show_clock(start: Instant, duration: Duration) {
    let line = progress::line(true, 0, progress::MESSAGE);
    if line.is_hidden() {
        return;
    }
    let mut tick = start;
    while tick < start + duration {
        tick = (tick + Duration::from_secs(1)).min(start + duration);
        sleep_until(tick).await;
        line.set_message(format!(
            "{:>6.1} s of {:.1} s",
            (tick - start).as_secs_f64(),
            duration.as_secs_f64()
        ));
    }
    line.finish();
}

/// The message stream both sides deliver: message `k` exists from
/// `start + k × period` on.
#[derive(Debug, Clone, Copy)]
struct Stream {
    period: Duration,
    messages: u64,
    size: usize,
}

impl Stream {
    /// Message `k`'s payload: ASCII that differs from message to message.
    fn payload(&self, k: u64) -> String {
        (0..self.size)
            .map(|i| char::from(b'a' + ((k as usize + i) % 26) as u8))
            .collect()
    }

    /// Messages that exist at `now`.
    fn available(&self, start: Instant, now: Instant) -> u64 {
        match now.checked_duration_since(start) {
            Some(since) => (since.as_nanos() / self.period.as_nanos().max(1) + 1)
                .min(u128::from(self.messages)) as u64,
            None => 0,
        }
    }
}

/// Bytes one side put on the wire, counted on the client's socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Wire {
    /// Client to server.
    up: u64,
    /// Server to client.
    down: u64,
    /// Payload bytes delivered to the client.
    payload: u64,
    /// Messages delivered and verified.
    delivered: u64,
    /// Client-to-server bytes that only ask an echo server for its reply.
    echo_requests: u64,
}

/// HTTP polling: serves the stream on a port of its own, polls it.
async fn poll(stream: &Stream, start: Instant) -> Result<Wire, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("cannot start the polling server: {error}"))?;
    let addr = listener.local_addr().map_err(|error| error.to_string())?;
    let serving = tokio::spawn(serve_polls(listener, *stream, start));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("cannot connect to the polling server: {error}"))?;
    tcp.set_nodelay(true).map_err(|error| error.to_string())?;
    let mut io = Counting::new(tcp);
    let mut buf = BytesMut::new();
    let mut wire = Wire::default();
    let mut headers = String::new();
    for (name, value) in BROWSER_HEADERS {
        let _ = write!(headers, "{name}: {value}\r\n");
    }
    for i in 0..stream.messages {
        // Polls fall between messages, so each finds one new message.
        sleep_until(start + stream.period.mul_f64(i as f64 + 0.5)).await;
        let request = format!(
            "GET /poll?since={} HTTP/1.1\r\nHost: {addr}\r\n{headers}Referer: http://{addr}/app\r\n\r\n",
            wire.delivered
        );
        io.write_all(request.as_bytes())
            .await
            .map_err(|error| format!("polling: {error}"))?;
        let response = http1::read_response(&mut io, &mut buf)
            .await
            .map_err(|error| format!("polling: {error}"))?;
        if response.status != 200 {
            return Err(format!("polling: status {}", response.status));
        }
        let body: Value = serde_json::from_slice(&response.body)
            .map_err(|error| format!("polling: bad body: {error}"))?;
        for message in body["messages"].as_array().into_iter().flatten() {
            let data = message["data"].as_str().unwrap_or_default();
            if message["id"].as_u64() != Some(wire.delivered)
                || data != stream.payload(wire.delivered)
            {
                return Err(format!("polling: message {} is wrong", wire.delivered));
            }
            wire.payload += data.len() as u64;
            wire.delivered += 1;
        }
    }
    // The counts are taken; how the shutdown goes does not change them.
    let _ = io.shutdown().await;
    serving.abort();
    wire.up = io.written;
    wire.down = io.read;
    Ok(wire)
}

/// The polling server: answers `GET /poll?since=N` with the messages from
/// `N` on that exist so far.
async fn serve_polls(listener: TcpListener, stream: Stream, start: Instant) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while let Ok(Some(request)) = http1::read_request(&mut tcp, &mut buf).await {
                let since = request
                    .target
                    .strip_prefix("/poll?since=")
                    .and_then(|since| since.parse::<u64>().ok());
                let response = match (request.method.as_str(), since) {
                    ("GET", Some(since)) => {
                        let available = stream.available(start, Instant::now());
                        let messages: Vec<Value> = (since..available.max(since))
                            .map(|k| json!({ "id": k, "data": stream.payload(k) }))
                            .collect();
                        let body = json!({ "messages": messages, "next": available.max(since) });
                        response("200 OK", &body.to_string())
                    }
                    _ => response("404 Not Found", "{\"error\":\"not found\"}"),
                };
                if tcp.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn response(status: &str, body: &str) -> String {
    let mut response = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in RESPONSE_HEADERS {
        let _ = write!(response, "{name}: {value}\r\n");
    }
    let _ = write!(response, "Content-Length: {}\r\n\r\n{body}", body.len());
    response
}

/// WebSocket: one connection to the echo server; each message is sent at
/// its time and must come back unchanged.
async fn websocket(url: &Target, stream: &Stream, start: Instant) -> Result<Wire, String> {
    let tcp = TcpStream::connect(url.addr)
        .await
        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
    tcp.set_nodelay(true).map_err(|error| error.to_string())?;
    let mut config = ClientConfig::default();
    config.headers = BROWSER_HEADERS
        .iter()
        // What a browser sends on an upgrade besides the WebSocket headers.
        .filter(|(name, _)| {
            ["User-Agent", "Accept-Encoding", "Accept-Language", "Cookie"].contains(name)
        })
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    config.connection.keepalive = Keepalive::OFF;
    let (mut ws, _) = tether::client::handshake(Counting::new(tcp), &url.host, &url.path, &config)
        .await
        .map_err(|error| format!("WebSocket: {error}"))?;
    let mut wire = Wire::default();
    let mut sent = 0;
    let mut give_up = None;
    while wire.delivered < stream.messages {
        let next = start + stream.period.mul_f64(sent as f64);
        let received = tokio::select! {
            () = sleep_until(next), if sent < stream.messages => {
                ws.send(Message::text(stream.payload(sent)))
                    .await
                    .map_err(|error| format!("WebSocket: {error}"))?;
                wire.echo_requests += client_frame_len(stream.size);
                sent += 1;
                if sent == stream.messages {
                    give_up = Some(Instant::now() + FINISH_TIMEOUT);
                }
                continue;
            }
            () = sleep_until(give_up.unwrap_or(next)), if give_up.is_some() => {
                return Err(format!("WebSocket: {} of {} echoes came back", wire.delivered, stream.messages));
            }
            received = ws.recv() => received,
        };
        match received {
            Some(Ok(Message::Text(text))) => {
                if *text != *stream.payload(wire.delivered) {
                    return Err(format!("WebSocket: echo {} is wrong", wire.delivered));
                }
                wire.payload += text.len() as u64;
                wire.delivered += 1;
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err("WebSocket: the server closed the connection".into());
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("WebSocket: {error}")),
        }
    }
    let closing = async {
        ws.close(CloseCode::NORMAL, "").await?;
        while ws.recv().await.is_some() {}
        Ok::<_, tether::Error>(())
    };
    match timeout(FINISH_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(format!("WebSocket close: {error}")),
        Err(_) => return Err("WebSocket close timed out".into()),
    }
    wire.up = ws.transport().written;
    wire.down = ws.transport().read;
    Ok(wire)
}

/// Bytes of a masked client frame with a `len`-byte payload (RFC 6455 §5.2):
/// two header bytes, the extended length, the four-byte mask, the payload.
fn client_frame_len(len: usize) -> u64 {
    let extended = match len {
        0..=125 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    (2 + extended + 4 + len) as u64
}

/// A stream that counts the bytes read from and written to it.
#[derive(Debug)]
struct Counting<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S> Counting<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.written += written as u64;
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            self.written += written as u64;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What `tether-load overhead` measured.
#[derive(Debug)]
struct OverheadReport {
    target: String,
    rate: f64,
    size: usize,
    seconds: f64,
    messages: u64,
    polling: Wire,
    websocket: Wire,
}

impl OverheadReport {
    fn per_second(&self, bytes: u64) -> f64 {
        bytes as f64 / self.seconds.max(1e-9)
    }

    /// Client-to-server bytes the delivery needed.
    fn up(wire: &Wire) -> u64 {
        wire.up - wire.echo_requests
    }

    /// Bytes per delivered message besides its payload, both directions.
    fn overhead_per_message(wire: &Wire) -> f64 {
        (Self::up(wire) + wire.down - wire.payload) as f64 / wire.delivered.max(1) as f64
    }

    fn side_json(&self, wire: &Wire) -> Value {
        json!({
            "delivered": wire.delivered,
            "up_bytes": Self::up(wire),
            "down_bytes": wire.down,
            "payload_bytes": wire.payload,
            "up_bytes_per_s": self.per_second(Self::up(wire)),
            "down_bytes_per_s": self.per_second(wire.down),
            "total_bytes_per_s": self.per_second(Self::up(wire) + wire.down),
            "payload_bytes_per_s": self.per_second(wire.payload),
            "overhead_bytes_per_message": Self::overhead_per_message(wire),
            "echo_request_bytes": wire.echo_requests,
            "written_bytes": wire.up,
        })
    }
}

impl Report for OverheadReport {
    fn to_json(&self) -> Value {
        let (p, w) = (&self.polling, &self.websocket);
        json!({
            "mode": "overhead",
            "url": self.target,
            "rate": self.rate,
            "size": self.size,
            "duration_s": self.seconds,
            "messages": self.messages,
            "polling": self.side_json(p),
            "websocket": self.side_json(w),
            "ratio_total": ratio(Self::up(p) + p.down, Self::up(w) + w.down),
            "ratio_up": ratio(Self::up(p), Self::up(w)),
            "ratio_down": ratio(p.down, w.down),
        })
    }

    fn table(&self) -> String {
        let (p, w) = (&self.polling, &self.websocket);
        let mut table = HumanTable::grid(
            format!(
                "tether-load overhead  {} msg/s x {} B for {:.1} s  (WebSocket: echo at {})",
                self.rate, self.size, self.seconds, self.target
            ),
            &["", "HTTP polling", "WebSocket", "polling/WS"],
        );
        let rows = [
            ("client -> server", Self::up(p), Self::up(w)),
            ("server -> client", p.down, w.down),
            ("total", Self::up(p) + p.down, Self::up(w) + w.down),
            ("payload", p.payload, w.payload),
        ];
        for (label, polling, websocket) in rows {
            table.cells(vec![
                label.to_owned(),
                format!("{:.0} B/s", self.per_second(polling)),
                format!("{:.0} B/s", self.per_second(websocket)),
                ratio(polling, websocket).map_or("-".to_owned(), |r| format!("{r:.1}x")),
            ]);
        }
        table.cells(vec![
            "overhead / message".to_owned(),
            format!("{:.1} B", Self::overhead_per_message(p)),
            format!("{:.1} B", Self::overhead_per_message(w)),
            String::new(),
        ]);
        table.cells(vec![
            "messages".to_owned(),
            p.delivered.to_string(),
            w.delivered.to_string(),
            format!("of {}", self.messages),
        ]);
        table.render(&[format!(
            "  WebSocket client -> server leaves out the {:.0} B/s of frames that only asked the echo\n  server for each message (a push server needs none); the client wrote {:.0} B/s in all.",
            self.per_second(w.echo_requests),
            self.per_second(w.up)
        )])
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_column_per_side() {
        let polling = Wire {
            up: 9_000,
            down: 6_000,
            payload: 1_000,
            delivered: 10,
            echo_requests: 0,
        };
        let websocket = Wire {
            up: 1_500,
            down: 1_300,
            payload: 1_000,
            delivered: 10,
            echo_requests: 1_060,
        };
        let report = OverheadReport {
            target: "ws://127.0.0.1:1/".into(),
            rate: 10.0,
            size: 100,
            seconds: 1.0,
            messages: 10,
            polling,
            websocket,
        };
        let table = report.table();
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|line| {
                line.split("  ")
                    .map(str::trim)
                    .filter(|cell| !cell.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            lines[1],
            ["HTTP polling", "WebSocket", "polling/WS"],
            "{table}"
        );
        assert_eq!(
            lines[2],
            ["client -> server", "9000 B/s", "440 B/s", "20.5x"],
            "{table}"
        );
        assert_eq!(
            lines[3],
            ["server -> client", "6000 B/s", "1300 B/s", "4.6x"],
            "{table}"
        );
        assert_eq!(
            lines[4],
            ["total", "15000 B/s", "1740 B/s", "8.6x"],
            "{table}"
        );
        assert_eq!(
            lines[5],
            ["payload", "1000 B/s", "1000 B/s", "1.0x"],
            "{table}"
        );
        assert_eq!(
            lines[6],
            ["overhead / message", "1400.0 B", "74.0 B"],
            "{table}"
        );
        assert_eq!(lines[7], ["messages", "10", "10", "of 10"], "{table}");
        assert!(
            table.contains("the client wrote 1500 B/s in all."),
            "{table}"
        );
    }

    #[test]
    fn client_frames_grow_at_the_length_boundaries() {
        assert_eq!(client_frame_len(0), 6);
        assert_eq!(client_frame_len(125), 131);
        assert_eq!(client_frame_len(126), 134);
        assert_eq!(client_frame_len(65_535), 65_543);
        assert_eq!(client_frame_len(65_536), 65_550);
    }

    #[test]
    fn stream_releases_one_message_per_period() {
        let stream = Stream {
            period: Duration::from_millis(100),
            messages: 3,
            size: 4,
        };
        let start = Instant::now();
        assert_eq!(stream.available(start + Duration::from_secs(1), start), 0);
        assert_eq!(stream.available(start, start), 1);
        assert_eq!(
            stream.available(start, start + Duration::from_millis(150)),
            2
        );
        assert_eq!(stream.available(start, start + Duration::from_secs(9)), 3);
        assert_eq!(stream.payload(1), "bcde");
        assert_ne!(stream.payload(0), stream.payload(1));
    }

    #[tokio::test]
    async fn counting_stream_counts_both_directions() {
        use tokio::io::AsyncReadExt;
        let (client, mut server) = tokio::io::duplex(64);
        let mut counting = Counting::new(client);
        counting.write_all(b"hello").await.unwrap();
        server.write_all(b"abc").await.unwrap();
        let mut buf = [0; 3];
        counting.read_exact(&mut buf).await.unwrap();
        assert_eq!((counting.written, counting.read), (5, 3));
    }
}
