//! The tokio layer over real loopback TCP: round trips, cancellation safety,
//! split halves, backpressure, the close handshake, timeouts and the bytes
//! on either side of the upgrade.

mod common;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt};
use tether::{
    ClientConfig, CloseCode, CloseFrame, Error, Initiator, Keepalive, Message, ServerConfig,
    TrySendError, WebSocket, client::MaybeTls,
};
use tether_proto::UsageError;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{Notify, oneshot},
    time::sleep,
};

use common::*;

/// A client config whose close timeout (and so its wait for the server's
/// FIN) is far longer than any test runs, so ending at all proves the FIN came.
fn patient_client() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.connection.close_timeout = Duration::from_secs(600);
    config
}

/// A client config with `keepalive`.
fn client_with(keepalive: Keepalive) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.connection.keepalive = keepalive;
    config
}

/// Accepts one connection with `tether::accept` and hands it over.
async fn one_server(
    config: ServerConfig,
) -> (
    std::net::SocketAddr,
    oneshot::Receiver<WebSocket<TcpStream>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (ws, _) = tether::accept(tcp, &config).await.unwrap();
        let _ = tx.send(ws);
    });
    (addr, rx)
}

/// A client connected with `config` to `addr`.
async fn connect(addr: std::net::SocketAddr, config: &ClientConfig) -> WebSocket<MaybeTls> {
    let (ws, _) = within(
        "connect",
        tether::connect_with(&format!("ws://{addr}/"), config),
    )
    .await
    .unwrap();
    ws
}

/// Every message until the end of the stream.
async fn drain<S>(ws: &mut WebSocket<S>) -> Vec<Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = Vec::new();
    while let Some(received) = within("the stream to end", ws.recv()).await {
        messages.push(received.unwrap());
    }
    messages
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode(code),
        reason: reason.to_owned(),
    }))
}

#[tokio::test]
async fn echoes_text_binary_and_pings_over_loopback_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut ws, request) = tether::accept(tcp, &ServerConfig::default()).await.unwrap();
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("room=1"));
        echo(&mut ws).await;
        ws.closed_by()
    });

    let tcp = TcpStream::connect(addr).await.unwrap();
    let host = addr.to_string();
    let (mut ws, _) =
        tether::client::handshake(tcp, &host, "/chat?room=1", &ClientConfig::default())
            .await
            .unwrap();
    let big: Bytes = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for message in [
        Message::text("hello"),
        Message::text(""),
        Message::text("héllo wörld ✓"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::Binary(big),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, message);
    }
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(next(&mut ws).await, close(1000, ""));
    expect_end(&mut ws).await;
    assert_eq!(
        within("server", server).await.unwrap(),
        Some(Initiator::Peer)
    );
}

#[tokio::test]
async fn connect_round_trips_through_the_url_api() {
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let (mut ws, response) = tether::connect(&format!("ws://{addr}/any/path?q=1"))
        .await
        .unwrap();
    assert_eq!(response.subprotocol(), None);
    ws.send(Message::text("via connect")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("via connect"));
}

/// The messages the cancellation test sends, and their wire bytes: small
/// texts and binaries around a 1 MiB binary, a fragmented text whose
/// fragments split a multi-byte character, and a ping inside it.
fn cancellation_traffic() -> (Vec<Message>, Vec<u8>) {
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for i in 0..300 {
        let text = format!("before {i}");
        wire.extend(server_frame(FIN | TEXT, text.as_bytes()));
        expected.push(Message::text(text));
    }
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    wire.extend(server_frame(FIN | BINARY, &big));
    expected.push(Message::binary(big));
    for i in 0..300u32 {
        let data = i.to_be_bytes();
        wire.extend(server_frame(FIN | BINARY, &data));
        expected.push(Message::binary(data.to_vec()));
    }
    let text = "fragmenté ✓ across frames";
    let bytes = text.as_bytes();
    // Cut inside "é" (2 bytes) and inside "✓" (3 bytes).
    let cut1 = text.find('é').unwrap() + 1;
    let cut2 = text.find('✓').unwrap() + 2;
    wire.extend(server_frame(TEXT, &bytes[..cut1]));
    wire.extend(server_frame(FIN | PING, b"mid-message"));
    expected.push(Message::Ping(Bytes::from_static(b"mid-message")));
    wire.extend(server_frame(CONTINUATION, &bytes[cut1..cut2]));
    wire.extend(server_frame(FIN | CONTINUATION, &bytes[cut2..]));
    expected.push(Message::text(text));
    for i in 0..300 {
        let text = format!("after {i}");
        wire.extend(server_frame(FIN | TEXT, text.as_bytes()));
        expected.push(Message::text(text));
    }
    (expected, wire)
}

