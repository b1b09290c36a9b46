//! Fragmented messages (§5.4): reassembly, continuation rules, control frames
//! in the middle of a message, and UTF-8 validation that fails fast (§8.1).

mod common;

use bytes::Bytes;
use tether_proto::{CloseCode, Connection, Event, Message, ProtocolError, Role, State};

use common::{
    BINARY, CONTINUATION, PING, PONG, TEXT, assert_refused, decode_frames, events, feed,
    from_client, quiet, start, transmit,
};

fn server() -> Connection {
    Connection::new(Role::Server, quiet(), start())
}

/// Frames that split `payload` at `cuts`, the first with `opcode`.
fn fragments(opcode: u8, payload: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(payload.len());
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let op = if i == 0 { opcode } else { CONTINUATION };
            let fin = w[1] == payload.len() && i == cuts.len();
            from_client(fin, op, &payload[w[0]..w[1]])
        })
        .collect()
}

#[test]
fn fragmented_text_is_reassembled() {
    let mut conn = server();
    let frames = fragments(TEXT, b"Hello, world", &[3, 5, 5, 11]);
    for (i, frame) in frames.iter().enumerate() {
        feed(&mut conn, start(), frame).unwrap();
        let events = events(&mut conn);
        if i + 1 < frames.len() {
            assert!(events.is_empty(), "fragment {i}: {events:?}");
        } else {
            assert_eq!(events, [Event::Message(Message::text("Hello, world"))]);
        }
    }
}

#[test]
fn fragmented_binary_is_reassembled() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut conn = server();
    feed(
        &mut conn,
        start(),
        &fragments(BINARY, &payload, &[1, 100, 200]).concat(),
    )
    .unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Message(Message::binary(payload))]
    );
}

#[test]
fn empty_fragments_make_an_empty_message() {
    let mut conn = server();
    let mut wire = from_client(false, TEXT, b"");
    wire.extend(from_client(false, CONTINUATION, b""));
    wire.extend(from_client(true, CONTINUATION, b""));
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(events(&mut conn), [Event::Message(Message::text(""))]);
}

#[test]
fn control_frames_interleave_with_fragments() {
    let mut conn = server();
    let mut wire = from_client(false, TEXT, b"Hel");
    wire.extend(from_client(true, PING, b"1"));
    wire.extend(from_client(false, CONTINUATION, b"l"));
    wire.extend(from_client(true, PONG, b"2"));
    wire.extend(from_client(true, CONTINUATION, b"o"));
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(
        events(&mut conn),
        [
            Event::Ping(Bytes::from_static(b"1")),
            Event::Pong(Bytes::from_static(b"2")),
            Event::Message(Message::text("Hello")),
        ]
    );
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].opcode, frames[0].payload.as_slice()),
        (PONG, &b"1"[..])
    );
}

#[test]
fn ping_in_a_fragmented_message_is_answered_before_it_ends() {
    let mut conn = server();
    let mut wire = from_client(false, BINARY, b"a");
    wire.extend(from_client(true, PING, b"now"));
    feed(&mut conn, start(), &wire).unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].opcode, frames[0].payload.as_slice()),
        (PONG, &b"now"[..])
    );
}

#[test]
fn messages_follow_each_other_after_reassembly() {
    let mut conn = server();
    let mut wire = fragments(TEXT, b"one", &[1]).concat();
    wire.extend(from_client(true, BINARY, b"two"));
    wire.extend(fragments(BINARY, b"three", &[2, 4]).concat());
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(
        events(&mut conn),
        [
            Event::Message(Message::text("one")),
            Event::Message(Message::binary(&b"two"[..])),
            Event::Message(Message::binary(&b"three"[..])),
        ]
    );
}

