//! `tetherd echo` as a real process, seen by a raw-socket attacker: broken
//! handshakes get their exact HTTP refusal, broken frames their close code,
//! stalled handshakes are cut at the deadline, and after each attack a
//! well-behaved client still gets its echo.
//!
//! The binary is built with `cargo build -p tetherd` (same profile as this
//! test, once per test run) unless `TETHERD` names one.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::Duration,
};

use tether::{Message, WebSocket, client::MaybeTls};
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};

use common::*;

/// The `tetherd` binary: `$TETHERD`, or built by cargo for this test's profile.
fn tetherd_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("TETHERD") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut command = Command::new(cargo);
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--package",
            "tetherd",
            "--bin",
            "tetherd",
            "--message-format=json-render-diagnostics",
        ]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let output = command.output().expect("run cargo");
        assert!(
            output.status.success(),
            "cargo build -p tetherd failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // cargo reports where it put the binary (CARGO_TARGET_DIR, profile).
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == "tetherd"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the tetherd executable")
    })
}

/// A running `tetherd echo` on a loopback port it picked itself; killed on drop.
struct Tetherd {
    child: Child,
    addr: SocketAddr,
}

impl Tetherd {
    fn start(extra_args: &[&str]) -> Self {
        let mut child = Command::new(tetherd_binary())
            .args(["--log-format", "json", "echo", "--listen", "127.0.0.1:0"])
            .args(["--threads", "2"])
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tetherd");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Find the listening address in the log, then keep draining the pipe
        // so the server never blocks on logging.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(listen) = log["fields"]["listen"].as_str() {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(listen.parse::<SocketAddr>().expect("a socket address"));
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("tetherd did not report its address: {:?}", child.wait());
            }
        };
        Self { child, addr }
    }
}

impl Drop for Tetherd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A well-behaved client, connected before an attack and checked after it.
struct Bystander {
    ws: WebSocket<MaybeTls>,
    sent: usize,
}

impl Bystander {
    async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = within(
            "bystander connect",
            tether::connect(&format!("ws://{addr}/")),
        )
        .await
        .expect("bystander connects");
        let mut bystander = Self { ws, sent: 0 };
        bystander.still_echoes().await;
        bystander
    }

    /// Its echo still comes back, and a new client gets one too.
    async fn still_echoes(&mut self) {
        let text = format!("bystander {}", self.sent);
        self.sent += 1;
        self.ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(&mut self.ws).await, Message::text(text));
        let addr = self.ws.transport().tcp().peer_addr().unwrap();
        let (mut fresh, _) = within("fresh connect", tether::connect(&format!("ws://{addr}/")))
            .await
            .expect("a new client connects");
        fresh.send(Message::text("fresh")).await.unwrap();
        assert_eq!(next(&mut fresh).await, Message::text("fresh"));
    }
}

/// Sends `head` on a fresh connection and returns everything the server
/// answered before closing.
async fn handshake_response(addr: SocketAddr, head: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head).await.unwrap();
    let response = read_to_close(&mut tcp).await;
    String::from_utf8(response).expect("a UTF-8 response")
}

/// The status line and the header lines of a response.
fn status_and_headers(response: &str) -> (&str, Vec<&str>) {
    let head = response.split("\r\n\r\n").next().unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    (status, lines.collect())
}

/// Runs a handshake attack against a fresh server; returns the response.
async fn refused(head: &[u8]) -> String {
    let server = Tetherd::start(&[]);
    let mut bystander = Bystander::connect(server.addr).await;
    let response = handshake_response(server.addr, head).await;
    bystander.still_echoes().await;
    response
}

/// Upgrades, sends `attack`, and returns the code of the server's close
/// frame after checking the server then closes TCP.
async fn close_code_after(addr: SocketAddr, attack: &[u8]) -> u16 {
    let mut peer = raw_client(addr).await;
    // The server may close while we still write: that is its right.
    let _ = peer.io.write_all(attack).await;
    let code = peer.close_code().await;
    peer.expect_closed().await;
    code
}

