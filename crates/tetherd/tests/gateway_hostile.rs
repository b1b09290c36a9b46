//! The gateway against hostile clients, with raw sockets and hand-made
//! frames: tokens that expire and are not refreshed, frames of commands that
//! would make the server build huge replies, commands at a rate the frame
//! count hides, malformed lines, peer-supplied text meant to forge log
//! lines, pretty-printed API payloads, and HTTP request heads and bodies that
//! never end.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use base64::Engine;
use common::{Tetherd, unix_now};
use serde_json::{Value, json};
use tether::{MaybeTls, Message, WebSocket};
use tokio::time::timeout;

const API_KEY: &str = "hostile-test-api-key-0123";
const SECRET: &str = "hostile-test-secret-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[auth]
api_key = "hostile-test-api-key-0123"
token_hmac_secret = "hostile-test-secret-0123456789abcdef"
allow_anonymous = true
token_refresh_grace = "1s"

[security]
handshake_timeout = "2s"

[[namespace]]
name = "open"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_history_for_subscriber = true
allow_history_for_anonymous = true
history_size = 100
history_ttl = "5m"
recovery = true

[[namespace]]
name = "secret"
"#;

fn token(claims: &Value) -> String {
    common::hs256_token(SECRET, claims)
}

/// A WebSocket to the gateway, connected (with `token`, or anonymously).
async fn connected(server: &Tetherd, token: &str) -> WebSocket<MaybeTls> {
    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let connect = json!({ "id": 1, "connect": { "token": token } }).to_string();
    ws.send(Message::text(connect)).await.unwrap();
    let reply = reply(&mut ws, 1).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    ws
}

/// The reply with `id`, from whatever frames come first.
async fn reply(ws: &mut WebSocket<MaybeTls>, id: u64) -> Value {
    replies(ws, &[id]).await.remove(0)
}

