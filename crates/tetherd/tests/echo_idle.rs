//! `tetherd echo` parks quiet connections in its idle pool (no task, no
//! timer) and takes them back when they speak or a keepalive is due: seen
//! from the client, nothing changes.

mod common;

use std::time::Duration;

use tether::{MaybeTls, Message, WebSocket};
use tokio::time::{sleep, timeout};

use common::Tetherd;

/// Turns a hang into a failure; never a timing assertion.
const LIMIT: Duration = Duration::from_secs(20);

async fn connect(server: &Tetherd) -> WebSocket<MaybeTls> {
    let (ws, _) = timeout(LIMIT, tether::connect(&server.url()))
        .await
        .expect("connect in time")
        .expect("connect");
    ws
}

async fn echoes(ws: &mut WebSocket<MaybeTls>, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
    let echo = timeout(LIMIT, ws.recv())
        .await
        .expect("echo in time")
        .expect("open")
        .expect("no error");
    assert_eq!(echo, Message::text(text.to_owned()));
}

#[tokio::test]
async fn quiet_connections_echo_after_being_parked_and_woken() {
    let server = Tetherd::echo(&[]);
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(connect(&server).await);
    }
    // Past the fresh connection's grace: every one of them is parked.
    sleep(Duration::from_millis(300)).await;
    for (i, ws) in clients.iter_mut().enumerate() {
        echoes(ws, &format!("first {i}")).await;
    }
    // Busy, then quiet for longer than a busy connection stays on its task.
    sleep(Duration::from_millis(1500)).await;
    for (i, ws) in clients.iter_mut().enumerate().rev() {
        echoes(ws, &format!("second {i}")).await;
    }
}

#[tokio::test]
async fn parked_connections_get_their_keepalive_pings() {
    let server = Tetherd::echo(&["--ping-interval", "1"]);
    let mut ws = connect(&server).await;
    // The ping comes from a connection parked since its upgrade; the
    // client answers it while receiving.
    let ping = timeout(LIMIT, ws.recv()).await.expect("a ping in time");
    assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "got {ping:?}");
    // A second round: parked again after the pong, pinged again.
    let ping = timeout(LIMIT, ws.recv()).await.expect("a ping in time");
    assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "got {ping:?}");
    echoes(&mut ws, "still here").await;
}
