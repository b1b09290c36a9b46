//! The client protocol codec: Centrifugo's client protocol v2 in JSON, so
//! that the `centrifuge` npm SDK (5.x) and `centrifuge-python` work against
//! `tetherd` unchanged.
//!
//! It does not touch sockets, clocks, tokens or channels: it turns a text
//! frame into [`ClientCommand`]s and [`Reply`]s / [`Push`]es into bytes. Of
//! the protobuf flavour (`centrifuge-protobuf` subprotocol, issue #20) the
//! command decoder is here (`protobuf.rs`, sharing the JSON decoder's
//! checks); its replies, pushes and transport are not yet. Channel
//! compaction (numeric push ids), deltas, map subscriptions and tags
//! filters are not implemented; the SDKs fall back or the caller refuses
//! (see [`SubscribeRequest::unsupported_feature`]).
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

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the protocol's whole vocabulary, each code tested; not every one is sent yet"
    )
)]
mod codes;
mod command;
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the protobuf protocol's codec, ahead of its transport"
    )
)]
mod protobuf;
mod reply;

pub(crate) use codes::{Disconnect, ReplyError, Unsubscribe};
pub(crate) use command::{
    ClientCommand, ConnectRequest, Request, SubscribeRequest, decode_commands,
};
pub(crate) use reply::{
    ConnectResult, FrameBuilder, PushBody, RefreshResult, Reply, ReplyResult, SERVER_PING,
    SubscribeResult, compact_json, encode_client_info, encode_publication, encode_publication_push,
    encode_push,
};

#[cfg(test)]
mod tests;
