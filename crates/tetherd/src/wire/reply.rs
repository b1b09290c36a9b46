//! Encoding replies and pushes, by hand rather than through serde, so that
//! raw JSON payloads ([`Bytes`] from the broker) go out without being parsed
//! again, field order and omissions match Centrifugo, and a publication push
//! is encoded once for all of a channel's subscribers.
//!
//! Omission rules (checked against both SDKs): zero numbers, `false`,
//! empty strings, empty lists and absent payloads are left out, except where
//! an SDK reads the field unconditionally: an error's `code` and `message`,
//! a disconnect's or unsubscribe's `code` and `reason`, `ttl` whenever
//! `expires` is sent, a client info's `client` and `user`, presence stats'
//! counts, the `presence` map, and each reply's result object (`"publish":{}`).
//!
//! Invariant: every raw JSON payload handed in (publication data, infos,
//! connect/subscribe/rpc data) is valid JSON. Payloads from clients are
//! validated when their command is decoded; any other source must validate
//! before it reaches the broker.

use bytes::Bytes;

use super::codes::{Disconnect, ReplyError, Unsubscribe};
use crate::broker::{ClientInfo, History, PresenceStats, Publication, StreamPosition};

/// A reply to the command with the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) id: u32,
    pub(crate) result: ReplyResult,
}

/// A reply's outcome; the variant must match the command's method, since
/// the SDKs read the result under the method's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyResult {
    Error(ReplyError),
    Connect(ConnectResult),
    Subscribe(SubscribeResult),
    Unsubscribe,
    Publish,
    /// Everyone present in a channel; encoded as a map keyed by client id.
    Presence(Vec<ClientInfo>),
    PresenceStats(PresenceStats),
    History(History),
    Ping,
    /// The RPC backend's raw JSON answer.
    Rpc(Option<Bytes>),
    Refresh(RefreshResult),
    SubRefresh(RefreshResult),
}

/// The result of `connect`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ConnectResult {
    /// The connection's client id (the SDKs require it).
    pub(crate) client: String,
    /// Server version, informational.
    pub(crate) version: String,
    /// Seconds until the client must send `refresh`; `None` when the
    /// connection does not expire.
    pub(crate) expires_in: Option<u32>,
    /// Raw JSON for the client's `connected` event.
    pub(crate) data: Option<Bytes>,
    /// Server-side subscriptions, by channel.
    pub(crate) subs: Vec<(String, SubscribeResult)>,
    /// Seconds between server pings (`{}`); 0: no pings. The JS SDK
    /// reconnects after `ping` + 10 s (its default `maxServerPingDelay`)
    /// without any data from the server.
    pub(crate) ping: u32,
    /// Whether the client must answer each ping with `{}`.
    pub(crate) pong: bool,
    /// Session and node ids, used by the SDKs' HTTP-based transports.
    pub(crate) session: String,
    pub(crate) node: String,
}

/// The result of `subscribe`, also used for server-side subscriptions in
/// a connect result and (fields `recoverable`, `positioned`, the position
/// and `data` only) for a `subscribe` push.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SubscribeResult {
    /// Seconds until the client must send `sub_refresh`; `None`: never.
    pub(crate) expires_in: Option<u32>,
    pub(crate) recoverable: bool,
    pub(crate) positioned: bool,
    /// The channel's current stream position (its top), sent when the
    /// subscription is recoverable or positioned; after a recovery too, as
    /// Centrifugo does: the recovered publications lead up to it.
    pub(crate) position: Option<StreamPosition>,
    /// Recovered publications, oldest first.
    pub(crate) publications: Vec<Publication>,
    pub(crate) recovered: bool,
    pub(crate) was_recovering: bool,
    /// Raw JSON for the client's `subscribed` event.
    pub(crate) data: Option<Bytes>,
}

/// The result of `refresh` and `sub_refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RefreshResult {
    /// Seconds until the next refresh; `None`: no longer expires.
    pub(crate) expires_in: Option<u32>,
}

/// Something the server sends unasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Push<'a> {
    /// Empty for pushes about the connection (`message`, `disconnect`).
    pub(crate) channel: &'a str,
    pub(crate) body: PushBody<'a>,
}