#[tokio::test]
async fn recv_dropped_in_select_loses_nothing() {
    let (expected, wire) = cancellation_traffic();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The writer sends one small piece, then waits until the reader has
    // dropped a pending recv() at least once, so every piece boundary (many
    // inside frame headers and the 1 MiB payload) sees a cancellation.
    let cancelled_once = Arc::new(Notify::new());
    let writer = {
        let cancelled_once = cancelled_once.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut peer = raw_server_handshake(tcp, &[]).await;
            let sizes = [1, 2, 3, 7, 13, 64, 1000, 4096, 16384];
            let mut pieces = 0;
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(sizes[pieces % sizes.len()].min(rest.len()));
                peer.write(piece).await;
                rest = tail;
                pieces += 1;
                if !rest.is_empty() {
                    cancelled_once.notified().await;
                }
            }
            // The ping was answered even though recv() kept being dropped.
            let pong = peer.frame().await;
            assert_eq!((pong.opcode, pong.masked), (PONG, true));
            assert_eq!(pong.payload, b"mid-message");
            pieces
        })
    };

    let config = client_with(Keepalive::OFF);
    let mut ws = connect(addr, &config).await;
    let mut received = Vec::new();
    let mut cancellations = 0usize;
    within("all messages", async {
        while received.len() < expected.len() {
            tokio::select! {
                message = ws.recv() => received.push(message.unwrap().unwrap()),
                () = sleep(Duration::from_millis(1)) => {
                    cancellations += 1;
                    cancelled_once.notify_one();
                }
            }
        }
    })
    .await;
    assert_eq!(received.len(), expected.len());
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        assert!(got == want, "message {i} differs: {got:?}");
    }
    let pieces = within("writer", writer).await.unwrap();
    assert!(
        cancellations + 1 >= pieces,
        "{cancellations} cancellations for {pieces} pieces"
    );
}

#[tokio::test]
async fn split_halves_send_and_receive_from_two_tasks() {
    const MESSAGES: usize = 10_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server echoes and pings the client after echo 500, 1500, … 9500,
    // so the client's read half answers pings while its write half sends.
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut ws, _) = tether::accept(tcp, &ServerConfig::default()).await.unwrap();
        let (mut echoed, mut pongs) = (0, Vec::new());
        while let Some(received) = ws.recv().await {
            match received.unwrap() {
                message @ Message::Text(_) => {
                    ws.send(message).await.unwrap();
                    echoed += 1;
                    if echoed % 1000 == 500 {
                        let payload = Bytes::from(format!("server ping {echoed}"));
                        ws.send(Message::Ping(payload)).await.unwrap();
                    }
                }
                Message::Pong(payload) => pongs.push(payload),
                Message::Ping(_) | Message::Close(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (echoed, pongs)
    });

    let ws = connect(addr, &ClientConfig::default()).await;
    let (mut read, mut write) = ws.split();
    let (all_echoed_tx, all_echoed) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let (mut texts, mut pongs, mut pings) = (0, Vec::new(), 0);
        let mut all_echoed_tx = Some(all_echoed_tx);
        while let Some(received) = read.recv().await {
            match received.unwrap() {
                Message::Text(text) => {
                    assert_eq!(text, format!("message {texts}").as_str());
                    texts += 1;
                    if texts == MESSAGES {
                        let _ = all_echoed_tx.take().unwrap().send(());
                    }
                }
                Message::Pong(payload) => pongs.push(payload),
                Message::Ping(_) => pings += 1,
                Message::Close(frame) => assert_eq!(frame.unwrap().code, CloseCode::NORMAL),
                other => panic!("unexpected {other:?}"),
            }
        }
        (texts, pongs, pings)
    });
    let writer = tokio::spawn(async move {
        for i in 0..MESSAGES {
            write
                .send(Message::text(format!("message {i}")))
                .await
                .unwrap();
            if i % 100 == 99 {
                let payload = Bytes::from(format!("client ping {i}"));
                write.send(Message::Ping(payload)).await.unwrap();
            }
        }
        // Close only once every echo (and so every server ping) is in.
        all_echoed.await.unwrap();
        SinkExt::close(&mut write).await.unwrap();
    });

    within("writer", writer).await.unwrap();
    let (texts, pongs, pings) = within("reader", reader).await.unwrap();
    assert_eq!(texts, MESSAGES);
    let expected: Vec<Bytes> = (0..MESSAGES / 100)
        .map(|n| Bytes::from(format!("client ping {}", n * 100 + 99)))
        .collect();
    assert_eq!(pongs, expected);
    assert_eq!(pings, MESSAGES / 1000);
    let (echoed, server_pongs) = within("server", server).await.unwrap();
    assert_eq!(echoed, MESSAGES);
    let expected: Vec<Bytes> = (0..MESSAGES / 1000)
        .map(|n| Bytes::from(format!("server ping {}", n * 1000 + 500)))
        .collect();
    assert_eq!(server_pongs, expected);
}

