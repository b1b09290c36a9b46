//! Abuse limits of `tetherd echo`: connection caps, message rate, idle timeout.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::Tetherd;
use tether::{ClientConfig, CloseCode, Message, WebSocket};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

const LIMIT: Duration = Duration::from_secs(30);

async fn tcp_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.expect("connects")
}

async fn websocket_from(source: &str, server: SocketAddr) -> WebSocket<TcpStream> {
    let tcp = tcp_from(source, server).await;
    let (ws, _) =
        tether::client::handshake(tcp, &server.to_string(), "/", &ClientConfig::default())
            .await
            .expect("upgraded");
    ws
}

/// The status line and body of a refused upgrade.
async fn refusal_from(source: &str, server: SocketAddr) -> String {
    let mut tcp = tcp_from(source, server).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    timeout(LIMIT, tcp.read_to_string(&mut response))
        .await
        .expect("answered")
        .expect("read");
    response
}

#[tokio::test]
async fn connections_beyond_the_caps_get_503_and_others_still_connect() {
    let server = Tetherd::echo(&["--max-connections", "4", "--max-connections-per-ip", "2"]);
    let a1 = websocket_from("127.0.0.1", server.addr).await;
    let _a2 = websocket_from("127.0.0.1", server.addr).await;
    let refused = refusal_from("127.0.0.1", server.addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("too many connections from 127.0.0.1"),
        "{refused}"
    );
    let _b = websocket_from("127.0.0.2", server.addr).await;
    let mut c = websocket_from("127.0.0.3", server.addr).await;
    let refused = refusal_from("127.0.0.4", server.addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("limit of 4 connections"), "{refused}");
    // Connected clients are unaffected.
    c.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        c.recv().await.unwrap().unwrap(),
        Message::text("still here")
    );
    // A closed connection frees its place.
    drop(a1);
    let mut again = None;
    for _ in 0..100 {
        let tcp = tcp_from("127.0.0.1", server.addr).await;
        match tether::client::handshake(
            tcp,
            &server.addr.to_string(),
            "/",
            &ClientConfig::default(),
        )
        .await
        {
            Ok((ws, _)) => {
                again = Some(ws);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(again.is_some(), "the freed place can be used again");
}

#[tokio::test]
async fn message_flood_is_closed_with_policy_violation() {
    let server = Tetherd::echo(&["--max-messages-per-second", "10", "--message-burst", "20"]);
    let mut ws = websocket_from("127.0.0.1", server.addr).await;
    for i in 0..100 {
        if ws.send(Message::text(format!("flood {i}"))).await.is_err() {
            break;
        }
    }
    let mut echoed = 0;
    let close = timeout(LIMIT, async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => echoed += 1,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::POLICY_VIOLATION));
    assert!(echoed <= 21, "at most the burst was echoed: {echoed}");
    let line = server
        .wait_for_log("connection failed", LIMIT)
        .expect("logged");
    assert!(line.contains("1008"), "{line}");
}

#[tokio::test]
async fn idle_connection_is_closed_with_going_away() {
    let server = Tetherd::echo(&["--idle-timeout", "1", "--ping-interval", "0"]);
    let mut ws = websocket_from("127.0.0.1", server.addr).await;
    let message = timeout(LIMIT, ws.recv()).await.expect("closed in time");
    match message {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason, "idle timeout");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(timeout(LIMIT, ws.recv()).await.expect("ends").is_none());
}

#[tokio::test]
async fn client_that_sends_but_never_reads_is_dropped() {
    let server = Tetherd::echo(&["--ping-interval", "1"]);
    let mut ws = websocket_from("127.0.0.1", server.addr).await;
    let chunk = Message::binary(vec![7u8; 64 * 1024]);
    // Never receive: the server's echoes pile up until its queue is full,
    // then it gives up on us instead of holding the connection forever.
    let sent = timeout(LIMIT, async {
        let mut sent = 0usize;
        while ws.send(chunk.clone()).await.is_ok() {
            sent += 1;
        }
        sent
    })
    .await
    .expect("the server dropped the connection in time");
    assert!(sent > 0);
    let line = server
        .wait_for_log("connection dropped", LIMIT)
        .expect("logged");
    assert!(line.contains("stopped reading"), "{line}");
}
