//! One client connection speaking the Centrifugo v2 JSON protocol: connect,
//! subscriptions with recovery, publish, presence, history, pings, token
//! refresh, and how it ends.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tether::{
    CloseCode, CloseFrame, ConnectionPermit, Message, TrySendError, Utf8Bytes, WebSocket,
    server::Upgraded,
};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info};

use crate::{
    api::{self, history_options},
    auth::TokenError,
    broker::{BrokerError, ClientInfo, HistoryQuery, StreamPosition},
    hub::{Command as HubCommand, ConnId, Frame, Outbox},
    node::{Node, SessionEntry, encode_push},
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

/// Runs the connection until it ends, then cleans up after it.
pub(crate) async fn run(
    node: Arc<Node>,
    mut ws: WebSocket<Upgraded>,
    peer: SocketAddr,
    origin: Option<String>,
    _permit: Arc<ConnectionPermit>,
) {
    node.metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let conn = node.next_conn_id();
    let outbox = Arc::new(Outbox::new(node.config.client.outbound_queue_bytes));
    let mut session = Session {
        conn,
        client: format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        ),
        user: String::new(),
        conn_info: None,
        connected: false,
        expires_at: None,
        subs: HashMap::new(),
        outbox,
        node,
    };
    // The socket stays here and is lent to the loop, so its ~500 bytes are
    // stored once per connection, not once per nested future.
    let ending = Box::pin(session.serve(&mut ws)).await;
    Box::pin(session.cleanup()).await;
    let origin = origin.as_deref().unwrap_or("-");
    info!(%peer, %origin, client = %session.client, user = %session.user, code = ending.code, reason = %ending.reason, "session ended");
}

/// One subscription of the connection.
#[derive(Debug)]
struct Sub {
    /// Publications with offsets up to here were delivered in the subscribe
    /// reply; live copies of them still in the outbox are dropped.
    recovered_through: u64,
    presence: bool,
    join_leave: bool,
    info: ClientInfo,
}

struct Session {
    node: Arc<Node>,
    conn: ConnId,
    client: String,
    user: String,
    conn_info: Option<Bytes>,
    connected: bool,
    /// When the connection token expires (Unix seconds).
    expires_at: Option<u64>,
    subs: HashMap<String, Sub>,
    outbox: Arc<Outbox>,
}