/// A 64 KiB binary message whose bytes say which message it is.
fn numbered(i: u32) -> Message {
    let mut data = vec![(i % 251) as u8; 64 * 1024];
    data[..4].copy_from_slice(&i.to_be_bytes());
    Message::binary(data)
}

#[tokio::test]
async fn try_send_hands_back_the_message_and_send_waits_while_the_peer_does_not_read() {
    let (addr, server) = one_server(ServerConfig::default()).await;
    let mut client = connect(addr, &ClientConfig::default()).await;
    client.set_max_buffered(256 * 1024);
    // The server accepted but does not poll its WebSocket: nothing is read,
    // so the kernel buffers fill and then our outbound queue does.
    let mut server = within("accept", server).await.unwrap();

    let mut queued = 0u32;
    let full = loop {
        assert!(queued < 10_000, "the queue never filled");
        match client.try_send(numbered(queued)) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(message)) => break message,
            Err(other) => panic!("unexpected {other:?}"),
        }
        // Write what the socket takes without waiting.
        if let Some(result) = SinkExt::flush(&mut client).now_or_never() {
            result.unwrap();
        }
    };
    assert_eq!(full, numbered(queued), "Full hands the message back");
    // The socket is full too: flushing cannot finish.
    assert!(SinkExt::flush(&mut client).now_or_never().is_none());
    // What waits is counted, as a browser's bufferedAmount: at least the
    // bound that refused the message, at most that plus one message.
    let waiting = client.buffered_amount();
    assert!(
        (256 * 1024..256 * 1024 + 64 * 1024 + 14).contains(&waiting),
        "{waiting} bytes queued"
    );

    let mut send = std::pin::pin!(client.send(full));
    // It cannot complete while the peer reads nothing; polling it for a
    // while only makes this check stronger.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), send.as_mut())
            .await
            .is_err(),
        "send completed although the peer reads nothing"
    );

    let reader = tokio::spawn(async move {
        for i in 0..=queued {
            assert_eq!(next(&mut server).await, numbered(i), "message {i}");
        }
        server
    });
    within("send once the peer reads", send).await.unwrap();
    let _server = within("the peer reads everything", reader).await.unwrap();
}

#[tokio::test]
async fn sink_poll_ready_waits_while_the_queue_is_full() {
    let (addr, server) = one_server(ServerConfig::default()).await;
    let mut client = connect(addr, &ClientConfig::default()).await;
    client.set_max_buffered(64 * 1024);
    let mut server = within("accept", server).await.unwrap();

    // feed() = poll_ready + start_send without flushing: once the socket and
    // then the queue are full, poll_ready must wait instead of queueing more.
    let mut fed = 0u32;
    loop {
        assert!(fed < 10_000, "poll_ready never waited");
        match SinkExt::feed(&mut client, numbered(fed)).now_or_never() {
            Some(result) => {
                result.unwrap();
                fed += 1;
            }
            None => break,
        }
    }
    let reader = tokio::spawn(async move {
        for i in 0..fed {
            assert_eq!(next(&mut server).await, numbered(i), "message {i}");
        }
    });
    within("flush once the peer reads", SinkExt::flush(&mut client))
        .await
        .unwrap();
    within("the peer reads everything", reader).await.unwrap();
}

