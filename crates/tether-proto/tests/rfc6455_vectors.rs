//! The RFC 6455 §5.7 example frames, byte for byte: decoded by the role that
//! may receive them, refused by the one that may not, and reproduced by our
//! encoder. (The §1.3 accept key is tested with the handshake.)

mod common;

use bytes::Bytes;
use tether_proto::{Connection, Event, Message, ProtocolError, Role};

use common::{BINARY, PING, PONG, TEXT, decode_frames, events, feed, quiet, start, transmit};

/// §5.7: a single-frame unmasked text message "Hello".
const UNMASKED_HELLO: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
/// §5.7: a single-frame masked text message "Hello".
const MASKED_HELLO: [u8; 11] = [
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];
/// §5.7: a fragmented unmasked text message, first fragment "Hel".
const FRAGMENT_HEL: [u8; 5] = [0x01, 0x03, 0x48, 0x65, 0x6c];
/// §5.7: the final fragment "lo".
const FRAGMENT_LO: [u8; 4] = [0x80, 0x02, 0x6c, 0x6f];
/// §5.7: an unmasked ping whose body is "Hello".
const UNMASKED_PING: [u8; 7] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
/// §5.7: the masked pong answering it.
const MASKED_PONG: [u8; 11] = [
    0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];
/// §5.7: the header of a 256-byte unmasked binary message (16-bit length).
const BINARY_256_HEADER: [u8; 4] = [0x82, 0x7e, 0x01, 0x00];
/// §5.7: the header of a 64 KiB unmasked binary message (64-bit length).
const BINARY_64K_HEADER: [u8; 10] = [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];

fn server() -> Connection {
    Connection::new(Role::Server, quiet(), start())
}

fn client() -> Connection {
    Connection::new(Role::Client, quiet(), start())
}

fn text(s: &'static str) -> Event {
    Event::Message(Message::text(s))
}

/// A payload whose bytes differ, so a misplaced byte shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn client_decodes_unmasked_hello() {
    let mut conn = client();
    feed(&mut conn, start(), &UNMASKED_HELLO).unwrap();
    assert_eq!(events(&mut conn), [text("Hello")]);
    assert!(transmit(&mut conn).is_empty());
}

#[test]
fn server_decodes_masked_hello() {
    let mut conn = server();
    feed(&mut conn, start(), &MASKED_HELLO).unwrap();
    assert_eq!(events(&mut conn), [text("Hello")]);
    assert!(transmit(&mut conn).is_empty());
}

#[test]
fn server_refuses_unmasked_hello() {
    let mut conn = server();
    assert_eq!(
        feed(&mut conn, start(), &UNMASKED_HELLO),
        Err(ProtocolError::UnmaskedFrame)
    );
    assert!(events(&mut conn).is_empty());
}

#[test]
fn client_refuses_masked_hello() {
    let mut conn = client();
    assert_eq!(
        feed(&mut conn, start(), &MASKED_HELLO),
        Err(ProtocolError::MaskedFrame)
    );
    assert!(events(&mut conn).is_empty());
}

#[test]
fn client_reassembles_fragmented_hello() {
    let mut conn = client();
    feed(&mut conn, start(), &FRAGMENT_HEL).unwrap();
    assert!(
        events(&mut conn).is_empty(),
        "nothing before the final fragment"
    );
    feed(&mut conn, start(), &FRAGMENT_LO).unwrap();
    assert_eq!(events(&mut conn), [text("Hello")]);
}

#[test]
fn client_answers_unmasked_ping_with_masked_pong() {
    let mut conn = client();
    feed(&mut conn, start(), &UNMASKED_PING).unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Ping(Bytes::from_static(b"Hello"))]
    );
    let sent = transmit(&mut conn);
    // The key is random, so compare everything but the key.
    assert_eq!(sent.len(), MASKED_PONG.len());
    assert_eq!(sent[..2], MASKED_PONG[..2]);
    let frames = decode_frames(&sent);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].opcode, frames[0].masked),
        (PONG, true),
        "{frames:?}"
    );
    assert_eq!(frames[0].payload, b"Hello");
}

