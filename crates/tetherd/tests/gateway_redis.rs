//! Two gateway nodes sharing one real `redis-server`: a publication made on
//! node A reaches a subscriber on node B, and history lives in Redis.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{RedisServer, Tetherd};
use serde_json::{Value, json};
use tether::Message;
use tokio::time::timeout;

const CONFIG: &str = r#"
[auth]
api_key = "redis-test-api-key-0123"
token_hmac_secret = "redis-test-secret-0123456789abcdef01"

[[namespace]]
name = "news"
allow_anonymous = true
history_size = 10
history_ttl = "1m"
recovery = true
"#;

fn api(server: &Tetherd, method: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: redis-test-api-key-0123\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|_| panic!("a JSON answer: {response}"))
}

async fn until(ws: &mut tether::WebSocket<tether::MaybeTls>, needle: &str) -> Value {
    loop {
        match ws.recv().await.expect("open").expect("no error") {
            Message::Text(text) if text.contains(needle) => {
                return serde_json::from_str(text.lines().find(|l| l.contains(needle)).unwrap())
                    .unwrap();
            }
            Message::Close(frame) => panic!("closed while waiting for {needle}: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn publication_on_one_node_reaches_a_subscriber_on_another() {
    let redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let (mut ws, _) = tether::connect(&node_b.gateway_url()).await.unwrap();
    let commands =
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"news:world\"}}";
    ws.send(Message::text(commands)).await.unwrap();
    let subscribed = timeout(Duration::from_secs(30), until(&mut ws, r#""id":2"#))
        .await
        .unwrap();
    let epoch = subscribed["subscribe"]["epoch"]
        .as_str()
        .expect("an epoch")
        .to_owned();

    let published = api(
        &node_a,
        "publish",
        &json!({ "channel": "news:world", "data": { "n": 1 } }),
    );
    assert_eq!(published["result"]["offset"], 1, "{published}");
    assert_eq!(
        published["result"]["epoch"],
        epoch.as_str(),
        "one stream, shared by both nodes"
    );
    let push = timeout(Duration::from_secs(30), until(&mut ws, r#""pub""#))
        .await
        .unwrap();
    assert_eq!(push["push"]["pub"]["data"]["n"], 1, "{push}");
    assert_eq!(push["push"]["pub"]["offset"], 1, "{push}");

    // History written through A is read through B.
    let history = api(
        &node_b,
        "history",
        &json!({ "channel": "news:world", "limit": 10 }),
    );
    assert_eq!(
        history["result"]["publications"][0]["data"]["n"], 1,
        "{history}"
    );
}