#[tokio::test]
async fn no_send_after_close() {
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let mut ws = connect(addr, &patient_client()).await;
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();

    let late = Message::text("too late");
    match ws.send(late.clone()).await {
        Err(Error::Usage(UsageError::AlreadyClosing)) => {}
        other => panic!("send after close: {other:?}"),
    }
    match ws.try_send(late.clone()) {
        Err(TrySendError::Closed(message)) => assert_eq!(message, late),
        other => panic!("try_send after close: {other:?}"),
    }
    match SinkExt::send(&mut ws, late.clone()).await {
        Err(Error::Usage(UsageError::AlreadyClosing)) => {}
        other => panic!("Sink::send after close: {other:?}"),
    }
    assert!(matches!(
        ws.close(CloseCode::NORMAL, "again").await,
        Err(Error::Usage(UsageError::AlreadyClosing))
    ));

    assert_eq!(next(&mut ws).await, close(1000, ""));
    expect_end(&mut ws).await;
    // Still refused once the connection is fully closed.
    assert!(matches!(
        ws.try_send(late.clone()),
        Err(TrySendError::Closed(_))
    ));
    assert!(matches!(
        ws.send(late).await,
        Err(Error::Usage(UsageError::AlreadyClosing))
    ));
}

#[tokio::test]
async fn invalid_messages_are_handed_back_without_closing() {
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let mut ws = connect(addr, &ClientConfig::default()).await;
    match ws.try_send(Message::Ping(Bytes::from(vec![0; 126]))) {
        Err(TrySendError::Invalid(UsageError::ControlPayloadTooLong(126))) => {}
        other => panic!("{other:?}"),
    }
    match ws.close(CloseCode::ABNORMAL, "").await {
        Err(Error::Usage(UsageError::UnsendableCloseCode(1006))) => {}
        other => panic!("{other:?}"),
    }
    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still open"));
}

#[tokio::test]
async fn client_initiated_close_completes_on_both_sides() {
    let (addr, server) = one_server(ServerConfig::default()).await;
    let mut client = connect(addr, &patient_client()).await;
    let mut server = within("accept", server).await.unwrap();
    let server = tokio::spawn(async move {
        let messages = drain(&mut server).await;
        (messages, server.closed_by())
    });

    client.close(CloseCode(4000), "bye").await.unwrap();
    // The server echoes the code (§5.5.1).
    assert_eq!(next(&mut client).await, close(4000, ""));
    assert_eq!(client.closed_by(), Some(Initiator::Local));
    expect_end(&mut client).await;

    let (messages, closed_by) = within("server", server).await.unwrap();
    assert_eq!(messages, vec![close(4000, "bye")]);
    assert_eq!(closed_by, Some(Initiator::Peer));
    // The client only ended because the server closed TCP first (§7.1.1):
    // its own wait for that FIN would take 600 s.
    let mut buf = [0; 16];
    assert_eq!(client.transport().tcp().try_read(&mut buf).unwrap(), 0);
}

#[tokio::test]
async fn server_initiated_close_completes_on_both_sides() {
    let (addr, server) = one_server(ServerConfig::default()).await;
    let mut client = connect(addr, &patient_client()).await;
    let mut server = within("accept", server).await.unwrap();
    let server = tokio::spawn(async move {
        server
            .close(CloseCode::GOING_AWAY, "restarting")
            .await
            .unwrap();
        let messages = drain(&mut server).await;
        (messages, server.closed_by())
    });

    assert_eq!(next(&mut client).await, close(1001, "restarting"));
    assert_eq!(client.closed_by(), Some(Initiator::Peer));
    expect_end(&mut client).await;

    let (messages, closed_by) = within("server", server).await.unwrap();
    assert_eq!(messages, vec![close(1001, "")]);
    assert_eq!(closed_by, Some(Initiator::Local));
    let mut buf = [0; 16];
    assert_eq!(client.transport().tcp().try_read(&mut buf).unwrap(), 0);
}

