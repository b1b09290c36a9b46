//! Test vectors: frames captured from the real SDKs (centrifuge-js 5.8.0
//! over `ws` 8 in Node 20, centrifuge-python 0.7.0 over `websockets` 15)
//! talking to a logging dummy server, and replies in the shapes those SDKs
//! were seen to accept.

use bytes::Bytes;

use super::{codes::*, command::*, reply::*};
use crate::broker::{ClientInfo, History, PresenceStats, Publication, StreamPosition};

/// Every command of a frame, or the first error.
fn decode_commands(frame: &[u8]) -> Result<Vec<ClientCommand>, WireError> {
    super::decode_commands(frame).collect()
}

/// centrifuge-js: the first frame, a connect batched with two subscribes
/// (`token`, `data`, `name`, `version`; `positioned`, `recoverable`,
/// `joinLeave` set on the first subscription).
const JS_CONNECT_FRAME: &str = concat!(
    r#"{"connect":{"token":"conn-token-1","data":{"hello":"world"},"name":"capture","version":"1.2.3"},"id":1}"#,
    "\n",
    r#"{"subscribe":{"channel":"news","token":"sub-token-1","data":{"sub":"data"},"positioned":true,"recoverable":true,"join_leave":true,"flag":1},"id":2}"#,
    "\n",
    r#"{"subscribe":{"channel":"plain","flag":1},"id":3}"#,
);

/// centrifuge-js: after the server closed with 3001, the reconnect frame
/// recovers a server-side and a client-side subscription.
const JS_RECONNECT_FRAME: &str = concat!(
    r#"{"connect":{"token":"conn-token-refreshed","data":{"hello":"world"},"name":"capture","version":"1.2.3","subs":{"server-chan":{"recover":true,"offset":6,"epoch":"srv-epoch"}}},"id":14}"#,
    "\n",
    r#"{"subscribe":{"channel":"news","token":"sub-token-refreshed","data":{"sub":"data"},"positioned":true,"recoverable":true,"join_leave":true,"flag":1,"recover":true,"offset":4,"epoch":"ep1"},"id":15}"#,
);

/// centrifuge-js: one command per frame, in the order they were sent.
const JS_SINGLE_FRAMES: &[&str] = &[
    r#"{"publish":{"channel":"news","data":{"text":"hi"}},"id":4}"#,
    r#"{"presence":{"channel":"news"},"id":5}"#,
    r#"{"presence_stats":{"channel":"news"},"id":6}"#,
    r#"{"history":{"channel":"news","since":{"offset":2,"epoch":"ep1"},"limit":10,"reverse":true},"id":7}"#,
    r#"{"history":{"channel":"news","limit":0},"id":8}"#,
    r#"{"rpc":{"method":"getUser","data":{"id":7}},"id":9}"#,
    r#"{"send":{"data":{"fire":"forget"}}}"#,
    r#"{"publish":{"channel":"other","data":{"top":"level"}},"id":10}"#,
    r#"{}"#,
    r#"{"refresh":{"token":"conn-token-refreshed"},"id":11}"#,
    r#"{"sub_refresh":{"channel":"news","token":"sub-token-refreshed"},"id":12}"#,
    r#"{"unsubscribe":{"channel":"plain"},"id":13}"#,
];

/// centrifuge-python (`json.dumps`: spaces after separators, id first).
const PY_FRAMES: &[&str] = &[
    r#"{"id": 1, "connect": {"token": "py-conn-token", "data": {"hello": "py"}, "name": "pycapture", "version": "0.1"}}"#,
    r#"{"id": 2, "subscribe": {"channel": "news", "token": "py-sub-token", "data": {"sub": "py"}, "positioned": true, "recoverable": true, "join_leave": true, "flag": 1}}"#,
    r#"{"id": 3, "publish": {"channel": "news", "data": {"text": "hi"}}}"#,
    r#"{"id": 6, "history": {"channel": "news", "limit": 10, "reverse": true, "since": {"offset": 2, "epoch": "ep1"}}}"#,
    r#"{"id": 7, "rpc": {"method": "getUser", "data": {"id": 7}}}"#,
    r#"{}"#,
    r#"{"id": 10, "connect": {"token": "py-conn-refreshed", "data": {"hello": "py"}, "name": "pycapture", "version": "0.1", "subs": {"server-chan": {"recover": true, "offset": 6, "epoch": "srv-epoch"}}}}"#,
    r#"{"id": 11, "subscribe": {"channel": "news", "token": "py-sub-refreshed", "data": {"sub": "py"}, "positioned": true, "recoverable": true, "join_leave": true, "recover": true, "epoch": "ep1", "offset": 4, "flag": 1}}"#,
];

