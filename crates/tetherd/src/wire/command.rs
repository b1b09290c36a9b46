//! Decoding client commands: one WebSocket text frame holds one or more JSON
//! objects separated by `\n` (the JS SDK batches a connect with its
//! subscribes; the Python SDK sends one per frame).
//!
//! Every `data` payload is kept as the raw JSON the client sent, turned into
//! [`Bytes`] without a copy, never re-encoded. Absent, `null`, zero and empty
//! fields mean the same thing, as in protobuf's JSON mapping.

use std::{collections::HashMap, fmt};

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::broker::{HistoryQuery, StreamPosition};

/// One decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCommand {
    /// Echoed in the reply; 0 only for `send` and the pong, which get none.
    pub(crate) id: u32,
    pub(crate) request: Request,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Connect(ConnectRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe(ChannelRequest),
    Publish(PublishRequest),
    Presence(ChannelRequest),
    PresenceStats(ChannelRequest),
    History(HistoryRequest),
    /// A client-initiated ping (the SDKs rely on server pings instead).
    Ping,
    /// An asynchronous message to the server; no reply.
    Send(SendRequest),
    Rpc(RpcRequest),
    /// A new connection token before the current one expires.
    Refresh(RefreshRequest),
    /// A new subscription token before the current one expires.
    SubRefresh(SubRefreshRequest),
    /// The empty command `{}`: the client's answer to a server ping.
    Pong,
    /// A command with an id but no method this server knows (a newer SDK):
    /// answer with error 104, keep the connection.
    Unknown,
}

/// `connect`: the first command of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ConnectRequest {
    /// The connection JWT; empty for anonymous connections.
    pub(crate) token: String,
    /// Custom JSON for the connect handler.
    pub(crate) data: Option<Bytes>,
    /// Server-side subscriptions the client held before, with where it
    /// stood, so they can be recovered.
    pub(crate) subs: Vec<ConnectSub>,
    /// SDK name and version, for logs.
    pub(crate) name: String,
    pub(crate) version: String,
}

/// A server-side subscription listed in a reconnecting client's `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectSub {
    pub(crate) channel: String,
    /// Where to recover from, when the client asked to recover.
    pub(crate) since: Option<StreamPosition>,
}

/// `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SubscribeRequest {
    pub(crate) channel: String,
    /// Subscription JWT; empty when the channel needs none.
    pub(crate) token: String,
    /// Recover publications after this position (`recover: true`).
    pub(crate) since: Option<StreamPosition>,
    pub(crate) data: Option<Bytes>,
    /// The client wants its position checked (`positioned`).
    pub(crate) positioned: bool,
    /// The client wants recovery on resubscribe (`recoverable`).
    pub(crate) recoverable: bool,
    /// The client wants join/leave pushes (`join_leave`).
    pub(crate) join_leave: bool,
    /// Flag bit 2: refuse with error 112 instead of `recovered: false`
    /// when the position cannot be recovered. (Bit 1, channel compaction,
    /// is offered by every SDK subscribe and needs no answer: without an
    /// `id` in the reply the SDKs keep routing pushes by channel name.)
    pub(crate) reject_unrecovered: bool,
    /// A delta format the client could decode (`fossil`). Not negotiated
    /// unless the reply says `delta: true`.
    pub(crate) delta: String,
    /// Non-zero for map and shared-poll subscriptions, which this server
    /// does not have.
    pub(crate) kind: u32,
    /// The client asked for a server-side tags filter (`tf`), which this
    /// server does not have.
    pub(crate) tags_filter: bool,
}

/// Every command that names only a channel: `unsubscribe`, `presence`,
/// `presence_stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ChannelRequest {
    pub(crate) channel: String,
}

/// `publish`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PublishRequest {
    pub(crate) channel: String,
    /// The payload, raw JSON; never empty.
    pub(crate) data: Bytes,
    /// Non-zero for map publications, which this server does not have.
    pub(crate) kind: u32,
}

/// `history`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HistoryRequest {
    pub(crate) channel: String,
    /// As sent: 0 (or absent) asks for the position only, a negative
    /// number for every publication kept.
    pub(crate) limit: i32,
    pub(crate) since: Option<StreamPosition>,
    pub(crate) reverse: bool,
}

/// `send`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SendRequest {
    pub(crate) data: Option<Bytes>,
}

/// `rpc`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RpcRequest {
    pub(crate) method: String,
    pub(crate) data: Option<Bytes>,
}

/// `refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RefreshRequest {
    /// Never empty.
    pub(crate) token: String,
}

/// `sub_refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SubRefreshRequest {
    pub(crate) channel: String,
    /// Never empty.
    pub(crate) token: String,
}

/// A frame that breaks the protocol. Each one ends the connection with
/// [`Disconnect::BAD_REQUEST`](super::Disconnect::BAD_REQUEST) (3501,
/// terminal), as Centrifugo does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum WireError {
    /// A line is not a JSON object of the command shape (bad JSON, a field
    /// of the wrong type). `line` counts from 0.
    Malformed { line: usize, detail: String },
    /// A command other than `send` or the empty pong has no id to reply to.
    MissingId { line: usize },
    /// One command names several methods.
    SeveralMethods { line: usize },
    /// A field the method cannot do without is absent or empty (a channel,
    /// a refresh token, publish data).
    MissingField {
        line: usize,
        method: &'static str,
        field: &'static str,
    },
}