/// Runs a frame attack against a fresh server with `args`; returns the close code.
async fn frame_attack(args: &[&str], attack: &[u8]) -> u16 {
    let server = Tetherd::start(args);
    let mut bystander = Bystander::connect(server.addr).await;
    let code = close_code_after(server.addr, attack).await;
    bystander.still_echoes().await;
    code
}

#[tokio::test]
async fn non_http_bytes_get_400() {
    let tls_client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
    let response = refused(tls_client_hello).await;
    assert_eq!(status_and_headers(&response).0, "HTTP/1.1 400 Bad Request");
    let response = refused(b"hello there\r\n\r\n").await;
    assert_eq!(status_and_headers(&response).0, "HTTP/1.1 400 Bad Request");
}

#[tokio::test]
async fn post_gets_405_with_allow_get() {
    let head = upgrade_request("x").replacen("GET", "POST", 1);
    let response = refused(head.as_bytes()).await;
    let (status, headers) = status_and_headers(&response);
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains(&"Allow: GET"), "{response}");
}

#[tokio::test]
async fn version_8_gets_426_naming_version_13() {
    let head =
        upgrade_request("x").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let response = refused(head.as_bytes()).await;
    let (status, headers) = status_and_headers(&response);
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    assert!(headers.contains(&"Sec-WebSocket-Version: 13"), "{response}");
}

#[tokio::test]
async fn missing_key_gets_400() {
    let head = upgrade_request("x").replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), "");
    let response = refused(head.as_bytes()).await;
    assert_eq!(status_and_headers(&response).0, "HTTP/1.1 400 Bad Request");
}