/// What a push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushBody<'a> {
    Publication(&'a Publication),
    Join(&'a ClientInfo),
    Leave(&'a ClientInfo),
    /// The server ended one subscription.
    Unsubscribe(&'a Unsubscribe),
    /// The server added a server-side subscription.
    Subscribe(&'a SubscribeResult),
    /// An asynchronous message with raw JSON data.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "for the server API's send, not built yet; tested")
    )]
    Message(&'a [u8]),
    /// The connection ends. Over WebSocket the close frame
    /// ([`Disconnect::close_frame`]) carries the same; this push is for
    /// transports without one.
    Disconnect(&'a Disconnect),
    /// The server moved the connection's expiry (the server API's refresh).
    Refresh(RefreshResult),
}

/// The server's ping: an empty object. The client answers with the same
/// when the connect result asked for pongs.
pub(crate) const SERVER_PING: &str = "{}";

/// Encodes one reply as a JSON object.
#[cfg(test)]
pub(crate) fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    reply.encode_into(&mut out);
    out
}

/// A push as its own JSON object.
pub(crate) fn encode_push(channel: &str, body: PushBody<'_>) -> Bytes {
    let mut out = Vec::with_capacity(64);
    Push { channel, body }.encode_into(&mut out);
    Bytes::from(out)
}

/// Encodes a publication push once, for every subscriber of `channel`.
pub(crate) fn encode_publication_push(channel: &str, publication: &Publication) -> Bytes {
    let push = Push {
        channel,
        body: PushBody::Publication(publication),
    };
    let mut out = Vec::with_capacity(48 + channel.len() + publication.data.len());
    push.encode_into(&mut out);
    Bytes::from(out)
}

/// A publication as a JSON object, as the protocol shows it (for the HTTP
/// API, which shares the shapes).
pub(crate) fn encode_publication(publication: &Publication) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + publication.data.len());
    let mut o = Obj::open(&mut out);
    publication_fields(&mut o, publication);
    o.close();
    out
}

/// A client info as a JSON object, as the protocol shows it.
pub(crate) fn encode_client_info(info: &ClientInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut o = Obj::open(&mut out);
    client_info_fields(&mut o, info);
    o.close();
    out
}

/// Several replies and pushes for one WebSocket frame, one JSON object per
/// line, as the SDKs split them.
#[derive(Debug, Default)]
pub(crate) struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    pub(crate) fn reply(&mut self, reply: &Reply) -> &mut Self {
        self.separate();
        reply.encode_into(&mut self.buf);
        self
    }

    /// Adds an object encoded before (a shared publication push).
    pub(crate) fn encoded(&mut self, object: &[u8]) -> &mut Self {
        self.separate();
        self.buf.extend_from_slice(object);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes so far.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The frame's text (valid UTF-8: JSON with UTF-8 payloads).
    pub(crate) fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }

    fn separate(&mut self) {
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
    }
}

impl Reply {
    /// Appends the reply's JSON object (no newline).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.u64("id", self.id.into());
        match &self.result {
            ReplyResult::Error(e) => o.obj("error", |o| {
                o.u64_always("code", e.code.into());
                o.str_always("message", &e.message);
                o.bool("temporary", e.temporary);
            }),
            ReplyResult::Connect(c) => o.obj("connect", |o| connect_fields(o, c)),
            ReplyResult::Subscribe(s) => o.obj("subscribe", |o| subscribe_fields(o, s)),
            ReplyResult::Unsubscribe => o.obj("unsubscribe", |_| {}),
            ReplyResult::Publish => o.obj("publish", |_| {}),
            ReplyResult::Presence(clients) => o.obj("presence", |o| {
                o.obj("presence", |o| {
                    for info in clients {
                        o.obj(&info.client, |o| client_info_fields(o, info));
                    }
                });
            }),
            ReplyResult::PresenceStats(s) => o.obj("presence_stats", |o| {
                o.u64_always("num_clients", s.clients as u64);
                o.u64_always("num_users", s.users as u64);
            }),
            ReplyResult::History(h) => o.obj("history", |o| {
                publications(o, &h.publications);
                o.str("epoch", &h.position.epoch);
                o.u64("offset", h.position.offset);
            }),
            ReplyResult::Ping => o.obj("ping", |_| {}),
            ReplyResult::Rpc(data) => o.obj("rpc", |o| o.raw("data", data.as_deref())),
            ReplyResult::Refresh(r) => o.obj("refresh", |o| expires(o, r.expires_in)),
            ReplyResult::SubRefresh(r) => o.obj("sub_refresh", |o| expires(o, r.expires_in)),
        }
        o.close();
    }
}