#[test]
fn continuation_without_a_message_is_refused() {
    for fin in [true, false] {
        assert_refused(
            Role::Server,
            quiet(),
            &from_client(fin, CONTINUATION, b"x"),
            &ProtocolError::UnexpectedContinuation,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn continuation_after_a_finished_message_is_refused() {
    let mut wire = fragments(TEXT, b"done", &[2]).concat();
    wire.extend(from_client(true, CONTINUATION, b"x"));
    let events = assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::UnexpectedContinuation,
        CloseCode::PROTOCOL_ERROR,
    );
    assert_eq!(events, [Event::Message(Message::text("done"))]);
}

#[test]
fn new_message_during_a_fragmented_one_is_refused() {
    for (first, second) in [
        (TEXT, TEXT),
        (TEXT, BINARY),
        (BINARY, TEXT),
        (BINARY, BINARY),
    ] {
        for fin in [true, false] {
            let mut wire = from_client(false, first, b"a");
            wire.extend(from_client(fin, second, b"b"));
            assert_refused(
                Role::Server,
                quiet(),
                &wire,
                &ProtocolError::ExpectedContinuation,
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

#[test]
fn invalid_utf8_in_a_single_frame_is_refused_with_1007() {
    for bad in [
        &[0xff][..],
        &[0xc0, 0xaf],
        &[0xed, 0xa0, 0x80],
        &[0xf4, 0x90, 0x80, 0x80],
        &[0xe2, 0x82],
    ] {
        assert_refused(
            Role::Server,
            quiet(),
            &from_client(true, TEXT, bad),
            &ProtocolError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        );
    }
}

#[test]
fn invalid_first_fragment_fails_before_the_message_ends() {
    // κόσμε, then the start of a UTF-16 surrogate (0xed 0xa0): invalid
    // already, so the error must come now, not with the final fragment.
    let mut first = "κόσμε".as_bytes().to_vec();
    first.extend_from_slice(&[0xed, 0xa0, 0x80]);
    first.extend_from_slice(b"edited");
    assert_refused(
        Role::Server,
        quiet(),
        &from_client(false, TEXT, &first),
        &ProtocolError::InvalidUtf8,
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn invalid_prefix_at_the_end_of_a_fragment_fails_at_once() {
    // 0xf4 0x90 can start no code point (above U+10FFFF), even though the
    // fragment ends inside the sequence.
    let mut wire = from_client(false, TEXT, b"ok");
    wire.extend(from_client(false, CONTINUATION, &[b'a', 0xf4, 0x90]));
    assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::InvalidUtf8,
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn invalid_middle_fragment_fails_before_the_message_ends() {
    let mut wire = from_client(false, TEXT, b"valid ");
    wire.extend(from_client(false, CONTINUATION, b"still valid "));
    wire.extend(from_client(false, CONTINUATION, &[0xce, 0xba, 0xff]));
    assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::InvalidUtf8,
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn code_point_split_across_fragments_is_valid() {
    let text = "a€b𝄞c";
    let bytes = text.as_bytes();
    // Cut at every position, including inside each multi-byte sequence.
    for cut in 0..=bytes.len() {
        let mut conn = server();
        feed(&mut conn, start(), &fragments(TEXT, bytes, &[cut]).concat()).unwrap();
        assert_eq!(
            events(&mut conn),
            [Event::Message(Message::text(text))],
            "cut {cut}"
        );
    }
    // One byte per fragment.
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    let mut conn = server();
    feed(&mut conn, start(), &fragments(TEXT, bytes, &cuts).concat()).unwrap();
    assert_eq!(events(&mut conn), [Event::Message(Message::text(text))]);
}

#[test]
fn truncated_code_point_at_the_end_of_a_message_is_refused() {
    let mut wire = from_client(false, TEXT, &[b'a', 0xf0, 0x9f]);
    wire.extend(from_client(true, CONTINUATION, &[0x98]));
    assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::InvalidUtf8,
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn binary_messages_are_not_checked_for_utf8() {
    let mut conn = server();
    let wire = fragments(BINARY, &[0xff, 0xed, 0xa0, 0x80, 0xf0], &[1, 3]).concat();
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Message(Message::binary(
            &[0xff, 0xed, 0xa0, 0x80, 0xf0][..]
        ))]
    );
}

#[test]
fn close_during_a_fragmented_message_drops_it() {
    let mut conn = server();
    let mut wire = from_client(false, TEXT, b"never finished");
    wire.extend(from_client(
        true,
        common::CLOSE,
        &common::close_payload(1000, b""),
    ));
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(conn.state(), State::Closed);
    let events = events(&mut conn);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], Event::Closed { .. }));
}
