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
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_history_for_subscriber = true
allow_history_for_anonymous = true
history_size = 10
history_ttl = "1m"
recovery = true

[[namespace]]
name = "quiet"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_history_for_subscriber = true
allow_history_for_anonymous = true
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
    claim_subscribes_and_publications_arrive(&[]).await;
}

/// `--threads 1` runs the gateway on tokio's current-thread runtime.
#[tokio::test]
async fn one_runtime_thread_serves_sessions_and_the_api() {
    claim_subscribes_and_publications_arrive(&["--threads", "1"]).await;
}

async fn claim_subscribes_and_publications_arrive(args: &[&str]) {
    let server = Tetherd::gateway(CONFIG, args);
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
    // The push reached its one subscriber: its fan-out was timed.
    let metrics = get(&server, "/metrics");
    assert!(
        metrics.contains("\ntether_fanout_seconds_count 1\n"),
        "{metrics}"
    );
}

/// The close code the server ends `ws` with, skipping everything before.
async fn close_code(ws: &mut tether::WebSocket<tether::MaybeTls>) -> u16 {
    loop {
        match ws.recv().await {
            Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.0),
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

/// One deadline per session serves two purposes: `connect` must arrive in
/// time (else 3502), and once connected each ping must be answered (else
/// 3012). A client that answers stays.
#[tokio::test]
async fn clients_must_connect_in_time_and_answer_pings() {
    let config = format!("{CONFIG}\n").replace(
        "pong_timeout = \"1s\"",
        "pong_timeout = \"1s\"\nping_interval = \"1s\"",
    );
    let server = Tetherd::gateway(&config, &[]);
    let open = || async { tether::connect(&server.gateway_url()).await.unwrap().0 };
    let (mut silent, mut deaf, mut polite) = (open().await, open().await, open().await);
    for ws in [&mut deaf, &mut polite] {
        ws.send(Message::text("{\"id\":1,\"connect\":{}}"))
            .await
            .unwrap();
        timeout(LIMIT, until(ws, r#""id":1"#)).await.unwrap();
    }
    let closed = async {
        tokio::join!(
            timeout(LIMIT, close_code(&mut deaf)),
            timeout(LIMIT, close_code(&mut silent)),
        )
    };
    // Meanwhile the polite client answers every ping ({}) with a pong ({}).
    let answering = async {
        loop {
            let ping = until(&mut polite, "{}").await;
            assert_eq!(ping, "{}");
            polite.send(Message::text("{}")).await.unwrap();
        }
    };
    let (deaf_code, silent_code) = tokio::select! {
        codes = closed => codes,
        () = answering => unreachable!("answers until the others are closed"),
    };
    assert_eq!(deaf_code.unwrap(), 3012, "no pong");
    assert_eq!(silent_code.unwrap(), 3502, "no connect within the deadline");
    polite
        .send(Message::text(
            "{\"id\":2,\"presence_stats\":{\"channel\":\"news:x\"}}",
        ))
        .await
        .unwrap();
    timeout(LIMIT, until(&mut polite, r#""id":2"#))
        .await
        .expect("the client that answers pings is still connected");
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

/// The body of a plain HTTP GET.
fn get(server: &Tetherd, path: &str) -> String {
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    body.to_owned()
}

#[test]
fn publish_latency_is_a_prometheus_histogram() {
    const PUBLISHES: u64 = 25;
    const NAME: &str = "tether_publish_latency_seconds";
    let server = Tetherd::gateway(CONFIG, &[]);
    for i in 0..PUBLISHES {
        let response = publish(&server, "news:timed", &json!({ "i": i }));
        assert!(response["result"].is_object(), "{response}");
    }
    let refused = publish(&server, "nope:timed", &json!({}));
    assert_eq!(refused["error"]["code"], 102, "not timed: {refused}");

    let metrics = get(&server, "/metrics");
    assert!(
        metrics.contains(&format!("# TYPE {NAME} histogram\n")),
        "{metrics}"
    );
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let (mut sum, mut count) = (None, None);
    for line in metrics.lines().filter(|line| line.starts_with(NAME)) {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let key = &key[NAME.len()..];
        if let Some(le) = key.strip_prefix("_bucket{le=\"") {
            let le = match le.strip_suffix("\"}").unwrap() {
                "+Inf" => f64::INFINITY,
                bound => bound.parse().unwrap(),
            };
            buckets.push((le, value.parse().unwrap()));
        } else if key == "_sum" {
            sum = Some(value.parse::<f64>().unwrap());
        } else if key == "_count" {
            count = Some(value.parse::<u64>().unwrap());
        } else {
            panic!("unexpected series {line}");
        }
    }
    assert!(buckets.len() > 10, "{metrics}");
    assert_eq!(buckets.first().unwrap().0, 0.00005, "{metrics}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "increasing bounds, cumulative counts: {buckets:?}"
    );
    assert_eq!(buckets[buckets.len() - 2].0, 5.0, "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, PUBLISHES));
    assert_eq!(count, Some(PUBLISHES), "{metrics}");
    assert!(sum.is_some_and(|sum| sum > 0.0), "{metrics}");
    // Nobody subscribed: no fan-out to time.
    assert!(
        metrics.contains("\ntether_fanout_seconds_count 0\n"),
        "{metrics}"
    );
}

/// `history` with `since` and `reverse` pages backwards from `since`, as
/// Centrifugo does, through the API and the client protocol alike.
#[tokio::test]
async fn history_since_with_reverse_pages_backwards() {
    let server = Tetherd::gateway(CONFIG, &[]);
    for n in 1..=5 {
        publish(&server, "news:pages", &json!({ "n": n }));
    }
    let top = api(&server, "history", r#"{"channel":"news:pages","limit":0}"#);
    let epoch = top["result"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(top["result"]["offset"], 5, "{top}");
    let page = |offset: u64, epoch: &str| {
        json!({ "channel": "news:pages", "limit": 2, "reverse": true,
                "since": { "offset": offset, "epoch": epoch } })
    };
    // An empty list may be left out, as the protocol allows.
    let offsets = |result: &Value| -> Vec<u64> {
        let publications = result["publications"].as_array().cloned();
        let publications = publications.unwrap_or_default();
        for publication in &publications {
            assert_eq!(publication["offset"], publication["data"]["n"]);
        }
        publications
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    let api_page = |offset, epoch| api(&server, "history", &page(offset, epoch).to_string());

    assert_eq!(offsets(&api_page(5, &epoch)["result"]), [4, 3]);
    assert_eq!(offsets(&api_page(3, &epoch)["result"]), [2, 1]);
    let last = api_page(1, &epoch);
    assert_eq!(offsets(&last["result"]), [] as [u64; 0], "{last}");
    assert_eq!(last["result"]["offset"], 5, "the top: {last}");
    assert_eq!(api_page(0, &epoch)["error"]["code"], 107, "bad request");
    assert_eq!(api_page(3, "other")["error"]["code"], 112);
    assert_eq!(api_page(6, &epoch)["error"]["code"], 112);

    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let commands = [
        json!({ "id": 1, "connect": {} }),
        json!({ "id": 2, "subscribe": { "channel": "news:pages" } }),
        json!({ "id": 3, "history": page(4, &epoch) }),
        json!({ "id": 4, "history": page(0, &epoch) }),
    ];
    let commands: Vec<String> = commands.iter().map(Value::to_string).collect();
    ws.send(Message::text(commands.join("\n"))).await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        let frame = timeout(LIMIT, until(&mut ws, r#""id":"#)).await.unwrap();
        for line in frame.lines() {
            let reply: Value = serde_json::from_str(line).unwrap();
            if reply["id"] == 3 || reply["id"] == 4 {
                replies.push(reply);
            }
        }
    }
    replies.sort_by_key(|reply| reply["id"].as_u64());
    assert_eq!(offsets(&replies[0]["history"]), [3, 2], "{replies:?}");
    assert_eq!(replies[0]["history"]["offset"], 5, "{replies:?}");
    assert_eq!(replies[1]["error"]["code"], 107, "{replies:?}");
}