impl Session {
    /// The connection's main loop; returns why it ended.
    async fn serve(&mut self, ws: &mut WebSocket<Upgraded>) -> Disconnect {
        let client_config = &self.node.config.client;
        let ping_every = client_config.ping_interval;
        let pong_timeout = client_config.pong_timeout;
        let mut connect_deadline = Some(Instant::now() + CONNECT_DEADLINE);
        let mut next_ping = Instant::now() + ping_every.max(Duration::from_secs(1));
        let mut pong_due: Option<Instant> = None;
        let mut frames = Vec::new();
        let mut commands = Vec::new();
        let ending = loop {
            let expiry = self.expiry_deadline();
            let timer = [
                connect_deadline,
                pong_due,
                expiry,
                (!ping_every.is_zero() && self.connected).then_some(next_ping),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                biased;
                () = self.outbox.ready() => {
                    let disconnect = self.outbox.take(&mut frames, &mut commands);
                    for command in commands.drain(..) {
                        Box::pin(self.server_command(command)).await;
                    }
                    if let Err(ending) = Box::pin(self.deliver(ws, &mut frames)).await {
                        break ending;
                    }
                    if let Some(disconnect) = disconnect {
                        break disconnect;
                    }
                }
                received = ws.recv() => match received {
                    Some(Ok(Message::Text(text))) => {
                        self.node.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                        self.node.metrics.bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
                        // Boxed, like every rarely taken branch: the task's
                        // own future stays the size of its idle state, which
                        // is what every idle connection pays for.
                        match Box::pin(self.frame(text.as_bytes(), &mut pong_due)).await {
                            Ok(Some(reply)) => {
                                if let Err(ending) = Box::pin(send(ws, reply, self.send_timeout())).await {
                                    break ending;
                                }
                            }
                            Ok(None) => {}
                            Err(ending) => break ending,
                        }
                        if self.connected {
                            connect_deadline = None;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => break Disconnect::BAD_REQUEST,
                    Some(Ok(Message::Close(_))) | None => return Disconnect::CONNECTION_CLOSED,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        debug!(client = %self.client, %error, "connection error");
                        return Disconnect::CONNECTION_CLOSED;
                    }
                },
                () = sleep_until(timer.unwrap_or_else(far_future)), if timer.is_some() => {
                    let now = Instant::now();
                    if connect_deadline.is_some_and(|d| now >= d) {
                        break Disconnect::STALE;
                    }
                    if pong_due.is_some_and(|d| now >= d) {
                        break Disconnect::NO_PONG;
                    }
                    if expiry.is_some_and(|d| now >= d) {
                        break Disconnect::EXPIRED;
                    }
                    if now >= next_ping {
                        next_ping = now + ping_every;
                        pong_due.get_or_insert(now + pong_timeout);
                        if let Err(ending) = Box::pin(send(ws, Bytes::from_static(wire::SERVER_PING), self.send_timeout())).await {
                            break ending;
                        }
                        Box::pin(self.refresh_presence()).await;
                    }
                }
            }
        };
        Box::pin(self.close(ws, &ending)).await;
        ending
    }

    /// Delivers queued pushes, skipping publications already recovered.
    async fn deliver(
        &mut self,
        ws: &mut WebSocket<Upgraded>,
        frames: &mut Vec<Frame>,
    ) -> Result<(), Disconnect> {
        for frame in frames.drain(..) {
            if let Some((channel, offset)) = &frame.position {
                match self.subs.get(&**channel) {
                    Some(sub) if *offset <= sub.recovered_through => continue,
                    None => continue,
                    Some(_) => {}
                }
            }
            send(ws, frame.bytes, self.send_timeout()).await?;
        }
        Ok(())
    }

    /// Handles one text frame of commands; returns the frame of replies.
    async fn frame(
        &mut self,
        text: &[u8],
        pong_due: &mut Option<Instant>,
    ) -> Result<Option<Bytes>, Disconnect> {
        let commands = wire::decode_commands(text).map_err(|error| {
            info!(client = %self.client, %error, "bad command");
            error.disconnect()
        })?;
        let mut replies = FrameBuilder::new();
        for Command { id, request } in commands {
            if !self.connected && !matches!(request, Request::Connect(_)) {
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
                    *pong_due = None;
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
        if self.connected {
            return Err(Disconnect::BAD_REQUEST);
        }
        let node = self.node.clone();
        let mut server_channels = Vec::new();
        if request.token.is_empty() {
            if !node.config.auth.allow_anonymous {
                return Ok(ReplyResult::Error(ReplyError::UNAUTHORIZED));
            }
        } else {
            match node.verifier.verify_connection(&request.token, unix_now()) {
                Ok(claims) => {
                    self.user = claims.user;
                    self.conn_info = claims.info;
                    self.expires_at = claims.expires_at;
                    server_channels = claims.channels;
                }
                Err(TokenError::Expired) => {
                    return Ok(ReplyResult::Error(ReplyError::TOKEN_EXPIRED));
                }
                Err(error) => {
                    info!(client = %self.client, %error, "invalid connection token");
                    return Err(Disconnect::INVALID_TOKEN);
                }
            }
        }
        self.connected = true;
        node.register(
            self.conn,
            SessionEntry {
                client: self.client.clone(),
                user: self.user.clone(),
                outbox: self.outbox.clone(),
            },
        );
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
            client: self.client.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            expires_in: self
                .expires_at
                .map(|at| at.saturating_sub(unix_now()) as u32),
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
        if self.subs.contains_key(&request.channel) {
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
                    if claims.user != self.user
                        || claims.client.as_ref().is_some_and(|c| *c != self.client) =>
                {
                    return Err(Disconnect::INVALID_TOKEN);
                }
                Ok(claims) => chan_info = claims.info,
                Err(TokenError::Expired) => return refuse(ReplyError::TOKEN_EXPIRED),
                Err(TokenError::WrongChannel) => return Err(Disconnect::INVALID_TOKEN),
                Err(_) => return refuse(ReplyError::PERMISSION_DENIED),
            }
        } else if self.user.is_empty() && !namespace.allow_anonymous {
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
    /// in [`Session::deliver`].
    async fn join_channel(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        chan_info: Option<Bytes>,
    ) -> Result<SubscribeResult, ReplyError> {
        let node = self.node.clone();
        let namespace = api::namespace(&node, channel).map_err(|_| ReplyError::UNKNOWN_CHANNEL)?;
        let info = ClientInfo {
            client: self.client.clone(),
            user: self.user.clone(),
            conn_info: self.conn_info.clone(),
            chan_info,
        };
        self.subs.insert(
            channel.to_owned(),
            Sub {
                recovered_through: u64::MAX,
                presence: namespace.presence,
                join_leave: namespace.join_leave,
                info: info.clone(),
            },
        );
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
            if let Some(sub) = self.subs.get_mut(channel) {
                sub.recovered_through = history.position.offset;
            }
        } else if let Some(sub) = self.subs.get_mut(channel) {
            sub.recovered_through = 0;
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
        let Some(sub) = self.subs.remove(channel) else {
            return;
        };
        let node = self.node.clone();
        if node.hub.unsubscribe(channel, self.conn) {
            let _ = node.broker.unsubscribe(channel).await;
        }
        if sub.presence {
            let _ = node.broker.remove_presence(channel, &self.client).await;
        }
        if sub.join_leave {
            let _ = node.broker.publish_leave(channel, sub.info).await;
        }
    }

    async fn publish(&mut self, channel: String, data: Bytes) -> ReplyResult {
        let Ok(namespace) = api::namespace(&self.node, &channel) else {
            return ReplyResult::Error(ReplyError::UNKNOWN_CHANNEL);
        };
        if !namespace.allow_publish || (self.user.is_empty() && !namespace.allow_anonymous) {
            return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
        }
        let info = ClientInfo {
            client: self.client.clone(),
            user: self.user.clone(),
            conn_info: self.conn_info.clone(),
            chan_info: self
                .subs
                .get(&channel)
                .and_then(|sub| sub.info.chan_info.clone()),
        };
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
            Ok(_) if !self.subs.contains_key(channel) => {
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
            Ok(_) if !self.subs.contains_key(channel) => {
                return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
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
            Ok(claims) if claims.user == self.user => {
                self.expires_at = claims.expires_at;
                Ok(ReplyResult::Refresh(RefreshResult {
                    expires_in: self
                        .expires_at
                        .map(|at| at.saturating_sub(unix_now()) as u32),
                }))
            }
            Ok(_) => Err(Disconnect::INVALID_TOKEN),
            Err(TokenError::Expired) => Ok(ReplyResult::Error(ReplyError::TOKEN_EXPIRED)),
            Err(_) => Err(Disconnect::INVALID_TOKEN),
        }
    }

    fn sub_refresh(&mut self, channel: &str, token: &str) -> ReplyResult {
        if !self.subs.contains_key(channel) {
            return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
        }
        match self
            .node
            .verifier
            .verify_subscription(token, channel, unix_now())
        {
            Ok(claims) if claims.user == self.user => ReplyResult::SubRefresh(RefreshResult {
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
        match command {
            HubCommand::Subscribe(channel) => {
                if !self.subs.contains_key(&channel) {
                    if let Ok(result) = self.join_channel(&channel, None, None).await {
                        let push = encode_push(&channel, PushBody::Subscribe(&result));
                        self.outbox.push(Frame::plain(push));
                    }
                }
            }
            HubCommand::Unsubscribe(channel) => {
                if self.subs.contains_key(&channel) {
                    self.unsubscribe(&channel).await;
                    let push = encode_push(&channel, PushBody::Unsubscribe(&Unsubscribe::SERVER));
                    self.outbox.push(Frame::plain(push));
                }
            }
        }
    }

    async fn refresh_presence(&self) {
        for (channel, sub) in &self.subs {
            if sub.presence {
                let _ = self
                    .node
                    .broker
                    .add_presence(channel, sub.info.clone(), PRESENCE_TTL)
                    .await;
            }
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

    fn expiry_deadline(&self) -> Option<Instant> {
        let expires_at = self.expires_at?;
        let left = Duration::from_secs(expires_at.saturating_sub(unix_now()));
        Some(Instant::now() + left + self.node.config.auth.token_refresh_grace)
    }

    /// Ends the connection: a shutdown tells the client with a disconnect
    /// push and WebSocket close 1001; other endings use the disconnect code
    /// as the close code.
    async fn close(&mut self, ws: &mut WebSocket<Upgraded>, ending: &Disconnect) {
        let frame = if *ending == Disconnect::SHUTDOWN {
            let push = encode_push("", PushBody::Disconnect(ending));
            let _ = send(ws, push, self.send_timeout()).await;
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
        let _ = tokio::time::timeout(limit, async {
            if ws.send(Message::Close(Some(frame))).await.is_ok() {
                // The core bounds the wait for the reply by its close timeout.
                while let Some(Ok(_)) = ws.recv().await {}
            }
        })
        .await;
    }

    async fn cleanup(&mut self) {
        let channels: Vec<_> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.unsubscribe(&channel).await;
        }
        self.node.unregister(self.conn);
    }
}

/// Sends one text frame, waiting (a bounded time) while the socket's queue
/// is full: a client that stopped reading is cut off, not waited for.
async fn send(
    ws: &mut WebSocket<Upgraded>,
    bytes: Bytes,
    timeout: Duration,
) -> Result<(), Disconnect> {
    let text = Utf8Bytes::try_from_bytes(bytes).map_err(|_| Disconnect::SERVER_ERROR)?;
    match ws.try_send(Message::Text(text)) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(message)) => {
            match tokio::time::timeout(timeout, ws.send(message)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Disconnect::WRITE_ERROR),
                Err(_) => Err(Disconnect::SLOW),
            }
        }
        Err(_) => Err(Disconnect::WRITE_ERROR),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
