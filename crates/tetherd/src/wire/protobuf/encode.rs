//! Replies and pushes in protobuf: the same [`Reply`]s and [`PushBody`]s
//! the JSON encoder takes, each written with its length as a varint, so a
//! frame can hold several. Payloads go out as the bytes they are (JSON for
//! what JSON clients sent, anything for protobuf clients').

use bytes::Bytes;
use prost::Message as _;

use super::schema;
use crate::{
    broker::{ClientInfo, Publication, StreamPosition},
    wire::{
        Disconnect, PushBody, RefreshResult, Reply, ReplyResult, SubscribeResult,
        codes::{ReplyError, Unsubscribe},
    },
};

/// The server's ping: an empty reply (one byte: its length, 0).
pub(crate) const SERVER_PING: &[u8] = &[0];

/// Appends `reply` to `frame`, length-prefixed.
pub(crate) fn encode_reply(reply: &Reply, frame: &mut Vec<u8>) {
    let mut message = schema::Reply {
        id: reply.id,
        ..schema::Reply::default()
    };
    match &reply.result {
        ReplyResult::Error(error) => message.error = Some(error_of(error)),
        ReplyResult::Connect(connect) => {
            let (expires, ttl) = expiry(connect.expires_in);
            message.connect = Some(schema::ConnectResult {
                client: connect.client.clone(),
                version: connect.version.clone(),
                expires,
                ttl,
                data: payload(connect.data.as_ref()),
                subs: connect
                    .subs
                    .iter()
                    .map(|(channel, result)| (channel.clone(), subscribe_result(result)))
                    .collect(),
                ping: connect.ping,
                pong: connect.pong,
                session: connect.session.clone(),
                node: connect.node.clone(),
            });
        }
        ReplyResult::Subscribe(result) => message.subscribe = Some(subscribe_result(result)),
        ReplyResult::Unsubscribe => message.unsubscribe = Some(schema::UnsubscribeResult {}),
        ReplyResult::Publish => message.publish = Some(schema::PublishResult {}),
        ReplyResult::Presence(clients) => {
            message.presence = Some(schema::PresenceResult {
                presence: clients
                    .iter()
                    .map(|info| (info.client.clone(), client_info(info)))
                    .collect(),
            });
        }
        ReplyResult::PresenceStats(stats) => {
            message.presence_stats = Some(schema::PresenceStatsResult {
                num_clients: saturate(stats.clients),
                num_users: saturate(stats.users),
            });
        }
        ReplyResult::History(history) => {
            message.history = Some(schema::HistoryResult {
                publications: history.publications.iter().map(publication).collect(),
                epoch: history.position.epoch.clone(),
                offset: history.position.offset,
            });
        }
        ReplyResult::Ping => message.ping = Some(schema::PingResult {}),
        ReplyResult::Rpc(data) => {
            message.rpc = Some(schema::RpcResult {
                data: payload(data.as_ref()),
            });
        }
        ReplyResult::Refresh(refresh) => {
            let (expires, ttl) = expiry(refresh.expires_in);
            message.refresh = Some(schema::RefreshResult {
                expires,
                ttl,
                ..schema::RefreshResult::default()
            });
        }
        ReplyResult::SubRefresh(refresh) => {
            let (expires, ttl) = expiry(refresh.expires_in);
            message.sub_refresh = Some(schema::SubRefreshResult { expires, ttl });
        }
    }
    write(&message, frame);
}

