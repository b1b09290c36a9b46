//! The echo client's side of reading: every echo checked against the
//! [`Plan`] piece by piece as [`ServerFrames`] hands its payload on, so that
//! neither a frame nor a message is ever buffered whole.

use tether_proto::frame::OpCode;

use super::plan::{Header, Plan};
use crate::framing::{Frame, ServerFrames};

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

/// Compares every data byte the server sends with the plan as it arrives.
pub(super) struct Inbox {
    frames: ServerFrames,
    /// Sequence number the next echo must carry.
    next_seq: u64,
    /// The data message being received, across its frames.
    message: Option<Incoming>,
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
            frames: ServerFrames::new(),
            next_seq: 0,
            message: None,
        }
    }

    /// Decodes from the start of `buf`: returns how many bytes it used and
    /// the event they completed. `(0, None)` means more bytes are needed
    /// (at most [`crate::framing::MAX_CONTROL_FRAME`] bytes stay unused).
    #[inline]
    pub(super) fn decode<'a>(
        &mut self,
        plan: &Plan,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), String> {
        let (used, frame) = self.frames.decode(buf)?;
        let event = match frame {
            None | Some(Frame::Pong(_)) => None,
            Some(Frame::Data { start, bytes, last }) => self.data(plan, start, bytes, last),
            Some(Frame::Ping(payload)) => Some(Event::Ping(payload)),
            Some(Frame::Close(payload)) => match payload {
                [] => Some(Event::Close(None)),
                [_] => return Err("a close frame with a one-byte payload (RFC 6455 §5.5.1)".into()),
                [high, low, ..] => Some(Event::Close(Some(u16::from_be_bytes([*high, *low])))),
            },
        };
        Ok((used, event))
    }

    /// Checks a piece of an echo's payload; at the end of the echo, says
    /// how it compared.
    #[inline]
    fn data<'a>(
        &mut self,
        plan: &Plan,
        start: Option<OpCode>,
        chunk: &[u8],
        last: bool,
    ) -> Option<Event<'a>> {
        if let Some(opcode) = start {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.message = Some(Incoming {
                seq,
                header: plan.header(seq),
                len: 0,
                right_type: (opcode == OpCode::Text) == plan.text,
                matches: true,
            });
        }
        // Invariant: `ServerFrames` opens a message before any of its data.
        let message = self.message.as_mut().expect("a data message is open");
        if message.matches && message.right_type {
            message.matches = usize::try_from(message.len)
                .is_ok_and(|offset| plan.matches_at(message.seq, &message.header, offset, chunk));
        }
        message.len += chunk.len() as u64;
        if !last {
            return None;
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
        Some(Event::Echo {
            seq: message.seq,
            len: message.len,
            verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{io::IoSlice, time::Instant};

    use tether_proto::{Config, Connection, Message, Role, frame::FrameHeader};

    use super::*;
    use crate::framing::MAX_CONTROL_FRAME;

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
            let mut slices = [IoSlice::new(&[]); 16];
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
