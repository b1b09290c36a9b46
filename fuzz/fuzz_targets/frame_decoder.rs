//! Peer bytes into `Connection::receive`, for a server and for a client.
//!
//! Input layout: one control byte (limits, clock steps), up to three bytes
//! of chunk sizes (the rest is fed in chunks of those sizes, cycling), then
//! the bytes from the peer. Checks, besides "never panics":
//! - every text message is UTF-8 and `as_text()` agrees with
//!   `std::str::from_utf8`, which exercises the `unsafe` in
//!   `Utf8Bytes::as_str`;
//! - whatever the connection writes in answer (pongs, close replies, close
//!   frames after an error, keepalive pings) is accepted by a connection of
//!   the opposite role.
#![no_main]

use std::{
    io::IoSlice,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether_proto::{Config, Connection, Event, Keepalive, Limits, Message, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (sizes, input) = rest.split_at(rest.len().min(3));
    for role in [Role::Server, Role::Client] {
        decode(role, control, sizes, input);
    }
});

fn decode(role: Role, control: u8, sizes: &[u8], input: &[u8]) {
    let mut limits = Limits::default();
    if control & 1 == 1 {
        // Small enough for short inputs to reach every limit.
        limits.max_frame_size = 64;
        limits.max_message_size = 200;
        limits.max_fragments = 5;
    }
    let keepalive = Keepalive {
        interval: Some(Duration::from_secs(1)),
        timeout: Duration::from_secs(1),
    };
    let mut config = Config::default();
    config.limits = limits;
    config.keepalive = keepalive;
    let step = Duration::from_millis(250 * u64::from((control >> 1) & 7));
    let mut now = Instant::now();
    let mut conn = Connection::new(role, config, now);

    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut size = sizes.iter().map(|&s| usize::from(s) + 1).cycle();
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.next().unwrap_or(rest.len()).min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        let result = conn.receive(now, &mut buf);
        check_events(&mut conn);
        if result.is_err() {
            break;
        }
        now += step;
        conn.handle_timeout(now);
        check_events(&mut conn);
    }

    // Our answer must be valid input for the other side.
    let peer_role = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut peer = Connection::new(peer_role, Config::default(), now);
    let mut written = BytesMut::new();
    loop {
        let mut slices = [IoSlice::new(&[]); 16];
        let count = conn.transmit_slices(&mut slices);
        if count == 0 {
            break;
        }
        let before = written.len();
        for slice in &slices[..count] {
            written.extend_from_slice(slice);
        }
        conn.advance_transmit(written.len() - before);
    }
    assert_eq!(conn.buffered_amount(), 0);
    if let Err(error) = peer.receive(now, &mut written) {
        panic!("{role:?} wrote bytes its peer refuses: {error}");
    }
    check_events(&mut peer);
}

fn check_events(conn: &mut Connection) {
    while let Some(event) = conn.poll_event() {
        if let Event::Message(message @ Message::Text(_)) = event {
            let checked = std::str::from_utf8(message.as_bytes());
            assert!(checked.is_ok(), "text message is not UTF-8");
            assert_eq!(message.as_text(), checked.ok());
        }
    }
}
