//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): not
//! an API.
//!
//! [`Gateway::session`] runs the whole gateway path a client takes, in
//! process: hyper with the gateway's limits, the WebSocket upgrade, a
//! session with the memory broker, its commands, replies and pushes, and
//! its cleanup, over an in-memory pipe.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tether::{ClientConfig, Message};

use crate::{
    auth::Verifier, broker::memory::MemoryBroker, client_addr::Admission, config::Config, gateway,
    node::Node,
};

/// The HMAC secret of the fuzzed node's tokens, for seeds that connect with
/// one.
pub const TOKEN_SECRET: &str = "fuzzing-token-secret-0123456789abcdef";

/// How long one session may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Decodes a frame of client commands as a session does, up to the first
/// bad line; returns how many decoded.
pub fn decode_commands(frame: &[u8]) -> usize {
    crate::wire::decode_commands(frame)
        .take_while(Result::is_ok)
        .count()
}

/// One gateway node in this process, with the memory broker and the
/// default configuration (anonymous clients in the `demo` namespace, with
/// history, recovery, presence and join/leave).
pub struct Gateway {
    runtime: tokio::runtime::Runtime,
    node: Arc<Node>,
}

impl Gateway {
    /// Starts the node.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut config = Config::default();
        config.auth.api_key = "fuzzing-api-key-0123456789".into();
        config.auth.token_hmac_secret = TOKEN_SECRET.into();
        let verifier = Verifier::from_config(&config.auth).expect("an HMAC secret");
        let node =
            runtime.block_on(async { Node::new(config, Arc::new(MemoryBroker::new()), verifier) });
        Self { runtime, node }
    }

    /// One client: upgrades over an in-memory pipe, sends each of `frames`
    /// as a text message (binary where it is not UTF-8), then a close, and
    /// reads everything the server sends until it closes. Returns the bytes
    /// received once the session has ended and cleaned up. Panics if the
    /// server does not finish within 20 s.
    pub fn session(&self, frames: &[&[u8]]) -> usize {
        let messages: Vec<Message> = frames
            .iter()
            .map(|frame| match std::str::from_utf8(frame) {
                Ok(text) => Message::text(text.to_owned()),
                Err(_) => Message::binary(frame.to_vec()),
            })
            .collect();
        self.runtime.block_on(async {
            let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
            let permit = self
                .node
                .limiter
                .try_acquire(peer.ip())
                .expect("under the limits");
            let admission = Admission::Counted(Arc::new(permit));
            let (client, server) = tokio::io::duplex(1 << 16);
            tokio::spawn(gateway::serve_http(
                self.node.clone(),
                server,
                peer,
                admission,
            ));
            let run = async {
                let (ws, _) = tether::client::handshake(
                    client,
                    "localhost",
                    "/connection/websocket",
                    &ClientConfig::default(),
                )
                .await
                .expect("upgraded");
                let (mut reader, mut writer) = ws.split();
                let reading = tokio::spawn(async move {
                    let mut received = 0;
                    while let Some(Ok(message)) = reader.recv().await {
                        received += message.len();
                    }
                    received
                });
                for message in messages {
                    if writer.send(message).await.is_err() {
                        break;
                    }
                }
                let _ = writer.send(Message::Close(None)).await;
                let received = reading.await.expect("the reader does not panic");
                while self.node.session_count() > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                received
            };
            tokio::time::timeout(HANG, run)
                .await
                .expect("the session ended")
        })
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}
