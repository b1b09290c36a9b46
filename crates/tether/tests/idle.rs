//! Idle connections parked without a task: `recv_or_idle` says when,
//! `into_dormant` takes the socket out of the runtime, and an `IdlePool`
//! hands connections back when bytes arrive, the peer leaves or a deadline
//! (keepalive) passes; nothing is lost on the way.

mod common;

use std::{sync::Arc, time::Duration};

use tether::{
    CloseCode, Keepalive, Message, ServerConfig, WebSocket,
    client::MaybeTls,
    idle::{DormantWebSocket, IdleExt, IdlePool, Received},
};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// A server-side connection and a client connected to it.
async fn pair(config: ServerConfig) -> (WebSocket<TcpStream>, WebSocket<MaybeTls>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tether::accept(tcp, &config).await.unwrap().0
    };
    let client = async { tether::connect(&url).await.unwrap().0 };
    within("the handshake", async { tokio::join!(server, client) }).await
}

/// `ws`'s next step, which must be a message.
async fn message(ws: &mut WebSocket<TcpStream>, quiet: Duration) -> Message {
    match within("a message", ws.recv_or_idle(quiet)).await {
        Received::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Parks `ws` in `pool` until the pool hands it back, and wakes it.
async fn park_and_wait(
    pool: &mut IdlePool<DormantWebSocket>,
    ws: WebSocket<TcpStream>,
) -> WebSocket<TcpStream> {
    pool.parker().park(ws.into_dormant().unwrap()).unwrap();
    assert_eq!(pool.len(), 1);
    let dormant = within("the pool to hand it back", pool.next())
        .await
        .unwrap();
    assert_eq!(pool.len(), 0);
    dormant.wake().unwrap()
}

#[tokio::test]
async fn a_fresh_connection_is_idle_at_once_and_a_busy_one_only_after_the_quiet_period() {
    let (mut server, mut client) = pair(ServerConfig::default()).await;
    assert!(matches!(
        within("idle", server.recv_or_idle(Duration::ZERO)).await,
        Received::Idle
    ));
    client.send(Message::text("hello")).await.unwrap();
    // A quiet period longer than the test may run: the message, not Idle.
    let quiet = Duration::from_secs(3600);
    assert_eq!(message(&mut server, quiet).await, Message::text("hello"));
    server.send(Message::text("back")).await.unwrap();
    assert_eq!(
        within("echo", client.recv()).await.unwrap().unwrap(),
        Message::text("back")
    );
    // Nothing in flight now; a short quiet period ends in Idle.
    assert!(matches!(
        within("idle", server.recv_or_idle(Duration::from_millis(50))).await,
        Received::Idle
    ));
}

#[tokio::test]
async fn a_parked_connection_comes_back_with_the_bytes_that_woke_it() {
    let (server, mut client) = pair(ServerConfig::default()).await;
    let mut pool = IdlePool::new().unwrap();
    let parker = pool.parker();
    parker.park(server.into_dormant().unwrap()).unwrap();
    // Nothing arrives: the pool holds it (the sweep runs and finds no deadline).
    let waited = tokio::time::timeout(Duration::from_millis(1500), pool.next()).await;
    assert!(waited.is_err(), "handed back with nothing to read");
    assert_eq!(pool.len(), 1);

    client
        .send(Message::binary(vec![7u8; 100_000]))
        .await
        .unwrap();
    let mut server = within("wake", pool.next()).await.unwrap().wake().unwrap();
    assert_eq!(
        message(&mut server, Duration::ZERO).await,
        Message::binary(vec![7u8; 100_000])
    );
    // Back and forth after waking, then parked again and woken again.
    server.send(Message::text("awake")).await.unwrap();
    assert_eq!(
        within("reply", client.recv()).await.unwrap().unwrap(),
        Message::text("awake")
    );
    assert!(matches!(
        server.recv_or_idle(Duration::ZERO).await,
        Received::Idle
    ));
    client.send(Message::text("again")).await.unwrap();
    let mut server = park_and_wait(&mut pool, server).await;
    assert_eq!(
        message(&mut server, Duration::ZERO).await,
        Message::text("again")
    );
}

#[tokio::test]
async fn bytes_that_arrived_before_parking_wake_it_at_once() {
    let (mut server, mut client) = pair(ServerConfig::default()).await;
    assert!(matches!(
        server.recv_or_idle(Duration::ZERO).await,
        Received::Idle
    ));
    client.send(Message::text("early")).await.unwrap();
    // Give the bytes time to land in the server's socket before it parks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut pool = IdlePool::new().unwrap();
    let mut server = park_and_wait(&mut pool, server).await;
    assert_eq!(
        message(&mut server, Duration::ZERO).await,
        Message::text("early")
    );
}

#[tokio::test]
async fn a_connection_parked_in_the_middle_of_a_frame_keeps_the_half_it_has() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tether::accept(tcp, &ServerConfig::default())
            .await
            .unwrap()
            .0
    };
    let (mut server, mut client) = within("the handshake", async {
        tokio::join!(server, raw_client(addr))
    })
    .await;
    let frame = client_frame(0x81, b"half now, half after the nap");
    let (first, rest) = frame.split_at(frame.len() / 2);
    client.write(first).await;
    // Half a frame is not a message: after the quiet period, idle.
    assert!(matches!(
        within("idle", server.recv_or_idle(Duration::from_millis(100))).await,
        Received::Idle
    ));
    client.write(rest).await;
    let mut pool = IdlePool::new().unwrap();
    let mut server = park_and_wait(&mut pool, server).await;
    assert_eq!(
        message(&mut server, Duration::ZERO).await,
        Message::text("half now, half after the nap")
    );
}