#[tokio::test]
async fn server_closes_tcp_after_the_close_handshake() {
    // The client starts the close: the server replies, then closes TCP.
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let mut peer = raw_client(addr).await;
    peer.write(&client_frame(FIN | CLOSE, &close_payload(1000, b"x")))
        .await;
    assert_eq!(peer.close_code().await, 1000);
    peer.expect_closed().await;

    // The server starts the close: after the client's reply it closes TCP.
    let (addr, server) = one_server(ServerConfig::default()).await;
    let mut peer = raw_client(addr).await;
    let mut server = within("accept", server).await.unwrap();
    let server = tokio::spawn(async move {
        server.close(CloseCode::GOING_AWAY, "").await.unwrap();
        drain(&mut server).await
    });
    assert_eq!(peer.close_code().await, 1001);
    peer.write(&client_frame(FIN | CLOSE, &close_payload(1001, b"")))
        .await;
    peer.expect_closed().await;
    assert_eq!(
        within("server", server).await.unwrap(),
        vec![close(1001, "")]
    );
}

#[tokio::test]
async fn close_times_out_with_1006_when_the_server_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that reads everything and never answers, nor closes.
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut peer = raw_server_handshake(tcp, &[]).await;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = peer.next_frame().await {
            frames.push(frame);
        }
        frames
    });
    let mut ws = connect(addr, &ClientConfig::default()).await;
    tokio::time::pause();

    ws.close(CloseCode::NORMAL, "").await.unwrap();
    let guard = Duration::from_secs(60);
    let received = tokio::time::timeout(guard, ws.recv()).await.unwrap();
    match received {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::ABNORMAL),
        other => panic!("expected a 1006 close, got {other:?}"),
    }
    assert_eq!(ws.closed_by(), Some(Initiator::Local));
    // Then the client waits out its linger for the FIN, and shuts down.
    assert!(
        tokio::time::timeout(guard, ws.recv())
            .await
            .unwrap()
            .is_none()
    );
    let frames = tokio::time::timeout(guard, server).await.unwrap().unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].close_code().0, 1000);
}

#[tokio::test]
async fn keepalive_ends_a_connection_whose_peer_stopped_answering() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that reads everything and answers nothing, not even pings.
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut peer = raw_server_handshake(tcp, &[]).await;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = peer.next_frame().await {
            frames.push(frame);
        }
        frames
    });
    let keepalive = Keepalive {
        interval: Some(Duration::from_secs(20)),
        timeout: Duration::from_secs(10),
    };
    let config = client_with(keepalive);
    let mut ws = connect(addr, &config).await;
    tokio::time::pause();

    let guard = Duration::from_secs(600);
    match tokio::time::timeout(guard, ws.recv()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::ABNORMAL),
        other => panic!("expected a 1006 close, got {other:?}"),
    }
    assert_eq!(ws.closed_by(), Some(Initiator::Local));
    assert!(
        tokio::time::timeout(guard, ws.recv())
            .await
            .unwrap()
            .is_none()
    );
    // The server saw exactly the keepalive ping, then the connection ended.
    let frames = tokio::time::timeout(guard, server).await.unwrap().unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0].opcode, frames[0].masked), (PING, true));
}

#[tokio::test]
async fn keepalive_keeps_a_responsive_peer_connected() {
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let keepalive = Keepalive {
        interval: Some(Duration::from_secs(1)),
        timeout: Duration::from_secs(1),
    };
    let config = client_with(keepalive);
    let mut ws = connect(addr, &config).await;
    tokio::time::pause();

    // An idle minute of virtual time: a ping per silent second, each answered.
    let mut pongs = 0;
    let idle = sleep(Duration::from_secs(60));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            () = &mut idle => break,
            received = ws.recv() => match received {
                Some(Ok(Message::Pong(payload))) => {
                    assert!(payload.is_empty());
                    pongs += 1;
                }
                other => panic!("expected only pongs, got {other:?}"),
            },
        }
    }
    assert!(pongs >= 20, "only {pongs} keepalive pongs in a minute");
    assert_eq!(ws.closed_by(), None);
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still here"));
}

