//! A frame of client commands: decoded and run one at a time, in order,
//! under two limits, and answered in order, in one message when the budget
//! allows.
//!
//! - **Rate.** Each command (not each frame) takes a token from the
//!   session's bucket; a client out of tokens is disconnected with 3013
//!   after the commands before it were answered.
//! - **Budget.** Replies are bytes the server holds for the client, so they
//!   count against `client.outbound_queue_bytes` together with its queued
//!   pushes and unsent socket bytes, as they are produced. Replies that
//!   would pass it are first written out (waiting, as any send, at most the
//!   send timeout for a client that does not read); a reply that cannot fit
//!   even then is not built (its size is estimated first), the rest of the
//!   frame is not run, and the client is disconnected as slow (3008). A
//!   history reply is also capped at `client.history_max_publication_limit`
//!   publications.
//!
//! A malformed line ends the connection with 3501, after the commands
//! before it were answered, as Centrifugo does.

use bytes::Bytes;
use tether::Utf8Bytes;
use tracing::info;

use super::{Session, deadlines::ttl, permissions::Permission, subscriptions::MAX_CHANNELS};
use crate::{
    auth::TokenError,
    broker::{BrokerError, HistoryQuery},
    handle::{ClientId, Identity},
    node::{PublishOptions, history_options, unix_now},
    wire::{
        self, ClientCommand, ConnectRequest, ConnectResult, Disconnect, FrameBuilder,
        RefreshResult, Reply, ReplyError, ReplyResult, Request, SubscribeResult,
    },
};

/// The replies to one frame of commands, as they are built.
#[derive(Default)]
struct Replies {
    frame: FrameBuilder,
    /// A subscribe or connect is among them: waiting pushes go after them,
    /// in the same message.
    subscribed: bool,
}

impl Session {
    /// Runs one text frame of commands and answers them, in order, in as
    /// few messages as the budget allows (the SDKs split on newlines).
    pub(super) async fn commands(&mut self, text: &[u8]) -> Result<(), Disconnect> {
        let mut replies = Replies::default();
        let ran = self.run_commands(text, &mut replies).await;
        if ran == Err(Disconnect::SLOW) {
            // The replies are what broke the budget: they are dropped.
            return ran;
        }
        self.flush_replies(&mut replies).await?;
        ran
    }

    async fn run_commands(&mut self, text: &[u8], replies: &mut Replies) -> Result<(), Disconnect> {
        let budget = self.node.config.client.outbound_queue_bytes;
        for command in wire::decode_commands(text) {
            let ClientCommand { id, request } = command.map_err(|error| {
                info!(peer = %self.peer, client = %self.client(), %error, "bad command");
                error.disconnect()
            })?;
            if !self.timers.take_command(&self.node) {
                info!(peer = %self.peer, client = %self.client(), rate = self.node.config.security.client_message_rate, "too many commands");
                return Err(Disconnect::TOO_MANY_REQUESTS);
            }
            if !self.connected() && !matches!(request, Request::Connect(_)) {
                info!(peer = %self.peer, "a command before connect");
                return Err(Disconnect::BAD_REQUEST);
            }
            // What one reply may take: the budget less the pushes waiting
            // in the outbox (everything else can be written out first).
            let room = budget.saturating_sub(self.handle.queued_bytes());
            let subscribes = matches!(request, Request::Connect(_) | Request::Subscribe(_));
            let Some(result) = self.command(request, room).await? else {
                continue;
            };
            replies.subscribed |= subscribes;
            let size = result.size_hint();
            if size > room {
                return Err(self.over_budget(size));
            }
            if replies.frame.len() + size > budget.saturating_sub(self.held_bytes()) {
                // Written out before more is built: a client that does not
                // read is then cut off by the send timeout.
                self.flush_replies(replies).await?;
            }
            let before = replies.frame.len();
            replies.frame.reply(&Reply { id, result });
            if replies.frame.len() - before > room {
                return Err(self.over_budget(replies.frame.len() - before));
            }
        }
        Ok(())
    }

