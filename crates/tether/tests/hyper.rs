//! Tether mounted in a hyper 1.x server through `tether::server::upgrade`.

mod common;

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tether::{
    ClientConfig, CloseCode, CloseFrame, Message, ServerConfig, connect_with,
    deflate::DeflateConfig,
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};

use common::*;

/// Upgrades WebSocket requests and echoes on them; answers anything else
/// with a plain `200`.
async fn handle(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if !request.headers().contains_key(http::header::UPGRADE) {
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        let text = format!("plain HTTP, {} body bytes\n", body.map_or(0, |b| b.len()));
        return Ok(Response::new(Full::new(Bytes::from(text))));
    }
    // Compression is on for /deflate only.
    let deflate = (request.uri().path() == "/deflate").then(DeflateConfig::default);
    let mut config = ServerConfig::default();
    config.deflate = deflate;
    match tether::server::upgrade(&mut request, &config) {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                if let Ok(mut ws) = pending.wait().await {
                    echo(&mut ws).await;
                }
            });
            Ok(response.map(|()| Full::new(Bytes::new())))
        }
        Err(refusal) => {
            let response = Response::builder()
                .status(refusal.http_status())
                .body(Full::new(Bytes::from(refusal.to_string())))
                .expect("a valid refusal response");
            Ok(response)
        }
    }
}

async fn spawn_hyper_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(handle))
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn hyper_upgrade_round_trips_messages() {
    let addr = spawn_hyper_server().await;
    let (mut ws, _) = within("connect", tether::connect(&format!("ws://{addr}/ws")))
        .await
        .unwrap();
    let big = Bytes::from(vec![7u8; 300_000]);
    for message in [
        Message::text("through hyper"),
        Message::binary(big),
        Message::text("ünïcödé"),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, message);
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Close(Some(CloseFrame::new(CloseCode::NORMAL)))
    );
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn hyper_upgrade_negotiates_permessage_deflate_when_configured() {
    let addr = spawn_hyper_server().await;
    let mut config = ClientConfig::default();
    config.deflate.push(DeflateConfig::default());
    let (mut ws, response) = within(
        "connect",
        connect_with(&format!("ws://{addr}/deflate"), &config),
    )
    .await
    .unwrap();
    assert!(response.deflate().is_some(), "{:?}", response.extensions());
    assert!(ws.deflate().is_some());
    let text = Message::text("compressed through hyper ".repeat(1000));
    ws.send(text.clone()).await.unwrap();
    assert_eq!(next(&mut ws).await, text);

    let (_, plain) = within("connect", connect_with(&format!("ws://{addr}/ws"), &config))
        .await
        .unwrap();
    assert!(plain.deflate().is_none(), "off unless configured");
}

#[tokio::test]
async fn hyper_serves_plain_http_next_to_upgrades() {
    let addr = spawn_hyper_server().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let response = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nplain HTTP, 5 body bytes\n"),
        "{response}"
    );

    // The same server still upgrades.
    let (mut ws, _) = tether::connect(&format!("ws://{addr}/")).await.unwrap();
    ws.send(Message::text("after plain HTTP")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("after plain HTTP"));
}

#[tokio::test]
async fn hyper_refusal_carries_the_handshake_status() {
    let addr = spawn_hyper_server().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request =
        upgrade_request("x").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = read_head(&mut tcp).await;
    assert!(
        head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn hyper_upgrade_applies_the_origin_policy() {
    let addr = spawn_hyper_server().await;
    for (origin, status) in [
        (format!("http://{addr}"), "HTTP/1.1 101 "),
        ("http://evil.example".to_owned(), "HTTP/1.1 403 "),
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = upgrade_request(&addr.to_string()).replacen(
            "\r\n\r\n",
            &format!("\r\nOrigin: {origin}\r\n\r\n"),
            1,
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let (head, _) = read_head(&mut tcp).await;
        assert!(head.starts_with(status), "{origin}: {head}");
    }
}

#[tokio::test]
async fn hyper_upgrade_keeps_frames_pipelined_after_the_request() {
    let addr = spawn_hyper_server().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = upgrade_request(&addr.to_string()).into_bytes();
    bytes.extend(client_frame(FIN | TEXT, b"sent with the request"));
    tcp.write_all(&bytes).await.unwrap();
    let (head, leftover) = read_head(&mut tcp).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains(SAMPLE_ACCEPT), "{head}");
    let mut peer = RawPeer::new(tcp, &leftover);
    let frame = peer.frame().await;
    assert_eq!((frame.opcode, frame.fin), (TEXT, true));
    assert_eq!(frame.payload, b"sent with the request");
}
