//! Size limits (frame, message, fragment count): checked from a frame's
//! header, before its payload is buffered, and answered with 1009.

mod common;

use bytes::BytesMut;
use tether_proto::{CloseCode, Connection, Event, Limits, Message, ProtocolError, Role, State};

use common::{
    BINARY, CONTINUATION, KEY, TEXT, assert_refused, events, feed, from_client, header, quiet,
    start, with,
};

const MIB: usize = 1 << 20;

fn small_limits() -> Limits {
    with(Limits::default(), |limits| {
        limits.max_frame_size = 100;
        limits.max_message_size = 250;
        limits.max_fragments = 4;
    })
}

fn server_with(limits: Limits) -> Connection {
    Connection::new(Role::Server, with(quiet(), |c| c.limits = limits), start())
}

#[test]
fn defaults_are_16_mib_frames_64_mib_messages_100k_fragments() {
    let limits = Limits::default();
    assert_eq!(limits.max_frame_size, 16 * MIB);
    assert_eq!(limits.max_message_size, 64 * MIB);
    assert_eq!(limits.max_fragments, 100_000);
}

#[test]
fn gigabyte_frame_is_refused_from_its_header_alone() {
    for opcode in [TEXT, BINARY] {
        // 14 header bytes announcing 1 GiB; not one payload byte follows.
        let wire = header(true, 0, opcode, Some(KEY), 1 << 30);
        assert_eq!(wire.len(), 14);
        assert_refused(
            Role::Server,
            quiet(),
            &wire,
            &ProtocolError::FrameTooBig {
                len: 1 << 30,
                max: 16 * MIB,
            },
            CloseCode::MESSAGE_TOO_BIG,
        );
    }
}

#[test]
fn client_refuses_oversized_frame_from_its_header() {
    let limit = with(Limits::default(), |l| l.max_frame_size = 1000);
    assert_refused(
        Role::Client,
        with(quiet(), |c| c.limits = limit),
        &header(false, 0, BINARY, None, 1001),
        &ProtocolError::FrameTooBig {
            len: 1001,
            max: 1000,
        },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn largest_64_bit_length_is_refused_as_too_big() {
    let len = (1u64 << 63) - 1;
    assert_refused(
        Role::Server,
        quiet(),
        &header(true, 0, BINARY, Some(KEY), len),
        &ProtocolError::FrameTooBig { len, max: 16 * MIB },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn frame_at_the_limit_is_accepted() {
    let mut conn = server_with(small_limits());
    feed(&mut conn, start(), &from_client(true, BINARY, &[7; 100])).unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Message(Message::binary(vec![7; 100]))]
    );
}

#[test]
fn frame_one_past_the_limit_is_refused() {
    assert_refused(
        Role::Server,
        with(quiet(), |c| c.limits = small_limits()),
        &header(true, 0, BINARY, Some(KEY), 101),
        &ProtocolError::FrameTooBig { len: 101, max: 100 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn continuation_past_the_message_limit_is_refused_from_its_header() {
    let mut wire = from_client(false, TEXT, &[b'a'; 100]);
    wire.extend(from_client(false, CONTINUATION, &[b'b'; 100]));
    // 200 so far; a 51-byte continuation would make 251 > 250.
    wire.extend(header(true, 0, CONTINUATION, Some(KEY), 51));
    assert_refused(
        Role::Server,
        with(quiet(), |c| c.limits = small_limits()),
        &wire,
        &ProtocolError::MessageTooBig { len: 251, max: 250 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn message_at_the_limit_is_accepted() {
    let mut wire = from_client(false, BINARY, &[1; 100]);
    wire.extend(from_client(false, CONTINUATION, &[2; 100]));
    wire.extend(from_client(true, CONTINUATION, &[3; 50]));
    let mut conn = server_with(small_limits());
    feed(&mut conn, start(), &wire).unwrap();
    let events = events(&mut conn);
    assert!(
        matches!(events.as_slice(), [Event::Message(m)] if m.len() == 250),
        "{events:?}"
    );
}

#[test]
fn single_frame_larger_than_the_message_limit_is_refused() {
    let limits = with(Limits::default(), |l| {
        l.max_frame_size = 1000;
        l.max_message_size = 10;
    });
    assert_refused(
        Role::Server,
        with(quiet(), |c| c.limits = limits),
        &header(true, 0, TEXT, Some(KEY), 11),
        &ProtocolError::MessageTooBig { len: 11, max: 10 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn fragment_count_at_the_limit_is_accepted() {
    let mut wire = from_client(false, TEXT, b"a");
    wire.extend(from_client(false, CONTINUATION, b"b"));
    wire.extend(from_client(false, CONTINUATION, b"c"));
    wire.extend(from_client(true, CONTINUATION, b"d"));
    let mut conn = server_with(small_limits());
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(events(&mut conn), [Event::Message(Message::text("abcd"))]);
}

#[test]
fn fragment_past_the_limit_is_refused_from_its_header() {
    let mut wire = from_client(false, TEXT, b"a");
    for _ in 0..3 {
        wire.extend(from_client(false, CONTINUATION, b"b"));
    }
    wire.extend(header(true, 0, CONTINUATION, Some(KEY), 1));
    assert_refused(
        Role::Server,
        with(quiet(), |c| c.limits = small_limits()),
        &wire,
        &ProtocolError::TooManyFragments { max: 4 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn hundred_thousand_and_one_empty_continuations_are_too_many() {
    let now = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    let continuation = from_client(false, CONTINUATION, b"");
    // The first frame plus 99,999 continuations: exactly the default limit.
    let mut buf = BytesMut::from(&from_client(false, BINARY, b"")[..]);
    for _ in 0..99_999 {
        buf.extend_from_slice(&continuation);
    }
    conn.receive(now, &mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(conn.state(), State::Open);
    // The 100,000th continuation (fragment 100,001) is one too many.
    buf.extend_from_slice(&continuation);
    buf.extend_from_slice(&continuation);
    assert_eq!(
        conn.receive(now, &mut buf),
        Err(ProtocolError::TooManyFragments { max: 100_000 })
    );
    assert_eq!(conn.state(), State::Closed);
    let frames = common::decode_frames(&common::transmit(&mut conn));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].close_code(), Some(1009));
}

#[test]
fn control_frames_do_not_count_as_fragments() {
    let mut wire = from_client(false, BINARY, b"a");
    for _ in 0..10 {
        wire.extend(from_client(true, common::PING, b""));
    }
    wire.extend(from_client(true, CONTINUATION, b"b"));
    let mut conn = server_with(small_limits());
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(
        events(&mut conn).last(),
        Some(&Event::Message(Message::binary(&b"ab"[..])))
    );
}

#[test]
fn limits_reset_between_messages() {
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend(from_client(false, BINARY, &[0; 100]));
        wire.extend(from_client(false, CONTINUATION, &[0; 100]));
        wire.extend(from_client(false, CONTINUATION, &[0; 25]));
        wire.extend(from_client(true, CONTINUATION, &[0; 25]));
    }
    let mut conn = server_with(small_limits());
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(events(&mut conn).len(), 3);
}

#[test]
fn frame_limit_error_says_it_is_a_limit() {
    let error = ProtocolError::FrameTooBig { len: 2, max: 1 };
    assert!(error.is_limit());
    assert!(!ProtocolError::UnmaskedFrame.is_limit());
    assert!(!ProtocolError::InvalidUtf8.is_limit());
}
