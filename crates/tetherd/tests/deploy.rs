//! The files in `deploy/` work as shipped: HAProxy accepts its config and
//! proxies WebSockets and the API to the nodes, passing over a stopped one;
//! nginx keeps the client's `Host`, so the gateway's same-origin check still
//! holds behind it; systemd accepts the unit without a warning. (The rolling
//! restart through nginx is in `gateway_rolling.rs`.)

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use common::{HaProxy, Nginx, RedisServer, Tetherd, deploy_file, free_port, substitute};
use serde_json::{Value, json};
use tether::{ClientConfig, Message};
use tokio::time::timeout;

const CONFIG: &str = r#"
[auth]
api_key = "deploy-test-api-key-0123456789"
token_hmac_secret = "deploy-test-hmac-secret-0123456789abcdef"

[drain]
deadline = "5s"

[[namespace]]
name = "news"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_history_for_subscriber = true
allow_history_for_anonymous = true
history_size = 10
history_ttl = "1m"
recovery = true
"#;

/// A generous bound for each step; nothing here is a timing assertion.
const STEP: Duration = Duration::from_secs(30);

#[test]
fn shipped_haproxy_config_is_valid() {
    let output = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(common::repo_root().join("deploy/haproxy.cfg"))
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run haproxy ({error}): run `bash scripts/test.sh`, which installs it")
        });
    assert!(
        output.status.success(),
        "haproxy -c: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn haproxy_proxies_websockets_and_the_api_and_passes_over_a_stopped_node() {
    let redis = RedisServer::start();
    let mut nodes = [(), ()].map(|()| Tetherd::gateway(CONFIG, &["--broker", &redis.url()]));
    let port = free_port();
    let _haproxy = HaProxy::shipped(port, nodes.each_ref().map(|node| node.addr.port()), "");

    let (mut ws, _) = connect_and_subscribe(port).await;
    let published = http(
        port,
        "POST",
        "/api/publish",
        &json!({ "channel": "news:wire", "data": { "n": 1 } }).to_string(),
    );
    assert_eq!(published.0, 200, "{published:?}");
    let push = timeout(STEP, until(&mut ws, r#""pub""#))
        .await
        .expect("the publication arrives through HAProxy");
    assert_eq!(push["push"]["pub"]["data"]["n"], 1, "{push}");
    assert_eq!(
        http(port, "GET", "/metrics", "").0,
        404,
        "per-node pages are not exposed"
    );

    // With one node stopped, every new client still gets in: a refused
    // connection is retried on the other node (before health checks
    // have noticed: the node has no client to drain, so it stops at once).
    drop(ws);
    let status = nodes[0]
        .terminate(STEP)
        .expect("node A exits after SIGTERM");
    assert!(status.success(), "{status}");
    for _ in 0..6 {
        connect_and_subscribe(port).await;
    }
}

#[tokio::test]
async fn nginx_keeps_the_host_so_same_origin_pages_connect_and_others_do_not() {
    let nodes = [(), ()].map(|()| Tetherd::gateway(CONFIG, &[]));
    let port = free_port();
    let _nginx = Nginx::shipped(port, nodes.each_ref().map(|node| node.addr.port()));
    let url = format!("ws://127.0.0.1:{port}/connection/websocket");

    let mut same_origin = ClientConfig::default();
    same_origin
        .headers
        .push(("Origin".into(), format!("http://127.0.0.1:{port}")));
    let (mut ws, _) = tether::connect_with(&url, &same_origin)
        .await
        .expect("a page served from the proxy's address may connect");
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .unwrap();
    timeout(STEP, until(&mut ws, r#""id":1"#))
        .await
        .expect("a connect reply through nginx");

    // A page elsewhere (here: another loopback address) is refused by the
    // node, and nginx passes the refusal on.
    let mut foreign = ClientConfig::default();
    foreign
        .headers
        .push(("Origin".into(), format!("http://127.0.0.2:{port}")));
    let refused = tether::connect_with(&url, &foreign).await;
    assert!(
        matches!(&refused, Err(error) if error.to_string().contains("403")),
        "a foreign origin is refused with 403: {:?}",
        refused.map(|_| ())
    );
}

#[test]
fn systemd_unit_verifies_without_warnings() {
    let dir = std::env::temp_dir().join(format!("tether-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The unit names the installed binary; verify checks that it exists.
    let unit = substitute(
        &deploy_file("tetherd.service"),
        &[(
            "ExecStart=/usr/local/bin/tetherd ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_tetherd")),
        )],
    );
    let path = dir.join("tetherd.service");
    std::fs::write(&path, unit).expect("unit written");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (apt: systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}): {said}",
        output.status
    );
}

/// Connects through the proxy on `port` and subscribes to `news:wire`.
async fn connect_and_subscribe(port: u16) -> (tether::WebSocket<tether::MaybeTls>, Value) {
    let url = format!("ws://127.0.0.1:{port}/connection/websocket");
    let (mut ws, _) = timeout(STEP, tether::connect(&url))
        .await
        .expect("connects in time")
        .expect("the proxy upgrades the connection");
    ws.send(Message::text(
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"news:wire\"}}",
    ))
    .await
    .unwrap();
    let subscribed = timeout(STEP, until(&mut ws, r#""id":2"#))
        .await
        .expect("a subscribe reply in time");
    assert!(subscribed["subscribe"].is_object(), "{subscribed}");
    (ws, subscribed)
}

/// The first message containing `needle`, as JSON.
async fn until(ws: &mut tether::WebSocket<tether::MaybeTls>, needle: &str) -> Value {
    loop {
        match ws.recv().await.expect("open").expect("no error") {
            Message::Text(text) if text.contains(needle) => {
                let line = text
                    .lines()
                    .find(|line| line.contains(needle))
                    .unwrap_or_default();
                return serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}"));
            }
            Message::Close(frame) => panic!("closed while waiting for {needle}: {frame:?}"),
            _ => {}
        }
    }
}

/// One HTTP/1.1 request through the proxy on `port` (with the API key);
/// returns the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("the proxy accepts");
    tcp.set_read_timeout(Some(STEP)).expect("a read timeout");
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         X-API-Key: deploy-test-api-key-0123456789\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request is sent");
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response:?}"));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, body.to_owned())
}