#[tokio::test]
async fn head_of_17_kib_gets_431() {
    let request = upgrade_request("x");
    let padding = 17 * 1024 - request.len() - "X-Padding: \r\n".len();
    let head = request.replacen(
        "\r\n\r\n",
        &format!("\r\nX-Padding: {}\r\n\r\n", "a".repeat(padding)),
        1,
    );
    assert_eq!(head.len(), 17 * 1024);
    let response = refused(head.as_bytes()).await;
    assert_eq!(
        status_and_headers(&response).0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[tokio::test]
async fn unmasked_client_frame_gets_1002() {
    let attack = server_frame(FIN | TEXT, b"not masked");
    assert_eq!(frame_attack(&[], &attack).await, 1002);
}

#[tokio::test]
async fn reserved_opcode_gets_1002() {
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        let attack = client_frame(FIN | opcode, b"?");
        assert_eq!(frame_attack(&[], &attack).await, 1002, "opcode {opcode:#x}");
    }
}

#[tokio::test]
async fn rsv_bits_without_an_extension_get_1002() {
    for rsv in [0x40, 0x20, 0x10] {
        let attack = client_frame(FIN | rsv | TEXT, b"compressed?");
        assert_eq!(frame_attack(&[], &attack).await, 1002, "rsv {rsv:#x}");
    }
}

#[tokio::test]
async fn frame_header_declaring_1_gib_gets_1009_without_the_payload() {
    // Only the header: the server must refuse on it, not wait for 1 GiB.
    let attack = encode_frame(FIN | BINARY, Some(KEY), &[], Some(1 << 30));
    assert_eq!(attack.len(), 14);
    assert_eq!(frame_attack(&[], &attack).await, 1009);
}

/// A text message of `count` empty frames, the last without FIN unless `fin`.
fn fragments(count: usize, fin: bool) -> Vec<u8> {
    let mut wire = client_frame(TEXT, b"");
    for i in 1..count {
        let last = fin && i == count - 1;
        wire.extend(client_frame(if last { FIN } else { 0 }, b""));
    }
    wire
}

#[tokio::test]
async fn endless_fragments_get_1009() {
    // The default limit is 100,000 fragments; this is frame 100,001.
    let attack = fragments(100_001, false);
    assert_eq!(frame_attack(&[], &attack).await, 1009);
}

#[tokio::test]
async fn message_of_exactly_max_fragments_is_echoed() {
    let server = Tetherd::start(&["--max-fragments", "1000"]);
    let mut peer = raw_client(server.addr).await;
    peer.write(&fragments(1000, true)).await;
    let echo = peer.frame().await;
    assert_eq!((echo.opcode, echo.fin, echo.payload.len()), (TEXT, true, 0));
    // One more fragment is one too many.
    assert_eq!(
        close_code_after(server.addr, &fragments(1001, true)).await,
        1009
    );
}

#[tokio::test]
async fn invalid_utf8_in_the_first_fragment_gets_1007_before_fin() {
    // The message is never finished: the server must not wait for FIN.
    let attack = client_frame(TEXT, b"ok so far \xff");
    assert_eq!(frame_attack(&[], &attack).await, 1007);
}

#[tokio::test]
async fn control_frame_of_126_bytes_gets_1002() {
    let attack = client_frame(FIN | PING, &[b'p'; 126]);
    assert_eq!(attack[1] & 0x7f, 126, "uses the 16-bit length form");
    assert_eq!(frame_attack(&[], &attack).await, 1002);
}

#[tokio::test]
async fn fragmented_ping_gets_1002() {
    let attack = client_frame(PING, b"first half");
    assert_eq!(frame_attack(&[], &attack).await, 1002);
}

#[tokio::test]
async fn close_with_a_1_byte_payload_gets_1002() {
    let attack = client_frame(FIN | CLOSE, &[0x03]);
    assert_eq!(frame_attack(&[], &attack).await, 1002);
}

#[tokio::test]
async fn close_with_code_1005_gets_1002() {
    let attack = client_frame(FIN | CLOSE, &close_payload(1005, b""));
    assert_eq!(frame_attack(&[], &attack).await, 1002);
}

#[tokio::test]
async fn close_with_an_invalid_utf8_reason_gets_1007() {
    let attack = client_frame(FIN | CLOSE, &close_payload(1000, b"bad \xff\xfe reason"));
    assert_eq!(frame_attack(&[], &attack).await, 1007);
}

#[tokio::test]
async fn stalled_handshakes_are_closed_at_the_deadline() {
    const STALLED: usize = 300;
    let server = Tetherd::start(&["--handshake-timeout", "2"]);
    let mut bystander = Bystander::connect(server.addr).await;
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: stalled\r\nUpgrade: webso")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    // While they stall, others are served.
    bystander.still_echoes().await;

    let mut closing = JoinSet::new();
    for mut tcp in stalled {
        closing.spawn(async move { read_to_close(&mut tcp).await });
    }
    // Each read ends (EOF or reset) within the deadline plus HANG slack.
    let mut closed = 0;
    while let Some(result) = closing.join_next().await {
        result.expect("the stalled connection was closed");
        closed += 1;
    }
    assert_eq!(closed, STALLED);
    bystander.still_echoes().await;
}

#[tokio::test]
async fn slowloris_is_cut_at_the_handshake_deadline() {
    let server = Tetherd::start(&["--handshake-timeout", "2"]);
    let mut bystander = Bystander::connect(server.addr).await;
    // A head that takes about 30 s at one byte per 100 ms.
    let head = upgrade_request("slow").replacen(
        "\r\n\r\n",
        &format!("\r\nX-Slow: {}\r\n\r\n", "s".repeat(150)),
        1,
    );
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut read, mut write) = tcp.into_split();
    let mut cut = std::pin::pin!(read_to_close(&mut read));
    let mut sent = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    within("the server to cut the slowloris", async {
        loop {
            tokio::select! {
                _ = &mut cut => break,
                _ = ticks.tick() => {
                    if sent < head.len() && write.write_all(&head.as_bytes()[sent..=sent]).await.is_ok() {
                        sent += 1;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        sent < head.len(),
        "the whole head went through ({sent} bytes)"
    );
    bystander.still_echoes().await;
}