/// The replies with `ids`, in that order, however they share frames.
async fn replies(ws: &mut WebSocket<MaybeTls>, ids: &[u64]) -> Vec<Value> {
    timeout(LIMIT, async {
        let mut found: Vec<Value> = Vec::new();
        while found.len() < ids.len() {
            match ws.recv().await {
                Some(Ok(Message::Text(text))) => {
                    for line in text.lines() {
                        let value: Value = serde_json::from_str(line).unwrap();
                        if ids.iter().any(|id| value["id"] == *id) {
                            found.push(value);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => panic!("closed waiting for {ids:?}: {frame:?}"),
                Some(Ok(_)) => {}
                other => panic!("ended waiting for {ids:?}: {other:?}"),
            }
        }
        found.sort_by_key(|value| ids.iter().position(|id| value["id"] == *id));
        found
    })
    .await
    .expect("replies in time")
}

/// Every text frame until the server's close frame, and its code.
async fn until_closed(ws: &mut WebSocket<MaybeTls>) -> (Vec<String>, u16) {
    timeout(LIMIT, async {
        let mut texts = Vec::new();
        loop {
            match ws.recv().await {
                Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return (texts, frame.map_or(1005, |f| f.code.0));
                }
                Some(Ok(_)) => {}
                other => panic!("ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
}

fn api(server: &Tetherd, method: &str, body: &str) -> String {
    server.http("POST", &format!("/api/{method}"), API_KEY, body)
}

fn status(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("no status")
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test]
async fn an_expired_connection_token_ends_the_connection_with_3005() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let expiring = token(&json!({ "sub": "eve", "exp": unix_now() + 2 }));
    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let connect = json!({ "id": 1, "connect": { "token": expiring } }).to_string();
    ws.send(Message::text(connect)).await.unwrap();
    let reply = reply(&mut ws, 1).await;
    let ttl = reply["connect"]["ttl"].as_u64().expect("a ttl");
    assert_eq!(reply["connect"]["expires"], true, "{reply}");
    assert!((1..=2).contains(&ttl), "{reply}");
    // Never refreshed: gone once the token and the 1 s grace are over,
    // however often the client pings meanwhile.
    let started = Instant::now();
    let mut pings = tokio::time::interval(Duration::from_millis(300));
    let code = timeout(LIMIT, async {
        for id in 2.. {
            tokio::select! {
                received = ws.recv() => match received {
                    Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.0),
                    Some(Ok(_)) => {}
                    other => panic!("ended without a close frame: {other:?}"),
                },
                _ = pings.tick() => {
                    let ping = json!({ "id": id, "ping": {} }).to_string();
                    ws.send(Message::text(ping)).await.unwrap();
                }
            }
        }
        unreachable!()
    })
    .await
    .expect("closed in time");
    let took = started.elapsed();
    assert_eq!(code, 3005);
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    let line = server.wait_for_log_async("session ended").await.unwrap();
    assert!(
        line.contains("code=3005") && line.contains("connection expired"),
        "{line}"
    );
}

#[tokio::test]
async fn a_refreshed_connection_token_keeps_the_connection() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let mut ws = connected(
        &server,
        &token(&json!({ "sub": "eve", "exp": unix_now() + 2 })),
    )
    .await;
    for id in 2..5 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let fresh = token(&json!({ "sub": "eve", "exp": unix_now() + 2 }));
        let refresh = json!({ "id": id, "refresh": { "token": fresh } }).to_string();
        ws.send(Message::text(refresh)).await.unwrap();
        let reply = reply(&mut ws, id).await;
        assert_eq!(reply["refresh"]["expires"], true, "{reply}");
    }
    let ping = json!({ "id": 9, "ping": {} }).to_string();
    ws.send(Message::text(ping)).await.unwrap();
    reply(&mut ws, 9).await;
}

#[tokio::test]
async fn an_expired_subscription_token_ends_the_subscription_with_2501() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let mut ws = connected(&server, &token(&json!({ "sub": "eve" }))).await;
    let channel = "secret:room";
    let sub_token = token(&json!({ "sub": "eve", "channel": channel, "exp": unix_now() + 2 }));
    let subscribe =
        json!({ "id": 2, "subscribe": { "channel": channel, "token": sub_token } }).to_string();
    ws.send(Message::text(subscribe)).await.unwrap();
    let reply = reply(&mut ws, 2).await;
    assert_eq!(reply["subscribe"]["expires"], true, "{reply}");
    assert!(reply["subscribe"]["ttl"].as_u64().is_some(), "{reply}");
    let push = timeout(LIMIT, async {
        loop {
            let Some(Ok(Message::Text(text))) = ws.recv().await else {
                panic!("the connection ended");
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["push"]["unsubscribe"].is_object() {
                return value;
            }
        }
    })
    .await
    .expect("the subscription ended");
    assert_eq!(push["push"]["channel"], channel, "{push}");
    assert_eq!(push["push"]["unsubscribe"]["code"], 2501, "{push}");
    // Publications stop; the connection stays.
    let published = api(
        &server,
        "publish",
        &json!({ "channel": channel, "data": { "late": true } }).to_string(),
    );
    assert!(published.contains("\"result\""), "{published}");
    let ping = json!({ "id": 3, "ping": {} }).to_string();
    ws.send(Message::text(ping)).await.unwrap();
    let (texts, _) = timeout(Duration::from_millis(800), async {
        let mut texts = Vec::new();
        while let Some(Ok(Message::Text(text))) = ws.recv().await {
            texts.push(text.to_string());
        }
        (texts, ())
    })
    .await
    .unwrap_or_default();
    assert!(
        texts.iter().all(|text| !text.contains("late")),
        "delivered after expiry: {texts:?}"
    );
}

/// A refreshed subscription token moves the subscription's expiry.
#[tokio::test]
async fn sub_refresh_keeps_the_subscription() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let mut ws = connected(&server, &token(&json!({ "sub": "eve" }))).await;
    let channel = "secret:kept";
    let sub_token =
        |ttl| token(&json!({ "sub": "eve", "channel": channel, "exp": unix_now() + ttl }));
    let subscribe =
        json!({ "id": 2, "subscribe": { "channel": channel, "token": sub_token(2) } }).to_string();
    ws.send(Message::text(subscribe)).await.unwrap();
    reply(&mut ws, 2).await;
    for id in 3..6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let refresh =
            json!({ "id": id, "sub_refresh": { "channel": channel, "token": sub_token(2) } })
                .to_string();
        ws.send(Message::text(refresh)).await.unwrap();
        let reply = reply(&mut ws, id).await;
        assert_eq!(reply["sub_refresh"]["expires"], true, "{reply}");
    }
    api(
        &server,
        "publish",
        &json!({ "channel": channel, "data": { "still": "here" } }).to_string(),
    );
    let push = timeout(LIMIT, async {
        loop {
            let Some(Ok(Message::Text(text))) = ws.recv().await else {
                panic!("the connection ended");
            };
            assert!(!text.contains("unsubscribe"), "{text}");
            if text.contains("still") {
                return text.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(push.contains("\"pub\""), "{push}");
}

/// One 8 KiB frame of 150 history reads, each asking for everything: the
/// first reply alone is over the 1 MiB budget, so the client is cut off as
/// slow before any is built, and the server's memory barely moves.
#[tokio::test]
async fn a_frame_of_history_reads_cannot_make_the_server_hold_more_than_the_budget() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let channel = "open:archive";
    let pad = "x".repeat(60_000);
    for n in 0..100 {
        let body = json!({ "channel": channel, "data": { "n": n, "pad": pad } }).to_string();
        let published = api(&server, "publish", &body);
        assert!(published.contains("\"result\""), "{published}");
    }
    let mut ws = connected(&server, "").await;
    let subscribe = json!({ "id": 2, "subscribe": { "channel": channel } }).to_string();
    ws.send(Message::text(subscribe)).await.unwrap();
    reply(&mut ws, 2).await;
    let before = rss_bytes(server.pid());
    let frame: Vec<String> = (0..150)
        .map(|i| {
            json!({ "id": 10 + i, "history": { "channel": channel, "limit": -1 } }).to_string()
        })
        .collect();
    let frame = frame.join("\n");
    assert!(frame.len() < 9 * 1024, "{} bytes", frame.len());
    ws.send(Message::text(frame)).await.unwrap();
    let (texts, code) = until_closed(&mut ws).await;
    assert_eq!(code, 3008, "{texts:?}");
    assert!(
        texts.iter().all(|text| !text.contains("\"history\"")),
        "a history reply was sent"
    );
    let grown = rss_bytes(server.pid()).saturating_sub(before);
    assert!(grown < 4 << 20, "RSS grew by {grown} bytes");
    // Others are served as before.
    let mut other = connected(&server, "").await;
    let ping = json!({ "id": 2, "ping": {} }).to_string();
    other.send(Message::text(ping)).await.unwrap();
    reply(&mut other, 2).await;
}

/// A history read is capped at client.history_max_publication_limit.
#[tokio::test]
async fn a_client_history_read_is_capped() {
    let config = format!("{CONFIG}\n[client]\nhistory_max_publication_limit = 5\n");
    let server = Tetherd::gateway(&config, &[]);
    let channel = "open:capped";
    for n in 0..12 {
        api(
            &server,
            "publish",
            &json!({ "channel": channel, "data": { "n": n } }).to_string(),
        );
    }
    let mut ws = connected(&server, "").await;
    let commands = format!(
        "{}\n{}\n{}",
        json!({ "id": 2, "subscribe": { "channel": channel } }),
        json!({ "id": 3, "history": { "channel": channel, "limit": -1 } }),
        json!({ "id": 4, "history": { "channel": channel, "limit": 100 } }),
    );
    ws.send(Message::text(commands)).await.unwrap();
    for reply in replies(&mut ws, &[3, 4]).await {
        let publications = reply["history"]["publications"].as_array().unwrap();
        assert_eq!(publications.len(), 5, "{reply}");
        assert_eq!(publications[0]["data"]["n"], 0, "oldest first: {reply}");
    }
}

/// The rate limit counts commands, not frames: 10,000 pings in 20 frames
/// get the burst's worth answered, then the client is disconnected with
/// 3013.
#[tokio::test]
async fn the_rate_limit_counts_commands_not_frames() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let mut ws = connected(&server, "").await;
    for frame in 0..20 {
        let pings: Vec<String> = (0..500)
            .map(|i| json!({ "id": 100 + frame * 500 + i, "ping": {} }).to_string())
            .collect();
        if ws.send(Message::text(pings.join("\n"))).await.is_err() {
            break;
        }
    }
    let (texts, code) = until_closed(&mut ws).await;
    assert_eq!(code, 3013, "closed with {code}");
    let answered = texts.iter().flat_map(|text| text.lines()).count();
    // The default burst is 200 commands; the connect took one.
    assert!(
        (199..=205).contains(&answered),
        "{answered} commands answered"
    );
}

/// The commands before a malformed line are answered; then the connection
/// ends with 3501.
#[tokio::test]
async fn commands_before_a_malformed_line_are_answered() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
    let frame =
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"ping\":{}}\nnot json\n{\"id\":3,\"ping\":{}}";
    ws.send(Message::text(frame)).await.unwrap();
    let (texts, code) = until_closed(&mut ws).await;
    assert_eq!(code, 3501);
    let ids: Vec<Value> = texts
        .iter()
        .flat_map(|text| text.lines())
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(2)]);
}

