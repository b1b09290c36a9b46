//! Compressed messages (RFC 7692) into a connection that negotiated
//! permessage-deflate, and our own compressor's output back through it.
//!
//! Input layout: one control byte (context takeover, fragment size, text or
//! binary), then the payload. Checks, besides "never panics":
//! - the payload, taken as a compressed message split into fragments, either
//!   fails the connection or inflates to exactly what a fresh zlib stream
//!   makes of it, never past the message limit;
//! - the payload sent by one deflate connection arrives unchanged at another
//!   (with the threshold at zero, so every message is compressed).
#![no_main]

use std::{io::IoSlice, time::Instant};

use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;
use tether_proto::{
    Config, Connection, Event, Message, Role,
    deflate::{DeflateConfig, PerMessageDeflate},
    handshake::extensions::ExtensionOffer,
};

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&control, payload)) = data.split_first() else {
        return;
    };
    let (client, server) = negotiate(control & 1 == 1);
    inflate(server, control, payload);
    round_trip(client, server, control, payload);
});

/// The two ends of a negotiation, with or without context takeover.
fn negotiate(keep_context: bool) -> (PerMessageDeflate, PerMessageDeflate) {
    let mut config = DeflateConfig::default();
    config.server_no_context_takeover = !keep_context;
    config.client_no_context_takeover = !keep_context;
    config.threshold = 0;
    let offer = ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None);
    let (response, server) = config.accept(&[offer]).expect("a plain offer is accepted");
    let client = DeflateConfig::check_response(&[config], &[response])
        .expect("our own response is valid")
        .expect("deflate accepted");
    (client, server)
}

fn connection(role: Role, deflate: PerMessageDeflate) -> Connection {
    let mut config = Config::default();
    config.limits.max_message_size = MAX_MESSAGE;
    let mut conn = Connection::new(role, config, Instant::now());
    conn.set_deflate(deflate);
    conn
}

fn inflate(deflate: PerMessageDeflate, control: u8, payload: &[u8]) {
    let now = Instant::now();
    let mut conn = connection(Role::Server, deflate);
    let text = control & 2 == 2;
    let fragment = usize::from(control >> 2) + 1;
    let mut bytes = BytesMut::new();
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(fragment).collect()
    };
    for (i, piece) in pieces.iter().enumerate() {
        let first = i == 0;
        let fin = i + 1 == pieces.len();
        let opcode = match (first, text) {
            (false, _) => 0x0,
            (true, true) => 0x1,
            (true, false) => 0x2,
        };
        masked_frame(&mut bytes, fin, first, opcode, piece);
    }
    let result = conn.receive(now, &mut bytes);
    let mut messages = Vec::new();
    while let Some(event) = conn.poll_event() {
        if let Event::Message(message) = event {
            messages.push(message);
        }
    }
    match (result, messages.as_slice()) {
        (Ok(()), [message]) => {
            assert!(message.len() <= MAX_MESSAGE);
            assert_eq!(message.as_bytes(), reference_inflate(payload).as_slice());
            if text {
                assert!(std::str::from_utf8(message.as_bytes()).is_ok());
            }
        }
        (Ok(()), []) => {}
        (Ok(()), more) => panic!("one message became {}", more.len()),
        (Err(_), []) => {}
        (Err(error), _) => panic!("a message and an error ({error})"),
    }
}

/// What a fresh raw zlib stream makes of `payload` plus the sync tail, up
/// to the end of the stream.
fn reference_inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut decompress = Decompress::new(false);
    let mut out = Vec::with_capacity(2 * MAX_MESSAGE);
    loop {
        let before = (decompress.total_in(), decompress.total_out());
        if out.len() == out.capacity() {
            out.reserve(MAX_MESSAGE);
        }
        let consumed = before.0 as usize;
        match decompress.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
            Ok(Status::StreamEnd) => return out,
            Ok(_)
                if out.len() < out.capacity() && decompress.total_in() as usize == input.len() =>
            {
                return out;
            }
            Ok(_) if (decompress.total_in(), decompress.total_out()) == before => return out,
            Ok(_) => {}
            Err(error) => panic!("our inflate accepted what zlib refuses: {error}"),
        }
    }
}

fn round_trip(client: PerMessageDeflate, server: PerMessageDeflate, control: u8, payload: &[u8]) {
    let now = Instant::now();
    let mut sender = connection(Role::Client, client);
    let mut receiver = connection(Role::Server, server);
    let payload = &payload[..payload.len().min(MAX_MESSAGE)];
    let message = if control & 2 == 2 {
        match std::str::from_utf8(payload) {
            Ok(text) => Message::text(text.to_owned()),
            Err(_) => Message::binary(payload.to_vec()),
        }
    } else {
        Message::binary(payload.to_vec())
    };
    for _ in 0..2 {
        sender.send(now, message.clone()).expect("open");
        let mut wire = BytesMut::new();
        loop {
            let mut slices = [IoSlice::new(&[]); 16];
            let count = sender.transmit_slices(&mut slices);
            if count == 0 {
                break;
            }
            let before = wire.len();
            for slice in &slices[..count] {
                wire.extend_from_slice(slice);
            }
            sender.advance_transmit(wire.len() - before);
        }
        receiver
            .receive(now, &mut wire)
            .expect("our own frames are valid");
        assert_eq!(receiver.poll_event(), Some(Event::Message(message.clone())));
    }
}

fn masked_frame(out: &mut BytesMut, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
    let key = [0xa5, 0x5a, 0x0f, 0xf0];
    out.extend_from_slice(&[u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode]);
    match payload.len() {
        len @ 0..=125 => out.extend_from_slice(&[0x80 | len as u8]),
        len => {
            out.extend_from_slice(&[0x80 | 126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}