    /// Sends the replies built so far as one message.
    ///
    /// After a subscribe (or a connect, with its server-side channels) the
    /// pushes already waiting in the outbox follow the replies in the same
    /// message: a publication that reached the channel while the subscribe
    /// was answered then comes after the reply, never before it. (The SDKs
    /// handle a message's lines in order, but the Node `ws` package can
    /// deliver two messages of one read in the same tick, and the SDK would
    /// see the publication before its subscription.) Other replies leave
    /// the pushes to go as they are, compressed once for all subscribers.
    async fn flush_replies(&mut self, replies: &mut Replies) -> Result<(), Disconnect> {
        if replies.frame.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut replies.subscribed) {
            while let Some(frame) = self.handle.take_frame() {
                if self.admits(&frame)? {
                    replies.frame.encoded(frame.text.as_bytes());
                }
            }
        }
        let text = std::mem::take(&mut replies.frame).finish();
        let text = Utf8Bytes::try_from_bytes(text).map_err(|_| Disconnect::SERVER_ERROR)?;
        self.send(text).await
    }

    fn over_budget(&self, wanted: usize) -> Disconnect {
        let budget = self.node.config.client.outbound_queue_bytes;
        info!(peer = %self.peer, client = %self.client(), wanted, budget, "a reply exceeds the client's outbound budget (client.outbound_queue_bytes)");
        Disconnect::SLOW
    }

    /// Runs one command; `None` for those without a reply (the pong).
    /// `room` is what its reply may take.
    async fn command(
        &mut self,
        request: Request,
        room: usize,
    ) -> Result<Option<ReplyResult>, Disconnect> {
        Ok(Some(match request {
            Request::Connect(connect) => self.connect(connect, room).await?,
            Request::Subscribe(subscribe) => self.subscribe(subscribe, room).await?,
            Request::Unsubscribe(request) => {
                self.unsubscribe(&request.channel).await;
                ReplyResult::Unsubscribe
            }
            Request::Publish(publish) => self.publish(publish.channel, publish.data).await?,
            Request::Presence(request) => self.presence(&request.channel, false).await,
            Request::PresenceStats(request) => self.presence(&request.channel, true).await,
            Request::History(request) => self.history(&request.channel, request.query()).await,
            Request::Ping => ReplyResult::Ping,
            Request::Pong => {
                self.timers.ponged();
                return Ok(None);
            }
            Request::Send(send) => {
                self.send_message(send.data)?;
                return Ok(None);
            }
            Request::Rpc(rpc) => match self.rpc(&rpc.method, rpc.data.as_ref()).await? {
                Ok(data) => ReplyResult::Rpc(data),
                Err(error) => ReplyResult::Error(error),
            },
            Request::Refresh(refresh) => self.refresh(&refresh.token)?,
            Request::SubRefresh(refresh) => self.sub_refresh(&refresh.channel, &refresh.token)?,
            Request::Unknown => ReplyResult::Error(ReplyError::METHOD_NOT_FOUND),
        }))
    }

    async fn connect(
        &mut self,
        request: ConnectRequest,
        room: usize,
    ) -> Result<ReplyResult, Disconnect> {
        if self.connected() {
            return Err(Disconnect::BAD_REQUEST);
        }
        let node = self.node.clone();
        let client = ClientId::random();
        let mut user = String::new();
        let mut server_channels = Vec::new();
        let mut expires_at = None;
        let mut data = None;
        let proxy_connect = node.proxies.connect(!request.token.is_empty());
        if let Some(route) = proxy_connect {
            let identified = match self
                .connect_hook(route, &client.to_string(), &request)
                .await?
            {
                Ok(identified) => identified,
                Err(error) => return Ok(ReplyResult::Error(error)),
            };
            user = identified.user;
            expires_at = identified.expire_at;
            data = identified.data;
            server_channels = identified.channels;
            let extras = self.extras_mut();
            extras.info = identified.info;
            extras.caps = identified.caps;
            extras.by_backend = true;
        } else if request.token.is_empty() {
            if !node.config.auth.allow_anonymous {
                return Ok(ReplyResult::Error(ReplyError::UNAUTHORIZED));
            }
        } else {
            match node.verifier.verify_connection(&request.token, unix_now()) {
                Ok(claims) => {
                    user = claims.user;
                    if claims.info.is_some() || !claims.caps.is_empty() {
                        let extras = self.extras_mut();
                        extras.info = claims.info;
                        extras.caps = claims.caps;
                    }
                    expires_at = claims.expires_at;
                    server_channels = claims
                        .channels
                        .into_iter()
                        .map(|channel| (channel, None))
                        .collect();
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
        self.handle.set_identity(Identity { client, user });
        if !node.proxies.forwards_after_connect() {
            // Only the connect hook wanted them (a cookie can be kilobytes,
            // held for the connection's life).
            if let Some(extras) = &mut self.extras {
                extras.headers = None;
            }
        }
        self.timers.connected(&node);
        // A connection the backend identified is refreshed by the backend
        // (or ends at expire_at): the client has no token to refresh with,
        // so it is not told when it expires.
        let expires_in = if proxy_connect.is_some() {
            self.timers.backend_expires(&node, expires_at);
            None
        } else {
            self.timers.token_expires(&node, expires_at)
        };
        let mut subs = Vec::new();
        if server_channels.len() > MAX_CHANNELS {
            info!(peer = %self.peer, client = %self.client(), channels = server_channels.len(), "the token or the connect hook lists more server-side channels than a connection may hold; the rest are ignored");
        }
        for (channel, chan_info) in server_channels.into_iter().take(MAX_CHANNELS) {
            let since = request
                .subs
                .iter()
                .find(|s| s.channel == channel)
                .and_then(|s| s.since.clone());
            let taken: usize = subs
                .iter()
                .map(|(_, s): &(String, SubscribeResult)| s.size_hint())
                .sum();
            let left = room.saturating_sub(taken);
            if let Ok(result) = self.join_channel(&channel, since, chan_info, left).await {
                subs.push((channel, result));
            }
        }
        let ping = node.config.client.ping_interval.as_secs() as u32;
        Ok(ReplyResult::Connect(ConnectResult {
            client: self.client(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            expires_in,
            data,
            subs,
            ping,
            pong: ping > 0,
            node: node.name.clone(),
            ..ConnectResult::default()
        }))
    }

    /// A client's publish: decided by the namespace's publish hook (which
    /// may rewrite the data or keep it out of history) or its allow_*
    /// options.
    async fn publish(&mut self, channel: String, data: Bytes) -> Result<ReplyResult, Disconnect> {
        let node = self.node.clone();
        let namespace = match node.namespace(&channel) {
            Ok(namespace) => namespace,
            Err(error) => return Ok(ReplyResult::Error(error)),
        };
        let mut options = PublishOptions::default();
        let data = if let Some(route) = node.proxies.publish(namespace) {
            match self.publish_hook(route, &channel, data).await? {
                Ok(grant) => {
                    options.skip_history = grant.skip_history;
                    grant.data
                }
                Err(error) => return Ok(ReplyResult::Error(error)),
            }
        } else if self.granted(Permission::Publish, &channel, namespace) {
            data
        } else {
            return Ok(ReplyResult::Error(ReplyError::PERMISSION_DENIED));
        };
        let chan_info = self
            .sub(&channel)
            .and_then(|sub| sub.chan_info.as_deref().cloned());
        options.info = Some(self.client_info(chan_info));
        Ok(match node.publish(&channel, data, options).await {
            Ok(_) => ReplyResult::Publish,
            Err(_) => ReplyResult::Error(ReplyError::INTERNAL),
        })
    }

    async fn presence(&mut self, channel: &str, stats: bool) -> ReplyResult {
        match self.node.namespace(channel) {
            Err(error) => return ReplyResult::Error(error),
            Ok(namespace) if !namespace.presence => {
                return ReplyResult::Error(ReplyError::NOT_AVAILABLE);
            }
            Ok(namespace) if !self.granted(Permission::Presence, channel, namespace) => {
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

    async fn history(&mut self, channel: &str, mut query: HistoryQuery) -> ReplyResult {
        match self.node.namespace(channel) {
            Err(error) => return ReplyResult::Error(error),
            Ok(namespace) if history_options(namespace).is_none() => {
                return ReplyResult::Error(ReplyError::NOT_AVAILABLE);
            }
            Ok(namespace) if !self.granted(Permission::History, channel, namespace) => {
                return ReplyResult::Error(ReplyError::PERMISSION_DENIED);
            }
            Ok(_) if query.pages_back_from_zero() => {
                return ReplyResult::Error(ReplyError::BAD_REQUEST);
            }
            Ok(_) => {}
        }
        let cap = self.node.config.client.history_max_publication_limit;
        query.limit = Some(query.limit.map_or(cap, |limit| limit.min(cap)));
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
                let expires_in = self.timers.token_expires(&self.node, claims.expires_at);
                Ok(ReplyResult::Refresh(RefreshResult { expires_in }))
            }
            Ok(_) => {
                info!(peer = %self.peer, client = %self.client(), "refresh token of another user");
                Err(Disconnect::INVALID_TOKEN)
            }
            Err(TokenError::Expired) => Ok(ReplyResult::Error(ReplyError::TOKEN_EXPIRED)),
            Err(error) => {
                info!(peer = %self.peer, client = %self.client(), %error, "invalid refresh token");
                Err(Disconnect::INVALID_TOKEN)
            }
        }
    }
}

/// The seconds left of a token expiring at `expires_at`, if it does.
pub(super) fn expires_in(expires_at: Option<u64>) -> Option<u32> {
    expires_at.map(ttl)
}
