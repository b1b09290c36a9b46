//! Frame-level rules of §5.2–§5.5: opcodes, RSV bits, masking by role,
//! length encodings and control frames. Each refusal is reached from wire
//! bytes and checked for its close code and the close frame we queue.

mod common;

use bytes::{Bytes, BytesMut};
use tether_proto::{CloseCode, Connection, Event, Message, ProtocolError, Role};

use common::{
    BINARY, CLOSE, CONTINUATION, KEY, PING, PONG, TEXT, assert_refused, events, feed, frame,
    from_client, from_peer_of, from_server, header, quiet, start,
};

const ROLES: [Role; 2] = [Role::Server, Role::Client];

fn mask_for(role: Role) -> Option<[u8; 4]> {
    (role == Role::Server).then_some(KEY)
}

#[test]
fn both_roles_accept_every_defined_opcode() {
    for role in ROLES {
        let mut wire = Vec::new();
        wire.extend(from_peer_of(role, true, TEXT, b"t"));
        wire.extend(from_peer_of(role, true, BINARY, b"b"));
        wire.extend(from_peer_of(role, false, BINARY, b"b1"));
        wire.extend(from_peer_of(role, true, CONTINUATION, b"b2"));
        wire.extend(from_peer_of(role, true, PING, b"pi"));
        wire.extend(from_peer_of(role, true, PONG, b"po"));
        wire.extend(from_peer_of(role, true, CLOSE, &[0x03, 0xe8]));
        let now = start();
        let mut conn = Connection::new(role, quiet(), now);
        feed(&mut conn, now, &wire).unwrap();
        let events = events(&mut conn);
        assert_eq!(events.len(), 6, "{role:?}: {events:?}");
        assert_eq!(events[0], Event::Message(Message::text("t")));
        assert_eq!(events[1], Event::Message(Message::binary(&b"b"[..])));
        assert_eq!(events[2], Event::Message(Message::binary(&b"b1b2"[..])));
        assert_eq!(events[3], Event::Ping(Bytes::from_static(b"pi")));
        assert_eq!(events[4], Event::Pong(Bytes::from_static(b"po")));
        assert!(matches!(
            &events[5],
            Event::Closed { code, .. } if *code == CloseCode::NORMAL
        ));
    }
}