/// A channel name over 255 bytes is a bad request (107), not an unknown
/// channel (102), wherever a client names a channel.
#[tokio::test]
async fn a_too_long_channel_name_is_a_bad_request() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let mut ws = connected(&server, "").await;
    let long = format!("open:{}", "a".repeat(300));
    let commands = [
        json!({ "id": 2, "subscribe": { "channel": long } }),
        json!({ "id": 3, "publish": { "channel": long, "data": {} } }),
        json!({ "id": 4, "history": { "channel": long } }),
        json!({ "id": 5, "presence": { "channel": long } }),
    ];
    for command in &commands {
        ws.send(Message::text(command.to_string())).await.unwrap();
        let id = command["id"].as_u64().unwrap();
        let reply = reply(&mut ws, id).await;
        assert_eq!(reply["error"]["code"], 107, "{reply}");
    }
}

/// The HTTP API answers 404 for a method it does not have and 400 for a
/// body that is not a JSON request, as Centrifugo's does.
#[test]
fn the_api_refuses_unknown_methods_and_malformed_bodies_with_http_statuses() {
    let server = Tetherd::gateway(CONFIG, &[]);
    assert_eq!(status(&api(&server, "no_such_method", "{}")), "404");
    assert_eq!(status(&api(&server, "publish", "not json")), "400");
    assert_eq!(status(&api(&server, "publish", "{\"channel\": 5}")), "400");
    let compat = server.http(
        "POST",
        "/api",
        API_KEY,
        "{\"method\":\"nope\",\"params\":{}}",
    );
    assert_eq!(status(&compat), "404", "{compat}");
    // A well-formed request with a refused value is still 200 with an error.
    let long = json!({ "channel": format!("open:{}", "a".repeat(300)), "data": {} });
    let refused = api(&server, "publish", &long.to_string());
    assert_eq!(status(&refused), "200", "{refused}");
    assert!(refused.contains("\"code\":107"), "{refused}");
}

