//! permessage-deflate on the sans-IO connection: RSV1 on the wire, the
//! threshold, control frames, limits while inflating, shared frames.
//!
//! Compressed input is made with flate2 directly, not with the crate's own
//! compressor, so the receive path is checked against an independent sender.

mod common;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use tether_proto::{
    CloseCode, Config, Connection, Event, Limits, Message, ProtocolError, Role, UsageError,
    deflate::{DeflateConfig, FrameEncoding, PerMessageDeflate},
    handshake::extensions::ExtensionOffer,
};

use common::{
    BINARY, CONTINUATION, KEY, PING, Pair, TEXT, decode_frames, events, feed, frame, quiet, start,
    transmit, with,
};

const RSV1: u8 = 0b100;

/// What a server running `config` negotiates with a client offering
/// `permessage-deflate; client_max_window_bits`, and what that client ends
/// up with.
fn negotiate(config: DeflateConfig) -> (PerMessageDeflate, PerMessageDeflate) {
    let offer = ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None);
    let (response, server) = config.accept(&[offer]).expect("accepted");
    let client = keep_context();
    let client = DeflateConfig::check_response(&[client], &[response])
        .expect("valid response")
        .expect("deflate accepted");
    (client, server)
}

/// Deflate with context takeover allowed both ways.
fn keep_context() -> DeflateConfig {
    with(DeflateConfig::default(), |config| {
        config.server_no_context_takeover = false;
        config.client_no_context_takeover = false;
    })
}

fn deflate_pair(config: DeflateConfig) -> Pair {
    let (client, server) = negotiate(config);
    let mut pair = Pair::new();
    pair.client.set_deflate(client);
    pair.server.set_deflate(server);
    pair
}

fn server(limits: Limits) -> Connection {
    let mut conn = Connection::new(Role::Server, with(quiet(), |c| c.limits = limits), start());
    conn.set_deflate(negotiate(DeflateConfig::default()).1);
    conn
}

/// `data` as one raw deflate stream with a sync flush, its 4-byte tail
/// removed (RFC 7692 §7.2.1).
fn compressed(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    loop {
        let consumed = c.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn client_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, rsv, opcode, Some(KEY), payload)
}

fn close_code_sent(conn: &mut Connection) -> Option<u16> {
    decode_frames(&transmit(conn))
        .iter()
        .find_map(|f| f.close_code())
}

#[test]
fn compressed_messages_round_trip_both_ways() {
    let mut pair = deflate_pair(DeflateConfig::default());
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    let binary: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
    for _ in 0..3 {
        pair.client
            .send(pair.now, Message::text(text.clone()))
            .unwrap();
        pair.server
            .send(pair.now, Message::binary(binary.clone()))
            .unwrap();
        pair.drive();
        assert_eq!(
            pair.server_events(),
            vec![Event::Message(Message::text(text.clone()))]
        );
        assert_eq!(
            pair.client_events(),
            vec![Event::Message(Message::binary(binary.clone()))]
        );
    }
}

#[test]
fn rsv1_marks_compressed_messages_only_and_never_control_frames() {
    let now = start();
    let mut conn = server(Limits::default());
    let long = "abc".repeat(100);
    conn.send(now, Message::text(long.clone())).unwrap();
    conn.send(now, Message::text("short")).unwrap();
    conn.send(now, Message::Ping(Bytes::from(long[..100].to_owned())))
        .unwrap();
    conn.send(now, Message::Pong(Bytes::from_static(b"pong")))
        .unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    let summary: Vec<_> = frames.iter().map(|f| (f.opcode, f.rsv)).collect();
    assert_eq!(
        summary,
        vec![(TEXT, RSV1), (TEXT, 0), (PING, 0), (common::PONG, 0)]
    );
    assert!(frames[0].payload.len() < 30, "{}", frames[0].payload.len());
    assert_eq!(frames[1].payload, b"short", "below the threshold");
    assert_eq!(frames[2].payload, &long.as_bytes()[..100]);
}

#[test]
fn threshold_is_configurable() {
    let (_, mut negotiated) = negotiate(with(DeflateConfig::default(), |c| c.threshold = 0));
    let now = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    conn.set_deflate(negotiated);
    conn.send(now, Message::text("a")).unwrap();
    assert_eq!(decode_frames(&transmit(&mut conn))[0].rsv, RSV1);

    negotiated = negotiate(with(DeflateConfig::default(), |c| c.threshold = 1000)).1;
    let mut conn = Connection::new(Role::Server, quiet(), now);
    conn.set_deflate(negotiated);
    conn.send(now, Message::text("b".repeat(999))).unwrap();
    conn.send(now, Message::text("b".repeat(1000))).unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!((frames[0].rsv, frames[1].rsv), (0, RSV1));
}

