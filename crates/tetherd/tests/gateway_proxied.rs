//! Behind a load balancer the node counts and logs the client, not the
//! proxy: through HAProxy's PROXY protocol v2 and through nginx's
//! `X-Forwarded-For`, `security.max_connections_per_ip` holds per client
//! address (clients here come from 127.0.0.2 and 127.0.0.3, the proxies
//! from 127.0.0.1). What untrusted peers claim is ignored.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{HaProxy, Nginx, Tetherd, free_port};
use tether::{ClientConfig, Message, WebSocket};
use tokio::{net::TcpStream, time::timeout};

const CONFIG: &str = r#"
[auth]
api_key = "proxied-test-api-key-0123456789"

[security]
max_connections_per_ip = 2
trusted_proxies = ["127.0.0.1"]
"#;

const STEP: Duration = Duration::from_secs(30);

/// A connected client (its `connect` answered) from the loopback address
/// `source` to 127.0.0.1:`port`, sending `X-Forwarded-For: forwarded` if
/// given; or the error that refused it.
async fn client_from(
    source: &str,
    port: u16,
    forwarded: Option<&str>,
) -> Result<WebSocket<TcpStream>, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .expect("a loopback source address");
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|error| error.to_string())?;
    let mut config = ClientConfig::default();
    if let Some(forwarded) = forwarded {
        config
            .headers
            .push(("X-Forwarded-For".into(), forwarded.into()));
    }
    let host = format!("127.0.0.1:{port}");
    let handshake = tether::client::handshake(stream, &host, "/connection/websocket", &config);
    let (mut ws, _) = timeout(STEP, handshake)
        .await
        .expect("an answer in time")
        .map_err(|error| error.to_string())?;
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .map_err(|error| error.to_string())?;
    loop {
        match timeout(STEP, ws.recv()).await.expect("a reply in time") {
            Some(Ok(Message::Text(text))) if text.contains(r#""id":1"#) => return Ok(ws),
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("no connect reply: {other:?}")),
        }
    }
}

/// Two clients from 127.0.0.2 get in, a third is refused with 503 and the
/// node says why, naming the client; 127.0.0.3 still gets in; once one of
/// 127.0.0.2's clients leaves, another may come.
async fn limits_hold_per_client(node: &Tetherd, port: u16) {
    let first = client_from("127.0.0.2", port, None)
        .await
        .expect("the first");
    let _second = client_from("127.0.0.2", port, None)
        .await
        .expect("the second");
    let third = client_from("127.0.0.2", port, None).await;
    assert!(
        matches!(&third, Err(error) if error.contains("503")),
        "a third client from 127.0.0.2 is refused with 503: {:?}",
        third.map(|_| ())
    );
    let refused = node
        .wait_for_log_async("too many connections from 127.0.0.2 (limit 2)")
        .await
        .expect("the refusal logged with the client's address");
    assert!(refused.contains("peer=127.0.0.2:"), "{refused}");
    client_from("127.0.0.3", port, None)
        .await
        .expect("another client address is counted apart");

    drop(first);
    client_once_free("127.0.0.2", port, None).await;
}

/// A client from `source`, once the limit has room for it (a client that
/// left is counted until the node has seen its connection close).
async fn client_once_free(
    source: &str,
    port: u16,
    forwarded: Option<&str>,
) -> WebSocket<TcpStream> {
    let connected = async {
        loop {
            if let Ok(ws) = client_from(source, port, forwarded).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(STEP, connected)
        .await
        .expect("a place freed when a client leaves")
}

#[tokio::test]
async fn behind_haproxy_with_proxy_protocol_the_client_is_counted() {
    let node = Tetherd::gateway(&format!("{CONFIG}proxy_protocol = true\n"), &[]);
    let port = free_port();
    // Both servers are the one node: every connection lands there.
    let _haproxy = HaProxy::shipped(
        port,
        [node.addr.port(); 2],
        "send-proxy-v2 check-send-proxy",
    );
    limits_hold_per_client(&node, port).await;
    assert!(
        !node
            .log_lines()
            .iter()
            .any(|line| line.contains("no valid PROXY header")),
        "HAProxy's health checks carry a PROXY header too"
    );
}

#[tokio::test]
async fn behind_nginx_the_forwarded_client_is_counted() {
    let node = Tetherd::gateway(CONFIG, &[]);
    let port = free_port();
    let _nginx = Nginx::shipped(port, [node.addr.port(); 2]);
    limits_hold_per_client(&node, port).await;

    // A client's own X-Forwarded-For is kept by nginx, which appends the
    // address it saw: the client is still 127.0.0.2 to the node.
    let _held = [
        client_once_free("127.0.0.2", port, None).await,
        client_once_free("127.0.0.2", port, Some("127.0.0.51")).await,
    ];
    let spoofed = client_from("127.0.0.2", port, Some("127.0.0.50")).await;
    assert!(
        matches!(&spoofed, Err(error) if error.contains("503")),
        "a claimed address does not escape the limit: {:?}",
        spoofed.map(|_| ())
    );
}

#[tokio::test]
async fn untrusted_peers_are_themselves_whatever_they_claim() {
    let node = Tetherd::gateway(&format!("{CONFIG}proxy_protocol = true\n"), &[]);
    let port = node.addr.port();
    // 127.0.0.2 is no trusted proxy: its header is ignored, and it needs
    // no PROXY header.
    let _first = client_from("127.0.0.2", port, Some("127.0.0.50"))
        .await
        .expect("the first");
    let _second = client_from("127.0.0.2", port, Some("127.0.0.51"))
        .await
        .expect("the second");
    let third = client_from("127.0.0.2", port, Some("127.0.0.52")).await;
    assert!(
        matches!(&third, Err(error) if error.contains("503")),
        "counted as 127.0.0.2: {:?}",
        third.map(|_| ())
    );

    // The trusted proxy's address without the PROXY header it must send:
    // turned away, and the node says why.
    let unheaded = client_from("127.0.0.1", port, None).await;
    assert!(unheaded.is_err(), "no PROXY header, no connection");
    node.wait_for_log_async("no valid PROXY header from a trusted proxy")
        .await
        .expect("the reason logged");
}
