//! Interoperability with real third-party peers: Python `websockets` and
//! Node `ws`, each as a client of `tetherd echo` and as a server for the
//! Tether client.

mod common;

use std::{process::Stdio, time::Duration};

use bytes::Bytes;
use common::{Peer, PeerServer, Tetherd};
use tether::{CloseCode, Error, Initiator, Message, ProtocolError, connect};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn peer_client_passes_every_scenario(peer: Peer) {
    let server = Tetherd::echo(&[]);
    let output = peer
        .command()
        .args(["client", &server.url()])
        .stderr(Stdio::inherit())
        .output()
        .expect("peer client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{peer:?} client failed against tetherd echo:\n{stdout}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn python_websockets_client_against_tetherd_echo() {
    peer_client_passes_every_scenario(Peer::Python);
}

#[test]
fn node_ws_client_against_tetherd_echo() {
    peer_client_passes_every_scenario(Peer::Node);
}

#[tokio::test]
async fn tether_client_against_python_websockets_server() {
    tether_client_scenarios(Peer::Python).await;
}

#[tokio::test]
async fn tether_client_against_node_ws_server() {
    tether_client_scenarios(Peer::Node).await;
}

async fn tether_client_scenarios(peer: Peer) {
    let server = PeerServer::start(peer);
    timeout(LIMIT, echo_round_trips(&server.url("/echo")))
        .await
        .expect("echo in time");
    timeout(LIMIT, fragmented_echoes(&server.url("/echo-fragmented")))
        .await
        .expect("fragments in time");
    timeout(LIMIT, pings_both_ways(&server.url("/ping")))
        .await
        .expect("pings in time");
    timeout(LIMIT, big_message(&server.url("/big")))
        .await
        .expect("big message in time");
    for code in [1000, 1001, 3000, 4001, 4999] {
        timeout(
            LIMIT,
            server_closes_with(&server.url(&format!("/close/{code}")), code),
        )
        .await
        .expect("server close in time");
    }
    timeout(
        LIMIT,
        server_closes_without_code(&server.url("/close/none")),
    )
    .await
    .expect("empty close in time");
    timeout(
        LIMIT,
        server_sends_forbidden_close_code(&server.url("/close/1005")),
    )
    .await
    .expect("bad close in time");
    timeout(LIMIT, server_drops_tcp(&server.url("/drop")))
        .await
        .expect("drop in time");
    timeout(LIMIT, client_closes(&server.url("/echo")))
        .await
        .expect("client close in time");
}

async fn next_data(ws: &mut tether::WebSocket<tether::MaybeTls>) -> Message {
    loop {
        match ws.recv().await.expect("connection open").expect("no error") {
            message if message.is_data() => return message,
            Message::Close(frame) => panic!("unexpected close {frame:?}"),
            _ => {}
        }
    }
}

async fn echo_round_trips(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    let megabyte: Bytes = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let messages = [
        Message::text("hello"),
        Message::text("κόσμε 🌍"),
        Message::text(""),
        Message::binary(Bytes::new()),
        Message::binary((0..=255u8).collect::<Vec<_>>()),
        Message::binary(megabyte.clone()),
        Message::text("x".repeat(1 << 20)),
    ];
    for message in &messages {
        ws.send(message.clone()).await.expect("sends");
        assert_eq!(&next_data(&mut ws).await, message);
    }
    for i in 0..1000 {
        ws.send(Message::text(format!("pipelined {i}")))
            .await
            .expect("sends");
    }
    for i in 0..1000 {
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(format!("pipelined {i}"))
        );
    }
}

async fn fragmented_echoes(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    let text = Message::text("fragmented ünïcödé text, split inside characters: ☃☃☃");
    ws.send(text.clone()).await.expect("sends");
    assert_eq!(next_data(&mut ws).await, text);
    let data = Message::binary((0..300_000).map(|i| (i % 7) as u8).collect::<Vec<_>>());
    ws.send(data.clone()).await.expect("sends");
    assert_eq!(next_data(&mut ws).await, data);
}

async fn pings_both_ways(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    // The server pings right after the handshake; our core answers it.
    ws.send(Message::text("first")).await.expect("sends");
    let mut saw_ping = false;
    loop {
        match ws.recv().await.expect("open").expect("no error") {
            Message::Ping(payload) => {
                assert_eq!(&payload[..], b"tether");
                saw_ping = true;
            }
            Message::Text(text) => {
                assert_eq!(text, "first");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_ping, "the server's ping reached the application");
    ws.send(Message::text("pong?")).await.expect("sends");
    assert_eq!(next_data(&mut ws).await, Message::text("yes"));
    ws.send(Message::Ping(Bytes::from_static(b"from tether")))
        .await
        .expect("pings");
    loop {
        match ws.recv().await.expect("open").expect("no error") {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"from tether");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn big_message(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    let Message::Binary(data) = next_data(&mut ws).await else {
        panic!("expected binary");
    };
    assert_eq!(data.len(), 1 << 20);
    assert!(data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

async fn server_closes_with(url: &str, code: u16) {
    let (mut ws, _) = connect(url).await.expect("connects");
    ws.send(Message::text("close please")).await.expect("sends");
    let close = loop {
        match ws.recv().await.expect("open").expect("no error") {
            Message::Close(frame) => break frame.expect("a close code"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode(code));
    assert_eq!(close.reason, "bye");
    assert_eq!(ws.closed_by(), Some(Initiator::Peer));
    assert!(
        ws.recv().await.is_none(),
        "stream ends after the close handshake"
    );
}

async fn server_closes_without_code(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    ws.send(Message::text("close please")).await.expect("sends");
    match ws.recv().await.expect("open").expect("no error") {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::NO_STATUS),
        other => panic!("unexpected {other:?}"),
    }
    assert!(ws.recv().await.is_none());
}

async fn server_sends_forbidden_close_code(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    ws.send(Message::text("close please")).await.expect("sends");
    match ws.recv().await.expect("an error") {
        Err(Error::Protocol(ProtocolError::InvalidCloseCode(1005))) => {}
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(ws.recv().await.is_none());
}

async fn server_drops_tcp(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    ws.send(Message::text("drop me")).await.expect("sends");
    loop {
        match ws.recv().await.expect("a close event") {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::ABNORMAL);
                break;
            }
            // A reset instead of a FIN is also an abrupt end.
            Err(Error::Io(_)) => break,
            Ok(Message::Text(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn client_closes(url: &str) {
    let (mut ws, _) = connect(url).await.expect("connects");
    ws.close(CloseCode(4000), "done")
        .await
        .expect("sends close");
    match ws.recv().await.expect("the reply").expect("no error") {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode(4000)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ws.closed_by(), Some(Initiator::Local));
    assert!(ws.recv().await.is_none());
}