#[test]
fn fragmented_compressed_message_is_reassembled() {
    let now = start();
    let text = "fragmented and compressed, ".repeat(200);
    let data = compressed(text.as_bytes());
    let (a, rest) = data.split_at(data.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut bytes = client_frame(false, RSV1, TEXT, a);
    bytes.extend(client_frame(false, 0, CONTINUATION, b));
    bytes.extend(client_frame(true, 0, CONTINUATION, c));
    // An uncompressed message in between messages still works.
    bytes.extend(client_frame(true, 0, BINARY, b"plain"));
    let mut conn = server(Limits::default());
    feed(&mut conn, now, &bytes).unwrap();
    assert_eq!(
        events(&mut conn),
        vec![
            Event::Message(Message::text(text)),
            Event::Message(Message::binary(&b"plain"[..]))
        ]
    );
}

#[test]
fn empty_compressed_message() {
    let now = start();
    let mut conn = server(Limits::default());
    feed(&mut conn, now, &client_frame(true, RSV1, BINARY, &[0x00])).unwrap();
    feed(
        &mut conn,
        now,
        &client_frame(true, RSV1, TEXT, &compressed(b"")),
    )
    .unwrap();
    assert_eq!(
        events(&mut conn),
        vec![
            Event::Message(Message::binary(Bytes::new())),
            Event::Message(Message::text(""))
        ]
    );
}

#[test]
fn rsv1_is_a_protocol_error_where_deflate_does_not_allow_it() {
    let now = start();
    let data = compressed(b"hello");
    // Without deflate negotiated.
    let mut plain = Connection::new(Role::Server, quiet(), now);
    let err = feed(&mut plain, now, &client_frame(true, RSV1, TEXT, &data)).unwrap_err();
    assert_eq!(err, ProtocolError::ReservedBitsSet(RSV1));
    assert_eq!(close_code_sent(&mut plain), Some(1002));
    // On a control frame.
    let mut conn = server(Limits::default());
    let err = feed(&mut conn, now, &client_frame(true, RSV1, PING, b"")).unwrap_err();
    assert_eq!(err, ProtocolError::ReservedBitsSet(RSV1));
    // On a continuation frame (RFC 7692 §6.1).
    let mut conn = server(Limits::default());
    let mut bytes = client_frame(false, RSV1, TEXT, &data[..2]);
    bytes.extend(client_frame(true, RSV1, CONTINUATION, &data[2..]));
    let err = feed(&mut conn, now, &bytes).unwrap_err();
    assert_eq!(err, ProtocolError::ReservedBitsSet(RSV1));
    assert_eq!(close_code_sent(&mut conn), Some(1002));
    // RSV2 and RSV3 stay reserved.
    let mut conn = server(Limits::default());
    let err = feed(&mut conn, now, &client_frame(true, 0b010, TEXT, b"x")).unwrap_err();
    assert_eq!(err, ProtocolError::ReservedBitsSet(0b010));
}

#[test]
fn a_small_frame_that_inflates_past_the_limit_is_closed_with_1009() {
    let now = start();
    let max = 1 << 20;
    // About 16 KiB on the wire; deflate cannot do much better than 1:1032.
    let bomb = compressed(&vec![0u8; 16 << 20]);
    assert!(bomb.len() <= 17 << 10, "{}", bomb.len());
    let mut conn = server(with(Limits::default(), |l| l.max_message_size = max));
    let err = feed(&mut conn, now, &client_frame(true, RSV1, BINARY, &bomb)).unwrap_err();
    assert!(
        matches!(err, ProtocolError::MessageTooBig { len, max: m } if m == max && len as usize <= max + 1),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(close_code_sent(&mut conn), Some(1009));
    assert!(events(&mut conn).is_empty());
}

#[test]
fn many_small_compressed_fragments_are_held_to_the_limit() {
    let now = start();
    let max = 256 << 10;
    let bomb = compressed(&vec![b'a'; 4 << 20]);
    let mut conn = server(with(Limits::default(), |l| l.max_message_size = max));
    let pieces: Vec<&[u8]> = bomb.chunks(64).collect();
    let mut result = Ok(());
    for (i, piece) in pieces.iter().enumerate() {
        let (rsv, opcode) = if i == 0 {
            (RSV1, TEXT)
        } else {
            (0, CONTINUATION)
        };
        result = feed(&mut conn, now, &client_frame(false, rsv, opcode, piece));
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert!(
        matches!(err, ProtocolError::MessageTooBig { .. }),
        "{err:?}"
    );
    assert_eq!(close_code_sent(&mut conn), Some(1009));
}

#[test]
fn invalid_deflate_data_is_closed_with_1007() {
    let now = start();
    let mut conn = server(Limits::default());
    let err = feed(
        &mut conn,
        now,
        &client_frame(true, RSV1, BINARY, &[0xff; 8]),
    )
    .unwrap_err();
    assert_eq!(err, ProtocolError::InvalidCompressedData);
    assert_eq!(close_code_sent(&mut conn), Some(1007));
}

#[test]
fn compressed_invalid_utf8_is_closed_with_1007() {
    let now = start();
    let mut conn = server(Limits::default());
    let data = compressed(b"valid so far \xff\xfe");
    let err = feed(&mut conn, now, &client_frame(true, RSV1, TEXT, &data)).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
    assert_eq!(close_code_sent(&mut conn), Some(1007));
}

#[test]
fn idle_connection_without_context_takeover_holds_no_zlib_state() {
    let mut pair = deflate_pair(DeflateConfig::default());
    let text = "hold nothing between messages ".repeat(20);
    pair.client
        .send(pair.now, Message::text(text.clone()))
        .unwrap();
    pair.server.send(pair.now, Message::text(text)).unwrap();
    pair.drive();
    assert_eq!(pair.server_events().len(), 1);
    assert!(!pair.server.holds_deflate_streams());

    let keep = keep_context();
    let mut pair = deflate_pair(keep);
    pair.client
        .send(pair.now, Message::text("x".repeat(100)))
        .unwrap();
    pair.server
        .send(pair.now, Message::text("y".repeat(100)))
        .unwrap();
    pair.drive();
    assert!(pair.server.holds_deflate_streams());
}

#[test]
fn one_encoded_frame_goes_to_many_connections() {
    let mut pairs: Vec<Pair> = (0..3)
        .map(|_| deflate_pair(DeflateConfig::default()))
        .collect();
    let encoding = pairs[0].server.frame_encoding().unwrap();
    assert!(matches!(encoding, FrameEncoding::Deflate { .. }));
    let text = "{\"channel\":\"prices\",\"data\":{\"price\":42}} ".repeat(30);
    let encoded = encoding.encode(&Message::text(text.clone())).unwrap();
    assert!(encoded.is_compressed());
    assert!(encoded.as_bytes().len() < text.len() / 4);
    for pair in &mut pairs {
        assert_eq!(pair.server.frame_encoding(), Some(encoding));
        pair.server.send_encoded(&encoded).unwrap();
        pair.drive();
        assert_eq!(
            pair.client_events(),
            vec![Event::Message(Message::text(text.clone()))]
        );
    }
}

#[test]
fn a_shared_frame_between_context_takeover_messages_decodes() {
    let keep = keep_context();
    let mut pair = deflate_pair(keep);
    let text = "context takeover across a shared frame ".repeat(10);
    let shared = pair
        .server
        .frame_encoding()
        .unwrap()
        .encode(&Message::text("a shared publication ".repeat(10)))
        .unwrap();
    pair.server
        .send(pair.now, Message::text(text.clone()))
        .unwrap();
    pair.server.send_encoded(&shared).unwrap();
    pair.server
        .send(pair.now, Message::text(text.clone()))
        .unwrap();
    pair.drive();
    let received = pair.client_events();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2], Event::Message(Message::text(text)));
}

#[test]
fn encoded_frames_are_refused_where_they_do_not_fit() {
    let now = start();
    let compressed = FrameEncoding::Deflate {
        max_window_bits: 15,
        level: 6,
        threshold: 0,
    }
    .encode(&Message::text("x".repeat(100)))
    .unwrap();
    let mut plain = Connection::new(Role::Server, Config::default(), now);
    assert_eq!(
        plain.send_encoded(&compressed),
        Err(UsageError::EncodingMismatch)
    );
    let (_, mut small_window) = negotiate(with(DeflateConfig::default(), |c| {
        c.server_max_window_bits = Some(10);
    }));
    small_window.threshold = 0;
    let mut conn = Connection::new(Role::Server, Config::default(), now);
    conn.set_deflate(small_window);
    assert_eq!(
        conn.send_encoded(&compressed),
        Err(UsageError::EncodingMismatch)
    );
    let mut client = Connection::new(Role::Client, Config::default(), now);
    assert_eq!(client.frame_encoding(), None);
    assert_eq!(
        client.send_encoded(&FrameEncoding::Plain.encode(&Message::text("x")).unwrap()),
        Err(UsageError::EncodedFrameOnClient)
    );
    assert_eq!(
        FrameEncoding::Plain.encode(&Message::Ping(Bytes::new())),
        Err(UsageError::NotDataMessage)
    );
    // A plain encoded frame fits every server connection.
    let plain_frame = FrameEncoding::Plain.encode(&Message::text("hi")).unwrap();
    conn.send_encoded(&plain_frame).unwrap();
    assert_eq!(transmit(&mut conn), b"\x81\x02hi");
}

#[test]
fn client_told_to_use_an_eight_bit_window_sends_uncompressed() {
    let offer = keep_context();
    let response =
        ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", Some("8"));
    let negotiated = DeflateConfig::check_response(&[offer], &[response])
        .unwrap()
        .unwrap();
    let now = start();
    let mut client = Connection::new(Role::Client, quiet(), now);
    client.set_deflate(negotiated);
    client.send(now, Message::text("z".repeat(500))).unwrap();
    let frames = decode_frames(&transmit(&mut client));
    assert_eq!((frames[0].rsv, frames[0].payload.len()), (0, 500));
}

#[test]
fn an_encoded_frame_shows_its_payload_after_each_header_form() {
    for len in [10, 200, 70_000] {
        let text = "x".repeat(len);
        let frame = FrameEncoding::Plain
            .encode(&Message::Text(text.clone().into()))
            .unwrap();
        assert_eq!(frame.payload(), text.as_bytes());
        assert!(frame.as_bytes().ends_with(text.as_bytes()));
        assert!(frame.as_bytes().len() > len);
    }
}
