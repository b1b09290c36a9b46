//! What each echo message holds, so that every echo can be checked byte for
//! byte without keeping a copy of what was sent.

use std::ops::Range;

use tether_proto::frame::OpCode;

use crate::framing::Outbox;

/// Patterns repeat after this many sequence numbers (a prime, so the pattern
/// shifts by a different amount for each of them).
const PATTERN_PERIOD: usize = 251;

/// What each message holds: its sequence number (little-endian for binary,
/// 16 hex digits for text, cut to the payload size), then a pattern that
/// shifts with the sequence number. Text payloads are ASCII.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) size: usize,
    pub(super) text: bool,
    /// `Text` or `Binary`, as `text` says.
    data: OpCode,
    /// `size + PATTERN_PERIOD` bytes; message `seq` takes its body from
    /// offset `seq % PATTERN_PERIOD`.
    pattern: Vec<u8>,
}

impl Plan {
    pub(super) fn new(size: usize, text: bool) -> Self {
        let pattern = (0..size + PATTERN_PERIOD)
            .map(|i| {
                if text {
                    b'a' + (i % 26) as u8
                } else {
                    (i % 256) as u8 ^ 0x5a
                }
            })
            .collect();
        Self {
            size,
            text,
            data: if text { OpCode::Text } else { OpCode::Binary },
            pattern,
        }
    }

    /// The sequence number as it appears at the start of the payload: its
    /// low-order bytes (binary) or hex digits (text) when the payload is short.
    pub(super) fn header(&self, seq: u64) -> Header {
        if self.text {
            return self.text_header(seq);
        }
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        Header {
            bytes,
            range: 0..self.size.min(8),
        }
    }

    /// Kept out of line: inlined, its digit loop ran for binary payloads too
    /// (an eighth of the load generator's user-space instructions per 16 B
    /// message).
    #[inline(never)]
    fn text_header(&self, seq: u64) -> Header {
        let mut bytes = [0; 16];
        for (i, digit) in bytes.iter_mut().enumerate() {
            let nibble = (seq >> (60 - 4 * i)) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        Header {
            bytes,
            range: 16 - self.size.min(16)..16,
        }
    }

    fn body(&self, seq: u64, header_len: usize) -> &[u8] {
        let offset = (seq % PATTERN_PERIOD as u64) as usize;
        &self.pattern[offset..offset + self.size - header_len]
    }

    /// Appends message `seq` to `outbox` as one masked data frame.
    #[inline]
    pub(super) fn push_message(&self, outbox: &mut Outbox, seq: u64) {
        outbox.push_frame_with(self.data, self.size, |out| self.put_payload(seq, out));
    }

    /// Appends the payload of message `seq` to `out`.
    pub(super) fn put_payload(&self, seq: u64, out: &mut Vec<u8>) {
        let header = self.header(seq);
        out.extend_from_slice(header.as_slice());
        out.extend_from_slice(self.body(seq, header.range.len()));
    }

    /// Whether `chunk`, found `offset` bytes into the payload of message
    /// `seq` (whose [`Plan::header`] is `header`), is what was sent there.
    pub(super) fn matches_at(
        &self,
        seq: u64,
        header: &Header,
        offset: usize,
        chunk: &[u8],
    ) -> bool {
        let Some(end) = offset
            .checked_add(chunk.len())
            .filter(|&end| end <= self.size)
        else {
            return false;
        };
        let head = header.as_slice();
        let (in_head, in_body) = chunk.split_at(head.len().clamp(offset, end) - offset);
        let head_from = offset.min(head.len());
        let body_from = offset.max(head.len()) - head.len();
        in_head == &head[head_from..head_from + in_head.len()]
            && in_body == &self.body(seq, head.len())[body_from..body_from + in_body.len()]
    }

    /// Whether `data` is the whole payload of message `seq`.
    #[cfg(test)]
    pub(super) fn matches(&self, seq: u64, data: &[u8]) -> bool {
        data.len() == self.size && self.matches_at(seq, &self.header(seq), 0, data)
    }

    /// The payload of message `seq`, for tests.
    #[cfg(test)]
    pub(super) fn payload(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.put_payload(seq, &mut out);
        out
    }
}

/// The sequence number part of a payload.
pub(super) struct Header {
    bytes: [u8; 16],
    range: Range<usize>,
}

impl Header {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::BytesMut;
    use tether_proto::{
        Config, Connection, Event as ProtoEvent, Message, Role, frame::FrameHeader,
    };

    use super::*;

    /// What a real server-side connection makes of `bytes`.
    fn server_events(bytes: &[u8]) -> Vec<ProtoEvent> {
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, Config::default(), now);
        server.receive(now, &mut BytesMut::from(bytes)).unwrap();
        std::iter::from_fn(|| server.poll_event()).collect()
    }

    #[test]
    fn frames_are_what_a_server_accepts_each_with_a_fresh_key() {
        for (size, text) in [(0, false), (16, false), (126, true), (70_000, false)] {
            let plan = Plan::new(size, text);
            let mut outbox = Outbox::new();
            for seq in 0..64 {
                plan.push_message(&mut outbox, seq);
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
    fn payloads_carry_their_sequence_number() {
        for (size, text) in [
            (0, false),
            (3, false),
            (16, false),
            (100, false),
            (5, true),
            (16, true),
            (1000, true),
        ] {
            let plan = Plan::new(size, text);
            for seq in [0, 1, 250, 251, 1 << 40] {
                let payload = plan.payload(seq);
                assert_eq!(payload.len(), size);
                assert!(plan.matches(seq, &payload));
                if text {
                    assert!(std::str::from_utf8(&payload).is_ok());
                }
            }
            if size >= 2 {
                assert!(!plan.matches(1, &plan.payload(2)), "size {size}");
                let mut flipped = plan.payload(7);
                flipped[size - 1] ^= 1;
                assert!(!plan.matches(7, &flipped));
            }
        }
    }

    #[test]
    fn any_piece_of_a_payload_matches_where_it_belongs() {
        for (size, text) in [(3, false), (20, false), (40, true)] {
            let plan = Plan::new(size, text);
            let seq = 1234;
            let header = plan.header(seq);
            let payload = plan.payload(seq);
            for start in 0..=size {
                for end in start..=size {
                    let piece = &payload[start..end];
                    assert!(
                        plan.matches_at(seq, &header, start, piece),
                        "{start}..{end}"
                    );
                    if !piece.is_empty() {
                        let mut bad = piece.to_vec();
                        bad[end - start - 1] ^= 0x20;
                        assert!(
                            !plan.matches_at(seq, &header, start, &bad),
                            "{start}..{end}"
                        );
                    }
                }
                // Past the end of the payload nothing matches.
                let too_long = vec![0; size + 1 - start];
                assert!(!plan.matches_at(seq, &header, start, &too_long));
            }
        }
    }
}