impl ReplyResult {
    /// About how many bytes the reply's JSON takes, counted before encoding
    /// it, so a reply too large for the client's outbound budget is refused
    /// without being built. Exact for the payloads (raw JSON goes out as
    /// is); strings that need escaping can take more, so callers check the
    /// encoded size too.
    pub(crate) fn size_hint(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                Self::Connect(c) => c
                    .subs
                    .iter()
                    .map(|(channel, sub)| channel.len() + sub.size_hint())
                    .sum(),
                Self::Subscribe(s) => s.size_hint(),
                Self::Presence(clients) => clients.iter().map(client_info_hint).sum(),
                Self::History(h) => publications_hint(&h.publications),
                Self::Rpc(data) => data.as_ref().map_or(0, Bytes::len),
                _ => 0,
            }
    }
}

impl SubscribeResult {
    /// About how many bytes the result's publications take in a reply.
    pub(crate) fn size_hint(&self) -> usize {
        publications_hint(&self.publications)
    }
}

fn publications_hint(publications: &[Publication]) -> usize {
    publications
        .iter()
        .map(|p| {
            let tags: usize = p.tags.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
            40 + p.data.len() + p.info.as_ref().map_or(0, client_info_hint) + tags
        })
        .sum()
}

fn client_info_hint(info: &ClientInfo) -> usize {
    let raw = |json: &Option<Bytes>| json.as_ref().map_or(0, Bytes::len);
    64 + info.client.len() + info.user.len() + raw(&info.conn_info) + raw(&info.chan_info)
}

/// `json` (valid JSON) without the whitespace between its tokens, on one
/// line: the client protocol puts one JSON object per line, so a
/// pretty-printed payload from the HTTP API or a token claim must not carry
/// its newlines into pushes. Whitespace inside strings stays (a raw newline
/// cannot occur there in valid JSON).
pub(crate) fn compact_json(json: &[u8]) -> Bytes {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    if !json.iter().any(is_space) {
        return Bytes::copy_from_slice(json);
    }
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !is_space(&b) {
            in_string = b == b'"';
            out.push(b);
        }
    }
    Bytes::from(out)
}

impl Push<'_> {
    /// Appends `{"push":{…}}` (no newline).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.obj("push", |o| {
            o.str("channel", self.channel);
            match self.body {
                PushBody::Publication(p) => o.obj("pub", |o| publication_fields(o, p)),
                PushBody::Join(info) => {
                    o.obj("join", |o| o.obj("info", |o| client_info_fields(o, info)))
                }
                PushBody::Leave(info) => {
                    o.obj("leave", |o| o.obj("info", |o| client_info_fields(o, info)))
                }
                PushBody::Unsubscribe(u) => o.obj("unsubscribe", |o| {
                    o.u64_always("code", u.code.into());
                    o.str_always("reason", &u.reason);
                }),
                PushBody::Subscribe(s) => o.obj("subscribe", |o| {
                    o.bool("recoverable", s.recoverable);
                    position(o, s.position.as_ref());
                    o.bool("positioned", s.positioned);
                    o.raw("data", s.data.as_deref());
                }),
                PushBody::Message(data) => o.obj("message", |o| o.raw("data", Some(data))),
                PushBody::Disconnect(d) => o.obj("disconnect", |o| {
                    o.u64_always("code", d.code.into());
                    o.str_always("reason", &d.reason);
                    // Protocol v1's flag; v2 SDKs go by the code.
                    o.bool("reconnect", d.reconnect());
                }),
                PushBody::Refresh(r) => o.obj("refresh", |o| expires(o, r.expires_in)),
            }
        });
        o.close();
    }
}

