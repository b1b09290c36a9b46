//! The client protocol codec: Centrifugo's client protocol v2 in JSON, so
//! that the `centrifuge` npm SDK (5.x) and `centrifuge-python` work against
//! `tetherd` unchanged.
//!
//! It does not touch sockets, clocks, tokens or channels: it turns a text
//! frame into [`ClientCommand`]s and [`Reply`]s / [`Push`]es into bytes. The
//! protobuf flavour of the protocol (`centrifuge-protobuf` subprotocol),
//! channel compaction (numeric push ids), deltas, map subscriptions and
//! tags filters are not implemented; the SDKs fall back or the caller
//! refuses (see [`SubscribeRequest::unsupported_feature`]).
//!
//! ```text
//!  text frame ──decode_commands──▶ ClientCommand, one at a time ──▶ session / hub
//!                                                        │
//!  WebSocket ◀── FrameBuilder ◀── Reply, Push ◀──────────┘
//!      ▲
//!      └── encode_publication_push(channel, &Publication): Bytes, once per
//!          publication, shared by every subscriber
//! ```
//!
//! Shapes, one JSON object per line:
//! - command `{"id":1,"subscribe":{"channel":"news"}}`; `send` has no id;
//!   the client's pong is `{}`;
//! - reply `{"id":1,"subscribe":{…}}` or `{"id":1,"error":{"code":103,"message":"permission denied"}}`;
//! - push `{"push":{"channel":"news","pub":{"data":{…},"offset":4}}}`;
//! - server ping `{}`.

mod codes;
mod command;
mod reply;

// Until the session uses it, the codec's API is only used by its tests.
#[allow(
    unused_imports,
    reason = "the session that uses the codec lands separately"
)]
pub(crate) use codes::{Disconnect, ReplyError, Unsubscribe};
#[allow(
    unused_imports,
    reason = "the session that uses the codec lands separately"
)]
pub(crate) use command::{
    ChannelRequest, ClientCommand, ConnectRequest, ConnectSub, HistoryRequest, PublishRequest,
    RefreshRequest, Request, RpcRequest, SendRequest, SubRefreshRequest, SubscribeRequest,
    WireError, decode_commands,
};
#[allow(
    unused_imports,
    reason = "the session that uses the codec lands separately"
)]
pub(crate) use reply::{
    ConnectResult, FrameBuilder, Push, PushBody, RefreshResult, Reply, ReplyResult, SERVER_PING,
    SubscribeResult, compact_json, encode_client_info, encode_publication, encode_publication_push,
    encode_push, encode_reply,
};

#[cfg(test)]
mod tests;
