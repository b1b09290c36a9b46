//! Graceful drain with 1,000 connected clients: after SIGTERM health turns
//! 503, new connections are refused, every client gets the disconnect push
//! with code 3001 followed by a WebSocket close 1001, and the process exits
//! successfully once they are gone, before the drain deadline.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tether::{CloseCode, Message};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Semaphore, watch},
    task::JoinSet,
    time::{sleep, timeout},
};

use common::Tetherd;

const CLIENTS: usize = 1_000;

const CONFIG: &str = r#"
[auth]
api_key = "drain-api-key-0123456789"
token_hmac_secret = "drain-hmac-secret-0123456789abcdef0123"

[drain]
deadline = "10s"
"#;

/// A generous bound for each step; nothing here is a timing assertion.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_thousand_clients() {
    let mut server = Tetherd::gateway(CONFIG, &[]);
    let (addr, url) = (server.addr, server.gateway_url());

    // Connect every client; each waits for its connect reply, then for the
    // go-ahead to read again (so none can finish the drain before the
    // health check below has seen it).
    let (go_tx, go_rx) = watch::channel(false);
    let connecting = Arc::new(Semaphore::new(64));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS);
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let (url, connecting, ready, mut go) = (
            url.clone(),
            connecting.clone(),
            ready_tx.clone(),
            go_rx.clone(),
        );
        clients.spawn(async move {
            let permit = connecting.acquire().await.unwrap();
            let (mut ws, _) = timeout(STEP, tether::connect(&url))
                .await
                .expect("connects in time")
                .expect("connects");
            ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
                .await
                .unwrap();
            let reply = next_text(&mut ws).await.expect("a connect reply");
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(reply["id"], 1, "{reply}");
            assert!(reply["connect"]["client"].is_string(), "{reply}");
            drop(permit);
            ready.send(()).await.unwrap();
            go.wait_for(|go| *go).await.unwrap();
            // The drain: the disconnect push, then close 1001.
            let push = next_text(&mut ws).await.expect("a disconnect push");
            let push: Value = serde_json::from_str(&push).unwrap();
            let disconnect = &push["push"]["disconnect"];
            assert_eq!(disconnect["code"], 3001, "{push}");
            assert_eq!(disconnect["reason"], "shutdown", "{push}");
            assert_eq!(disconnect["reconnect"], true, "{push}");
            loop {
                match timeout(STEP, ws.recv()).await.expect("closed in time") {
                    Some(Ok(Message::Close(frame))) => {
                        let frame = frame.expect("a close code");
                        assert_eq!(frame.code, CloseCode::GOING_AWAY, "{frame:?}");
                        break;
                    }
                    Some(Ok(Message::Text(text))) => {
                        assert_eq!(text.as_str(), "{}", "only pings after the push")
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the connection ended without close 1001: {other:?}"),
                }
            }
        });
    }
    drop(ready_tx);
    for connected in 0..CLIENTS {
        timeout(STEP, ready_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {connected} of {CLIENTS} clients connected"))
            .expect("a client task failed while connecting");
    }

    // A keep-alive HTTP connection opened before the signal: the listener
    // closes on SIGTERM, but this connection can still ask for health.
    let mut health = TcpStream::connect(addr).await.unwrap();
    assert_eq!(health_status(&mut health).await, Some(200));

    // SIGTERM, and the exit waited for on a thread.
    let signalled = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.terminate(STEP);
        (status, signalled.elapsed(), server)
    });

    // Health turns 503 at once, and the listener is gone.
    let deadline = Instant::now() + STEP;
    loop {
        match health_status(&mut health).await {
            Some(503) => break,
            Some(200) if Instant::now() < deadline => sleep(Duration::from_millis(5)).await,
            other => panic!("health after SIGTERM: {other:?}"),
        }
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a new connection is refused while draining"
    );
    go_tx.send(true).unwrap();

    while let Some(client) = clients.join_next().await {
        client.expect("every client saw the push and close 1001");
    }
    let (status, took, server) = exit.await.unwrap();
    let status = status.expect("tetherd exits after the drain");
    assert!(status.success(), "{status}");
    assert!(
        server
            .wait_for_log("drained; exiting", Duration::from_secs(5))
            .is_some(),
        "exited because every client left, not at the deadline (took {took:?})"
    );
}

/// The next text message, skipping the server's `{}` pings.
async fn next_text(ws: &mut tether::WebSocket<tether::MaybeTls>) -> Option<String> {
    loop {
        match timeout(STEP, ws.recv()).await.expect("a message in time")? {
            Ok(Message::Text(text)) if text.as_str() == "{}" => {}
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(Message::Close(frame)) => panic!("closed early: {frame:?}"),
            Ok(_) => {}
            Err(error) => panic!("connection error: {error}"),
        }
    }
}

/// `GET /health` on a keep-alive connection: the status code, or `None`
/// when the connection is gone.
async fn health_status(tcp: &mut TcpStream) -> Option<u16> {
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match timeout(STEP, tcp.read(&mut byte)).await.ok()? {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}
