//! A session's subscriptions: who may subscribe, joining a channel with
//! recovery, subscription tokens that expire and are refreshed, server-side
//! subscriptions from the HTTP API, and leaving.

use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use super::{Session, Sub, deadlines::sub_expire_by, permissions::Permission};
use crate::{
    auth::{SubscriptionClaims, TokenError},
    broker::{BrokerError, HistoryQuery, StreamPosition},
    handle::{Frame, ServerCommand, epoch_tag},
    node::{history_options, unix_now},
    session::commands::expires_in,
    wire::{
        Disconnect, PushBody, RefreshResult, ReplyError, ReplyResult, SubscribeRequest,
        SubscribeResult, Unsubscribe, encode_push,
    },
};

/// Presence entries live this long unless refreshed (refreshed every ping).
pub(super) const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// Who allowed a subscription, and what with.
#[derive(Default)]
struct Grant {
    chan_info: Option<Bytes>,
    /// Unix seconds.
    expires_at: Option<u64>,
    /// For the subscribe reply.
    data: Option<Bytes>,
    /// The subscribe hook granted it (not a token).
    by_backend: bool,
}

/// Most channels one connection may subscribe to.
pub(super) const MAX_CHANNELS: usize = 128;

impl Session {
    /// Answers a subscribe, or ends the connection when the subscription
    /// token belongs to another channel, user or client (3500, as
    /// Centrifugo does: the client holds a token it must not use). `room`
    /// is what the reply may take.
    pub(super) async fn subscribe(
        &mut self,
        request: SubscribeRequest,
        room: usize,
    ) -> Result<ReplyResult, Disconnect> {
        let refuse = |error| Ok(ReplyResult::Error(error));
        if request.unsupported_feature().is_some() {
            return refuse(ReplyError::NOT_AVAILABLE);
        }
        let namespace = match self.node.namespace(&request.channel) {
            Ok(namespace) => namespace,
            Err(error) => return refuse(error),
        };
        if self.sub(&request.channel).is_some() {
            return refuse(ReplyError::ALREADY_SUBSCRIBED);
        }
        if self.subs.len() >= MAX_CHANNELS {
            return refuse(ReplyError::LIMIT_EXCEEDED);
        }
        // A token decides when there is one; without, the namespace's
        // subscribe hook (except for user-limited channels, which decide
        // themselves, as in Centrifugo) or what the namespace and the
        // connection token grant (deny by default).
        let node = self.node.clone();
        let user_limited = namespace.allow_user_limited_channels && request.channel.contains('#');
        let hook = node.proxies.subscribe(namespace).filter(|_| !user_limited);
        let grant = if !request.token.is_empty() {
            match self.subscription_token(&request.token, &request.channel)? {
                Ok(claims) => Grant {
                    chan_info: claims.info,
                    expires_at: claims.expires_at,
                    ..Grant::default()
                },
                Err(error) => return refuse(error),
            }
        } else if let Some(route) = hook {
            match self
                .subscribe_hook(route, &request.channel, request.data.as_ref())
                .await?
            {
                Ok(granted) => Grant {
                    chan_info: granted.info,
                    expires_at: granted.expire_at,
                    data: granted.data,
                    by_backend: true,
                },
                Err(error) => return refuse(error),
            }
        } else if self.granted(Permission::Subscribe, &request.channel, namespace) {
            Grant::default()
        } else {
            return refuse(ReplyError::PERMISSION_DENIED);
        };
        let reject_unrecovered = request.reject_unrecovered;
        Ok(
            match self
                .join_channel(&request.channel, request.since, grant.chan_info, room)
                .await
            {
                Ok(result) if reject_unrecovered && result.was_recovering && !result.recovered => {
                    self.unsubscribe(&request.channel).await;
                    ReplyResult::Error(ReplyError::UNRECOVERABLE_POSITION)
                }
                Ok(mut result) => {
                    // A subscription the backend granted is refreshed by the
                    // backend (or ends) at its expire_at: the client, with no
                    // token to refresh with, is not told.
                    let grace = if grant.by_backend {
                        Duration::ZERO
                    } else {
                        result.expires_in = expires_in(grant.expires_at);
                        node.config.auth.token_refresh_grace
                    };
                    let expire_by = sub_expire_by(&node, grant.expires_at, grace);
                    if let Some(sub) = self.sub_mut(&request.channel) {
                        sub.expire_by = expire_by;
                    }
                    result.data = grant.data;
                    ReplyResult::Subscribe(result)
                }
                Err(error) => ReplyResult::Error(error),
            },
        )
    }

    /// Checks a subscription token for `channel` and this connection: the
    /// claims, a reply error (109 expired, 103 invalid), or the disconnect
    /// for a token this client must not hold.
    fn subscription_token(
        &self,
        token: &str,
        channel: &str,
    ) -> Result<Result<SubscriptionClaims, ReplyError>, Disconnect> {
        match self
            .node
            .verifier
            .verify_subscription(token, channel, unix_now())
        {
            Ok(claims)
                if claims.user != self.user()
                    || claims.client.as_ref().is_some_and(|c| *c != self.client()) =>
            {
                info!(peer = %self.peer, client = %self.client(), %channel, "subscription token of another user or client");
                Err(Disconnect::INVALID_TOKEN)
            }
            Ok(claims) => Ok(Ok(claims)),
            Err(TokenError::Expired) => Ok(Err(ReplyError::TOKEN_EXPIRED)),
            Err(TokenError::WrongChannel) => {
                info!(peer = %self.peer, client = %self.client(), %channel, "subscription token for another channel");
                Err(Disconnect::INVALID_TOKEN)
            }
            Err(error) => {
                info!(peer = %self.peer, client = %self.client(), %channel, %error, "invalid subscription token");
                Ok(Err(ReplyError::PERMISSION_DENIED))
            }
        }
    }

