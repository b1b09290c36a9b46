//! The publishers of `tether-load broadcast`: publications `0..count` at a
//! fixed rate, through the gateway's HTTP API (`POST …/publish` on
//! keep-alive connections) or as a client's `publish` command over a
//! WebSocket, on one connection or several.
//!
//! Publication `seq` is due at `seq / rate` seconds and goes out on
//! connection `seq % connections`; each connection sends its next one when
//! the previous one was answered, so a gateway that answers slower than
//! the period publishes less than asked (the report says how much). With
//! several connections, neighbouring publications may overtake each other
//! on their way in: the subscribers then count them as reordered.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::Value;
use tether::{ClientConfig, Keepalive, Message, WebSocket};
use tether_load_os as os;
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};

use crate::{
    gateway::{self, Event},
    held, http1, progress,
    report::latency_histogram,
    target::Target,
};

/// How publications reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Via {
    /// `POST /api/publish` with the API key.
    Api,
    /// A `publish` command of an anonymous client over the WebSocket
    /// endpoint (the channel's namespace must allow it).
    Websocket,
}

/// What to publish, where and how fast.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) via: Via,
    /// The HTTP API (`Via::Api`).
    pub(crate) api: Target,
    pub(crate) api_key: String,
    /// The WebSocket endpoint (`Via::Websocket`).
    pub(crate) url: Target,
    pub(crate) channel: String,
    /// Bytes of JSON data per publication.
    pub(crate) size: usize,
    pub(crate) rate: f64,
    pub(crate) count: u64,
    pub(crate) connections: usize,
}

/// What the publishers did.
#[derive(Debug)]
pub(crate) struct Publishing {
    /// Publications the gateway accepted: sequence numbers `0..sent`.
    pub(crate) sent: u64,
    /// Request to answer of each publication, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Default for Publishing {
    fn default() -> Self {
        Self {
            sent: 0,
            latency: latency_histogram(),
        }
    }
}

/// Opens every connection, then publishes the plan's publications on
/// them; fails at the first one the gateway refuses.
pub(crate) async fn publish(plan: Plan) -> Result<Publishing, String> {
    let mut connections = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        connections.push(Connection::open(&plan).await?);
    }
    let line = progress::line(true, plan.count, progress::PUBLISHED);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for (first, connection) in connections.into_iter().enumerate() {
        tasks.spawn(publish_on(
            connection,
            first,
            plan.clone(),
            start,
            line.clone(),
        ));
    }
    let mut total = Publishing::default();
    while let Some(joined) = tasks.join_next().await {
        let publishing = joined.map_err(|error| format!("a publisher failed: {error}"))??;
        total.sent += publishing.sent;
        total.latency.add(&publishing.latency).ok();
    }
    line.finish();
    Ok(total)
}

/// Publishes publications `first`, `first + connections`, … of the plan
/// on `connection`, each at its time (`start` + its sequence number ÷ the
/// rate).
async fn publish_on(
    mut connection: Connection,
    first: usize,
    plan: Plan,
    start: tokio::time::Instant,
    line: ProgressBar,
) -> Result<Publishing, String> {
    let mut publishing = Publishing::default();
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    for seq in (first as u64..plan.count).step_by(plan.connections) {
        tokio::time::sleep_until(start + period.mul_f64(seq as f64)).await;
        let sent_at = Instant::now();
        let body = gateway::publish_body(&plan.channel, seq, os::monotonic_ns(), plan.size);
        connection
            .publish(&body, seq)
            .await
            .map_err(|error| format!("publication {seq} of {}: {error}", plan.count))?;
        publishing
            .latency
            .saturating_record(sent_at.elapsed().as_nanos() as u64);
        publishing.sent += 1;
        line.inc(1);
    }
    connection.close().await;
    Ok(publishing)
}

/// One publisher connection.
enum Connection {
    Api {
        stream: TcpStream,
        buf: BytesMut,
        path: String,
        host: String,
        api_key: String,
    },
    WebSocket(Box<WebSocket<TcpStream>>),
}

impl Connection {
    async fn open(plan: &Plan) -> Result<Self, String> {
        let target = match plan.via {
            Via::Api => &plan.api,
            Via::Websocket => &plan.url,
        };
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", target.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|error| error.to_string())?;
        match plan.via {
            Via::Api => Ok(Self::Api {
                stream,
                buf: BytesMut::new(),
                path: format!("{}/publish", target.path.trim_end_matches('/')),
                host: target.host.clone(),
                api_key: plan.api_key.clone(),
            }),
            Via::Websocket => {
                let mut config = ClientConfig::default();
                config.connection.keepalive = Keepalive::OFF;
                let (ws, _) =
                    tether::client::handshake(stream, &target.host, &target.path, &config)
                        .await
                        .map_err(|error| format!("publisher handshake: {error}"))?;
                let mut ws = Box::new(ws);
                command(&mut ws, 1, r#"{"id":1,"connect":{}}"#.to_owned())
                    .await
                    .map_err(|error| format!("publisher connect: {error}"))?;
                Ok(Self::WebSocket(ws))
            }
        }
    }

    /// Publishes `body` (`{"channel":…,"data":…}`) as publication `seq` and
    /// waits for the answer.
    async fn publish(&mut self, body: &str, seq: u64) -> Result<(), String> {
        match self {
            Self::Api {
                stream,
                buf,
                path,
                host,
                api_key,
            } => {
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {api_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|error| error.to_string())?;
                let response = http1::read_response(stream, buf).await?;
                let reply: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                if response.status != 200 || reply.get("error").is_some() {
                    let shown = String::from_utf8_lossy(&response.body);
                    return Err(format!(
                        "the API answered {}: {}",
                        response.status,
                        shown.trim()
                    ));
                }
                Ok(())
            }
            Self::WebSocket(ws) => {
                // Id 1 is `connect`'s.
                let id = seq + 2;
                command(ws, id, format!(r#"{{"id":{id},"publish":{body}}}"#)).await
            }
        }
    }

    async fn close(self) {
        if let Self::WebSocket(mut ws) = self {
            let _ = held::close(&mut ws, &mut 0).await;
        }
    }
}

/// Sends command `id` over the WebSocket and waits for its reply, answering
/// pings meanwhile.
async fn command(ws: &mut WebSocket<TcpStream>, id: u64, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|error| error.to_string())?;
    loop {
        let Message::Text(text) = held::message(ws.recv().await)? else {
            continue;
        };
        for event in gateway::events(&text) {
            match event? {
                Event::Reply { id: replied, error } if replied == id => {
                    return error.map_or(Ok(()), |error| Err(format!("refused: {error}")));
                }
                Event::Ping => ws
                    .send(Message::text(gateway::PONG))
                    .await
                    .map_err(|error| error.to_string())?,
                Event::Reply { .. } | Event::Publication { .. } | Event::Other => {}
            }
        }
    }
}
