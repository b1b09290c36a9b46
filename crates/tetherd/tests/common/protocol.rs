//! The gateway's client protocol (JSON) and server API, spoken by hand.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use serde_json::{Value, json};
use tether::{MaybeTls, Message, WebSocket};
use tokio::time::timeout;

use super::Tetherd;

/// `POST /api/METHOD` with `key`; the whole JSON answer.
pub fn api(server: &Tetherd, key: &str, method: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|_| panic!("a JSON answer: {response}"))
}

/// Polls `/api/info` on `node` until it lists `count` nodes (at most 15 s);
/// returns them.
pub fn wait_for_nodes(node: &Tetherd, key: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let info = api(node, key, "info", &json!({}));
        let nodes = info["result"]["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("a node list: {info}"))
            .clone();
        if nodes.len() == count {
            return nodes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} nodes never listed: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A protocol client connected to a node.
pub struct Client {
    pub ws: WebSocket<MaybeTls>,
    /// The client id the node gave it.
    pub id: String,
    next_id: u64,
}

impl Client {
    /// A client over `ws` that has not sent `connect` yet.
    pub fn unconnected(ws: WebSocket<MaybeTls>) -> Self {
        Self {
            ws,
            id: String::new(),
            next_id: 1,
        }
    }

    /// Connects anonymously.
    pub async fn connect(node: &Tetherd) -> Self {
        Self::connect_with(node, json!({})).await.0
    }

    /// Connects with the `connect` request `params` (a token, …); returns
    /// the client and the connect result.
    pub async fn connect_with(node: &Tetherd, params: Value) -> (Self, Value) {
        let (ws, _) = tether::connect(&node.gateway_url()).await.unwrap();
        let mut client = Self::unconnected(ws);
        let connected = client.call("connect", params).await;
        client.id = connected["client"]
            .as_str()
            .expect("a client id")
            .to_owned();
        (client, connected)
    }

    /// Sends a command and returns its reply's result (panics on an error).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let reply = self.reply(method, params).await;
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply[method].clone()
    }

    /// Sends a command and returns its whole reply (panics if the node
    /// closes the connection instead).
    pub async fn reply(&mut self, method: &str, params: Value) -> Value {
        self.reply_or_close(method, params)
            .await
            .unwrap_or_else(|code| panic!("{method}: closed with {code}"))
    }

    /// Sends a command and returns its whole reply, or the close code if
    /// the node ends the connection instead.
    pub async fn reply_or_close(&mut self, method: &str, params: Value) -> Result<Value, u16> {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({ "id": id, method: params });
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        let answer = async {
            loop {
                match self.ws.recv().await.expect("open").expect("no error") {
                    Message::Text(text) => {
                        for line in text.lines() {
                            let value: Value = serde_json::from_str(line).expect("JSON");
                            if value["id"] == id {
                                return Ok(value);
                            }
                        }
                    }
                    Message::Close(frame) => return Err(frame.map_or(1005, |frame| frame.code.0)),
                    _ => {}
                }
            }
        };
        timeout(Duration::from_secs(30), answer)
            .await
            .unwrap_or_else(|_| panic!("no reply to {method}"))
    }

    /// The next push in `channel` (at most 30 s).
    pub async fn push_in(&mut self, channel: &str) -> Value {
        self.push_within(channel, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no push in {channel}"))
    }

    pub async fn push_within(&mut self, channel: &str, wait: Duration) -> Option<Value> {
        let push = timeout(wait, self.next(|value| value["push"]["channel"] == channel)).await;
        push.ok().map(|value| value["push"].clone())
    }

    /// Reads until the node closes the connection (at most `wait`), checking
    /// that no publication arrives first; returns the close code.
    pub async fn close_code(&mut self, wait: Duration) -> u16 {
        let frame = timeout(wait, async {
            loop {
                match self.ws.recv().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(Message::Text(text))) => {
                        assert!(
                            !text.contains(r#""pub""#),
                            "a publication before the close: {text}"
                        );
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not closed within {wait:?}"));
        frame.expect("a close frame with a code").code.0
    }

    /// Reads until a JSON message that `wanted` accepts.
    pub async fn next(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.ws.recv().await.expect("open").expect("no error") {
                Message::Text(text) => {
                    for line in text.lines() {
                        let value: Value = serde_json::from_str(line).expect("JSON");
                        if wanted(&value) {
                            return value;
                        }
                    }
                }
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }
}
