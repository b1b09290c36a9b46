//! The session's side of the proxy hooks: what it asks the backend, and
//! what the answers become. A backend that fails gives the client the
//! temporary error 100 (the SDKs retry with backoff); a refresh or
//! sub_refresh that fails is tried again after [`RETRY_REFRESH`], the
//! connection or subscription staying as it is meanwhile.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned, de::IgnoredAny};
use tracing::info;

use super::Session;
use crate::{
    auth::Capability,
    config::Namespace,
    node::Node,
    proxy::{
        ClientHeaders, Hook, ProxyError,
        messages::{
            Caller, ChannelRequest, ConnectRequest, ConnectResult, PublishResult, RefreshRequest,
            RefreshResult, RpcRequest, RpcResult, SubscribeResult, Verdict, client_json, expiry,
            payload,
        },
    },
    wire::{ConnectRequest as ClientConnect, Disconnect, ReplyError},
};

/// How soon a refresh or sub_refresh that failed is tried again.
pub(super) const RETRY_REFRESH: Duration = Duration::from_secs(10);

/// Who the connect hook says the client is.
pub(super) struct Identified {
    pub(super) user: String,
    /// Unix seconds.
    pub(super) expire_at: Option<u64>,
    pub(super) info: Option<Bytes>,
    pub(super) data: Option<Bytes>,
    /// Server-side subscriptions (`channels`, and `subs` with the channel
    /// info each gives).
    pub(super) channels: Vec<(String, Option<Bytes>)>,
    /// What the connection may do in which channels (as a token's `caps`).
    pub(super) caps: Vec<Capability>,
}

/// What the subscribe hook granted.
pub(super) struct SubscribeGrant {
    pub(super) info: Option<Bytes>,
    pub(super) data: Option<Bytes>,
    /// Unix seconds.
    pub(super) expire_at: Option<u64>,
}

/// What the publish hook made of a publication.
pub(super) struct PublishGrant {
    pub(super) data: Bytes,
    pub(super) skip_history: bool,
}

/// What a refresh hook answered.
pub(super) enum Refreshed {
    /// Ends now.
    Expired,
    /// Extended to these Unix seconds, or (`None`) no longer expires.
    Until(Option<u64>),
    /// The backend failed: ask again later.
    Failed,
}

/// A hook's outcome for a command: granted, refused with a reply error, or
/// `Err`: the connection ends.
pub(super) type Decision<T> = Result<Result<T, ReplyError>, Disconnect>;

impl Session {
    /// Asks the connect hook who a client without a token is (`client`: the
    /// id it will have).
    pub(super) async fn connect_hook(
        &mut self,
        route: usize,
        client: &str,
        request: &ClientConnect,
    ) -> Decision<Identified> {
        let mut call = self.hook_call();
        call.client = client.to_owned();
        let body = ConnectRequest {
            caller: call.caller(false),
            name: &request.name,
            version: &request.version,
            data: client_json(request.data.as_ref()),
        };
        call.decide(Hook::Connect, route, &body, |result: ConnectResult| {
            let mut channels: Vec<(String, Option<Bytes>)> = result
                .channels
                .into_iter()
                .map(|channel| (channel, None))
                .collect();
            for (channel, options) in result.subs {
                let chan_info = payload(options.info, &options.b64info)?;
                channels.retain(|(listed, _)| *listed != channel);
                channels.push((channel, chan_info));
            }
            Ok(Identified {
                user: result.user,
                expire_at: expiry(result.expire_at),
                info: payload(result.info, &result.b64info)?,
                data: payload(result.data, &result.b64data)?,
                channels,
                caps: Capability::parse_all(result.caps).map_err(ProxyError::Malformed)?,
            })
        })
        .await
    }

    /// Asks the refresh hook whether the connection goes on.
    pub(super) async fn refresh_hook(&mut self) -> Refreshed {
        let Some(route) = self.node.proxies.refresh() else {
            return Refreshed::Expired;
        };
        let call = self.hook_call();
        let body = RefreshRequest {
            caller: call.caller(true),
        };
        refreshed(call.decide(Hook::Refresh, route, &body, Ok).await)
    }

    /// Asks the subscribe hook at `route` about `channel`.
    pub(super) async fn subscribe_hook(
        &mut self,
        route: usize,
        channel: &str,
        data: Option<&Bytes>,
    ) -> Decision<SubscribeGrant> {
        let call = self.hook_call();
        let body = ChannelRequest {
            caller: call.caller(true),
            channel,
            data: client_json(data),
        };
        call.decide(Hook::Subscribe, route, &body, |result: SubscribeResult| {
            Ok(SubscribeGrant {
                info: payload(result.info, &result.b64info)?,
                data: payload(result.data, &result.b64data)?,
                expire_at: expiry(result.expire_at),
            })
        })
        .await
    }

