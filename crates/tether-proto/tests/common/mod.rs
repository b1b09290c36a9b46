//! Shared test helpers: frames built by hand, a hand-written decoder for what
//! a connection transmits, and an in-memory client/server [`Pair`] driven by
//! a virtual clock.
//!
//! The frame builder and decoder deliberately do not use `tether_proto::frame`,
//! so the tests check the crate against an independent reading of §5.2.
#![allow(
    dead_code,
    reason = "each test file is its own crate and uses a different subset; #[expect] would be unfulfilled in some"
)]

use std::{
    io::IoSlice,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tether_proto::{CloseCode, Config, Connection, Event, Keepalive, ProtocolError, Role, State};

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// The masking key of the RFC 6455 §5.7 examples.
pub(crate) const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A real instant to start virtual clocks from. Tests only ever add to it.
#[expect(
    clippy::disallowed_methods,
    reason = "the virtual clock needs one real starting point; the core itself never reads it"
)]
pub(crate) fn start() -> Instant {
    Instant::now()
}

/// A config without keepalive, so tests that are not about it see no pings.
pub(crate) fn quiet() -> Config {
    with(Config::default(), |config| {
        config.keepalive = Keepalive::OFF;
        config.idle_timeout = None;
    })
}

/// `value` after `change`: a configuration, which is plain data, set up in
/// one expression.
pub(crate) fn with<T>(mut value: T, change: impl FnOnce(&mut T)) -> T {
    change(&mut value);
    value
}

/// The header of a frame: FIN, RSV bits (RSV1 = 0b100), opcode, optional
/// masking key and the declared payload length in its shortest form.
pub(crate) fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | (rsv & 0x7) << 4 | (opcode & 0xf)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame; the payload is masked with `mask` if given.
pub(crate) fn frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = header(fin, rsv, opcode, mask, payload.len() as u64);
    out.extend(mask_bytes(payload, mask));
    out
}

/// A frame as a client sends it (masked with [`KEY`]).
pub(crate) fn from_client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, Some(KEY), payload)
}

/// A frame as a server sends it (unmasked).
pub(crate) fn from_server(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, None, payload)
}

/// A frame as the peer of `role` sends it.
pub(crate) fn from_peer_of(role: Role, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    match role {
        Role::Server => from_client(fin, opcode, payload),
        Role::Client => from_server(fin, opcode, payload),
    }
}

/// A close payload: big-endian code, then the reason bytes.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

fn mask_bytes(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    match mask {
        Some(key) => payload
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect(),
        None => payload.to_vec(),
    }
}

/// One frame as decoded by [`decode_frames`], payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireFrame {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) masked: bool,
    pub(crate) payload: Vec<u8>,
}

impl WireFrame {
    /// The close code this frame carries, if it is a close frame with one.
    pub(crate) fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (CLOSE, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }
}

/// Decodes a byte stream of whole frames; panics on a truncated one.
pub(crate) fn decode_frames(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated header: {bytes:x?}");
        let (b0, b1) = (bytes[0], bytes[1]);
        let mut at = 2;
        let len = match b1 & 0x7f {
            126 => {
                at += 2;
                u64::from(u16::from_be_bytes([bytes[2], bytes[3]]))
            }
            127 => {
                at += 8;
                u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"))
            }
            short => u64::from(short),
        };
        let masked = b1 & 0x80 != 0;
        let key = masked.then(|| {
            let key: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
            at += 4;
            key
        });
        let end = at + usize::try_from(len).expect("length fits usize");
        assert!(bytes.len() >= end, "truncated payload");
        frames.push(WireFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0xf,
            masked,
            payload: mask_bytes(&bytes[at..end], key),
        });
        bytes = &bytes[end..];
    }
    frames
}

/// Everything `conn` has queued to write, concatenated, taken as a
/// transport takes it: the slices `transmit_slices` offers, then
/// `advance_transmit` by their length.
pub(crate) fn transmit(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut slices = [IoSlice::new(&[]); 16];
        let count = conn.transmit_slices(&mut slices);
        if count == 0 {
            return out;
        }
        let before = out.len();
        for slice in &slices[..count] {
            out.extend_from_slice(slice);
        }
        conn.advance_transmit(out.len() - before);
    }
}