impl WireError {
    /// How the connection ends.
    pub(crate) fn disconnect(&self) -> super::Disconnect {
        super::Disconnect::BAD_REQUEST
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { line, detail } => write!(f, "command {line} is malformed: {detail}"),
            Self::MissingId { line } => write!(f, "command {line} has no id"),
            Self::SeveralMethods { line } => write!(f, "command {line} names several methods"),
            Self::MissingField {
                line,
                method,
                field,
            } => {
                write!(f, "command {line} ({method}) lacks {field}")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// Decodes the commands of one frame, one at a time: blank lines are
/// skipped and an empty frame holds none. Lazily, so a frame of many
/// commands is never held decoded all at once, and the commands before a
/// bad line can run and be answered before the connection ends (the caller
/// stops at the first error).
pub(crate) fn decode_commands(
    frame: &[u8],
) -> impl Iterator<Item = Result<ClientCommand, WireError>> + '_ {
    frame
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, text)| !text.iter().all(u8::is_ascii_whitespace))
        .map(|(line, text)| {
            let raw: RawCommand =
                serde_json::from_slice(text).map_err(|e| WireError::Malformed {
                    line,
                    detail: e.to_string(),
                })?;
            raw.into_command(line)
        })
}

impl SubscribeRequest {
    /// Names a feature the client asked for that this server lacks, so the
    /// caller can refuse rather than silently ignore it.
    pub(crate) fn unsupported_feature(&self) -> Option<&'static str> {
        if self.kind != 0 {
            Some("map and shared-poll subscriptions")
        } else if self.tags_filter {
            Some("tags filter")
        } else {
            None
        }
    }
}

impl HistoryRequest {
    /// The broker query: a negative limit means all, 0 the position only.
    pub(crate) fn query(&self) -> HistoryQuery {
        HistoryQuery {
            since: self.since.clone(),
            limit: usize::try_from(self.limit).ok(),
            reverse: self.reverse,
        }
    }
}

/// A command as it sits on the wire: at most one of the method fields.
#[derive(Deserialize)]
pub(super) struct RawCommand {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) id: u32,
    pub(super) connect: Option<RawConnect>,
    pub(super) subscribe: Option<RawSubscribe>,
    pub(super) unsubscribe: Option<RawChannel>,
    pub(super) publish: Option<RawPublish>,
    pub(super) presence: Option<RawChannel>,
    pub(super) presence_stats: Option<RawChannel>,
    pub(super) history: Option<RawHistory>,
    pub(super) ping: Option<IgnoredAny>,
    pub(super) send: Option<RawData>,
    pub(super) rpc: Option<RawRpc>,
    pub(super) refresh: Option<RawRefresh>,
    pub(super) sub_refresh: Option<RawSubRefresh>,
}

/// Accepts any JSON value (the empty `ping` object).
pub(super) type IgnoredAny = serde::de::IgnoredAny;

#[derive(Deserialize)]
pub(super) struct RawConnect {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) token: String,
    #[serde(default, deserialize_with = "json_bytes")]
    pub(super) data: Option<Bytes>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) subs: HashMap<String, RawSubscribe>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) version: String,
}

#[derive(Deserialize)]
pub(super) struct RawSubscribe {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) channel: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) token: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) recover: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) epoch: String,
    #[serde(default, deserialize_with = "offset")]
    pub(super) offset: u64,
    #[serde(default, deserialize_with = "json_bytes")]
    pub(super) data: Option<Bytes>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) positioned: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) recoverable: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) join_leave: bool,
    #[serde(default, deserialize_with = "offset")]
    pub(super) flag: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) delta: String,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub(super) kind: u32,
    pub(super) tf: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct RawChannel {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) channel: String,
}

#[derive(Deserialize)]
pub(super) struct RawPublish {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) channel: String,
    #[serde(default, deserialize_with = "json_bytes")]
    pub(super) data: Option<Bytes>,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub(super) kind: u32,
}

#[derive(Deserialize)]
pub(super) struct RawHistory {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) channel: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) limit: i32,
    pub(super) since: Option<RawPosition>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) reverse: bool,
}

#[derive(Deserialize)]
pub(super) struct RawPosition {
    #[serde(default, deserialize_with = "offset")]
    pub(super) offset: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) epoch: String,
}

#[derive(Deserialize)]
pub(super) struct RawData {
    #[serde(default, deserialize_with = "json_bytes")]
    pub(super) data: Option<Bytes>,
}

#[derive(Deserialize)]
pub(super) struct RawRpc {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) method: String,
    #[serde(default, deserialize_with = "json_bytes")]
    pub(super) data: Option<Bytes>,
}

#[derive(Deserialize)]
pub(super) struct RawRefresh {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) token: String,
}

