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

use std::{
    future::poll_fn,
    net::SocketAddr,
    num::NonZeroU64,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures_core::Stream;
use tether::{
    CloseCode, CloseFrame, ConnectionPermit, Message, TrySendError, Utf8Bytes, WebSocket,
    deflate::{EncodedFrame, FrameEncoding},
    server::Upgraded,
};
use tracing::{debug, info};

use crate::{
    api::{self, history_options},
    auth::TokenError,
    broker::{BrokerError, ClientInfo, HistoryQuery, StreamPosition},
    hub::{ClientId, Command as HubCommand, ConnId, Frame, Identity, Item, Outbox, epoch_tag},
    node::{Node, encode_push},
    wire::{
        self, Command, ConnectRequest, ConnectResult, Disconnect, FrameBuilder, PushBody,
        RefreshResult, Reply, ReplyError, ReplyResult, Request, SubscribeRequest, SubscribeResult,
        Unsubscribe,
    },
};

/// A client must send `connect` this soon after the upgrade.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Presence entries live this long unless refreshed (refreshed every ping).
const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// Most channels one connection may subscribe to.
const MAX_CHANNELS: usize = 128;

/// Starts the session of an upgraded connection in a task of its own.
pub(crate) fn spawn(
    node: Arc<Node>,
    ws: WebSocket<Upgraded>,
    peer: SocketAddr,
    permit: Arc<ConnectionPermit>,
) {
    node.metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let conn = node.next_conn_id();
    let outbox = Arc::new(Outbox::new(node.config.client.outbound_queue_bytes));
    node.register(conn, outbox.clone());
    let connect_by = node.clock_ms() + CONNECT_DEADLINE.as_millis() as u64;
    outbox.set_deadline(Some(connect_by));
    let session = Box::new(Session {
        ws,
        node,
        outbox,
        conn,
        peer,
        conn_info: None,
        expires_at: None,
        subs: Vec::new(),
        timers: Timers {
            answer_by: Some(connect_by),
            next_ping: 0,
        },
        _permit: permit,
    });
    tokio::spawn(run(session));
}

/// Runs the connection until it ends, then cleans up after it.
async fn run(mut session: Box<Session>) {
    let ending = loop {
        let work = match poll_fn(|cx| session.poll_wake(cx)).await {
            Wake::Outbox => session.take_outbox(),
            Wake::Received(received) => session.received(received),
        };
        let done = match work {
            Ok(Some(work)) => Box::pin(session.work(work)).await,
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
    Outbox,
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
    Server(HubCommand),
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
    /// [`epoch_tag`] of the stream's epoch, on channels with recovery: the
    /// stream is checked for continuity.
    epoch: Option<u64>,
    presence: bool,
    join_leave: bool,
    /// The subscription token's `info` (boxed: rare).
    chan_info: Option<Box<Bytes>>,
}

/// The session's deadlines, in node clock milliseconds
/// ([`Node::clock_ms`]).
#[derive(Debug)]
struct Timers {
    /// The client must answer by then: with `connect` until it connected,
    /// then with the pong to our ping.
    answer_by: Option<u64>,
    next_ping: u64,
}

pub(crate) struct Session {
    ws: WebSocket<Upgraded>,
    node: Arc<Node>,
    /// Also holds the client's identity once connected.
    outbox: Arc<Outbox>,
    conn: ConnId,
    peer: SocketAddr,
    /// The connection token's `info`.
    conn_info: Option<Box<Bytes>>,
    /// When the connection token expires (Unix seconds).
    expires_at: Option<NonZeroU64>,
    subs: Vec<Sub>,
    timers: Timers,
    _permit: Arc<ConnectionPermit>,
}

impl Session {
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if self.outbox.poll_ready(cx).is_ready() {
            return Poll::Ready(Wake::Outbox);
        }
        // Also writes out what was queued, all in one go.
        Pin::new(&mut self.ws).poll_next(cx).map(Wake::Received)
    }

    /// Delivers queued pushes (skipping publications already recovered)
    /// in place; returns the first thing that needs waiting for. `Err`
    /// ends the connection.
    fn take_outbox(&mut self) -> Result<Option<Work>, Disconnect> {
        while let Some(item) = self.outbox.take() {
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
                metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                metrics
                    .bytes_in
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
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
            Work::Commands(text) => {
                if let Some(reply) = self.frame(text.as_bytes()).await? {
                    let reply =
                        Utf8Bytes::try_from_bytes(reply).map_err(|_| Disconnect::SERVER_ERROR)?;
                    self.send(reply).await?;
                }
                Ok(())
            }
            Work::Server(command) => {
                self.server_command(command).await;
                Ok(())
            }
            Work::Due => self.deadline_passed().await,
        }
    }

    /// The ticker woke us: end the connection on a missed deadline, or
    /// send the protocol ping that is due.
    async fn deadline_passed(&mut self) -> Result<(), Disconnect> {
        let now = self.node.clock_ms();
        let passed = |deadline: Option<u64>| deadline.is_some_and(|at| now >= at);
        if passed(self.timers.answer_by) {
            return Err(if self.connected() {
                Disconnect::NO_PONG
            } else {
                Disconnect::STALE
            });
        }
        if passed(self.expiry()) {
            return Err(Disconnect::EXPIRED);
        }
        if passed(self.ping_at()) {
            let client = &self.node.config.client;
            self.timers.next_ping = now + client.ping_interval.as_millis() as u64;
            self.timers
                .answer_by
                .get_or_insert(now + client.pong_timeout.as_millis() as u64);
            self.send(Utf8Bytes::from(wire::SERVER_PING)).await?;
            self.refresh_presence().await;
        }
        Ok(())
    }

    /// Tells the ticker the next deadline.
    fn schedule(&self) {
        let next = [self.timers.answer_by, self.expiry(), self.ping_at()]
            .into_iter()
            .flatten()
            .min();
        self.outbox.set_deadline(next);
    }

    /// When the next protocol ping is due, if pings are on.
    fn ping_at(&self) -> Option<u64> {
        let enabled = !self.node.config.client.ping_interval.is_zero();
        (enabled && self.connected()).then_some(self.timers.next_ping)
    }

    /// Seconds until the connection token expires, if it does.
    fn expires_in(&self) -> Option<u32> {
        self.expires_at
            .map(|at| at.get().saturating_sub(unix_now()) as u32)
    }

    /// When an expired connection token's grace ends.
    fn expiry(&self) -> Option<u64> {
        let expires_at = self.expires_at?.get();
        let left = Duration::from_secs(expires_at.saturating_sub(unix_now()));
        let grace = self.node.config.auth.token_refresh_grace;
        Some(self.node.clock_ms() + (left + grace).as_millis() as u64)
    }

    fn connected(&self) -> bool {
        self.outbox.identity().is_some()
    }

    /// The client id as shown, or `-` before `connect`.
    fn client(&self) -> String {
        self.outbox
            .identity()
            .map_or_else(|| "-".to_owned(), |id| id.client.to_string())
    }

    fn user(&self) -> &str {
        self.outbox.identity().map_or("", |id| &id.user)
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
            conn_info: self.conn_info.as_deref().cloned(),
            chan_info,
        }
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

    /// Waits (a bounded time) for room in the socket's queue: a client that
    /// stopped reading is cut off, not waited for.
    async fn send_waiting(&mut self, message: Message) -> Result<(), Disconnect> {
        sent(tokio::time::timeout(self.send_timeout(), self.ws.send(message)).await)
    }

    /// Handles one text frame of commands; returns the frame of replies.
    async fn frame(&mut self, text: &[u8]) -> Result<Option<Bytes>, Disconnect> {
        let commands = wire::decode_commands(text).map_err(|error| {
            info!(peer = %self.peer, client = %self.client(), %error, "bad command");
            error.disconnect()
        })?;
        let mut replies = FrameBuilder::new();
        for Command { id, request } in commands {
            if !self.connected() && !matches!(request, Request::Connect(_)) {
                return Err(Disconnect::BAD_REQUEST);
            }
            let result = match request {
                Request::Connect(connect) => self.connect(connect).await?,
                Request::Subscribe(subscribe) => self.subscribe(subscribe).await?,
                Request::Unsubscribe(request) => {
                    self.unsubscribe(&request.channel).await;
                    ReplyResult::Unsubscribe
                }
                Request::Publish(publish) => self.publish(publish.channel, publish.data).await,
                Request::Presence(request) => self.presence(&request.channel, false).await,
                Request::PresenceStats(request) => self.presence(&request.channel, true).await,
                Request::History(request) => self.history(&request.channel, request.query()).await,
                Request::Ping => ReplyResult::Ping,
                Request::Pong => {
                    self.timers.answer_by = None;
                    continue;
                }
                Request::Send(_) => continue,
                Request::Rpc(_) => ReplyResult::Error(ReplyError::NOT_AVAILABLE),
                Request::Refresh(refresh) => self.refresh(&refresh.token)?,
                Request::SubRefresh(refresh) => self.sub_refresh(&refresh.channel, &refresh.token),
                Request::Unknown => ReplyResult::Error(ReplyError::METHOD_NOT_FOUND),
            };
            replies.reply(&Reply { id, result });
        }
        Ok((!replies.is_empty()).then(|| replies.finish()))
    }

    async fn connect(&mut self, request: ConnectRequest) -> Result<ReplyResult, Disconnect> {
        if self.connected() {
            return Err(Disconnect::BAD_REQUEST);
        }
        let node = self.node.clone();
        let mut user = String::new();
        let mut server_channels = Vec::new();
        if request.token.is_empty() {
            if !node.config.auth.allow_anonymous {
                return Ok(ReplyResult::Error(ReplyError::UNAUTHORIZED));
            }
        } else {
            match node.verifier.verify_connection(&request.token, unix_now()) {
                Ok(claims) => {
                    user = claims.user;
                    self.conn_info = claims.info.map(Box::new);
                    self.expires_at = claims.expires_at.and_then(NonZeroU64::new);
                    server_channels = claims.channels;
                }
                Err(TokenError::Expired) => {
                    return Ok(ReplyResult::Error(ReplyError::TOKEN_EXPIRED));
                }
                Err(error) => {
                    info!(peer = %self.peer, %error, "invalid connection token");
                    return Err(Disconnect::INVALID_TOKEN);
                }
            }
        }
        self.outbox.set_identity(Identity {
            client: ClientId::random(),
            user,
        });
        // Connected: the connect deadline is met.
        self.timers.answer_by = None;
        self.timers.next_ping =
            node.clock_ms() + node.config.client.ping_interval.as_millis() as u64;
        let mut subs = Vec::new();
        for channel in server_channels {
            let since = request
                .subs
                .iter()
                .find(|s| s.channel == channel)
                .and_then(|s| s.since.clone());
            if let Ok(result) = self.join_channel(&channel, since, None).await {
                subs.push((channel, result));
            }
        }
        let ping = node.config.client.ping_interval.as_secs() as u32;
        Ok(ReplyResult::Connect(ConnectResult {
            client: self.client(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            expires_in: self.expires_in(),
            subs,
            ping,
            pong: ping > 0,
            node: node.name.clone(),
            ..ConnectResult::default()
        }))
    }

    /// Answers a subscribe, or ends the connection when the subscription
    /// token belongs to another channel, user or client (3500, as
    /// Centrifugo does: the client holds a token it must not use).
    async fn subscribe(&mut self, request: SubscribeRequest) -> Result<ReplyResult, Disconnect> {
        let refuse = |error| Ok(ReplyResult::Error(error));
        if request.unsupported_feature().is_some() {
            return refuse(ReplyError::NOT_AVAILABLE);
        }
        let Ok(namespace) = api::namespace(&self.node, &request.channel) else {
            return refuse(ReplyError::UNKNOWN_CHANNEL);
        };
        if self.sub(&request.channel).is_some() {
            return refuse(ReplyError::ALREADY_SUBSCRIBED);
        }
        if self.subs.len() >= MAX_CHANNELS {
            return refuse(ReplyError::LIMIT_EXCEEDED);
        }
        let mut chan_info = None;
        if namespace.subscription_token_required || !request.token.is_empty() {
            match self.node.verifier.verify_subscription(
                &request.token,
                &request.channel,
                unix_now(),
            ) {
                Ok(claims)
                    if claims.user != self.user()
                        || claims.client.as_ref().is_some_and(|c| *c != self.client()) =>
                {
                    return Err(Disconnect::INVALID_TOKEN);
                }
                Ok(claims) => chan_info = claims.info,
                Err(TokenError::Expired) => return refuse(ReplyError::TOKEN_EXPIRED),
                Err(TokenError::WrongChannel) => return Err(Disconnect::INVALID_TOKEN),
                Err(_) => return refuse(ReplyError::PERMISSION_DENIED),
            }
        } else if self.user().is_empty() && !namespace.allow_anonymous {
            return refuse(ReplyError::PERMISSION_DENIED);
        }
        let reject_unrecovered = request.reject_unrecovered;
        Ok(
            match self
                .join_channel(&request.channel, request.since, chan_info)
                .await
            {
                Ok(result) if reject_unrecovered && result.was_recovering && !result.recovered => {
                    self.unsubscribe(&request.channel).await;
                    ReplyResult::Error(ReplyError::UNRECOVERABLE_POSITION)
                }
                Ok(result) => ReplyResult::Subscribe(result),
                Err(error) => ReplyResult::Error(error),
            },
        )
    }

    /// Subscribes to `channel` (already authorized), recovering from `since`.
    /// The hub subscription comes first so no live publication can fall
    /// between the history read and the live stream; duplicates are dropped
    /// in [`Session::admits`].
    async fn join_channel(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        chan_info: Option<Bytes>,
    ) -> Result<SubscribeResult, ReplyError> {
        let node = self.node.clone();
        let namespace = api::namespace(&node, channel).map_err(|_| ReplyError::UNKNOWN_CHANNEL)?;
        let info = self.client_info(chan_info.clone());
        // Most connections hold a channel or two: no spare capacity.
        self.subs.reserve_exact(1);
        self.subs.push(Sub {
            channel: channel.into(),
            offset: u64::MAX,
            epoch: None,
            presence: namespace.presence,
            join_leave: namespace.join_leave,
            chan_info: chan_info.map(Box::new),
        });
        if node.hub.subscribe(channel, self.conn, self.outbox.clone()) {
            if let Err(error) = node.broker.subscribe(channel).await {
                info!(%channel, %error, "broker subscribe failed");
                self.unsubscribe(channel).await;
                return Err(ReplyError::INTERNAL);
            }
        }
        let mut result = SubscribeResult::default();
        if history_options(namespace).is_some() {
            let was_recovering = since.is_some() && namespace.recovery;
            let query = HistoryQuery {
                since: since.filter(|_| namespace.recovery),
                limit: if was_recovering { None } else { Some(0) },
                reverse: false,
            };
            let history = match node.broker.history(channel, query).await {
                Ok(history) => {
                    result.recovered = was_recovering;
                    history
                }
                Err(BrokerError::UnrecoverablePosition) => {
                    let position_only = HistoryQuery {
                        limit: Some(0),
                        ..HistoryQuery::default()
                    };
                    node.broker
                        .history(channel, position_only)
                        .await
                        .map_err(|_| ReplyError::INTERNAL)?
                }
                Err(error) => {
                    info!(%channel, %error, "history read failed");
                    self.unsubscribe(channel).await;
                    return Err(ReplyError::INTERNAL);
                }
            };
            result.was_recovering = was_recovering;
            result.recoverable = namespace.recovery;
            result.positioned = namespace.recovery;
            result.publications = history.publications;
            result.position = Some(history.position.clone());
            if let Some(sub) = self.sub_mut(channel) {
                sub.offset = history.position.offset;
                sub.epoch = namespace
                    .recovery
                    .then(|| epoch_tag(&history.position.epoch));
            }
        } else if let Some(sub) = self.sub_mut(channel) {
            sub.offset = 0;
        }
        if namespace.presence {
            let _ = node
                .broker
                .add_presence(channel, info.clone(), PRESENCE_TTL)
                .await;
        }
        if namespace.join_leave {
            let _ = node.broker.publish_join(channel, info).await;
        }
        Ok(result)
    }

    async fn unsubscribe(&mut self, channel: &str) {
        let Some(index) = self.subs.iter().position(|sub| &*sub.channel == channel) else {
            return;
        };
        let sub = self.subs.swap_remove(index);
        let node = self.node.clone();
        if node.hub.unsubscribe(channel, self.conn) {
            let _ = node.broker.unsubscribe(channel).await;
        }
        if sub.presence {
            let _ = node.broker.remove_presence(channel, &self.client()).await;
        }
        if sub.join_leave {
            let info = self.client_info(sub.chan_info.map(|info| *info));
            let _ = node.broker.publish_leave(channel, info).await;
        }
    }

    async fn publish(&mut self, channel: String, data: Bytes) -> ReplyResult {
        let Ok(namespace) = api::namespace(&self.node, &channel) else {
            return ReplyResult::Error(ReplyError::UNKNOWN_CHANNEL);
        };
        if !namespace.allow_publish || (self.user().is_empty() && !namespace.allow_anonymous) {
            return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
        }
        let chan_info = self
            .sub(&channel)
            .and_then(|sub| sub.chan_info.as_deref().cloned());
        let info = self.client_info(chan_info);
        match api::publish(&self.node, &channel, data, Some(info), Vec::new(), false).await {
            Ok(_) => ReplyResult::Publish,
            Err(_) => ReplyResult::Error(ReplyError::INTERNAL),
        }
    }

    async fn presence(&mut self, channel: &str, stats: bool) -> ReplyResult {
        match api::namespace(&self.node, channel) {
            Err(_) => return ReplyResult::Error(ReplyError::UNKNOWN_CHANNEL),
            Ok(namespace) if !namespace.presence => {
                return ReplyResult::Error(ReplyError::NOT_AVAILABLE);
            }
            Ok(_) if self.sub(channel).is_none() => {
                return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
            }
            Ok(_) => {}
        }
        let broker = &self.node.broker;
        let result = if stats {
            broker
                .presence_stats(channel)
                .await
                .map(ReplyResult::PresenceStats)
        } else {
            broker.presence(channel).await.map(ReplyResult::Presence)
        };
        result.unwrap_or(ReplyResult::Error(ReplyError::INTERNAL))
    }

    async fn history(&mut self, channel: &str, query: HistoryQuery) -> ReplyResult {
        match api::namespace(&self.node, channel) {
            Err(_) => return ReplyResult::Error(ReplyError::UNKNOWN_CHANNEL),
            Ok(namespace) if history_options(namespace).is_none() => {
                return ReplyResult::Error(ReplyError::NOT_AVAILABLE);
            }
            Ok(_) if self.sub(channel).is_none() => {
                return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
            }
            Ok(_) if query.pages_back_from_zero() => {
                return ReplyResult::Error(ReplyError::BAD_REQUEST);
            }
            Ok(_) => {}
        }
        match self.node.broker.history(channel, query).await {
            Ok(history) => ReplyResult::History(history),
            Err(BrokerError::UnrecoverablePosition) => {
                ReplyResult::Error(ReplyError::UNRECOVERABLE_POSITION)
            }
            Err(_) => ReplyResult::Error(ReplyError::INTERNAL),
        }
    }

    fn refresh(&mut self, token: &str) -> Result<ReplyResult, Disconnect> {
        match self.node.verifier.verify_connection(token, unix_now()) {
            Ok(claims) if claims.user == self.user() => {
                self.expires_at = claims.expires_at.and_then(NonZeroU64::new);
                Ok(ReplyResult::Refresh(RefreshResult {
                    expires_in: self.expires_in(),
                }))
            }
            Ok(_) => Err(Disconnect::INVALID_TOKEN),
            Err(TokenError::Expired) => Ok(ReplyResult::Error(ReplyError::TOKEN_EXPIRED)),
            Err(_) => Err(Disconnect::INVALID_TOKEN),
        }
    }

    fn sub_refresh(&mut self, channel: &str, token: &str) -> ReplyResult {
        if self.sub(channel).is_none() {
            return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
        }
        match self
            .node
            .verifier
            .verify_subscription(token, channel, unix_now())
        {
            Ok(claims) if claims.user == self.user() => ReplyResult::SubRefresh(RefreshResult {
                expires_in: claims
                    .expires_at
                    .map(|at| at.saturating_sub(unix_now()) as u32),
            }),
            Err(TokenError::Expired) => ReplyResult::Error(ReplyError::TOKEN_EXPIRED),
            _ => ReplyResult::Error(ReplyError::PERMISSION_DENIED),
        }
    }

    /// A command from the HTTP API (server-side subscribe/unsubscribe).
    async fn server_command(&mut self, command: HubCommand) {
        let push = match command {
            HubCommand::Subscribe(channel) if self.sub(&channel).is_none() => {
                match self.join_channel(&channel, None, None).await {
                    Ok(result) => encode_push(&channel, PushBody::Subscribe(&result)),
                    Err(_) => return,
                }
            }
            HubCommand::Unsubscribe(channel) if self.sub(&channel).is_some() => {
                self.unsubscribe(&channel).await;
                encode_push(&channel, PushBody::Unsubscribe(&Unsubscribe::SERVER))
            }
            _ => return,
        };
        if let Some(frame) = Frame::plain(push) {
            self.outbox.push(frame);
        }
    }

    async fn refresh_presence(&mut self) {
        for sub in self.subs.iter().filter(|sub| sub.presence) {
            let info = self.client_info(sub.chan_info.as_deref().cloned());
            let _ = self
                .node
                .broker
                .add_presence(&sub.channel, info, PRESENCE_TTL)
                .await;
        }
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
            let push = encode_push("", PushBody::Disconnect(ending));
            if let Ok(push) = Utf8Bytes::try_from_bytes(push) {
                let _ = self.send(push).await;
            }
            CloseFrame {
                code: CloseCode::GOING_AWAY,
                reason: ending.reason.clone().into_owned(),
            }
        } else {
            ending.close_frame()
        };
        if *ending == Disconnect::SLOW {
            self.node
                .metrics
                .slow_disconnects
                .fetch_add(1, Ordering::Relaxed);
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
            size_of::<Outbox>() <= 176,
            "Outbox: {}",
            size_of::<Outbox>()
        );
    }
}
