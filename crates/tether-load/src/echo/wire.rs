//! The echo client's own framing: masked frames encoded straight into one
//! write buffer, and echoes checked straight from the read buffer, with no
//! allocation and no copy per message.
//!
//! `tether`'s `WebSocket` would do the same work through message queues
//! and owned payloads, which costs the load generator more CPU per message
//! than the server it measures spends. Frame headers are still parsed and
//! written by `tether_proto`, and every rule a client must enforce on
//! server frames (§5.1 unmasked, §5.2 no reserved bits without an
//! extension, §5.4 fragmentation order, §5.5 control frames) is enforced
//! here; a violation ends the connection with an error.
//!
//! ```text
//!  Plan ──► Outbox: header + masked payload, frame after frame ──► one write
//!  one read ──► Inbox: header, payload compared with Plan in place ──► Event
//! ```

use std::io;

use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};
use tether::Error;
use tether_proto::{
    frame::{FrameHeader, OpCode, apply_mask},
    handshake::client::ClientRequest,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::plan::{Header, Plan};
use crate::spread::Target;

/// Longest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest control frame a server can send: header plus payload. The read
/// buffer must hold one whole.
pub(super) const MAX_CONTROL_FRAME: usize = 2 + MAX_CONTROL_PAYLOAD;

/// Outgoing bytes: whole frames, each masked with its own key.
pub(super) struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written to the socket.
    written: usize,
    /// Masking keys: a fresh one per frame. Not a cryptographic generator:
    /// §5.3 asks for keys the application cannot predict, so that a script
    /// cannot choose the bytes a proxy sees; here the payloads are our own
    /// pattern, not a script's, and a fast generator per connection, seeded
    /// from `rand`'s thread generator (itself seeded by the operating
    /// system), gives keys no peer can predict for a few nanoseconds each.
    keys: SmallRng,
    data: OpCode,
}

impl Outbox {
    pub(super) fn new(text: bool) -> Self {
        Self {
            buf: Vec::new(),
            written: 0,
            keys: SmallRng::from_rng(&mut rand::rng()),
            data: if text { OpCode::Text } else { OpCode::Binary },
        }
    }

    /// Appends message `seq` as one masked data frame.
    pub(super) fn push_message(&mut self, plan: &Plan, seq: u64) {
        let start = self.push_header(self.data, plan.size);
        plan.put_payload(seq, &mut self.buf);
        self.mask_from(start);
    }

    /// Appends a masked control frame; `payload` must fit one (§5.5).
    pub(super) fn push_control(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        let start = self.push_header(opcode, payload.len());
        self.buf.extend_from_slice(payload);
        self.mask_from(start);
    }

    /// Appends a close frame with `code` and `reason` (§5.5.1).
    pub(super) fn push_close(&mut self, code: u16, reason: &str) {
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason);
        self.push_control(OpCode::Close, &payload[..2 + reason.len()]);
    }

    /// Writes a header with a fresh masking key; returns where the payload
    /// starts.
    fn push_header(&mut self, opcode: OpCode, len: usize) -> usize {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(self.keys.random()),
            payload_len: len as u64,
        }
        .encode(&mut self.buf);
        self.buf.len()
    }

    /// Masks the payload that starts at `start` with the key just before it.
    fn mask_from(&mut self, start: usize) {
        let mut key = [0; 4];
        key.copy_from_slice(&self.buf[start - 4..start]);
        apply_mask(&mut self.buf[start..], key, 0);
    }

    /// Bytes not yet written.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }

    /// Bytes waiting, written or not: what new frames are measured against.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records that `n` more bytes were written.
    pub(super) fn advance(&mut self, n: usize) {
        self.written += n;
        if self.is_empty() {
            self.buf.clear();
            self.written = 0;
        }
    }
}

/// What the server sent, one event at a time.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event<'a> {
    /// The echo of message `seq` ended after `len` payload bytes.
    Echo {
        seq: u64,
        len: u64,
        verdict: Verdict,
    },
    /// A ping; it wants a pong with this payload.
    Ping(&'a [u8]),
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// How an echo compared with the message it answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Match,
    WrongType,
    WrongPayload,
}

/// Decodes the server's frames and compares every data byte with the plan
/// as it arrives, so neither a frame nor a message is ever buffered whole.
pub(super) struct Inbox {
    /// Sequence number the next echo must carry.
    next_seq: u64,
    /// The data message being received, across its frames.
    message: Option<Incoming>,
    /// Payload bytes of the current data frame not yet seen.
    frame_left: u64,
    /// Whether the current data frame is the message's last.
    frame_fin: bool,
}