    /// Asks the publish hook at `route` about a publication of `data` into
    /// `channel`.
    pub(super) async fn publish_hook(
        &mut self,
        route: usize,
        channel: &str,
        data: Bytes,
    ) -> Decision<PublishGrant> {
        let call = self.hook_call();
        let body = ChannelRequest {
            caller: call.caller(true),
            channel,
            data: client_json(Some(&data)),
        };
        // Shared bytes: the clone is a reference count.
        let original = data.clone();
        call.decide(Hook::Publish, route, &body, |result: PublishResult| {
            Ok(PublishGrant {
                data: payload(result.data, &result.b64data)?.unwrap_or(original),
                skip_history: result.skip_history,
            })
        })
        .await
    }

    /// Asks the sub_refresh hook of `namespace` whether a subscription to
    /// `channel` goes on.
    pub(super) async fn sub_refresh_hook(
        &mut self,
        namespace: &Namespace,
        channel: &str,
    ) -> Refreshed {
        let Some(route) = self.node.proxies.sub_refresh(namespace) else {
            return Refreshed::Expired;
        };
        let call = self.hook_call();
        let body = ChannelRequest {
            caller: call.caller(true),
            channel,
            data: None,
        };
        refreshed(call.decide(Hook::SubRefresh, route, &body, Ok).await)
    }

    /// The rpc command: the backend of `method`'s namespace answers; 108
    /// (not available) where no backend is configured for it.
    pub(super) async fn rpc(
        &mut self,
        method: &str,
        data: Option<&Bytes>,
    ) -> Decision<Option<Bytes>> {
        let Some(route) = self.node.proxies.rpc(method) else {
            return Ok(Err(ReplyError::NOT_AVAILABLE));
        };
        let call = self.hook_call();
        let body = RpcRequest {
            caller: call.caller(true),
            method,
            data: client_json(data),
        };
        call.decide(Hook::Rpc, route, &body, |result: RpcResult| {
            payload(result.data, &result.b64data)
        })
        .await
    }

    /// The send command: handed to the send hook without waiting for it;
    /// without one the connection ends with 3508 (not available), as
    /// Centrifugo does, so the client learns that nobody listens.
    pub(super) fn send_message(&self, data: Option<Bytes>) -> Result<(), Disconnect> {
        let Some(route) = self.node.proxies.send() else {
            info!(peer = %self.peer, client = %self.client(), "a send message, and no send hook is configured (client.proxy.send)");
            return Err(Disconnect::NOT_AVAILABLE);
        };
        let node = self.node.clone();
        let (client, user) = (self.client(), self.user().to_owned());
        let headers = self.headers().cloned();
        // Fire and forget: bounded by the endpoint's slots and timeout; the
        // call's failures are counted and logged like any other.
        tokio::spawn(async move {
            let body = RpcRequest {
                caller: Caller::websocket(&client, Some(&user)),
                method: "",
                data: client_json(data.as_ref()),
            };
            let _ = node
                .proxies
                .call(
                    Hook::Send,
                    route,
                    &body,
                    headers.as_ref(),
                    &node.metrics,
                    |_: IgnoredAny| Ok(()),
                )
                .await;
        });
        Ok(())
    }

    /// What every call of this session brings.
    fn hook_call(&self) -> HookCall<'_> {
        HookCall {
            node: &self.node,
            headers: self.headers(),
            peer: self.peer,
            client: self.client(),
            user: self.user().to_owned(),
        }
    }
}

/// One session's calls: who is calling, with which headers. Holds only
/// what can be shared between threads, so a session's task can wait for
/// a call.
struct HookCall<'a> {
    node: &'a Node,
    headers: Option<&'a ClientHeaders>,
    peer: SocketAddr,
    client: String,
    user: String,
}

impl HookCall<'_> {
    /// The calling client, with its user (except for connect).
    fn caller(&self, with_user: bool) -> Caller<'_> {
        Caller::websocket(&self.client, with_user.then_some(self.user.as_str()))
    }

    /// One call: the backend's decision (its result through `check`), a
    /// refusal, or the disconnect it asked for; a backend that fails or
    /// gives an unusable answer is the temporary error 100.
    async fn decide<R: DeserializeOwned, T>(
        &self,
        hook: Hook,
        route: usize,
        body: &impl Serialize,
        check: impl FnOnce(R) -> Result<T, ProxyError>,
    ) -> Decision<T> {
        let proxies = &self.node.proxies;
        match proxies
            .call(hook, route, body, self.headers, &self.node.metrics, check)
            .await
        {
            Ok(Verdict::Granted(result)) => Ok(Ok(result)),
            Ok(Verdict::Refused(error)) => Ok(Err(error)),
            Ok(Verdict::Disconnect(disconnect)) => {
                info!(peer = %self.peer, client = %self.client, hook = hook.name(), code = disconnect.code, reason = %disconnect.reason, "the backend disconnects the client");
                Err(disconnect)
            }
            Err(_) => Ok(Err(ReplyError::INTERNAL)),
        }
    }
}

/// A refresh or sub_refresh call's outcome.
fn refreshed(answer: Decision<RefreshResult>) -> Refreshed {
    match answer {
        Ok(Ok(RefreshResult { expired: true, .. })) => Refreshed::Expired,
        Ok(Ok(result)) => Refreshed::Until(expiry(result.expire_at)),
        _ => Refreshed::Failed,
    }
}
