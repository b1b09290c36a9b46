//! A session's deadlines and its command rate, on the node clock
//! ([`Node::clock_ms`]): no timer per connection, the node's ticker wakes
//! the session when the earliest deadline passed.
//!
//! Every deadline is an absolute instant, set once when it starts (a
//! token's expiry plus `auth.token_refresh_grace`, a ping's answer-by)
//! and never recomputed from "now", so waiting never moves it.

use std::{
    num::{NonZeroU32, NonZeroU64},
    time::Duration,
};

use tracing::info;

use super::{
    Session,
    hooks::{RETRY_REFRESH, Refreshed},
};
use crate::{
    node::Node,
    wire::{self, Disconnect, PushBody, Unsubscribe},
};

/// A client must send `connect` this soon after the upgrade.
const CONNECT_DEADLINE_MS: u64 = 10_000;

/// The session's deadlines, in node clock milliseconds.
#[derive(Debug)]
pub(super) struct Timers {
    /// The client must answer by then: with `connect` until it connected,
    /// then with the pong to our ping.
    answer_by: Option<NonZeroU64>,
    next_ping: u64,
    /// The connection token's expiry plus the refresh grace: a client that
    /// has not refreshed by then is disconnected with 3005. For a connection
    /// the backend identified, its expire_at: the refresh hook decides.
    expire_by: Option<NonZeroU64>,
    commands: CommandRate,
}

/// A token bucket over client commands (not frames: one frame may carry
/// thousands), filled at `security.client_message_rate` per second up to
/// `security.client_message_burst`. Two `u32`s, as every idle session holds
/// one.
#[derive(Debug)]
struct CommandRate {
    /// Commands allowed now, in thousandths.
    milli_tokens: u32,
    /// The node clock's low 32 bits at the last refill: it wraps every 49
    /// days, which can only make a refill after such a silence smaller.
    refilled_at: u32,
}

impl Timers {
    /// A fresh connection's: it must connect within the connect deadline.
    pub(super) fn new(node: &Node) -> Self {
        let now = node.clock_ms();
        Self {
            answer_by: NonZeroU64::new(now + CONNECT_DEADLINE_MS),
            next_ping: 0,
            expire_by: None,
            commands: CommandRate {
                milli_tokens: bucket_size(node),
                refilled_at: now as u32,
            },
        }
    }

    /// Connected: the connect deadline is met; pings start.
    pub(super) fn connected(&mut self, node: &Node) {
        self.answer_by = None;
        self.next_ping = node.clock_ms() + node.config.client.ping_interval.as_millis() as u64;
    }

    /// When the client must have answered (connect, or our ping), if it must.
    pub(super) fn answer_by(&self) -> Option<u64> {
        self.answer_by.map(NonZeroU64::get)
    }

    /// The client answered our ping.
    pub(super) fn ponged(&mut self) {
        self.answer_by = None;
    }

    /// A connection token that expires at `expires_at` (Unix seconds), or
    /// never: the connection ends `auth.token_refresh_grace` after it unless
    /// refreshed. Returns the seconds left, for the reply's `ttl`.
    pub(super) fn token_expires(&mut self, node: &Node, expires_at: Option<u64>) -> Option<u32> {
        self.expire_by = expires_at
            .map(|at| at_least_one(node.clock_ms_at(at, node.config.auth.token_refresh_grace)));
        expires_at.map(ttl)
    }

    /// The connect hook identified the client, to expire at `expires_at`
    /// (Unix seconds), or never: then the refresh hook is asked, or the
    /// connection ends.
    pub(super) fn backend_expires(&mut self, node: &Node, expires_at: Option<u64>) {
        self.expire_by = expires_at.map(|at| at_least_one(node.clock_ms_at(at, Duration::ZERO)));
    }

    /// Takes one command from the bucket; `false` when the client sent
    /// too many.
    pub(super) fn take_command(&mut self, node: &Node) -> bool {
        let security = &node.config.security;
        if security.client_message_rate == 0 {
            return true;
        }
        let now = node.clock_ms() as u32;
        let rate = &mut self.commands;
        let elapsed = now.wrapping_sub(rate.refilled_at);
        let refill = elapsed.saturating_mul(security.client_message_rate);
        rate.milli_tokens = bucket_size(node).min(rate.milli_tokens.saturating_add(refill));
        rate.refilled_at = now;
        match rate.milli_tokens.checked_sub(1000) {
            Some(left) => {
                rate.milli_tokens = left;
                true
            }
            None => false,
        }
    }
}

/// A node clock instant as a deadline.
fn at_least_one(ms: u64) -> NonZeroU64 {
    NonZeroU64::new(ms).unwrap_or(NonZeroU64::MIN)
}

/// The command bucket's size, in thousandths of a command.
fn bucket_size(node: &Node) -> u32 {
    node.config
        .security
        .client_message_burst
        .max(1)
        .saturating_mul(1000)
}

/// Seconds from now until `expires_at` (Unix seconds), for a reply's `ttl`.
pub(super) fn ttl(expires_at: u64) -> u32 {
    u32::try_from(expires_at.saturating_sub(crate::node::unix_now())).unwrap_or(u32::MAX)
}

