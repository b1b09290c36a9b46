//! `tetherd echo --deflate`: permessage-deflate with a real client, and a
//! compression bomb measured against the server process's memory.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::Tetherd;
use flate2::{Compress, Compression, FlushCompress};
use tether::{ClientConfig, Message, connect_with, deflate::DeflateConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The message limit the bomb runs into; not a power of two, so the
/// reassembly buffer's growth steps do not line up with it.
const MAX_MESSAGE: usize = 24 << 20;

/// Frames of the bomb.
const FRAME: usize = 16 << 10;

#[tokio::test]
async fn compressed_messages_echo_with_deflate_negotiated() {
    let server = Tetherd::echo(&["--deflate"]);
    let mut config = ClientConfig::default();
    config.deflate.push(DeflateConfig::default());
    let (mut ws, response) = connect_with(&server.url(), &config)
        .await
        .expect("connects");
    let negotiated = *response.deflate().expect("the server accepted deflate");
    assert!(negotiated.outgoing.no_context_takeover && negotiated.incoming.no_context_takeover);
    let text = "tetherd compresses this. ".repeat(500);
    for message in [
        Message::text(text.clone()),
        Message::binary(vec![7u8; 100_000]),
        Message::text("tiny"),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echoed = timeout(LIMIT, ws.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn deflate_is_off_unless_configured() {
    let server = Tetherd::echo(&[]);
    let mut config = ClientConfig::default();
    config.deflate.push(DeflateConfig::default());
    let (mut ws, response) = connect_with(&server.url(), &config)
        .await
        .expect("connects");
    assert!(response.deflate().is_none());
    assert!(response.header("Sec-WebSocket-Extensions").is_none());
    ws.send(Message::text("x".repeat(1000))).await.unwrap();
    let echoed = timeout(LIMIT, ws.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.len(), 1000);
}

/// A deflate stream that inflates to 1 GiB of zeros, about 1 MiB long:
/// after the first MiB the compressor's state repeats, so one flushed MiB
/// of zeros compresses to the same bytes every time.
fn gigabyte_bomb() -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut compressor = Compress::new(Compression::best(), false);
    let mut flushed = || {
        let mut out = Vec::with_capacity(8 << 10);
        compressor
            .compress_vec(&zeros, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.len() < out.capacity(), "one MiB of zeros fits in 8 KiB");
        out
    };
    let first = flushed();
    let repeated = flushed();
    assert_eq!(flushed(), repeated, "the state repeats");
    let mut bomb = first;
    for _ in 1..1024 {
        bomb.extend_from_slice(&repeated);
    }
    bomb
}

fn masked_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// Resident and peak resident memory of `pid`, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_gigabyte_bomb_in_16_kib_frames_is_closed_with_1009_within_the_limit() {
    let max = MAX_MESSAGE.to_string();
    let server = Tetherd::echo(&["--deflate", "--max-message-size", &max]);
    let bomb = gigabyte_bomb();
    assert!(bomb.len() < 1100 << 10, "{}", bomb.len());

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = BytesMut::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(
            timeout(LIMIT, tcp.read_buf(&mut head))
                .await
                .unwrap()
                .unwrap()
                > 0
        );
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );

    let (mut reader, mut writer) = tcp.into_split();
    let (before, _) = rss(server.pid());

    // The bomb: one compressed binary message in 16 KiB frames. Each frame
    // inflates to about 16 MiB, so the limit is crossed in the second.
    let frames: Vec<Vec<u8>> = bomb.chunks(FRAME).map(<[u8]>::to_vec).collect();
    let bomb_len = bomb.len();
    let send = tokio::spawn(async move {
        for (i, chunk) in frames.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == frames.len());
            let frame = masked_frame(last, first, if first { 0x2 } else { 0x0 }, chunk);
            if writer.write_all(&frame).await.is_err() {
                return i;
            }
        }
        frames.len()
    });

    let mut received = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match timeout(LIMIT, reader.read(&mut buf))
            .await
            .expect("the server answers")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    let sent_frames = send.await.unwrap();
    let (_, peak) = rss(server.pid());

    // The server's close frame: 0x88, length, then the code.
    assert!(received.len() >= 4, "{received:?}");
    assert_eq!(received[0], 0x88, "a close frame: {received:?}");
    let code = u16::from_be_bytes([received[2], received[3]]);
    assert_eq!(code, 1009, "{}", String::from_utf8_lossy(&received[4..]));
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 2 * MAX_MESSAGE as u64,
        "server RSS grew by {growth} bytes, over twice the {MAX_MESSAGE}-byte limit"
    );
    eprintln!(
        "bomb of {} bytes in {} frames of 16 KiB, {sent_frames} written before the close; \
         server RSS {before} -> peak {peak} (+{growth} bytes, limit {MAX_MESSAGE})",
        bomb_len,
        bomb_len.div_ceil(FRAME)
    );
    assert!(
        server
            .wait_for_log("1009", Duration::from_secs(10))
            .is_some(),
        "the server logs the 1009"
    );
}