#[derive(Deserialize)]
pub(super) struct RawSubRefresh {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) channel: String,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) token: String,
}

impl RawCommand {
    /// The command, checked: one method, the fields it needs, an id unless
    /// it is a send or a pong. Both protocols decode into this.
    pub(super) fn into_command(self, line: usize) -> Result<ClientCommand, WireError> {
        let present = [
            self.connect.is_some(),
            self.subscribe.is_some(),
            self.unsubscribe.is_some(),
            self.publish.is_some(),
            self.presence.is_some(),
            self.presence_stats.is_some(),
            self.history.is_some(),
            self.ping.is_some(),
            self.send.is_some(),
            self.rpc.is_some(),
            self.refresh.is_some(),
            self.sub_refresh.is_some(),
        ]
        .into_iter()
        .filter(|&p| p)
        .count();
        if present > 1 {
            return Err(WireError::SeveralMethods { line });
        }
        let missing = |method, field| WireError::MissingField {
            line,
            method,
            field,
        };
        let channel = |method, channel: String| {
            if channel.is_empty() {
                Err(missing(method, "channel"))
            } else {
                Ok(channel)
            }
        };
        let request = if let Some(c) = self.connect {
            let subs = c
                .subs
                .into_iter()
                .map(|(channel, s)| ConnectSub {
                    channel,
                    since: s.recover.then_some(StreamPosition {
                        offset: s.offset,
                        epoch: s.epoch,
                    }),
                })
                .collect();
            Request::Connect(ConnectRequest {
                token: c.token,
                data: c.data,
                subs,
                name: c.name,
                version: c.version,
            })
        } else if let Some(s) = self.subscribe {
            Request::Subscribe(SubscribeRequest {
                channel: channel("subscribe", s.channel)?,
                token: s.token,
                since: s.recover.then_some(StreamPosition {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
                data: s.data,
                positioned: s.positioned,
                recoverable: s.recoverable,
                join_leave: s.join_leave,
                reject_unrecovered: s.flag & FLAG_REJECT_UNRECOVERED != 0,
                delta: s.delta,
                kind: s.kind,
                tags_filter: s.tf.is_some(),
            })
        } else if let Some(u) = self.unsubscribe {
            Request::Unsubscribe(ChannelRequest {
                channel: channel("unsubscribe", u.channel)?,
            })
        } else if let Some(p) = self.publish {
            Request::Publish(PublishRequest {
                channel: channel("publish", p.channel)?,
                data: p.data.ok_or_else(|| missing("publish", "data"))?,
                kind: p.kind,
            })
        } else if let Some(p) = self.presence {
            Request::Presence(ChannelRequest {
                channel: channel("presence", p.channel)?,
            })
        } else if let Some(p) = self.presence_stats {
            Request::PresenceStats(ChannelRequest {
                channel: channel("presence_stats", p.channel)?,
            })
        } else if let Some(h) = self.history {
            Request::History(HistoryRequest {
                channel: channel("history", h.channel)?,
                limit: h.limit,
                since: h.since.map(|s| StreamPosition {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
                reverse: h.reverse,
            })
        } else if self.ping.is_some() {
            Request::Ping
        } else if let Some(s) = self.send {
            Request::Send(SendRequest { data: s.data })
        } else if let Some(r) = self.rpc {
            Request::Rpc(RpcRequest {
                method: r.method,
                data: r.data,
            })
        } else if let Some(r) = self.refresh {
            if r.token.is_empty() {
                return Err(missing("refresh", "token"));
            }
            Request::Refresh(RefreshRequest { token: r.token })
        } else if let Some(r) = self.sub_refresh {
            let channel = channel("sub_refresh", r.channel)?;
            if r.token.is_empty() {
                return Err(missing("sub_refresh", "token"));
            }
            Request::SubRefresh(SubRefreshRequest {
                channel,
                token: r.token,
            })
        } else if self.id == 0 {
            Request::Pong
        } else {
            Request::Unknown
        };
        if self.id == 0 && !matches!(request, Request::Send(_) | Request::Pong) {
            return Err(WireError::MissingId { line });
        }
        Ok(ClientCommand {
            id: self.id,
            request,
        })
    }
}

/// Subscribe flag: refuse an unrecoverable position with error 112.
const FLAG_REJECT_UNRECOVERED: u64 = 2;

/// A payload: raw JSON as shared bytes, without copying (it was validated
/// by parsing); `null` is none.
fn json_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Bytes>, D::Error> {
    Ok(Option::<Box<RawValue>>::deserialize(deserializer)?
        .map(|raw| Bytes::from(String::from(Box::<str>::from(raw)))))
}

/// Reads `null` as the default value, as protobuf's JSON mapping does.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A 64-bit number as a JSON number or, as protobuf's JSON mapping writes
/// it, a decimal string.
fn offset<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    match Option::<NumberOrString>::deserialize(deserializer)? {
        None => Ok(0),
        Some(NumberOrString::Number(n)) => Ok(n),
        Some(NumberOrString::String(s)) => s.parse().map_err(serde::de::Error::custom),
    }
}