fn connect_fields(o: &mut Obj<'_>, c: &ConnectResult) {
    o.str_always("client", &c.client);
    o.str("version", &c.version);
    expires(o, c.expires_in);
    o.raw("data", c.data.as_deref());
    if !c.subs.is_empty() {
        o.obj("subs", |o| {
            for (channel, sub) in &c.subs {
                o.obj(channel, |o| subscribe_fields(o, sub));
            }
        });
    }
    o.u64("ping", c.ping.into());
    o.bool("pong", c.pong);
    o.str("session", &c.session);
    o.str("node", &c.node);
}

/// In Centrifugo's (protobuf) field order.
fn subscribe_fields(o: &mut Obj<'_>, s: &SubscribeResult) {
    expires(o, s.expires_in);
    o.bool("recoverable", s.recoverable);
    if let Some(p) = &s.position {
        o.str("epoch", &p.epoch);
    }
    publications(o, &s.publications);
    o.bool("recovered", s.recovered);
    if let Some(p) = &s.position {
        o.u64("offset", p.offset);
    }
    o.bool("positioned", s.positioned);
    o.raw("data", s.data.as_deref());
    o.bool("was_recovering", s.was_recovering);
}

fn publication_fields(o: &mut Obj<'_>, p: &Publication) {
    o.raw("data", Some(&p.data));
    if let Some(info) = &p.info {
        o.obj("info", |o| client_info_fields(o, info));
    }
    o.u64("offset", p.offset);
    if !p.tags.is_empty() {
        o.obj("tags", |o| {
            for (k, v) in &p.tags {
                o.str_always(k, v);
            }
        });
    }
}

fn client_info_fields(o: &mut Obj<'_>, info: &ClientInfo) {
    o.str_always("user", &info.user);
    o.str_always("client", &info.client);
    o.raw("conn_info", info.conn_info.as_deref());
    o.raw("chan_info", info.chan_info.as_deref());
}

fn publications(o: &mut Obj<'_>, pubs: &[Publication]) {
    if pubs.is_empty() {
        return;
    }
    o.key("publications");
    o.out.push(b'[');
    for (i, p) in pubs.iter().enumerate() {
        if i > 0 {
            o.out.push(b',');
        }
        let mut item = Obj::open(o.out);
        publication_fields(&mut item, p);
        item.close();
    }
    o.out.push(b']');
}

fn position(o: &mut Obj<'_>, position: Option<&StreamPosition>) {
    if let Some(p) = position {
        o.str("epoch", &p.epoch);
        o.u64("offset", p.offset);
    }
}

fn expires(o: &mut Obj<'_>, expires_in: Option<u32>) {
    if let Some(ttl) = expires_in {
        o.bool("expires", true);
        o.u64_always("ttl", ttl.into());
    }
}

/// Writes one JSON object's members, commas included.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    fn close(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_string(self.out, key);
        self.out.push(b':');
    }

    fn str(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.str_always(key, value);
        }
    }

    fn str_always(&mut self, key: &str, value: &str) {
        self.key(key);
        write_string(self.out, value);
    }

    fn u64(&mut self, key: &str, value: u64) {
        if value != 0 {
            self.u64_always(key, value);
        }
    }

    fn u64_always(&mut self, key: &str, value: u64) {
        self.key(key);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            // `rest % 10` is below 10, so the cast keeps it exactly.
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[at..]);
    }

    fn bool(&mut self, key: &str, value: bool) {
        if value {
            self.key(key);
            self.out.extend_from_slice(b"true");
        }
    }

    /// Raw JSON, left out when absent or empty.
    fn raw(&mut self, key: &str, json: Option<&[u8]>) {
        if let Some(json) = json.filter(|j| !j.is_empty()) {
            debug_assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok(),
                "raw JSON payload for {key:?} is not valid JSON"
            );
            self.key(key);
            self.out.extend_from_slice(json);
        }
    }

    fn obj(&mut self, key: &str, fill: impl FnOnce(&mut Obj<'_>)) {
        self.key(key);
        let mut inner = Obj::open(self.out);
        fill(&mut inner);
        inner.close();
    }
}

/// A JSON string literal: quotes, backslashes and control characters
/// escaped, everything else (UTF-8 included) as is.
fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}