#[tokio::test]
async fn peer_eof_without_close_frame_is_reported_as_1006() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut peer = raw_server_handshake(tcp, &server_frame(FIN | TEXT, b"last words")).await;
        // Half-close: no close frame, just FIN.
        peer.io.shutdown().await.unwrap();
        peer.next_frame().await
    });
    let mut ws = connect(addr, &patient_client()).await;
    assert_eq!(next(&mut ws).await, Message::text("last words"));
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::ABNORMAL),
        other => panic!("expected a 1006 close, got {other:?}"),
    }
    assert_eq!(ws.closed_by(), Some(Initiator::Peer));
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn frames_pipelined_with_the_upgrade_request_are_kept() {
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = upgrade_request(&addr.to_string()).into_bytes();
    bytes.extend(client_frame(FIN | TEXT, b"pipelined one"));
    bytes.extend(client_frame(BINARY, b"pipelined "));
    bytes.extend(client_frame(FIN | CONTINUATION, b"two"));
    tcp.write_all(&bytes).await.unwrap();

    let (head, leftover) = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut peer = RawPeer::new(tcp, &leftover);
    let first = peer.frame().await;
    assert_eq!((first.opcode, first.fin, first.masked), (TEXT, true, false));
    assert_eq!(first.payload, b"pipelined one");
    let second = peer.frame().await;
    assert_eq!((second.opcode, second.fin), (BINARY, true));
    assert_eq!(second.payload, b"pipelined two");
}

#[tokio::test]
async fn bytes_after_the_101_reach_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // The 101 and two frames in one write.
        let mut frames = server_frame(FIN | TEXT, b"right behind the 101");
        frames.extend(server_frame(FIN | PING, b"p"));
        let mut peer = raw_server_handshake(tcp, &frames).await;
        peer.frame().await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) =
        tether::client::handshake(tcp, &addr.to_string(), "/", &ClientConfig::default())
            .await
            .unwrap();
    assert_eq!(next(&mut ws).await, Message::text("right behind the 101"));
    assert_eq!(next(&mut ws).await, Message::Ping(Bytes::from_static(b"p")));
}

#[tokio::test]
async fn stream_and_sink_impls_work_with_combinators() {
    use futures_util::StreamExt;
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let mut ws = connect(addr, &ClientConfig::default()).await;
    let mut source =
        futures_util::stream::iter((0..100).map(|i| Ok(Message::text(format!("{i}")))));
    within("send_all", ws.send_all(&mut source)).await.unwrap();
    let echoed: Vec<Message> = within("take", (&mut ws).take(100).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<Message> = (0..100).map(|i| Message::text(format!("{i}"))).collect();
    assert_eq!(echoed, expected);
}

#[tokio::test]
async fn keepalive_ends_a_connection_whose_peer_stopped_reading() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that completes the handshake, then neither reads nor writes.
    let (stop_tx, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _peer = raw_server_handshake(tcp, &[]).await;
        let _ = stop.await;
    });
    let keepalive = Keepalive {
        interval: Some(Duration::from_secs(20)),
        timeout: Duration::from_secs(10),
    };
    let config = client_with(keepalive);
    let mut ws = connect(addr, &config).await;
    // Fill the socket and our queue: nothing more can be written.
    let mut queued = 0u32;
    while ws.try_send(numbered(queued)).is_ok() {
        queued += 1;
        assert!(queued < 10_000, "the queue never filled");
        if let Some(result) = SinkExt::flush(&mut ws).now_or_never() {
            result.unwrap();
        }
    }
    tokio::time::pause();

    let guard = Duration::from_secs(600);
    match tokio::time::timeout(guard, ws.recv()).await.expect("hung") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::ABNORMAL),
        other => panic!("expected a 1006 close, got {other:?}"),
    }
    assert_eq!(ws.closed_by(), Some(Initiator::Local));
    // The unwritable queue must not keep the connection open forever.
    assert!(
        tokio::time::timeout(guard, ws.recv())
            .await
            .expect("hung flushing to a peer that does not read")
            .is_none()
    );
    drop(stop_tx);
}