/// When a subscription expiring at `expires_at` (Unix seconds) ends, with
/// `grace` (a token's refresh grace, or none when the backend refreshes it),
/// in whole node clock seconds, rounded up.
pub(super) fn sub_expire_by(
    node: &Node,
    expires_at: Option<u64>,
    grace: Duration,
) -> Option<NonZeroU32> {
    Some(whole_seconds(node.clock_ms_at(expires_at?, grace)))
}

/// A node clock instant in whole seconds, rounded up.
fn whole_seconds(ms: u64) -> NonZeroU32 {
    let seconds = u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX);
    NonZeroU32::new(seconds).unwrap_or(NonZeroU32::MIN)
}

impl Session {
    /// The ticker woke us: end the connection on a missed deadline, end
    /// subscriptions whose token expired, or send the protocol ping that
    /// is due.
    pub(super) async fn deadline_passed(&mut self) -> Result<(), Disconnect> {
        let now = self.node.clock_ms();
        let passed = |deadline: Option<u64>| deadline.is_some_and(|at| now >= at);
        if passed(self.timers.answer_by()) {
            return Err(if self.connected() {
                Disconnect::NO_PONG
            } else {
                Disconnect::STALE
            });
        }
        if passed(self.timers.expire_by.map(NonZeroU64::get)) {
            if !self.extras.as_ref().is_some_and(|extras| extras.by_backend) {
                info!(peer = %self.peer, client = %self.client(), user = %self.user(), "connection token expired and was not refreshed");
                return Err(Disconnect::EXPIRED);
            }
            match self.refresh_hook().await {
                Refreshed::Expired => {
                    info!(peer = %self.peer, client = %self.client(), user = %self.user(), "the connection reached the expire_at of its connect hook and no refresh hook extended it");
                    return Err(Disconnect::EXPIRED);
                }
                Refreshed::Until(at) => self.timers.backend_expires(&self.node, at),
                Refreshed::Failed => {
                    self.timers.expire_by =
                        Some(at_least_one(now + RETRY_REFRESH.as_millis() as u64));
                }
            }
        }
        self.end_expired_subscriptions(now).await?;
        if passed(self.ping_at()) {
            let client = &self.node.config.client;
            self.timers.next_ping = now + client.ping_interval.as_millis() as u64;
            let answer_by = now + client.pong_timeout.as_millis() as u64;
            self.timers.answer_by = self.timers.answer_by.or(NonZeroU64::new(answer_by));
            self.send(wire::SERVER_PING.into()).await?;
            self.refresh_presence().await;
        }
        Ok(())
    }

    /// Ends each subscription whose token expired and was not refreshed in
    /// time, as Centrifugo does: an `unsubscribe` push with code 2501, on
    /// which the SDKs subscribe again with a fresh token. In a namespace
    /// with a sub_refresh hook, the backend is asked first.
    async fn end_expired_subscriptions(&mut self, now: u64) -> Result<(), Disconnect> {
        let expired: Vec<Box<str>> = self
            .subs
            .iter()
            .filter(|sub| {
                sub.expire_by
                    .is_some_and(|by| u64::from(by.get()) * 1000 <= now)
            })
            .map(|sub| sub.channel.clone())
            .collect();
        for channel in expired {
            let node = self.node.clone();
            let namespace = node.namespace(&channel).ok();
            if let Some(namespace) = namespace.filter(|ns| node.proxies.sub_refresh(ns).is_some()) {
                let expire_by = match self.sub_refresh_hook(namespace, &channel).await {
                    Refreshed::Until(at) => sub_expire_by(&node, at, Duration::ZERO),
                    Refreshed::Failed => {
                        Some(whole_seconds(now + RETRY_REFRESH.as_millis() as u64))
                    }
                    Refreshed::Expired => {
                        info!(peer = %self.peer, client = %self.client(), user = %self.user(), %channel, "the backend did not extend the subscription");
                        self.end_subscription(&channel).await?;
                        continue;
                    }
                };
                if let Some(sub) = self.sub_mut(&channel) {
                    sub.expire_by = expire_by;
                }
                continue;
            }
            info!(peer = %self.peer, client = %self.client(), user = %self.user(), %channel, "subscription token expired and was not refreshed");
            self.end_subscription(&channel).await?;
        }
        Ok(())
    }

    /// Ends an expired subscription with an `unsubscribe` push, code 2501.
    async fn end_subscription(&mut self, channel: &str) -> Result<(), Disconnect> {
        self.unsubscribe(channel).await;
        self.send_push(channel, PushBody::Unsubscribe(&Unsubscribe::EXPIRED))
            .await
    }

    /// Tells the ticker the next deadline.
    pub(super) fn schedule(&self) {
        let subs = self
            .subs
            .iter()
            .filter_map(|sub| sub.expire_by)
            .map(|by| u64::from(by.get()) * 1000);
        let next = [
            self.timers.answer_by(),
            self.timers.expire_by.map(NonZeroU64::get),
            self.ping_at(),
        ]
        .into_iter()
        .flatten()
        .chain(subs)
        .min();
        self.handle.set_deadline(next);
    }

    /// When the next protocol ping is due, if pings are on.
    fn ping_at(&self) -> Option<u64> {
        let enabled = !self.node.config.client.ping_interval.is_zero();
        (enabled && self.connected()).then_some(self.timers.next_ping)
    }
}