/// A data message in progress.
struct Incoming {
    seq: u64,
    header: Header,
    /// Payload bytes seen so far.
    len: u64,
    right_type: bool,
    /// Whether every byte so far matched.
    matches: bool,
}

impl Inbox {
    pub(super) fn new() -> Self {
        Self {
            next_seq: 0,
            message: None,
            frame_left: 0,
            frame_fin: false,
        }
    }

    /// Decodes from the start of `buf`: returns how many bytes it used and
    /// the event they completed. `(0, None)` means more bytes are needed
    /// (at most [`MAX_CONTROL_FRAME`] bytes stay unused).
    pub(super) fn decode<'a>(
        &mut self,
        plan: &Plan,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), String> {
        if self.frame_left > 0 {
            return Ok(self.payload(plan, buf));
        }
        let Some((header, header_len)) = FrameHeader::parse(buf).map_err(|e| e.to_string())? else {
            return Ok((0, None));
        };
        check_server_header(&header)?;
        if header.opcode.is_control() {
            return self.control(header, header_len, buf);
        }
        match (header.opcode, self.message.is_some()) {
            (OpCode::Continuation, false) => {
                return Err(
                    "a continuation frame with no message to continue (RFC 6455 §5.4)".into(),
                );
            }
            (OpCode::Text | OpCode::Binary, true) => {
                return Err("a new message before the last one ended (RFC 6455 §5.4)".into());
            }
            (OpCode::Text | OpCode::Binary, false) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.message = Some(Incoming {
                    seq,
                    header: plan.header(seq),
                    len: 0,
                    right_type: (header.opcode == OpCode::Text) == plan.text,
                    matches: true,
                });
            }
            _ => {}
        }
        self.frame_left = header.payload_len;
        self.frame_fin = header.fin;
        let (used, event) = self.payload(plan, &buf[header_len..]);
        Ok((header_len + used, event))
    }

    /// Checks the current data frame's payload bytes at the start of `buf`;
    /// at the end of the message, says how it compared.
    fn payload<'a>(&mut self, plan: &Plan, buf: &[u8]) -> (usize, Option<Event<'a>>) {
        let used = buf
            .len()
            .min(usize::try_from(self.frame_left).unwrap_or(usize::MAX));
        let chunk = &buf[..used];
        self.frame_left -= used as u64;
        // Invariant: data frames are only read while a message is open.
        let message = self.message.as_mut().expect("a data message is open");
        if message.matches && message.right_type {
            message.matches = usize::try_from(message.len)
                .is_ok_and(|offset| plan.matches_at(message.seq, &message.header, offset, chunk));
        }
        message.len += used as u64;
        if self.frame_left > 0 || !self.frame_fin {
            return (used, None);
        }
        // Invariant: checked just above.
        let message = self.message.take().expect("a data message is open");
        let verdict = if !message.right_type {
            Verdict::WrongType
        } else if message.matches && message.len == plan.size as u64 {
            Verdict::Match
        } else {
            Verdict::WrongPayload
        };
        self.frame_fin = false;
        let event = Event::Echo {
            seq: message.seq,
            len: message.len,
            verdict,
        };
        (used, Some(event))
    }

    /// A control frame, once all of it is in `buf`.
    fn control<'a>(
        &mut self,
        header: FrameHeader,
        header_len: usize,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), String> {
        let end = header_len + header.payload_len as usize;
        let Some(payload) = buf.get(header_len..end) else {
            return Ok((0, None));
        };
        let event = match header.opcode {
            OpCode::Ping => Some(Event::Ping(payload)),
            OpCode::Close => match payload {
                [] => Some(Event::Close(None)),
                [_] => return Err("a close frame with a one-byte payload (RFC 6455 §5.5.1)".into()),
                [high, low, ..] => Some(Event::Close(Some(u16::from_be_bytes([*high, *low])))),
            },
            _ => None,
        };
        Ok((end, event))
    }
}

/// The rules a client without extensions checks on every server frame
/// header (the order of fragments is the caller's to check, §5.4).
pub(crate) fn check_server_header(header: &FrameHeader) -> Result<(), String> {
    if header.mask.is_some() {
        return Err("the server masked a frame (RFC 6455 §5.1)".into());
    }
    if header.rsv != 0 {
        return Err("the server set reserved bits with no extension (RFC 6455 §5.2)".into());
    }
    if header.opcode.is_control()
        && (!header.fin || header.payload_len > MAX_CONTROL_PAYLOAD as u64)
    {
        return Err("a fragmented or oversized control frame (RFC 6455 §5.5)".into());
    }
    Ok(())
}