/// A pretty-printed payload through the API reaches subscribers on one
/// line: the SDKs split frames on newlines.
#[tokio::test]
async fn api_payloads_go_out_compact() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let channel = "open:pretty";
    let mut ws = connected(&server, "").await;
    let subscribe = json!({ "id": 2, "subscribe": { "channel": channel } }).to_string();
    ws.send(Message::text(subscribe)).await.unwrap();
    reply(&mut ws, 2).await;
    let body = format!(
        "{{\"channel\": \"{channel}\",\n \"data\": {{\n    \"text\": \"two\\nlines and  spaces\",\n    \"list\": [ 1,\n 2 ]\n}}\n}}"
    );
    let published = api(&server, "publish", &body);
    assert!(published.contains("\"result\""), "{published}");
    let push = timeout(LIMIT, async {
        loop {
            let Some(Ok(Message::Text(text))) = ws.recv().await else {
                panic!("the connection ended");
            };
            if text.contains("\"pub\"") {
                return text.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(!push.contains('\n'), "{push:?}");
    let push: Value = serde_json::from_str(&push).unwrap();
    assert_eq!(
        push["push"]["pub"]["data"],
        json!({ "text": "two\nlines and  spaces", "list": [1, 2] })
    );
    let history = json!({ "id": 3, "history": { "channel": channel, "limit": 10 } }).to_string();
    ws.send(Message::text(history)).await.unwrap();
    let reply = reply(&mut ws, 3).await;
    assert_eq!(
        reply["history"]["publications"][0]["data"]["list"],
        json!([1, 2])
    );
}

/// What a peer controls (a token's header, channel names, the SDK name, a
/// close reason) cannot add a line to the log, in either format.
#[tokio::test]
async fn peer_text_cannot_forge_log_lines() {
    for format in ["text", "json"] {
        let server = Tetherd::gateway(CONFIG, &["--log-format", format]);
        let forged = "\n2030-01-01T00:00:00.000000Z  INFO tetherd: admin logged in";
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let header = b64(&format!("{{\"alg\":\"HS256{forged}\",\"typ\":\"JWT\"}}"));
        let bad_token = format!("{header}.{}.c2ln", b64("{\"sub\":\"x\"}"));
        let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
        let connect = json!({ "id": 1, "connect": { "token": bad_token, "name": forged } });
        ws.send(Message::text(connect.to_string())).await.unwrap();
        until_closed(&mut ws).await;

        let user = token(&json!({ "sub": format!("mallory{forged}") }));
        let (mut ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
        let frame = format!(
            "{}\n{}\nbroken {forged}",
            json!({ "id": 1, "connect": { "token": user } }),
            json!({ "id": 2, "subscribe": { "channel": format!("nowhere:{forged}") } }),
        );
        ws.send(Message::text(frame)).await.unwrap();
        until_closed(&mut ws).await;
        server
            .wait_for_log_async("session ended")
            .await
            .expect("logged");
        server
            .wait_for_log_async("session ended")
            .await
            .expect("logged");
        let lines = server.log_lines();
        assert!(!lines.is_empty());
        for line in &lines {
            assert!(!line.starts_with("2030-"), "a forged line: {line}");
            match format {
                "json" => {
                    serde_json::from_str::<Value>(line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                }
                _ => assert!(
                    line.len() > 27 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T',
                    "not a log line: {line}"
                ),
            }
        }
        assert!(
            lines.iter().any(|line| line.contains("admin logged in")),
            "the forged text is logged, escaped, inside a field: {lines:#?}"
        );
    }
}

/// Every route shares the WebSocket upgrade's limits: a request head over
/// 16 KiB or with over 100 header lines is answered 431, a head or an API
/// body that stops coming is cut off after security.handshake_timeout (2 s
/// here), and 400 never-ending heads cost the server little memory.
#[test]
fn request_heads_and_bodies_are_bounded_on_every_route() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let raw = |request: &[u8]| {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let _ = tcp.write_all(request);
        let mut response = Vec::new();
        let started = Instant::now();
        let _ = tcp.read_to_end(&mut response);
        (
            String::from_utf8_lossy(&response).into_owned(),
            started.elapsed(),
        )
    };
    for path in ["/connection/websocket", "/api/publish", "/metrics", "/"] {
        let mut big = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: ").into_bytes();
        big.extend(std::iter::repeat_n(b'a', 300_000));
        let (response, _) = raw(&big);
        assert!(response.starts_with("HTTP/1.1 431"), "{path}: {response:?}");

        let mut many = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        for i in 0..150 {
            many.push_str(&format!("X-Header-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let (response, _) = raw(many.as_bytes());
        assert!(response.starts_with("HTTP/1.1 431"), "{path}: {response:?}");

        let (response, took) = raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes());
        assert!(!response.starts_with("HTTP/1.1 2"), "{path}: {response:?}");
        assert!(
            took < Duration::from_secs(6),
            "{path}: a stalled head held for {took:?}"
        );
    }
    let stalled_body = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 100\r\n\r\n{{\"chan"
    );
    let (response, took) = raw(stalled_body.as_bytes());
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(
        took < Duration::from_secs(6),
        "a stalled body held for {took:?}"
    );

    let before = rss_bytes(server.pid());
    let mut heads: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let chunk = [b'a'; 10_000];
    for tcp in &mut heads {
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    }
    for _ in 0..30 {
        for tcp in &mut heads {
            let _ = tcp.write_all(&chunk);
        }
    }
    let grown = rss_bytes(server.pid()).saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "400 unfinished heads grew RSS by {grown} bytes"
    );
}

/// A disconnect through the API becomes the client's close frame: its code
/// and reason must fit one (3000–4999, at most 123 bytes), or the call is
/// refused with 107 instead of leaving the client without a close.
#[tokio::test]
async fn api_disconnect_codes_and_reasons_must_fit_a_close_frame() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let mut ws = connected(&server, &token(&json!({ "sub": "eve" }))).await;
    let call = |code: u16, reason: &str| {
        let body = json!({ "user": "eve", "disconnect": { "code": code, "reason": reason } });
        api(&server, "disconnect", &body.to_string())
    };
    for refused in [
        call(1000, "normal"),
        call(5000, "too high"),
        call(4000, &"r".repeat(124)),
    ] {
        assert!(refused.contains("\"code\":107"), "{refused}");
    }
    let done = call(4001, "banned");
    assert!(done.contains("\"result\""), "{done}");
    let (_, code) = until_closed(&mut ws).await;
    assert_eq!(code, 4001);
}

/// A subscribe reply and the pushes queued for the client while it was
/// being answered leave as one message, the reply first: a client that
/// handles two messages of one read out of order (the Node `ws` package
/// emits them in one tick) still sees `subscribed` before anything of the
/// channel. The client's own join is such a push: it is queued while the
/// subscribe is answered.
#[tokio::test]
async fn a_subscribe_reply_and_the_pushes_behind_it_are_one_message() {
    let config = CONFIG.replace("name = \"open\"\n", "name = \"open\"\njoin_leave = true\n");
    let server = Tetherd::gateway(&config, &[]);
    let mut ws = connected(&server, &token(&json!({ "sub": "eve" }))).await;
    let subscribe = json!({ "id": 2, "subscribe": { "channel": "open:joined" } }).to_string();
    ws.send(Message::text(subscribe)).await.unwrap();
    let text = timeout(LIMIT, async {
        loop {
            if let Some(Ok(Message::Text(text))) = ws.recv().await {
                return text.to_string();
            }
        }
    })
    .await
    .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["id"], 2, "the reply comes first: {text}");
    assert!(
        lines[1..]
            .iter()
            .any(|line| line["push"]["join"]["info"]["user"] == "eve"),
        "the join queued meanwhile is in the same message: {text}"
    );
}