/// Appends a push in `channel` to `frame`, length-prefixed.
pub(crate) fn encode_push(channel: &str, body: PushBody<'_>, frame: &mut Vec<u8>) {
    let mut push = schema::Push {
        channel: channel.to_owned(),
        ..schema::Push::default()
    };
    match body {
        PushBody::Publication(publication_) => push.r#pub = Some(publication(publication_)),
        PushBody::Join(info) => {
            push.join = Some(schema::Join {
                info: Some(client_info(info)),
            });
        }
        PushBody::Leave(info) => {
            push.leave = Some(schema::Leave {
                info: Some(client_info(info)),
            });
        }
        PushBody::Unsubscribe(Unsubscribe { code, reason }) => {
            push.unsubscribe = Some(schema::Unsubscribe {
                code: *code,
                reason: reason.to_string(),
            });
        }
        PushBody::Subscribe(result) => {
            let (epoch, offset) = position(result.position.as_ref());
            push.subscribe = Some(schema::Subscribe {
                recoverable: result.recoverable,
                epoch,
                offset,
                positioned: result.positioned,
                data: payload(result.data.as_ref()),
            });
        }
        PushBody::Message(data) => {
            push.message = Some(schema::Message {
                data: Bytes::copy_from_slice(data),
            });
        }
        PushBody::Disconnect(Disconnect { code, reason }) => {
            push.disconnect = Some(schema::Disconnect {
                code: u32::from(*code),
                reason: reason.to_string(),
            });
        }
        PushBody::Refresh(RefreshResult { expires_in }) => {
            let (expires, ttl) = expiry(expires_in);
            push.refresh = Some(schema::Refresh { expires, ttl });
        }
    }
    write(
        &schema::Reply {
            push: Some(push),
            ..schema::Reply::default()
        },
        frame,
    );
}

/// A publication push for every protobuf subscriber of `channel`, encoded
/// once.
pub(crate) fn encode_publication_push(channel: &str, publication: &Publication) -> Bytes {
    let mut frame = Vec::new();
    encode_push(channel, PushBody::Publication(publication), &mut frame);
    Bytes::from(frame)
}

fn write(message: &schema::Reply, frame: &mut Vec<u8>) {
    frame.reserve(message.encoded_len() + prost::length_delimiter_len(message.encoded_len()));
    // Writing into a Vec cannot run out of room.
    let _ = message.encode_length_delimited(frame);
}

fn error_of(error: &ReplyError) -> schema::Error {
    schema::Error {
        code: error.code,
        message: error.message.to_string(),
        temporary: error.temporary,
    }
}

/// `expires` and `ttl` of an expiry in seconds, if there is one.
fn expiry(expires_in: Option<u32>) -> (bool, u32) {
    (expires_in.is_some(), expires_in.unwrap_or(0))
}

fn position(position: Option<&StreamPosition>) -> (String, u64) {
    position.map_or((String::new(), 0), |position| {
        (position.epoch.clone(), position.offset)
    })
}

fn payload(data: Option<&Bytes>) -> Bytes {
    data.cloned().unwrap_or_default()
}