#[test]
fn server_decodes_masked_pong() {
    let mut conn = server();
    feed(&mut conn, start(), &MASKED_PONG).unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Pong(Bytes::from_static(b"Hello"))]
    );
    assert!(transmit(&mut conn).is_empty(), "a pong is not answered");
}

#[test]
fn client_decodes_256_byte_binary_with_16_bit_length() {
    let payload = pattern(256);
    let mut wire = BINARY_256_HEADER.to_vec();
    wire.extend_from_slice(&payload);
    let mut conn = client();
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Message(Message::binary(payload))]
    );
}

#[test]
fn client_decodes_64k_binary_with_64_bit_length() {
    let payload = pattern(65536);
    let mut wire = BINARY_64K_HEADER.to_vec();
    wire.extend_from_slice(&payload);
    let mut conn = client();
    feed(&mut conn, start(), &wire).unwrap();
    assert_eq!(
        events(&mut conn),
        [Event::Message(Message::binary(payload))]
    );
}

#[test]
fn server_encodes_hello_as_in_the_rfc() {
    let mut conn = server();
    conn.send(start(), Message::text("Hello")).unwrap();
    assert_eq!(transmit(&mut conn), UNMASKED_HELLO);
}

#[test]
fn server_encodes_ping_as_in_the_rfc() {
    let mut conn = server();
    conn.send(start(), Message::Ping(Bytes::from_static(b"Hello")))
        .unwrap();
    assert_eq!(transmit(&mut conn), UNMASKED_PING);
}

#[test]
fn server_encodes_unmasked_pong() {
    let mut conn = server();
    conn.send(start(), Message::Pong(Bytes::from_static(b"Hello")))
        .unwrap();
    // The RFC's pong is masked (a client's); unmask it for the server role.
    assert_eq!(
        transmit(&mut conn),
        [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );
}

#[test]
fn server_encodes_256_byte_binary_with_16_bit_length() {
    let payload = pattern(256);
    let mut conn = server();
    conn.send(start(), Message::binary(payload.clone()))
        .unwrap();
    let mut expected = BINARY_256_HEADER.to_vec();
    expected.extend_from_slice(&payload);
    assert_eq!(transmit(&mut conn), expected);
}

#[test]
fn server_encodes_64k_binary_with_64_bit_length() {
    let payload = pattern(65536);
    let mut conn = server();
    conn.send(start(), Message::binary(payload.clone()))
        .unwrap();
    let mut expected = BINARY_64K_HEADER.to_vec();
    expected.extend_from_slice(&payload);
    assert_eq!(transmit(&mut conn), expected);
}

#[test]
fn client_masks_hello_with_a_fresh_key() {
    let mut conn = client();
    conn.send(start(), Message::text("Hello")).unwrap();
    conn.send(start(), Message::text("Hello")).unwrap();
    let sent = transmit(&mut conn);
    let frames = decode_frames(&sent);
    assert_eq!(frames.len(), 2);
    for frame in &frames {
        assert!(frame.fin && frame.masked && frame.rsv == 0);
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (TEXT, &b"Hello"[..])
        );
    }
    // Same header bytes as the RFC's masked example.
    assert_eq!(sent[..2], MASKED_HELLO[..2]);
    // §5.3: a new key per frame (equal keys have a 2^-32 chance).
    assert_ne!(sent[2..6], sent[13..17], "two frames, one masking key");
}

#[test]
fn client_masks_every_length_form() {
    let mut conn = client();
    for len in [0, 125, 126, 65535, 65536] {
        conn.send(start(), Message::binary(pattern(len))).unwrap();
    }
    conn.send(start(), Message::Ping(Bytes::from_static(b"p")))
        .unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    let lens: Vec<_> = frames.iter().map(|f| f.payload.len()).collect();
    assert_eq!(lens, [0, 125, 126, 65535, 65536, 1]);
    assert!(frames.iter().all(|f| f.masked));
    assert_eq!(frames[4].payload, pattern(65536));
    assert_eq!(frames[5].opcode, PING);
    assert_eq!(frames[0].opcode, BINARY);
}