fn one(frame: &str) -> ClientCommand {
    let mut commands = decode_commands(frame.as_bytes()).expect("decodes");
    assert_eq!(commands.len(), 1, "{frame}");
    commands.remove(0)
}

fn json(bytes: &'static str) -> Option<Bytes> {
    Some(Bytes::from_static(bytes.as_bytes()))
}

fn pos(offset: u64, epoch: &str) -> StreamPosition {
    StreamPosition {
        offset,
        epoch: epoch.to_owned(),
    }
}

#[test]
fn js_connect_frame_holds_three_commands() {
    let commands = decode_commands(JS_CONNECT_FRAME.as_bytes()).unwrap();
    assert_eq!(
        commands,
        vec![
            ClientCommand {
                id: 1,
                request: Request::Connect(ConnectRequest {
                    token: "conn-token-1".into(),
                    data: json(r#"{"hello":"world"}"#),
                    subs: vec![],
                    name: "capture".into(),
                    version: "1.2.3".into(),
                }),
            },
            ClientCommand {
                id: 2,
                request: Request::Subscribe(SubscribeRequest {
                    channel: "news".into(),
                    token: "sub-token-1".into(),
                    data: json(r#"{"sub":"data"}"#),
                    positioned: true,
                    recoverable: true,
                    join_leave: true,
                    ..Default::default()
                }),
            },
            ClientCommand {
                id: 3,
                request: Request::Subscribe(SubscribeRequest {
                    channel: "plain".into(),
                    ..Default::default()
                }),
            },
        ]
    );
}

#[test]
fn js_reconnect_frame_asks_to_recover() {
    let commands = decode_commands(JS_RECONNECT_FRAME.as_bytes()).unwrap();
    let Request::Connect(connect) = &commands[0].request else {
        panic!("{commands:?}")
    };
    assert_eq!(commands[0].id, 14);
    assert_eq!(
        connect.subs,
        vec![ConnectSub {
            channel: "server-chan".into(),
            since: Some(pos(6, "srv-epoch")),
        }]
    );
    let Request::Subscribe(sub) = &commands[1].request else {
        panic!("{commands:?}")
    };
    assert_eq!(commands[1].id, 15);
    assert_eq!(sub.since, Some(pos(4, "ep1")));
    assert!(sub.recoverable && sub.positioned && sub.join_leave);
    assert!(!sub.reject_unrecovered);
    assert_eq!(sub.unsupported_feature(), None);
}

/// centrifuge-js: a subscription created with `since: {offset: 2, epoch:
/// "ep1"}` recovers on its very first subscribe (default SDK name "js").
const JS_SINCE_FRAME: &str = concat!(
    r#"{"connect":{"token":"t","name":"js"},"id":1}"#,
    "\n",
    r#"{"subscribe":{"channel":"news","token":"s","positioned":true,"recoverable":true,"join_leave":true,"flag":1,"recover":true,"offset":2,"epoch":"ep1"},"id":2}"#,
);

#[test]
fn js_since_option_recovers_on_first_subscribe() {
    let commands = decode_commands(JS_SINCE_FRAME.as_bytes()).unwrap();
    let Request::Connect(connect) = &commands[0].request else {
        panic!("{commands:?}")
    };
    assert_eq!((connect.name.as_str(), connect.data.as_ref()), ("js", None));
    let Request::Subscribe(sub) = &commands[1].request else {
        panic!("{commands:?}")
    };
    assert_eq!(sub.since, Some(pos(2, "ep1")));
}

#[test]
fn js_single_commands() {
    let decoded: Vec<ClientCommand> = JS_SINGLE_FRAMES.iter().map(|f| one(f)).collect();
    let channel = |c: &str| ChannelRequest { channel: c.into() };
    assert_eq!(
        decoded,
        vec![
            ClientCommand {
                id: 4,
                request: Request::Publish(PublishRequest {
                    channel: "news".into(),
                    data: Bytes::from_static(br#"{"text":"hi"}"#),
                    kind: 0,
                }),
            },
            ClientCommand {
                id: 5,
                request: Request::Presence(channel("news")),
            },
            ClientCommand {
                id: 6,
                request: Request::PresenceStats(channel("news")),
            },
            ClientCommand {
                id: 7,
                request: Request::History(HistoryRequest {
                    channel: "news".into(),
                    limit: 10,
                    since: Some(pos(2, "ep1")),
                    reverse: true,
                }),
            },
            ClientCommand {
                id: 8,
                request: Request::History(HistoryRequest {
                    channel: "news".into(),
                    ..Default::default()
                }),
            },
            ClientCommand {
                id: 9,
                request: Request::Rpc(RpcRequest {
                    method: "getUser".into(),
                    data: json(r#"{"id":7}"#),
                }),
            },
            ClientCommand {
                id: 0,
                request: Request::Send(SendRequest {
                    data: json(r#"{"fire":"forget"}"#),
                }),
            },
            ClientCommand {
                id: 10,
                request: Request::Publish(PublishRequest {
                    channel: "other".into(),
                    data: Bytes::from_static(br#"{"top":"level"}"#),
                    kind: 0,
                }),
            },
            ClientCommand {
                id: 0,
                request: Request::Pong,
            },
            ClientCommand {
                id: 11,
                request: Request::Refresh(RefreshRequest {
                    token: "conn-token-refreshed".into(),
                }),
            },
            ClientCommand {
                id: 12,
                request: Request::SubRefresh(SubRefreshRequest {
                    channel: "news".into(),
                    token: "sub-token-refreshed".into(),
                }),
            },
            ClientCommand {
                id: 13,
                request: Request::Unsubscribe(channel("plain")),
            },
        ]
    );
}

#[test]
fn history_limits_map_to_broker_queries() {
    let Request::History(h) = one(JS_SINGLE_FRAMES[3]).request else {
        panic!()
    };
    assert_eq!(h.query().limit, Some(10));
    assert_eq!(h.query().since, Some(pos(2, "ep1")));
    let Request::History(h) = one(JS_SINGLE_FRAMES[4]).request else {
        panic!()
    };
    assert_eq!(h.query().limit, Some(0), "limit 0: position only");
    let Request::History(h) = one(r#"{"id":1,"history":{"channel":"a","limit":-1}}"#).request
    else {
        panic!()
    };
    assert_eq!(h.query().limit, None, "negative: everything kept");
}

#[test]
fn python_frames_decode_like_js_ones() {
    let decoded: Vec<ClientCommand> = PY_FRAMES.iter().map(|f| one(f)).collect();
    let Request::Connect(c) = &decoded[0].request else {
        panic!()
    };
    assert_eq!((decoded[0].id, c.token.as_str()), (1, "py-conn-token"));
    // Raw payloads keep the client's own spacing.
    assert_eq!(c.data, json(r#"{"hello": "py"}"#));
    let Request::Subscribe(s) = &decoded[1].request else {
        panic!()
    };
    assert!(s.positioned && s.recoverable && s.join_leave && s.since.is_none());
    let Request::History(h) = &decoded[3].request else {
        panic!()
    };
    assert_eq!(
        (h.limit, h.reverse, h.since.clone()),
        (10, true, Some(pos(2, "ep1")))
    );
    assert_eq!(decoded[5].request, Request::Pong);
    let Request::Connect(c) = &decoded[6].request else {
        panic!()
    };
    assert_eq!(c.subs[0].since, Some(pos(6, "srv-epoch")));
    let Request::Subscribe(s) = &decoded[7].request else {
        panic!()
    };
    assert_eq!((decoded[7].id, s.since.clone()), (11, Some(pos(4, "ep1"))));
}

#[test]
fn blank_lines_crlf_and_trailing_newline_are_fine() {
    let frame = "\r\n{\"id\":1,\"ping\":{}}\r\n\n  \n{}\n";
    let commands = decode_commands(frame.as_bytes()).unwrap();
    assert_eq!(
        commands.iter().map(|c| &c.request).collect::<Vec<_>>(),
        vec![&Request::Ping, &Request::Pong]
    );
    assert_eq!(decode_commands(b"").unwrap(), vec![]);
}

#[test]
fn nulls_and_string_offsets_read_as_defaults_and_numbers() {
    let c = one(
        r#"{"id":3,"subscribe":{"channel":"c","token":null,"recover":true,"epoch":null,"offset":"18446744073709551615","data":null,"flag":3}}"#,
    );
    let Request::Subscribe(s) = c.request else {
        panic!()
    };
    assert_eq!(s.token, "");
    assert_eq!(s.data, None);
    assert_eq!(s.since, Some(pos(u64::MAX, "")));
    assert!(s.reject_unrecovered);
}

#[test]
fn unsupported_subscribe_features_are_named() {
    let Request::Subscribe(s) = one(r#"{"id":1,"subscribe":{"channel":"c","type":4}}"#).request
    else {
        panic!()
    };
    assert!(s.unsupported_feature().is_some());
    let Request::Subscribe(s) =
        one(r#"{"id":1,"subscribe":{"channel":"c","tf":{"op":"eq","key":"a","val":"b"}}}"#).request
    else {
        panic!()
    };
    assert_eq!(s.unsupported_feature(), Some("tags filter"));
}

#[test]
fn raw_data_is_kept_byte_for_byte() {
    let Request::Publish(p) =
        one(r#"{"id":1,"publish":{"channel":"c","data":[1, 2.50, "é\u00e9", {"k" : null}]}}"#)
            .request
    else {
        panic!()
    };
    assert_eq!(
        &p.data[..],
        r#"[1, 2.50, "é\u00e9", {"k" : null}]"#.as_bytes()
    );
}

#[test]
fn unknown_method_with_an_id_gets_method_not_found() {
    assert_eq!(one(r#"{"id":9,"frobnicate":{}}"#).request, Request::Unknown);
    assert_eq!(one(r#"{"id":9}"#).request, Request::Unknown);
}

#[test]
fn protocol_errors() {
    let err = |frame: &str| decode_commands(frame.as_bytes()).unwrap_err();
    assert!(matches!(
        err("not json"),
        WireError::Malformed { line: 0, .. }
    ));
    assert!(matches!(
        err("{}\n[1]"),
        WireError::Malformed { line: 1, .. }
    ));
    assert!(matches!(err(r#"{"id":-1}"#), WireError::Malformed { .. }));
    assert!(matches!(
        err(r#"{"id":1,"subscribe":{"channel":5}}"#),
        WireError::Malformed { .. }
    ));
    assert!(matches!(
        err(r#"{"id":1,"publish":{"channel":"c","data":{"#),
        WireError::Malformed { .. }
    ));
    assert_eq!(
        err(r#"{"publish":{"channel":"c","data":1}}"#),
        WireError::MissingId { line: 0 }
    );
    assert_eq!(
        err(r#"{"id":1,"ping":{},"presence":{"channel":"c"}}"#),
        WireError::SeveralMethods { line: 0 }
    );
    assert_eq!(
        err(r#"{"id":1,"subscribe":{"channel":""}}"#),
        WireError::MissingField {
            line: 0,
            method: "subscribe",
            field: "channel"
        }
    );
    assert_eq!(
        err(r#"{"id":1,"publish":{"channel":"c"}}"#),
        WireError::MissingField {
            line: 0,
            method: "publish",
            field: "data"
        }
    );
    assert_eq!(
        err(r#"{"id":1,"refresh":{}}"#),
        WireError::MissingField {
            line: 0,
            method: "refresh",
            field: "token"
        }
    );
    assert_eq!(err("{]").disconnect(), Disconnect::BAD_REQUEST);
}

fn encoded(reply: Reply) -> String {
    let bytes = encode_reply(&reply);
    // Every encoding is one line of valid JSON.
    serde_json::from_slice::<serde_json::Value>(&bytes).expect("valid JSON");
    assert!(!bytes.contains(&b'\n'));
    String::from_utf8(bytes).unwrap()
}

fn info(client: &str, user: &str, conn_info: Option<Bytes>) -> ClientInfo {
    ClientInfo {
        client: client.into(),
        user: user.into(),
        conn_info,
        chan_info: None,
    }
}

#[test]
fn connect_result_with_server_subs_pings_and_expiry() {
    let reply = Reply {
        id: 1,
        result: ReplyResult::Connect(ConnectResult {
            client: "c1".into(),
            version: "0.1.0".into(),
            expires_in: Some(2),
            data: None,
            subs: vec![(
                "server-chan".into(),
                SubscribeResult {
                    recoverable: true,
                    positioned: true,
                    position: Some(pos(5, "srv-epoch")),
                    ..Default::default()
                },
            )],
            ping: 25,
            pong: true,
            session: String::new(),
            node: String::new(),
        }),
    };
    assert_eq!(
        encoded(reply),
        r#"{"id":1,"connect":{"client":"c1","version":"0.1.0","expires":true,"ttl":2,"subs":{"server-chan":{"recoverable":true,"epoch":"srv-epoch","offset":5,"positioned":true}},"ping":25,"pong":true}}"#
    );
}

#[test]
fn minimal_connect_result_keeps_only_the_client() {
    let reply = Reply {
        id: 7,
        result: ReplyResult::Connect(ConnectResult {
            client: "c".into(),
            ..Default::default()
        }),
    };
    assert_eq!(encoded(reply), r#"{"id":7,"connect":{"client":"c"}}"#);
}

#[test]
fn subscribe_result_after_recovery() {
    let reply = Reply {
        id: 15,
        result: ReplyResult::Subscribe(SubscribeResult {
            expires_in: Some(0),
            recoverable: true,
            positioned: true,
            position: Some(pos(4, "ep1")),
            publications: vec![Publication {
                offset: 5,
                data: Bytes::from_static(br#"{"n":5}"#),
                info: None,
                tags: vec![],
            }],
            recovered: true,
            was_recovering: true,
            data: json(r#""welcome""#),
        }),
    };
    assert_eq!(
        encoded(reply),
        r#"{"id":15,"subscribe":{"expires":true,"ttl":0,"recoverable":true,"epoch":"ep1","publications":[{"data":{"n":5},"offset":5}],"recovered":true,"offset":4,"positioned":true,"data":"welcome","was_recovering":true}}"#
    );
    let plain = Reply {
        id: 3,
        result: ReplyResult::Subscribe(SubscribeResult::default()),
    };
    assert_eq!(encoded(plain), r#"{"id":3,"subscribe":{}}"#);
}

#[test]
fn errors_always_carry_code_and_message() {
    let reply = |e| Reply {
        id: 2,
        result: ReplyResult::Error(e),
    };
    assert_eq!(
        encoded(reply(ReplyError::PERMISSION_DENIED)),
        r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#
    );
    assert_eq!(
        encoded(reply(ReplyError::INTERNAL)),
        r#"{"id":2,"error":{"code":100,"message":"internal server error","temporary":true}}"#
    );
    let custom = ReplyError {
        code: 400,
        message: "".into(),
        temporary: false,
    };
    assert_eq!(
        encoded(reply(custom)),
        r#"{"id":2,"error":{"code":400,"message":""}}"#
    );
}

#[test]
fn empty_results_are_still_objects() {
    let reply = |id, result| encoded(Reply { id, result });
    assert_eq!(reply(4, ReplyResult::Publish), r#"{"id":4,"publish":{}}"#);
    assert_eq!(
        reply(13, ReplyResult::Unsubscribe),
        r#"{"id":13,"unsubscribe":{}}"#
    );
    assert_eq!(reply(1, ReplyResult::Ping), r#"{"id":1,"ping":{}}"#);
    assert_eq!(reply(9, ReplyResult::Rpc(None)), r#"{"id":9,"rpc":{}}"#);
    assert_eq!(
        reply(5, ReplyResult::Presence(vec![])),
        r#"{"id":5,"presence":{"presence":{}}}"#
    );
    assert_eq!(
        reply(6, ReplyResult::PresenceStats(PresenceStats::default())),
        r#"{"id":6,"presence_stats":{"num_clients":0,"num_users":0}}"#
    );
    let empty = History {
        publications: vec![],
        position: pos(0, ""),
    };
    assert_eq!(
        reply(8, ReplyResult::History(empty)),
        r#"{"id":8,"history":{}}"#
    );
    assert_eq!(
        reply(
            11,
            ReplyResult::Refresh(RefreshResult {
                expires_in: Some(600)
            })
        ),
        r#"{"id":11,"refresh":{"expires":true,"ttl":600}}"#
    );
    assert_eq!(
        reply(12, ReplyResult::SubRefresh(RefreshResult::default())),
        r#"{"id":12,"sub_refresh":{}}"#
    );
}

#[test]
fn presence_history_and_rpc_results() {
    let presence = Reply {
        id: 5,
        result: ReplyResult::Presence(vec![
            info("c1", "42", json(r#"{"name":"Alice"}"#)),
            info("c2", "", None),
        ]),
    };
    assert_eq!(
        encoded(presence),
        r#"{"id":5,"presence":{"presence":{"c1":{"user":"42","client":"c1","conn_info":{"name":"Alice"}},"c2":{"user":"","client":"c2"}}}}"#
    );
    let stats = Reply {
        id: 6,
        result: ReplyResult::PresenceStats(PresenceStats {
            clients: 3,
            users: 2,
        }),
    };
    assert_eq!(
        encoded(stats),
        r#"{"id":6,"presence_stats":{"num_clients":3,"num_users":2}}"#
    );
    let history = Reply {
        id: 7,
        result: ReplyResult::History(History {
            publications: vec![Publication {
                offset: 2,
                data: Bytes::from_static(br#"{"x":1}"#),
                info: None,
                tags: vec![],
            }],
            position: pos(3, "ep1"),
        }),
    };
    assert_eq!(
        encoded(history),
        r#"{"id":7,"history":{"publications":[{"data":{"x":1},"offset":2}],"epoch":"ep1","offset":3}}"#
    );
    let rpc = Reply {
        id: 9,
        result: ReplyResult::Rpc(json(r#"{"ok":true}"#)),
    };
    assert_eq!(encoded(rpc), r#"{"id":9,"rpc":{"data":{"ok":true}}}"#);
}

#[test]
fn publication_push_is_encoded_once_with_info_and_tags() {
    let publication = Publication {
        offset: 4,
        data: Bytes::from_static(br#"{"n":1}"#),
        info: Some(ClientInfo {
            chan_info: json(r#"{"role":"mod"}"#),
            ..info("c1", "42", json(r#"{"name":"Alice"}"#))
        }),
        tags: vec![("k".into(), "v".into())],
    };
    let bytes = encode_publication_push("news", &publication);
    assert_eq!(
        &bytes[..],
        br#"{"push":{"channel":"news","pub":{"data":{"n":1},"info":{"user":"42","client":"c1","conn_info":{"name":"Alice"},"chan_info":{"role":"mod"}},"offset":4,"tags":{"k":"v"}}}}"#
    );
    let bare = Publication {
        offset: 0,
        data: Bytes::from_static(b"[]"),
        info: None,
        tags: vec![],
    };
    assert_eq!(
        &encode_publication_push("a", &bare)[..],
        br#"{"push":{"channel":"a","pub":{"data":[]}}}"#
    );
}

fn pushed(push: Push<'_>) -> String {
    let mut out = Vec::new();
    push.encode_into(&mut out);
    serde_json::from_slice::<serde_json::Value>(&out).expect("valid JSON");
    String::from_utf8(out).unwrap()
}

#[test]
fn other_pushes() {
    let alice = info("c1", "42", None);
    assert_eq!(
        pushed(Push {
            channel: "news",
            body: PushBody::Join(&alice),
        }),
        r#"{"push":{"channel":"news","join":{"info":{"user":"42","client":"c1"}}}}"#
    );
    assert_eq!(
        pushed(Push {
            channel: "news",
            body: PushBody::Leave(&alice),
        }),
        r#"{"push":{"channel":"news","leave":{"info":{"user":"42","client":"c1"}}}}"#
    );
    assert_eq!(
        pushed(Push {
            channel: "news",
            body: PushBody::Unsubscribe(&Unsubscribe::SERVER),
        }),
        r#"{"push":{"channel":"news","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
    );
    assert_eq!(
        pushed(Push {
            channel: "",
            body: PushBody::Disconnect(&Disconnect::FORCE_NO_RECONNECT),
        }),
        r#"{"push":{"disconnect":{"code":3503,"reason":"force disconnect"}}}"#
    );
    assert_eq!(
        pushed(Push {
            channel: "",
            body: PushBody::Disconnect(&Disconnect::SHUTDOWN),
        }),
        r#"{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}"#
    );
    assert_eq!(
        pushed(Push {
            channel: "",
            body: PushBody::Message(br#"{"m":1}"#),
        }),
        r#"{"push":{"message":{"data":{"m":1}}}}"#
    );
    let sub = SubscribeResult {
        recoverable: true,
        position: Some(pos(0, "e")),
        data: json("1"),
        ..Default::default()
    };
    assert_eq!(
        pushed(Push {
            channel: "personal:42",
            body: PushBody::Subscribe(&sub),
        }),
        r#"{"push":{"channel":"personal:42","subscribe":{"recoverable":true,"epoch":"e","data":1}}}"#
    );
    assert_eq!(
        pushed(Push {
            channel: "",
            body: PushBody::Refresh(RefreshResult {
                expires_in: Some(60)
            }),
        }),
        r#"{"push":{"refresh":{"expires":true,"ttl":60}}}"#
    );
}

#[test]
fn frames_join_objects_with_newlines() {
    let publication = encode_publication_push(
        "news",
        &Publication {
            offset: 1,
            data: Bytes::from_static(b"1"),
            info: None,
            tags: vec![],
        },
    );
    let mut frame = FrameBuilder::default();
    assert!(frame.is_empty());
    frame
        .reply(&Reply {
            id: 1,
            result: ReplyResult::Publish,
        })
        .encoded(&publication)
        .encoded(SERVER_PING.as_bytes());
    assert_eq!(
        &frame.finish()[..],
        concat!(
            r#"{"id":1,"publish":{}}"#,
            "\n",
            r#"{"push":{"channel":"news","pub":{"data":1,"offset":1}}}"#,
            "\n{}"
        )
        .as_bytes()
    );
}

#[test]
fn strings_are_escaped() {
    let reply = Reply {
        id: 1,
        result: ReplyResult::Error(ReplyError {
            code: 4000,
            message: "quote \" backslash \\ newline \n nul \u{0} tab \t unicode é \u{2028}".into(),
            temporary: false,
        }),
    };
    let text = encoded(reply);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value["error"]["message"],
        "quote \" backslash \\ newline \n nul \u{0} tab \t unicode é \u{2028}"
    );
    assert!(text.contains(r#"\u0000"#));
}

#[test]
fn numbers_cover_the_u64_range() {
    let reply = Reply {
        id: u32::MAX,
        result: ReplyResult::History(History {
            publications: vec![],
            position: pos(u64::MAX, "e"),
        }),
    };
    assert_eq!(
        encoded(reply),
        r#"{"id":4294967295,"history":{"epoch":"e","offset":18446744073709551615}}"#
    );
}

#[test]
fn compact_json_keeps_one_line_and_the_strings_as_they_are() {
    let pretty = "{\n  \"text\": \"a b\\n\\\"c\\\\\",\r\n\t\"list\": [ 1, 2 ]\n}";
    let compact = compact_json(pretty.as_bytes());
    assert_eq!(&compact[..], br#"{"text":"a b\n\"c\\","list":[1,2]}"#);
    let before: serde_json::Value = serde_json::from_str(pretty).unwrap();
    let after: serde_json::Value = serde_json::from_slice(&compact).unwrap();
    assert_eq!(before, after);
    assert_eq!(&compact_json(b"\"x\"")[..], b"\"x\"");
}

#[test]
fn size_hints_cover_what_is_encoded() {
    let publication = |data: &str| Publication {
        offset: 7,
        data: Bytes::from(data.to_owned()),
        info: Some(ClientInfo {
            client: "c".repeat(32),
            user: "someone".into(),
            conn_info: Some(Bytes::from_static(b"{\"name\":\"x\"}")),
            chan_info: None,
        }),
        tags: vec![("k".into(), "v".into())],
    };
    let results = [
        ReplyResult::History(History {
            publications: (0..50)
                .map(|i| publication(&format!("{{\"n\":{i}}}")))
                .collect(),
            position: pos(50, "epoch"),
        }),
        ReplyResult::Presence(
            (0..20)
                .map(|i| ClientInfo {
                    client: format!("{i:032x}"),
                    user: format!("user{i}"),
                    conn_info: None,
                    chan_info: None,
                })
                .collect(),
        ),
        ReplyResult::Publish,
    ];
    for result in results {
        let hint = result.size_hint();
        let text = encoded(Reply { id: 1, result });
        assert!(hint >= text.len(), "hint {hint} < {} bytes", text.len());
        assert!(
            hint < text.len() * 2 + 64,
            "hint {hint} far above {} bytes",
            text.len()
        );
    }
}
