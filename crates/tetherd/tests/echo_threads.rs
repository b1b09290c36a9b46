//! `tetherd echo --threads 1` runs on a current-thread runtime: the accept
//! loop, every connection and every refusal share the one thread.

mod common;

use std::time::Duration;

use common::Tetherd;
use tether::{ClientConfig, CloseCode, Message, WebSocket};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

const LIMIT: Duration = Duration::from_secs(30);

async fn connect(server: &Tetherd) -> WebSocket<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let (ws, _) =
        tether::client::handshake(tcp, &server.addr.to_string(), "/", &ClientConfig::default())
            .await
            .expect("upgraded");
    ws
}

#[tokio::test]
async fn one_thread_serves_connections_at_once_closes_them_and_refuses_beyond_the_cap() {
    let server = Tetherd::echo(&["--threads", "1", "--max-connections", "8"]);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(&server).await);
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("client {i}"))).await.unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        let echoed = timeout(LIMIT, ws.recv()).await.expect("echoed in time");
        assert_eq!(
            echoed.unwrap().unwrap(),
            Message::text(format!("client {i}"))
        );
    }

    let mut ninth = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    ninth.write_all(request.as_bytes()).await.unwrap();
    let mut refusal = String::new();
    timeout(LIMIT, ninth.read_to_string(&mut refusal))
        .await
        .expect("answered")
        .unwrap();
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");

    for mut ws in clients {
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        let reply = timeout(LIMIT, ws.recv()).await.expect("closed in time");
        match reply {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::NORMAL),
            other => panic!("expected the server's close frame, got {other:?}"),
        }
    }
    let closed = server.wait_for_log("connection closed", LIMIT);
    assert!(
        closed.is_some_and(|line| line.contains("code=1000")),
        "no `connection closed` line with code 1000"
    );
}