/// Every queued event, oldest first.
pub(crate) fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// Feeds `bytes` to `conn` in one call.
pub(crate) fn feed(conn: &mut Connection, now: Instant, bytes: &[u8]) -> Result<(), ProtocolError> {
    conn.receive(now, &mut BytesMut::from(bytes))
}

/// Feeds `bytes` to a fresh connection of `role` and checks the §7.1.7
/// failure path: `receive` returns `expected`, whose close code is `code`;
/// the connection is closed and has queued exactly one close frame carrying
/// `code`, masked as `role` requires. Returns the events decoded before the
/// bad frame.
pub(crate) fn assert_refused(
    role: Role,
    config: Config,
    bytes: &[u8],
    expected: &ProtocolError,
    code: CloseCode,
) -> Vec<Event> {
    let now = start();
    let mut conn = Connection::new(role, config, now);
    assert_eq!(feed(&mut conn, now, bytes).as_ref(), Err(expected));
    assert_eq!(expected.close_code(), code, "{expected}");
    assert_eq!(conn.state(), State::Closed);
    let frames = decode_frames(&transmit(&mut conn));
    let closes: Vec<_> = frames.iter().filter(|f| f.opcode == CLOSE).collect();
    assert_eq!(closes.len(), 1, "one close frame: {frames:?}");
    assert_eq!(closes[0].close_code(), Some(code.0), "{frames:?}");
    assert_eq!(closes[0].masked, role == Role::Client);
    assert!(
        std::str::from_utf8(&closes[0].payload[2..]).is_ok(),
        "reason is UTF-8"
    );
    assert!(closes[0].payload.len() <= 125);
    assert!(conn.is_finished());
    // Whatever follows is ignored: no second error, no second close frame.
    assert_eq!(feed(&mut conn, now, bytes), Ok(()));
    assert!(transmit(&mut conn).is_empty());
    events(&mut conn)
}

/// A client and a server connected in memory, with a virtual clock that the
/// test advances by hand.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) client: Connection,
    pub(crate) server: Connection,
    pub(crate) now: Instant,
    /// Bytes written by the client that the server has not consumed yet.
    to_server: BytesMut,
    /// Bytes written by the server that the client has not consumed yet.
    to_client: BytesMut,
}

impl Pair {
    /// Both ends with keepalive off.
    pub(crate) fn new() -> Self {
        Self::with_config(quiet(), quiet())
    }

    pub(crate) fn with_config(client: Config, server: Config) -> Self {
        let now = start();
        Self {
            client: Connection::new(Role::Client, client, now),
            server: Connection::new(Role::Server, server, now),
            now,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    /// Moves bytes both ways until neither side has anything left to write.
    /// Panics if either side reports a protocol error: a pair of our own
    /// connections must always agree.
    pub(crate) fn drive(&mut self) {
        for _ in 0..100 {
            let client_out = transmit(&mut self.client);
            let server_out = transmit(&mut self.server);
            if client_out.is_empty() && server_out.is_empty() {
                return;
            }
            self.to_server.extend_from_slice(&client_out);
            self.to_client.extend_from_slice(&server_out);
            self.server
                .receive(self.now, &mut self.to_server)
                .expect("server accepts what the client sent");
            self.client
                .receive(self.now, &mut self.to_client)
                .expect("client accepts what the server sent");
        }
        panic!("the pair never went quiet");
    }

    /// Advances the clock by `by`, running each side's timers at the moments
    /// they asked for (in order), without delivering any bytes meanwhile:
    /// as if the network were silent for that long.
    pub(crate) fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        for _ in 0..1000 {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|&t| t <= until)
                .min();
            let Some(next) = next else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
        panic!("timers keep firing without the clock moving");
    }

    pub(crate) fn client_events(&mut self) -> Vec<Event> {
        events(&mut self.client)
    }

    pub(crate) fn server_events(&mut self) -> Vec<Event> {
        events(&mut self.server)
    }
}