#[test]
fn reserved_opcodes_are_refused_with_1002() {
    for role in ROLES {
        for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_refused(
                role,
                quiet(),
                &frame(true, 0, op, mask_for(role), b"x"),
                &ProtocolError::ReservedOpcode(op),
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

#[test]
fn reserved_opcode_is_refused_from_two_header_bytes() {
    let now = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    assert_eq!(
        feed(&mut conn, now, &[0x83, 0x85]),
        Err(ProtocolError::ReservedOpcode(3))
    );
}

#[test]
fn rsv_bits_are_refused_without_an_extension() {
    for role in ROLES {
        for rsv in 1..=7 {
            for op in [TEXT, BINARY, PING, PONG, CLOSE] {
                assert_refused(
                    role,
                    quiet(),
                    &frame(true, rsv, op, mask_for(role), b""),
                    &ProtocolError::ReservedBitsSet(rsv),
                    CloseCode::PROTOCOL_ERROR,
                );
            }
        }
    }
}

#[test]
fn rsv_bits_on_a_continuation_are_refused() {
    let mut wire = from_client(false, TEXT, b"a");
    wire.extend(frame(true, 0b100, CONTINUATION, Some(KEY), b"b"));
    assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::ReservedBitsSet(0b100),
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn server_refuses_unmasked_frame() {
    for op in [TEXT, BINARY, PING, PONG, CLOSE] {
        assert_refused(
            Role::Server,
            quiet(),
            &from_server(true, op, b""),
            &ProtocolError::UnmaskedFrame,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn client_refuses_masked_frame() {
    for op in [TEXT, BINARY, PING, PONG, CLOSE] {
        assert_refused(
            Role::Client,
            quiet(),
            &from_client(true, op, b""),
            &ProtocolError::MaskedFrame,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn unmasked_continuation_in_a_masked_message_is_refused() {
    let mut wire = from_client(false, BINARY, b"a");
    wire.extend(from_server(true, CONTINUATION, b"b"));
    assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::UnmaskedFrame,
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn all_three_length_forms_are_decoded() {
    for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        for role in ROLES {
            let now = start();
            let mut conn = Connection::new(role, quiet(), now);
            feed(&mut conn, now, &from_peer_of(role, true, BINARY, &payload)).unwrap();
            assert_eq!(
                events(&mut conn),
                [Event::Message(Message::binary(payload.clone()))],
                "{role:?} {len}"
            );
        }
    }
}

#[test]
fn length_with_msb_set_is_refused() {
    for role in ROLES {
        let mut wire = vec![0x82, 127 | if role == Role::Server { 0x80 } else { 0 }];
        wire.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
        wire.extend_from_slice(&KEY[..if role == Role::Server { 4 } else { 0 }]);
        assert_refused(
            role,
            quiet(),
            &wire,
            &ProtocolError::LengthMsbSet,
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn control_frame_of_125_bytes_is_accepted() {
    let payload = [b'x'; 125];
    for role in ROLES {
        let now = start();
        let mut conn = Connection::new(role, quiet(), now);
        let mut wire = from_peer_of(role, true, PING, &payload);
        wire.extend(from_peer_of(role, true, PONG, &payload));
        feed(&mut conn, now, &wire).unwrap();
        assert_eq!(
            events(&mut conn),
            [
                Event::Ping(Bytes::copy_from_slice(&payload)),
                Event::Pong(Bytes::copy_from_slice(&payload)),
            ]
        );
    }
}

#[test]
fn control_frame_over_125_bytes_is_refused_at_its_header() {
    for role in ROLES {
        for op in [PING, PONG, CLOSE] {
            for len in [126, 65535, 1 << 40] {
                // Only the header: the refusal must not wait for the payload.
                assert_refused(
                    role,
                    quiet(),
                    &header(true, 0, op, mask_for(role), len),
                    &ProtocolError::ControlFrameTooLong(len),
                    CloseCode::PROTOCOL_ERROR,
                );
            }
        }
    }
}

#[test]
fn fragmented_control_frame_is_refused() {
    for role in ROLES {
        for op in [PING, PONG, CLOSE] {
            assert_refused(
                role,
                quiet(),
                &from_peer_of(role, false, op, b""),
                &ProtocolError::FragmentedControlFrame,
                CloseCode::PROTOCOL_ERROR,
            );
        }
    }
}

#[test]
fn events_before_a_bad_frame_are_kept() {
    let mut wire = from_client(true, TEXT, b"first");
    wire.extend(from_client(true, PING, b"p"));
    wire.extend(from_server(true, TEXT, b"unmasked"));
    wire.extend(from_client(true, TEXT, b"never seen"));
    let events = assert_refused(
        Role::Server,
        quiet(),
        &wire,
        &ProtocolError::UnmaskedFrame,
        CloseCode::PROTOCOL_ERROR,
    );
    assert_eq!(
        events,
        [
            Event::Message(Message::text("first")),
            Event::Ping(Bytes::from_static(b"p")),
        ]
    );
}

#[test]
fn partial_frame_stays_in_the_buffer() {
    let wire = from_client(true, BINARY, b"hello world");
    let now = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
    conn.receive(now, &mut buf).unwrap();
    assert_eq!(
        buf.len(),
        wire.len() - 1,
        "an incomplete frame is not consumed"
    );
    assert!(conn.poll_event().is_none());
    assert_eq!(conn.frame_len_hint(&buf), Some(wire.len()));
    buf.extend_from_slice(&wire[wire.len() - 1..]);
    conn.receive(now, &mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(
        events(&mut conn),
        [Event::Message(Message::binary(&b"hello world"[..]))]
    );
}

#[test]
fn frame_len_hint_refuses_bad_headers() {
    let conn = Connection::new(Role::Server, quiet(), start());
    assert_eq!(conn.frame_len_hint(&[0x82]), None, "incomplete header");
    assert_eq!(conn.frame_len_hint(&from_server(true, BINARY, b"x")), None);
    assert_eq!(
        conn.frame_len_hint(&header(true, 0, BINARY, Some(KEY), 1 << 30)),
        None
    );
    assert_eq!(
        conn.frame_len_hint(&header(true, 0, BINARY, Some(KEY), 300)),
        Some(2 + 2 + 4 + 300)
    );
}

#[test]
fn last_frame_len_follows_data_frames_and_ignores_control_frames() {
    let now = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    assert_eq!(conn.last_frame_len(), 0);
    feed(&mut conn, now, &from_client(true, BINARY, &[7; 70_000])).unwrap();
    assert_eq!(conn.last_frame_len(), 2 + 8 + 4 + 70_000);
    feed(&mut conn, now, &from_client(true, PING, b"ping")).unwrap();
    assert_eq!(conn.last_frame_len(), 2 + 8 + 4 + 70_000, "a ping");
    // Only a whole frame counts: a header alone changes nothing.
    let next = from_client(false, TEXT, &[b'a'; 300]);
    let mut buf = BytesMut::from(&next[..10]);
    conn.receive(now, &mut buf).unwrap();
    assert_eq!(conn.last_frame_len(), 2 + 8 + 4 + 70_000, "half a frame");
    buf.extend_from_slice(&next[10..]);
    conn.receive(now, &mut buf).unwrap();
    assert_eq!(conn.last_frame_len(), 2 + 2 + 4 + 300);
    feed(&mut conn, now, &from_client(true, CONTINUATION, b"z")).unwrap();
    assert_eq!(conn.last_frame_len(), 2 + 4 + 1);
    assert_eq!(events(&mut conn).len(), 3, "binary, ping, text");
}
