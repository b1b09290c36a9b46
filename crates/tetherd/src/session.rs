//! One client connection speaking the Centrifugo v2 JSON protocol: connect,
//! subscriptions with recovery, publish, presence, history, pings, token
//! refresh, and how it ends.
//!
//! Memory per idle connection is what this module is shaped by. A session
//! is one boxed [`Session`] (the socket and a little state) driven by a
//! task whose own future is a few pointers: waiting costs no timer (the
//! node's ticker wakes sessions whose deadline passed) and no buffers, and
//! everything rarely needed (command handling, waiting on a full socket,
//! the close) is boxed only while it runs.
//!
//! ```text
//!  socket ──text frame──▶ commands.rs: one command at a time, rate-limited,
//!                         replies charged to the client's outbound budget
//!                            ├─▶ subscriptions.rs: subscribe / recover / expire
//!                            └─▶ node: publish, presence, history
//!  outbox (pushes, API commands, ticks) ──▶ take_outbox ──▶ socket
//!  ticker ──▶ deadlines.rs: connect and pong deadlines, pings, token expiry
//! ```

mod commands;
mod deadlines;
mod hooks;
mod permissions;
mod subscriptions;

use std::{
    future::poll_fn,
    net::SocketAddr,
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use tether::{
    CloseCode, CloseFrame, Message, TrySendError, Utf8Bytes, WebSocket,
    broadcast::{BroadcastExt, EncodedFrame, FrameEncoding},
    server::{ConnectionPermit, Upgraded},
};
use tracing::{debug, info};

use self::deadlines::Timers;
use crate::{
    auth::Capability,
    broker::ClientInfo,
    handle::{ConnId, Frame, Item, ServerCommand, SessionHandle},
    node::Node,
    proxy::ClientHeaders,
    wire::{Disconnect, PushBody, encode_push},
};

/// Starts the session of an upgraded connection in a task of its own.
pub(crate) fn spawn(
    node: Arc<Node>,
    ws: WebSocket<Upgraded>,
    peer: SocketAddr,
    permit: Arc<ConnectionPermit>,
    headers: Option<ClientHeaders>,
) {
    node.metrics.connections_total.inc();
    let conn = node.next_conn_id();
    let handle = Arc::new(SessionHandle::new(node.config.client.outbound_queue_bytes));
    node.register(conn, handle.clone());
    let timers = Timers::new(&node);
    handle.set_deadline(timers.answer_by());
    let session = Box::new(Session {
        ws,
        node,
        handle,
        conn,
        peer,
        extras: headers.map(|headers| {
            Box::new(Extras {
                headers: Some(headers),
                ..Extras::default()
            })
        }),
        subs: Vec::new(),
        timers,
        _permit: permit,
    });
    tokio::spawn(run(session));
}

/// Runs the connection until it ends, then cleans up after it.
async fn run(mut session: Box<Session>) {
    let ending = loop {
        let wake = poll_fn(|cx| session.poll_wake(cx)).await;
        // Pushes delivered from the outbox move no deadline: a fan-out
        // wakes every subscriber, and each would recompute it for nothing.
        let delivered_only = matches!(wake, Wake::SessionHandle);
        let work = match wake {
            Wake::SessionHandle => session.take_outbox(),
            Wake::Received(received) => session.received(received),
        };
        let done = match work {
            Ok(Some(work)) => Box::pin(session.work(work)).await,
            Ok(None) if delivered_only => continue,
            Ok(None) => Ok(()),
            Err(ending) => Err(ending),
        };
        if let Err(ending) = done {
            break ending;
        }
        session.schedule();
    };
    Box::pin(session.close(&ending)).await;
    Box::pin(session.cleanup()).await;
    let client = session.client();
    let user = session.user();
    info!(peer = %session.peer, %client, %user, code = ending.code, reason = %ending.reason, "session ended");
}

/// Why the session's task woke up.
enum Wake {
    /// The outbox has something to take.
    SessionHandle,
    /// The socket delivered a message, an error or its end.
    Received(Option<Result<Message, tether::Error>>),
}

/// What the session's task has to wait for; everything else is done in
/// place, without allocating.
enum Work {
    /// A frame that found the socket's queue full.
    Blocked(Message),
    /// A compressed push shared with other subscribers that found the
    /// socket's queue full (boxed: rare, and this enum's size is part of
    /// every idle session's task).
    BlockedEncoded(Box<EncodedFrame>),
    /// A frame of commands from the client.
    Commands(Utf8Bytes),
    /// A command from the HTTP API.
    Server(ServerCommand),
    /// A deadline passed.
    Due,
}

/// One subscription of the connection.
#[derive(Debug)]
struct Sub {
    channel: Box<str>,
    /// Publications up to this offset were delivered (in the subscribe
    /// reply or live); copies of them still in the outbox are dropped.
    offset: u64,
    /// [`crate::handle::epoch_tag`] of the stream's epoch, on channels with
    /// recovery: the stream is checked for continuity.
    epoch: Option<u64>,
    /// When the subscription token's grace ends, in whole node clock
    /// seconds (rounded up): unless refreshed by then, the subscription
    /// ends with unsubscribe code 2501. Four bytes keep `Sub` in its size
    /// class.
    expire_by: Option<NonZeroU32>,
    presence: bool,
    join_leave: bool,
    /// The subscription token's `info` (boxed: rare).
    chan_info: Option<Box<Bytes>>,
}

/// What some connections have besides their user (boxed: most have
/// none of it).
#[derive(Debug, Default)]
struct Extras {
    /// The connection token's `info`, or the connect hook's.
    info: Option<Bytes>,
    /// The connection token's `caps`, or the connect hook's.
    caps: Vec<Capability>,
    /// What the proxy hooks forward of the upgrade request.
    headers: Option<ClientHeaders>,
    /// The connect hook identified the client: its expiry is the refresh
    /// hook's to extend, not the client's.
    by_backend: bool,
}

pub(crate) struct Session {
    ws: WebSocket<Upgraded>,
    node: Arc<Node>,
    /// Also holds the client's identity once connected.
    handle: Arc<SessionHandle>,
    conn: ConnId,
    peer: SocketAddr,
    extras: Option<Box<Extras>>,
    subs: Vec<Sub>,
    timers: Timers,
    _permit: Arc<ConnectionPermit>,
}

impl Session {
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if self.handle.poll_ready(cx).is_ready() {
            return Poll::Ready(Wake::SessionHandle);
        }
        // Also writes out what was queued, all in one go.
        Pin::new(&mut self.ws).poll_next(cx).map(Wake::Received)
    }

    /// Delivers queued pushes (skipping publications already recovered)
    /// in place; returns the first thing that needs waiting for. `Err`
    /// ends the connection.
    fn take_outbox(&mut self) -> Result<Option<Work>, Disconnect> {
        while let Some(item) = self.handle.take() {
            match item {
                Item::Frame(frame) => {
                    if self.admits(&frame)? {
                        if let Some(blocked) = self.queue_push(frame)? {
                            return Ok(Some(blocked));
                        }
                    }
                }
                Item::Command(command) => return Ok(Some(Work::Server(command))),
                Item::Due => return Ok(Some(Work::Due)),
                Item::Closed(ending) => return Err(ending),
            }
        }
        Ok(None)
    }

    /// Whether `frame` goes out. A publication already delivered in the
    /// subscribe reply is dropped; on a channel with recovery, one from
    /// another epoch or past a gap ends the connection with 3010, so the
    /// client reconnects and recovers (or learns that it cannot).
    fn admits(&mut self, frame: &Frame) -> Result<bool, Disconnect> {
        let Some(position) = &frame.position else {
            return Ok(true);
        };
        let Some(sub) = self.sub_mut(&position.channel) else {
            return Ok(false);
        };
        let Some(epoch) = sub.epoch else {
            let fresh = position.offset > sub.offset;
            sub.offset = sub.offset.max(position.offset);
            return Ok(fresh);
        };
        if position.epoch != epoch || position.offset > sub.offset.saturating_add(1) {
            info!(peer = %self.peer, channel = %position.channel, offset = position.offset, "gap in a recoverable stream");
            return Err(Disconnect::INSUFFICIENT_STATE);
        }
        if position.offset <= sub.offset {
            return Ok(false);
        }
        sub.offset = position.offset;
        Ok(true)
    }

    fn received(
        &mut self,
        received: Option<Result<Message, tether::Error>>,
    ) -> Result<Option<Work>, Disconnect> {
        match received {
            Some(Ok(Message::Text(text))) => {
                let metrics = &self.node.metrics;
                metrics.messages_in.inc();
                metrics.bytes_in.inc_by(text.len() as u64);
                Ok(Some(Work::Commands(text)))
            }
            Some(Ok(Message::Binary(_))) => Err(Disconnect::BAD_REQUEST),
            Some(Ok(Message::Close(_))) | None => Err(Disconnect::CONNECTION_CLOSED),
            Some(Ok(_)) => Ok(None),
            Some(Err(error)) => {
                debug!(peer = %self.peer, %error, "connection error");
                Err(Disconnect::CONNECTION_CLOSED)
            }
        }
    }

    async fn work(&mut self, work: Work) -> Result<(), Disconnect> {
        match work {
            Work::Blocked(message) => self.send_waiting(message).await,
            Work::BlockedEncoded(frame) => {
                let limit = self.send_timeout();
                sent(tokio::time::timeout(limit, self.ws.send_encoded(&frame)).await)
            }
            Work::Commands(text) => self.commands(text.as_bytes()).await,
            Work::Server(command) => self.server_command(command).await,
            Work::Due => self.deadline_passed().await,
        }
    }

    fn connected(&self) -> bool {
        self.handle.identity().is_some()
    }

    /// The client id as shown, or `-` before `connect`.
    fn client(&self) -> String {
        self.handle
            .identity()
            .map_or_else(|| "-".to_owned(), |id| id.client.to_string())
    }

    fn user(&self) -> &str {
        self.handle.identity().map_or("", |id| &id.user)
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_default()
    }

    /// What the proxy hooks forward of the upgrade request.
    fn headers(&self) -> Option<&ClientHeaders> {
        self.extras
            .as_ref()
            .and_then(|extras| extras.headers.as_ref())
    }

    fn sub(&self, channel: &str) -> Option<&Sub> {
        self.subs.iter().find(|sub| &*sub.channel == channel)
    }

    fn sub_mut(&mut self, channel: &str) -> Option<&mut Sub> {
        self.subs.iter_mut().find(|sub| &*sub.channel == channel)
    }

    /// Who this client is, as presence and join/leave show it.
    fn client_info(&self, chan_info: Option<Bytes>) -> ClientInfo {
        ClientInfo {
            client: self.client(),
            user: self.user().to_owned(),
            conn_info: self.extras.as_ref().and_then(|extras| extras.info.clone()),
            chan_info,
        }
    }

    /// Bytes this client makes the server hold right now: pushes waiting
    /// in its outbox and whatever its socket has not written yet. Replies
    /// count against the same budget (`client.outbound_queue_bytes`).
    fn held_bytes(&self) -> usize {
        self.handle.queued_bytes() + self.ws.buffered_amount()
    }

    /// Queues one text frame, or hands it back while the socket's queue
    /// is full.
    fn queue(&mut self, text: Utf8Bytes) -> Result<Option<Message>, Disconnect> {
        match self.ws.try_send(Message::Text(text)) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(message)) => Ok(Some(message)),
            Err(_) => Err(Disconnect::WRITE_ERROR),
        }
    }

    /// Queues a push from the outbox, or hands it back while the socket's
    /// queue is full. Over permessage-deflate, a push shared by several
    /// subscribers goes out as the bytes compressed once for all of them.
    fn queue_push(&mut self, frame: Frame) -> Result<Option<Work>, Disconnect> {
        let encoded = match (&frame.encodings, self.ws.frame_encoding()) {
            (Some(encodings), Some(encoding @ FrameEncoding::Deflate { .. })) => {
                encodings.frame(encoding, &frame.text, &self.node.metrics)
            }
            _ => return Ok(self.queue(frame.text)?.map(Work::Blocked)),
        };
        match self.ws.try_send_encoded(&encoded) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(Work::BlockedEncoded(Box::new(encoded)))),
            Err(_) => Err(Disconnect::WRITE_ERROR),
        }
    }

    /// Sends one text frame, waiting while the socket's queue is full.
    async fn send(&mut self, text: Utf8Bytes) -> Result<(), Disconnect> {
        match self.queue(text)? {
            None => Ok(()),
            Some(message) => self.send_waiting(message).await,
        }
    }

    /// Sends a push made here (not shared with other subscribers).
    async fn send_push(&mut self, channel: &str, body: PushBody<'_>) -> Result<(), Disconnect> {
        let push = Utf8Bytes::try_from_bytes(encode_push(channel, body))
            .map_err(|_| Disconnect::SERVER_ERROR)?;
        self.send(push).await
    }

    /// Waits (a bounded time) for room in the socket's queue: a client that
    /// stopped reading is cut off, not waited for.
    async fn send_waiting(&mut self, message: Message) -> Result<(), Disconnect> {
        sent(tokio::time::timeout(self.send_timeout(), self.ws.send(message)).await)
    }

    /// How long a send may wait for room in the socket's queue: a client
    /// that reads nothing for as long as it may take to answer a ping is
    /// treated as slow.
    fn send_timeout(&self) -> Duration {
        self.node
            .config
            .client
            .pong_timeout
            .max(Duration::from_secs(1))
    }

    /// Ends the connection: a shutdown tells the client with a disconnect
    /// push and WebSocket close 1001; other endings use the disconnect code
    /// as the close code. A connection the client closed, or that failed,
    /// only gets the close frame the core queued.
    async fn close(&mut self, ending: &Disconnect) {
        if *ending == Disconnect::CONNECTION_CLOSED {
            // The core may still hold the close frame it queued (the reply
            // to the client's close, or 1002/1007/1009 after a protocol
            // error): receiving to the end writes it and shuts the socket
            // down, within the core's close timeout.
            let limit = self.node.server_config.connection.close_timeout;
            let ws = &mut self.ws;
            let _ = tokio::time::timeout(limit, async { while ws.recv().await.is_some() {} }).await;
            return;
        }
        let frame = if *ending == Disconnect::SHUTDOWN {
            let _ = self.send_push("", PushBody::Disconnect(ending)).await;
            CloseFrame {
                code: CloseCode::GOING_AWAY,
                reason: ending.reason.clone().into_owned(),
            }
        } else {
            ending.close_frame()
        };
        if *ending == Disconnect::SLOW {
            self.node.metrics.slow_disconnects.inc();
        }
        // Bounded: a client that stopped reading has no room for our close
        // frame either; then the socket is simply dropped.
        let limit = self.send_timeout() + self.node.server_config.connection.close_timeout;
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(limit, async {
            if ws.send(Message::Close(Some(frame))).await.is_ok() {
                // The core bounds the wait for the reply by its close timeout.
                while let Some(Ok(_)) = ws.recv().await {}
            }
        })
        .await;
    }

    async fn cleanup(&mut self) {
        while let Some(sub) = self.subs.last() {
            let channel = sub.channel.clone();
            self.unsubscribe(&channel).await;
        }
        self.node.unregister(self.conn);
    }
}

/// How a send that waited (at most `send_timeout`) ended.
fn sent(
    waited: Result<Result<(), tether::Error>, tokio::time::error::Elapsed>,
) -> Result<(), Disconnect> {
    match waited {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Disconnect::WRITE_ERROR),
        Err(_) => Err(Disconnect::SLOW),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one `Session` (and two `Sub`s in the
    /// memory target of 15,000 connections × 2 channels): growing them
    /// past these sizes moves them into a larger allocator size class.
    #[test]
    fn per_connection_state_stays_within_its_size_class() {
        assert!(
            size_of::<Session>() <= 384,
            "Session: {}",
            size_of::<Session>()
        );
        assert!(size_of::<Sub>() <= 56, "Sub: {}", size_of::<Sub>());
        assert!(
            size_of::<SessionHandle>() <= 176,
            "SessionHandle: {}",
            size_of::<SessionHandle>()
        );
    }
}