fn saturate(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn subscribe_result(result: &SubscribeResult) -> schema::SubscribeResult {
    let (expires, ttl) = expiry(result.expires_in);
    let (epoch, offset) = position(result.position.as_ref());
    schema::SubscribeResult {
        expires,
        ttl,
        recoverable: result.recoverable,
        epoch,
        publications: result.publications.iter().map(publication).collect(),
        recovered: result.recovered,
        offset,
        positioned: result.positioned,
        data: payload(result.data.as_ref()),
        was_recovering: result.was_recovering,
    }
}

fn publication(publication: &Publication) -> schema::Publication {
    schema::Publication {
        data: publication.data.clone(),
        info: publication.info.as_ref().map(client_info),
        offset: publication.offset,
        tags: publication.tags.iter().cloned().collect(),
    }
}

fn client_info(info: &ClientInfo) -> schema::ClientInfo {
    schema::ClientInfo {
        user: info.user.clone(),
        client: info.client.clone(),
        conn_info: payload(info.conn_info.as_ref()),
        chan_info: payload(info.chan_info.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{History, PresenceStats};

    /// Every message of `frame`, decoded with prost.
    fn replies(frame: &[u8]) -> Vec<schema::Reply> {
        let mut rest = frame;
        let mut replies = Vec::new();
        while !rest.is_empty() {
            replies.push(schema::Reply::decode_length_delimited(&mut rest).unwrap());
        }
        replies
    }

    fn info(client: &str) -> ClientInfo {
        ClientInfo {
            client: client.into(),
            user: "u".into(),
            conn_info: Some(Bytes::from_static(b"{\"a\":1}")),
            chan_info: None,
        }
    }

    #[test]
    fn replies_carry_each_result_under_its_field() {
        let mut frame = Vec::new();
        let publication = Publication {
            offset: 3,
            data: Bytes::from_static(b"\x01\x02"),
            info: Some(info("c1")),
            tags: vec![("k".into(), "v".into())],
        };
        for (id, result) in [
            (
                1,
                ReplyResult::Connect(crate::wire::ConnectResult {
                    client: "c".into(),
                    expires_in: Some(60),
                    subs: vec![("s".into(), SubscribeResult::default())],
                    ping: 25,
                    pong: true,
                    ..crate::wire::ConnectResult::default()
                }),
            ),
            (2, ReplyResult::Error(ReplyError::PERMISSION_DENIED)),
            (
                3,
                ReplyResult::History(History {
                    publications: vec![publication.clone()],
                    position: StreamPosition {
                        offset: 3,
                        epoch: "e".into(),
                    },
                }),
            ),
            (4, ReplyResult::Presence(vec![info("c1"), info("c2")])),
            (
                5,
                ReplyResult::PresenceStats(PresenceStats {
                    clients: 2,
                    users: 1,
                }),
            ),
            (6, ReplyResult::Rpc(Some(Bytes::from_static(b"{}")))),
            (7, ReplyResult::Ping),
        ] {
            encode_reply(&Reply { id, result }, &mut frame);
        }
        let decoded = replies(&frame);
        assert_eq!(
            decoded.iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        let connect = decoded[0].connect.as_ref().unwrap();
        assert_eq!(
            (connect.client.as_str(), connect.expires, connect.ttl),
            ("c", true, 60)
        );
        assert_eq!((connect.ping, connect.pong), (25, true));
        assert!(connect.subs.contains_key("s"));
        let error = decoded[1].error.as_ref().unwrap();
        assert_eq!(
            (error.code, error.message.as_str(), error.temporary),
            (103, "permission denied", false)
        );
        let history = decoded[2].history.as_ref().unwrap();
        assert_eq!((history.offset, history.epoch.as_str()), (3, "e"));
        let first = &history.publications[0];
        assert_eq!(first.data, Bytes::from_static(b"\x01\x02"));
        assert_eq!(first.tags["k"], "v");
        assert_eq!(
            first.info.as_ref().unwrap().conn_info,
            Bytes::from_static(b"{\"a\":1}")
        );
        let presence = &decoded[3].presence.as_ref().unwrap().presence;
        assert_eq!(presence.len(), 2);
        assert_eq!(presence["c2"].user, "u");
        let stats = decoded[4].presence_stats.as_ref().unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (2, 1));
        assert_eq!(
            decoded[5].rpc.as_ref().unwrap().data,
            Bytes::from_static(b"{}")
        );
        assert!(decoded[6].ping.is_some());
    }

    #[test]
    fn pushes_are_replies_without_an_id() {
        let mut frame = Vec::new();
        let publication = Publication {
            offset: 9,
            data: Bytes::from_static(b"x"),
            info: None,
            tags: Vec::new(),
        };
        frame.extend_from_slice(&encode_publication_push("news", &publication));
        encode_push(
            "news",
            PushBody::Unsubscribe(&Unsubscribe::EXPIRED),
            &mut frame,
        );
        encode_push("", PushBody::Disconnect(&Disconnect::SHUTDOWN), &mut frame);
        encode_push(
            "",
            PushBody::Refresh(RefreshResult {
                expires_in: Some(5),
            }),
            &mut frame,
        );
        frame.extend_from_slice(SERVER_PING);
        let decoded = replies(&frame);
        assert_eq!(decoded.len(), 5);
        assert!(decoded.iter().all(|reply| reply.id == 0));
        let publication = decoded[0].push.as_ref().unwrap();
        assert_eq!(publication.channel, "news");
        assert_eq!(publication.r#pub.as_ref().unwrap().offset, 9);
        assert_eq!(
            decoded[1]
                .push
                .as_ref()
                .unwrap()
                .unsubscribe
                .as_ref()
                .unwrap()
                .code,
            2501
        );
        let disconnect = decoded[2]
            .push
            .as_ref()
            .unwrap()
            .disconnect
            .as_ref()
            .unwrap();
        assert_eq!(
            (disconnect.code, disconnect.reason.as_str()),
            (3001, "shutdown")
        );
        let refresh = decoded[3].push.as_ref().unwrap().refresh.as_ref().unwrap();
        assert_eq!((refresh.expires, refresh.ttl), (true, 5));
        assert_eq!(
            decoded[4],
            schema::Reply::default(),
            "the ping is an empty reply"
        );
    }
}
