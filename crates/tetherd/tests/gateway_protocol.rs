//! The gateway's protocol as a raw client sees it: server-side channels from
//! the token, a subscriber that stops reading, and a stream that loses its
//! history under a subscriber.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::Tetherd;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tether::Message;
use tokio::time::timeout;

const API_KEY: &str = "protocol-test-api-key-0123";
const SECRET: &str = "protocol-test-secret-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"
[auth]
api_key = "protocol-test-api-key-0123"
token_hmac_secret = "protocol-test-secret-0123456789abcdef"
allow_anonymous = true

[client]
outbound_queue_bytes = 262144
pong_timeout = "1s"

[security]
max_message_size = 65536

[[namespace]]
name = "news"
allow_anonymous = true
history_size = 10
history_ttl = "1m"
recovery = true

[[namespace]]
name = "quiet"
allow_anonymous = true
history_size = 10
history_ttl = "1s"
recovery = true
"#;

fn publish(server: &Tetherd, channel: &str, data: &Value) -> Value {
    let body = json!({ "channel": channel, "data": data }).to_string();
    api(server, "publish", &body)
}

/// The JSON answer of an HTTP API call.
/// Text frames until one contains `needle`.
async fn until(ws: &mut tether::WebSocket<tether::MaybeTls>, needle: &str) -> String {
    loop {
        match ws.recv().await.expect("open").expect("no error") {
            Message::Text(text) if text.contains(needle) => return text.to_string(),
            Message::Close(frame) => panic!("closed while waiting for {needle}: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn channels_claim_subscribes_on_the_server_side() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let claims = json!({ "sub": "carol", "channels": ["news:alerts"] });
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let connect = json!({ "id": 1, "connect": { "token": token } }).to_string();
    ws.send(Message::text(connect)).await.unwrap();
    let reply = timeout(LIMIT, until(&mut ws, r#""id":1"#)).await.unwrap();
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert!(
        reply["connect"]["subs"]["news:alerts"].is_object(),
        "{reply}"
    );
    let published = publish(&server, "news:alerts", &json!({ "alert": 1 }));
    assert_eq!(published["result"]["offset"], 1, "{published}");
    let push = timeout(LIMIT, until(&mut ws, r#""pub""#)).await.unwrap();
    let push: Value = serde_json::from_str(&push).unwrap();
    assert_eq!(push["push"]["channel"], "news:alerts");
    assert_eq!(push["push"]["pub"]["data"]["alert"], 1);
}

#[tokio::test]
async fn subscriber_that_stops_reading_is_disconnected_as_slow() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let commands =
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"news:firehose\"}}";
    ws.send(Message::text(commands)).await.unwrap();
    timeout(LIMIT, until(&mut ws, r#""id":2"#)).await.unwrap();
    // Stop reading. 400 publications of 32 KiB: far more than the socket
    // buffers, the WebSocket queue and the 256 KiB outbox can hold.
    let chunk = "x".repeat(32 * 1024);
    for i in 0..400 {
        let response = publish(&server, "news:firehose", &json!({ "i": i, "pad": chunk }));
        assert!(response["result"].is_object(), "{response}");
    }
    let line = server
        .wait_for_log("session ended", LIMIT)
        .expect("the slow subscriber's session ended");
    assert!(line.contains("code=3008"), "{line}");
    // The publisher was never blocked and other clients still connect.
    let (mut other, _) = tether::connect(&server.gateway_url()).await.unwrap();
    other
        .send(Message::text("{\"id\":1,\"connect\":{}}"))
        .await
        .unwrap();
    timeout(LIMIT, until(&mut other, r#""id":1"#))
        .await
        .unwrap();
    drop(ws);
}

/// A quiet channel's history expires, so its next publication starts a new
/// stream (new epoch, offset 1). A subscriber must not take that as more of
/// the old stream, nor drop it as already seen: it is sent away with 3010
/// and, coming back with its old position, learns that it cannot recover.
#[tokio::test]
async fn a_stream_that_lost_its_history_sends_subscribers_to_recover() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let commands =
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"quiet:room\"}}";
    ws.send(Message::text(commands)).await.unwrap();
    timeout(LIMIT, until(&mut ws, r#""id":2"#)).await.unwrap();
    for i in 1..=2 {
        publish(&server, "quiet:room", &json!({ "n": i }));
    }
    let second = timeout(LIMIT, until(&mut ws, r#""n":2"#)).await.unwrap();
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["push"]["pub"]["offset"], 2, "{second}");
    let history = json!({ "channel": "quiet:room", "limit": 0 }).to_string();
    let epoch = api(&server, "history", &history)["result"]["epoch"].clone();
    assert!(epoch.is_string(), "{epoch}");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish(&server, "quiet:room", &json!({ "n": 3 }));
    let close = timeout(LIMIT, async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(text))) => {
                    assert!(
                        !text.contains(r#""n":3"#),
                        "delivered as if nothing was lost: {text}"
                    );
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap()
    .expect("a close frame with a code");
    assert_eq!(close.code.0, 3010, "{close:?}");

    let (mut again, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let resubscribe = json!({ "id": 2, "subscribe": {
        "channel": "quiet:room", "recover": true, "offset": 2, "epoch": epoch } });
    let commands = format!("{{\"id\":1,\"connect\":{{}}}}\n{resubscribe}");
    again.send(Message::text(commands)).await.unwrap();
    let reply = timeout(LIMIT, until(&mut again, r#""id":2"#))
        .await
        .unwrap();
    // Replies may share a frame, one JSON object per line.
    let reply: Value = reply
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|reply| reply["id"] == 2)
        .unwrap();
    let result = &reply["subscribe"];
    assert_eq!(result["was_recovering"], true, "{reply}");
    assert_ne!(result["recovered"], true, "{reply}");
    assert_ne!(result["epoch"], epoch, "a new stream: {reply}");
}

/// The JSON answer of an HTTP API call.
fn api(server: &Tetherd, method: &str, body: &str) -> Value {
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {response}"))
}
