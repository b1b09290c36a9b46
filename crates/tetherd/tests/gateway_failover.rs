//! Behind the shipped nginx config, with nothing but WebSocket traffic
//! through the proxy: a node that restarts takes clients again within
//! seconds. (A passive health check that marks a node down until a request
//! to it *finishes* would keep it out of rotation, since an upgraded
//! WebSocket finishes only when it closes: the fault-injection run saw 93 of
//! 100 clients still disconnected 20 s after the other node drained.)

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Nginx, RedisServer, Tetherd, free_port};
use tether::Message;

const CONFIG: &str = r#"
[auth]
api_key = "failover-test-api-key-0123456789"
token_hmac_secret = "failover-test-hmac-secret-0123456789abcdef"

[drain]
deadline = "5s"
"#;

/// Clients, each reconnecting through nginx whenever its connection ends.
const CLIENTS: usize = 20;

/// Keeps one client connected through `url`, counting it in `connected`
/// while its `connect` is answered and its connection open.
async fn keep_connected(url: String, connected: Arc<AtomicUsize>) {
    loop {
        if let Ok((mut ws, _)) = tether::connect(&url).await {
            if ws
                .send(Message::text("{\"id\":1,\"connect\":{}}"))
                .await
                .is_ok()
            {
                let mut counted = false;
                while let Some(Ok(message)) = ws.recv().await {
                    match message {
                        Message::Text(text) if text.contains("\"id\":1") && !counted => {
                            counted = true;
                            connected.fetch_add(1, Ordering::SeqCst);
                        }
                        // The server's protocol ping: answer it.
                        Message::Text(text) if text.as_str() == "{}" => {
                            let _ = ws.send(Message::text("{}")).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                if counted {
                    connected.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to `limit` for every client to be connected.
async fn all_connected(connected: &AtomicUsize, limit: Duration) -> Result<Duration, usize> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if connected.load(Ordering::SeqCst) == CLIENTS {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(connected.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_takes_websocket_clients_again_within_seconds() {
    let redis = RedisServer::start();
    let broker = redis.url();
    let (port_a, port_b, port_proxy) = (free_port(), free_port(), free_port());
    let start = |port: u16| {
        Tetherd::gateway_on(&format!("127.0.0.1:{port}"), CONFIG, &["--broker", &broker])
    };
    let mut node_a = start(port_a);
    let mut node_b = start(port_b);
    let nginx = Nginx::shipped(port_proxy, [port_a, port_b]);
    let url = format!("ws://127.0.0.1:{port_proxy}/connection/websocket");
    let connected = Arc::new(AtomicUsize::new(0));
    for _ in 0..CLIENTS {
        tokio::spawn(keep_connected(url.clone(), connected.clone()));
    }
    let limit = Duration::from_secs(15);
    all_connected(&connected, limit)
        .await
        .unwrap_or_else(|n| panic!("only {n} of {CLIENTS} connected at first"));

    // Node B restarts: its clients move to A while B is away.
    node_b
        .terminate(Duration::from_secs(10))
        .expect("B drains and exits");
    all_connected(&connected, limit)
        .await
        .unwrap_or_else(|n| panic!("only {n} of {CLIENTS} back on A while B was away"));
    node_b = start(port_b);

    // Then A drains: every client must find the restarted B, though no
    // request through nginx has finished on B since it came back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    node_a
        .terminate(Duration::from_secs(10))
        .expect("A drains and exits");
    let took = all_connected(&connected, limit).await.unwrap_or_else(|n| {
        panic!(
            "only {n} of {CLIENTS} reconnected to the restarted node within {limit:?}; nginx:\n{}",
            nginx.error_log()
        )
    });
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(node_b);
}