    /// `sub_refresh`: a fresh subscription token moves the subscription's
    /// expiry; refused as a subscribe would be.
    pub(super) fn sub_refresh(
        &mut self,
        channel: &str,
        token: &str,
    ) -> Result<ReplyResult, Disconnect> {
        if self.sub(channel).is_none() {
            return Ok(ReplyResult::Error(ReplyError::PERMISSION_DENIED));
        }
        let claims = match self.subscription_token(token, channel)? {
            Ok(claims) => claims,
            Err(error) => return Ok(ReplyResult::Error(error)),
        };
        let grace = self.node.config.auth.token_refresh_grace;
        let expire_by = sub_expire_by(&self.node, claims.expires_at, grace);
        if let Some(sub) = self.sub_mut(channel) {
            sub.expire_by = expire_by;
        }
        Ok(ReplyResult::SubRefresh(RefreshResult {
            expires_in: expires_in(claims.expires_at),
        }))
    }

    /// Subscribes to `channel` (already authorized), recovering from `since`.
    /// The hub subscription comes first so no live publication can fall
    /// between the history read and the live stream; duplicates are dropped
    /// in [`Session::admits`]. Recovery is refused (`recovered: false`, no
    /// publications) past `client.recovery_max_publication_limit` or when
    /// the publications would not fit in `room` bytes.
    pub(super) async fn join_channel(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        chan_info: Option<Bytes>,
        room: usize,
    ) -> Result<SubscribeResult, ReplyError> {
        let node = self.node.clone();
        let namespace = node.namespace(channel)?;
        let info = self.client_info(chan_info.clone());
        // Most connections hold a channel or two: no spare capacity.
        self.subs.reserve_exact(1);
        self.subs.push(Sub {
            channel: channel.into(),
            offset: u64::MAX,
            epoch: None,
            expire_by: None,
            presence: namespace.presence,
            join_leave: namespace.join_leave,
            chan_info: chan_info.map(Box::new),
        });
        if node.hub.subscribe(channel, self.conn, self.handle.clone()) {
            if let Err(error) = node.broker.subscribe(channel).await {
                info!(%channel, %error, "broker subscribe failed");
                self.unsubscribe(channel).await;
                return Err(ReplyError::INTERNAL);
            }
        }
        let mut result = SubscribeResult::default();
        if history_options(namespace).is_some() {
            let was_recovering = since.is_some() && namespace.recovery;
            let cap = node.config.client.recovery_max_publication_limit;
            let query = HistoryQuery {
                since: since.filter(|_| namespace.recovery),
                // One more than may be recovered tells that there are more.
                limit: Some(if was_recovering {
                    cap.saturating_add(1)
                } else {
                    0
                }),
                reverse: false,
            };
            let mut history = match node.broker.history(channel, query).await {
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
            result.publications = std::mem::take(&mut history.publications);
            if result.recovered && (result.publications.len() > cap || result.size_hint() > room) {
                info!(%channel, missed = result.publications.len(), "too much to recover; the client is told recovered: false");
                result.recovered = false;
                result.publications.clear();
            }
            result.was_recovering = was_recovering;
            result.recoverable = namespace.recovery;
            result.positioned = namespace.recovery;
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

    pub(super) async fn unsubscribe(&mut self, channel: &str) {
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

    /// A command from the server API, through the control channel:
    /// server-side subscribe and unsubscribe (told to the client with a
    /// push), and refresh (an expiry moved, told with a push, or the
    /// connection ended as expired).
    pub(super) async fn server_command(
        &mut self,
        command: ServerCommand,
    ) -> Result<(), Disconnect> {
        let push = match command {
            ServerCommand::Subscribe(channel) if self.sub(&channel).is_none() => {
                let room = self.node.config.client.outbound_queue_bytes;
                match self.join_channel(&channel, None, None, room).await {
                    Ok(result) => encode_push(&channel, PushBody::Subscribe(&result)),
                    Err(_) => return Ok(()),
                }
            }
            ServerCommand::Unsubscribe(channel) if self.sub(&channel).is_some() => {
                self.unsubscribe(&channel).await;
                encode_push(&channel, PushBody::Unsubscribe(&Unsubscribe::SERVER))
            }
            ServerCommand::Refresh { expired: true, .. } => {
                info!(peer = %self.peer, client = %self.client(), user = %self.user(), "expired through the server API");
                return Err(Disconnect::EXPIRED);
            }
            ServerCommand::Refresh {
                expired: false,
                expire_at,
            } => {
                let expires_in = self.timers.token_expires(&self.node, expire_at);
                encode_push("", PushBody::Refresh(RefreshResult { expires_in }))
            }
            _ => return Ok(()),
        };
        if let Some(frame) = Frame::plain(push) {
            self.handle.push(frame);
        }
        Ok(())
    }

    pub(super) async fn refresh_presence(&mut self) {
        for sub in self.subs.iter().filter(|sub| sub.presence) {
            let info = self.client_info(sub.chan_info.as_deref().cloned());
            let _ = self
                .node
                .broker
                .add_presence(&sub.channel, info, PRESENCE_TTL)
                .await;
        }
    }
}