#[tokio::test]
async fn a_peer_that_closes_while_parked_gets_its_close_answered() {
    let (server, mut client) = pair(ServerConfig::default()).await;
    let mut pool = IdlePool::new().unwrap();
    pool.parker().park(server.into_dormant().unwrap()).unwrap();
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
    let mut server = within("wake", pool.next()).await.unwrap().wake().unwrap();
    match message(&mut server, Duration::ZERO).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::NORMAL),
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(matches!(
        within("end", server.recv_or_idle(Duration::ZERO)).await,
        Received::Ended
    ));
    // The client saw the server's close reply and then the end.
    while let Some(received) = within("client end", client.recv()).await {
        received.unwrap();
    }
}

#[tokio::test]
async fn a_keepalive_deadline_wakes_a_parked_connection_to_ping() {
    let keepalive = Keepalive {
        interval: Some(Duration::from_millis(300)),
        timeout: Duration::from_secs(5),
    };
    let mut config = ServerConfig::default();
    Arc::make_mut(&mut config.connection).keepalive = keepalive;
    let (server, mut client) = pair(config).await;
    let mut pool = IdlePool::new().unwrap();
    let deadline = server
        .into_dormant()
        .map(|dormant| {
            let deadline = dormant.deadline();
            pool.parker().park(dormant).unwrap();
            deadline
        })
        .unwrap();
    assert!(deadline.is_some(), "keepalive gives a deadline");
    // Handed back by the sweep, with nothing to read.
    let mut server = within("deadline", pool.next())
        .await
        .unwrap()
        .wake()
        .unwrap();
    let serving = tokio::spawn(async move {
        // The core sends its ping; the client's pong is the next input.
        let pong = message(&mut server, Duration::from_secs(3600)).await;
        (server, pong)
    });
    match within("ping", client.recv()).await.unwrap().unwrap() {
        Message::Ping(_) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    let (_server, pong) = serving.await.unwrap();
    assert!(matches!(pong, Message::Pong(_)), "got {pong:?}");
}

#[tokio::test]
async fn many_connections_share_one_pool_and_each_wakes_for_its_own_bytes() {
    let mut pool = IdlePool::new().unwrap();
    let parker = pool.parker();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (server, client) = pair(ServerConfig::default()).await;
        parker.park(server.into_dormant().unwrap()).unwrap();
        clients.push(client);
    }
    assert_eq!(pool.len(), 50);
    for (i, client) in clients.iter_mut().enumerate().filter(|(i, _)| i % 5 == 0) {
        client.send(Message::text(i.to_string())).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        let mut server = within("wake", pool.next()).await.unwrap().wake().unwrap();
        let Message::Text(text) = message(&mut server, Duration::ZERO).await else {
            panic!("expected text");
        };
        seen.push(text.as_str().parse::<usize>().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50).step_by(5).collect::<Vec<_>>());
    assert_eq!(pool.len(), 40);
}