/// The client handshake (RFC 6455 §4.1) with no extension and no
/// subprotocol; returns the socket and the bytes the server sent after its
/// response.
pub(super) async fn handshake(
    mut tcp: TcpStream,
    target: &Target,
) -> Result<(TcpStream, Vec<u8>), Error> {
    let (request, pending) = ClientRequest::new(&target.host, &target.path).encode();
    tcp.write_all(&request).await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            let eof = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed during the handshake",
            );
            return Err(eof.into());
        }
        if let Some((_response, consumed)) = pending.parse(&buf)? {
            buf.drain(..consumed);
            return Ok((tcp, buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::BytesMut;
    use tether_proto::{Config, Connection, Event as ProtoEvent, Message, Role};

    use super::*;

    /// What a real server-side connection makes of `bytes`.
    fn server_events(bytes: &[u8]) -> Vec<ProtoEvent> {
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, Config::default(), now);
        server.receive(now, &mut BytesMut::from(bytes)).unwrap();
        std::iter::from_fn(|| server.poll_event()).collect()
    }

    /// Echoes of messages `seqs` as a real server frames them.
    fn echoes(plan: &Plan, seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, Config::default(), now);
        for seq in seqs {
            let payload = bytes::Bytes::from(plan.payload(seq));
            let message = if plan.text {
                Message::Text(tether_proto::Utf8Bytes::try_from_bytes(payload).unwrap())
            } else {
                Message::Binary(payload)
            };
            server.send(now, message).unwrap();
        }
        let mut wire = Vec::new();
        loop {
            let mut slices = [io::IoSlice::new(&[]); 16];
            let count = server.transmit_slices(&mut slices);
            if count == 0 {
                return wire;
            }
            let before = wire.len();
            slices[..count]
                .iter()
                .for_each(|s| wire.extend_from_slice(s));
            server.advance_transmit(wire.len() - before);
        }
    }

    /// Feeds `wire` to a fresh inbox `step` bytes at a time, as reads would.
    fn decode_all(plan: &Plan, wire: &[u8], step: usize) -> Result<Vec<String>, String> {
        let mut inbox = Inbox::new();
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            let mut used = 0;
            loop {
                let (n, event) = inbox.decode(plan, &buf[used..])?;
                used += n;
                match event {
                    Some(event) => seen.push(format!("{event:?}")),
                    None if n == 0 => break,
                    None => {}
                }
            }
            buf.drain(..used);
            assert!(buf.len() <= MAX_CONTROL_FRAME);
        }
        Ok(seen)
    }

    fn matched(seqs: impl IntoIterator<Item = u64>, len: usize) -> Vec<String> {
        seqs.into_iter()
            .map(|seq| {
                format!(
                    "{:?}",
                    Event::Echo {
                        seq,
                        len: len as u64,
                        verdict: Verdict::Match
                    }
                )
            })
            .collect()
    }

    #[test]
    fn frames_are_what_a_server_accepts_each_with_a_fresh_key() {
        for (size, text) in [(0, false), (16, false), (126, true), (70_000, false)] {
            let plan = Plan::new(size, text);
            let mut outbox = Outbox::new(text);
            for seq in 0..64 {
                outbox.push_message(&plan, seq);
            }
            outbox.push_control(OpCode::Pong, b"pong");
            outbox.push_close(1000, "done");
            let wire = outbox.pending().to_vec();

            let mut keys = std::collections::HashSet::new();
            let mut at = 0;
            while at < wire.len() {
                let (header, len) = FrameHeader::parse(&wire[at..]).unwrap().unwrap();
                assert!(keys.insert(header.mask.expect("every frame is masked")));
                at += len + header.payload_len as usize;
            }
            assert_eq!(keys.len(), 66, "one key per frame, none repeated");

            let events = server_events(&wire);
            assert_eq!(events.len(), 66, "size {size}");
            for (seq, event) in events.iter().take(64).enumerate() {
                let ProtoEvent::Message(message) = event else {
                    panic!("{event:?}")
                };
                assert_eq!(matches!(message, Message::Text(_)), text);
                assert!(
                    plan.matches(seq as u64, message.as_bytes()),
                    "message {seq}"
                );
            }
            assert!(matches!(&events[64], ProtoEvent::Pong(payload) if payload == "pong"));
            assert!(
                matches!(&events[65], ProtoEvent::Closed { code, .. } if code.0 == 1000),
                "{:?}",
                events[65]
            );
        }
    }

    #[test]
    fn written_bytes_leave_the_outbox() {
        let plan = Plan::new(100, false);
        let mut outbox = Outbox::new(false);
        outbox.push_message(&plan, 0);
        let total = outbox.len();
        outbox.advance(10);
        assert_eq!(outbox.pending().len(), total - 10);
        assert!(!outbox.is_empty());
        outbox.advance(total - 10);
        assert!(outbox.is_empty());
        assert_eq!(outbox.len(), 0, "the buffer is reused from its start");
    }

    #[test]
    fn echoes_are_checked_however_reads_split_them() {
        for (size, text) in [(0, false), (16, true), (1000, false), (70_000, false)] {
            let plan = Plan::new(size, text);
            let wire = echoes(&plan, 0..5);
            for step in [1, 7, 100, 4096, wire.len()] {
                assert_eq!(
                    decode_all(&plan, &wire, step).unwrap(),
                    matched(0..5, size),
                    "size {size} step {step}"
                );
            }
        }
    }

    #[test]
    fn a_corrupted_echo_is_reported_and_the_rest_still_match() {
        let plan = Plan::new(1000, false);
        let clean = echoes(&plan, 0..3);
        let frame = clean.len() / 3;
        for flip in [4, frame - 1, frame + 500] {
            let mut wire = clean.clone();
            wire[flip] ^= 0x01;
            let seen = decode_all(&plan, &wire, 64).unwrap();
            let bad = flip / frame;
            for (seq, event) in seen.iter().enumerate() {
                let verdict = if seq == bad {
                    Verdict::WrongPayload
                } else {
                    Verdict::Match
                };
                let expected = Event::Echo {
                    seq: seq as u64,
                    len: 1000,
                    verdict,
                };
                assert_eq!(event, &format!("{expected:?}"), "flip at {flip}");
            }
            assert_eq!(seen.len(), 3);
        }
        // Echoes out of order carry the wrong sequence numbers.
        let swapped = echoes(&plan, [1, 0]);
        let seen = decode_all(&plan, &swapped, 4096).unwrap();
        assert!(
            seen.iter().all(|event| event.contains("WrongPayload")),
            "{seen:?}"
        );
    }

    #[test]
    fn wrong_type_and_wrong_length_are_reported() {
        let plan = Plan::new(16, false);
        let as_text = echoes(&Plan::new(16, true), [0]);
        let seen = decode_all(&plan, &as_text, 4096).unwrap();
        assert!(seen[0].contains("WrongType"), "{seen:?}");
        for size in [15, 17] {
            let mut wire = Vec::new();
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: None,
                payload_len: size as u64,
            }
            .encode(&mut wire);
            let mut payload = plan.payload(0);
            payload.resize(size, 0x5a);
            wire.extend_from_slice(&payload);
            let seen = decode_all(&plan, &wire, 4096).unwrap();
            assert!(seen[0].contains("WrongPayload") && seen[0].contains(&format!("len: {size}")));
        }
    }

    #[test]
    fn fragments_and_control_frames_between_them_are_understood() {
        let plan = Plan::new(100, false);
        let payload = plan.payload(0);
        let mut wire = Vec::new();
        let frame = |wire: &mut Vec<u8>, fin, opcode, payload: &[u8]| {
            FrameHeader {
                fin,
                rsv: 0,
                opcode,
                mask: None,
                payload_len: payload.len() as u64,
            }
            .encode(wire);
            wire.extend_from_slice(payload);
        };
        frame(&mut wire, false, OpCode::Binary, &payload[..30]);
        frame(&mut wire, true, OpCode::Ping, b"hi");
        frame(&mut wire, false, OpCode::Continuation, &payload[30..31]);
        frame(&mut wire, true, OpCode::Pong, b"");
        frame(&mut wire, true, OpCode::Continuation, &payload[31..]);
        frame(&mut wire, true, OpCode::Close, &[0x03, 0xe8]);
        for step in [1, 5, 4096] {
            let seen = decode_all(&plan, &wire, step).unwrap();
            let mut expected = vec![format!("{:?}", Event::Ping(b"hi"))];
            expected.extend(matched([0], 100));
            expected.push(format!("{:?}", Event::Close(Some(1000))));
            assert_eq!(seen, expected, "step {step}");
        }
    }

    #[test]
    fn server_frames_that_break_the_rfc_end_the_connection() {
        let plan = Plan::new(4, false);
        let cases: [(&[u8], &str); 6] = [
            (&[0x82, 0x84, 1, 2, 3, 4, 0, 0, 0, 0], "masked"),
            (&[0xc2, 0x00], "reserved"),
            (&[0x80, 0x00], "continuation"),
            (&[0x02, 0x01, 0, 0x82, 0x00], "new message"),
            (&[0x09, 0x00], "control"),
            (&[0x88, 0x01, 0x03], "one-byte"),
        ];
        for (wire, why) in cases {
            let error = decode_all(&plan, wire, 4096).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }
}
