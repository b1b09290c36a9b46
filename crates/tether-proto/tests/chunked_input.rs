//! Properties of `Connection::receive` over arbitrary input:
//!
//! - feeding the same bytes in any split gives the same events, the same
//!   result and the same bytes to transmit as feeding them at once;
//! - for a generated conversation (fragmented text and binary messages with
//!   pings and pongs in between, masked as a client would), those events are
//!   exactly the messages that were sent;
//! - garbage never panics, and every text message it yields is UTF-8.

mod common;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proptest::{
    collection::vec, option, prelude::*, sample::Index, test_runner::FileFailurePersistence,
};
use tether_proto::{CloseCode, Connection, Event, Initiator, Message, ProtocolError, Role};

use common::{
    BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, WireFrame, close_payload, decode_frames, events,
    frame, quiet, start, transmit,
};

/// Failing cases are saved next to this file (`chunked_input.proptest-regressions`)
/// and replayed first on the next run.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// What one connection made of some input.
#[derive(Debug, PartialEq)]
struct Outcome {
    result: Result<(), ProtocolError>,
    events: Vec<Event>,
    /// Decoded, since a client's masking keys differ from run to run.
    transmitted: Vec<WireFrame>,
}

/// Feeds `input` to a fresh connection of `role`, cut at `cuts` (sorted
/// offsets), draining events after every chunk and the transmit queue at the
/// end. Stops at the first error, as a caller would.
fn run(role: Role, input: &[u8], cuts: &[usize]) -> Outcome {
    let now = start();
    let mut conn = Connection::new(role, quiet(), now);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut result = Ok(());
    let mut from = 0;
    for &to in cuts.iter().chain([&input.len()]) {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        result = conn.receive(now, &mut buf);
        events.extend(common::events(&mut conn));
        if result.is_err() {
            break;
        }
    }
    for event in &events {
        if let Event::Message(message @ Message::Text(text)) = event {
            assert!(std::str::from_utf8(message.as_bytes()).is_ok());
            assert_eq!(message.as_text(), Some(&**text));
        }
    }
    Outcome {
        result,
        events,
        transmitted: decode_frames(&transmit(&mut conn)),
    }
}

/// Sorted, distinct cut offsets inside `len` bytes.
fn offsets(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// A control frame: ping or pong with a payload of at most 125 bytes.
#[derive(Debug, Clone)]
struct Control {
    opcode: u8,
    payload: Vec<u8>,
}

/// A data message, its fragment boundaries and the control frames sent
/// after each non-final fragment.
#[derive(Debug, Clone)]
struct DataMessage {
    opcode: u8,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    between: Vec<Option<Control>>,
}

#[derive(Debug, Clone)]
enum Step {
    Data(DataMessage),
    Control(Control),
}

fn control() -> impl Strategy<Value = Control> {
    (
        prop_oneof![Just(PING), Just(PONG)],
        vec(any::<u8>(), 0..=125),
    )
        .prop_map(|(opcode, payload)| Control { opcode, payload })
}

fn data_message() -> impl Strategy<Value = DataMessage> {
    let text = vec(any::<char>(), 0..40)
        .prop_map(|chars| (TEXT, chars.into_iter().collect::<String>().into_bytes()));
    let binary = vec(any::<u8>(), 0..300).prop_map(|bytes| (BINARY, bytes));
    prop_oneof![text, binary].prop_flat_map(|(opcode, payload)| {
        let len = payload.len();
        (
            Just(opcode),
            Just(payload),
            vec(0..=len, 0..5),
            vec(option::weighted(0.3, control()), 5),
        )
            .prop_map(|(opcode, payload, mut cuts, between)| {
                cuts.sort_unstable();
                DataMessage {
                    opcode,
                    payload,
                    cuts,
                    between,
                }
            })
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => data_message().prop_map(Step::Data),
        1 => control().prop_map(Step::Control),
    ]
}

/// An optional closing frame: a sendable code and a UTF-8 reason.
fn closing() -> impl Strategy<Value = Option<(u16, String)>> {
    option::of((
        prop_oneof![1000..=1003u16, 1007..=1014u16, 3000..=4999u16],
        "[a-zé]{0,20}",
    ))
}

/// Masking keys as a client draws them: a new one for every frame.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> Option<[u8; 4]> {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Some(
            (self.0 >> 32).to_le_bytes()[..4]
                .try_into()
                .expect("4 bytes"),
        )
    }
}

/// Encodes the conversation as the peer of `role` would, and the events the
/// receiving side should report.
fn encode(
    role: Role,
    steps: &[Step],
    close: &Option<(u16, String)>,
    seed: u64,
) -> (Vec<u8>, Vec<Event>) {
    let mut keys = Keys(seed);
    let mut key = || {
        if role == Role::Server {
            keys.next()
        } else {
            None
        }
    };
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let control_frame = |wire: &mut Vec<u8>, expected: &mut Vec<Event>, c: &Control, key| {
        wire.extend(frame(true, 0, c.opcode, key, &c.payload));
        let payload = Bytes::copy_from_slice(&c.payload);
        expected.push(match c.opcode {
            PING => Event::Ping(payload),
            _ => Event::Pong(payload),
        });
    };
    for step in steps {
        match step {
            Step::Control(c) => control_frame(&mut wire, &mut expected, c, key()),
            Step::Data(m) => {
                let bounds: Vec<usize> = [0]
                    .into_iter()
                    .chain(m.cuts.iter().copied())
                    .chain([m.payload.len()])
                    .collect();
                let last = bounds.len() - 2;
                for (i, w) in bounds.windows(2).enumerate() {
                    let opcode = if i == 0 { m.opcode } else { CONTINUATION };
                    wire.extend(frame(i == last, 0, opcode, key(), &m.payload[w[0]..w[1]]));
                    if i < last {
                        if let Some(c) = &m.between[i] {
                            control_frame(&mut wire, &mut expected, c, key());
                        }
                    }
                }
                expected.push(Event::Message(match m.opcode {
                    TEXT => Message::text(String::from_utf8(m.payload.clone()).expect("text")),
                    _ => Message::binary(m.payload.clone()),
                }));
            }
        }
    }
    if let Some((code, reason)) = close {
        wire.extend(frame(
            true,
            0,
            CLOSE,
            key(),
            &close_payload(*code, reason.as_bytes()),
        ));
        expected.push(Event::Closed {
            code: CloseCode(*code),
            reason: reason.clone(),
            initiator: Initiator::Peer,
        });
        // Anything after the close frame must be ignored.
        wire.extend(frame(true, 0, TEXT, key(), b"after close"));
    }
    (wire, expected)
}

/// Frames with arbitrary first bytes (FIN, RSV, opcode), the mask bit mostly
/// as the receiving role expects, and short payloads: garbage that gets past
/// the first header check often enough to reach the deeper rules.
fn garbage_frames() -> impl Strategy<Value = Vec<u8>> {
    vec(
        (
            any::<u8>(),
            prop::bool::weighted(0.9),
            any::<[u8; 4]>(),
            prop_oneof![vec(any::<u8>(), 0..10), vec(any::<u8>(), 120..130)],
        ),
        0..12,
    )
    .prop_map(|frames| {
        frames
            .into_iter()
            .flat_map(|(b0, masked, key, payload)| {
                let opcode = b0 & 0xf;
                // Mostly defined opcodes, so the stream is not refused at once.
                let opcode = if b0 & 0x40 == 0 { opcode % 3 } else { opcode };
                let rsv = if b0 & 0x20 == 0 { 0 } else { (b0 >> 4) & 0x7 };
                frame(b0 & 0x80 != 0, rsv, opcode, masked.then_some(key), &payload)
            })
            .collect()
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_split_of_a_conversation_yields_the_same_events(
        role in role(),
        steps in vec(step(), 0..8),
        close in closing(),
        seed in any::<u64>(),
        picks in vec(any::<Index>(), 0..24),
    ) {
        let (wire, expected) = encode(role, &steps, &close, seed);
        let at_once = run(role, &wire, &[]);
        prop_assert_eq!(&at_once.result, &Ok(()));
        prop_assert_eq!(&at_once.events, &expected);
        let split = run(role, &wire, &offsets(wire.len(), &picks));
        prop_assert_eq!(&split, &at_once);
    }

    #[test]
    fn byte_by_byte_input_yields_the_same_events(
        role in role(),
        steps in vec(step(), 0..4),
        close in closing(),
        seed in any::<u64>(),
    ) {
        let (wire, _) = encode(role, &steps, &close, seed);
        let every_byte: Vec<usize> = (1..wire.len()).collect();
        prop_assert_eq!(run(role, &wire, &every_byte), run(role, &wire, &[]));
    }

    #[test]
    fn garbage_bytes_never_panic(
        role in role(),
        bytes in vec(any::<u8>(), 0..2048),
        picks in vec(any::<Index>(), 0..16),
    ) {
        let at_once = run(role, &bytes, &[]);
        let split = run(role, &bytes, &offsets(bytes.len(), &picks));
        prop_assert_eq!(split, at_once);
    }

    #[test]
    fn garbage_frames_never_panic_and_split_alike(
        role in role(),
        bytes in garbage_frames(),
        picks in vec(any::<Index>(), 0..16),
    ) {
        let at_once = run(role, &bytes, &[]);
        if let Err(error) = &at_once.result {
            // A refusal queues a close frame with the error's code.
            let code = error.close_code().0.to_be_bytes();
            let last = at_once.transmitted.last().expect("a close frame");
            prop_assert_eq!(last.opcode, CLOSE);
            prop_assert_eq!(&last.payload[..2], &code[..]);
        }
        let split = run(role, &bytes, &offsets(bytes.len(), &picks));
        prop_assert_eq!(split, at_once);
    }
}

/// Text bytes that are mostly UTF-8, with stray bytes that may break it.
fn nearly_text() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Index of the first fragment whose `receive` fails, if any.
fn failing_fragment(payload: &[u8], cuts: &[usize]) -> Option<usize> {
    let now = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    let bounds: Vec<usize> = [0]
        .into_iter()
        .chain(cuts.iter().copied())
        .chain([payload.len()])
        .collect();
    let last = bounds.len() - 2;
    bounds.windows(2).enumerate().position(|(i, w)| {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        let wire = frame(
            i == last,
            0,
            opcode,
            Some(common::KEY),
            &payload[w[0]..w[1]],
        );
        match common::feed(&mut conn, now, &wire) {
            Ok(()) => false,
            Err(error) => {
                assert_eq!(error, ProtocolError::InvalidUtf8);
                true
            }
        }
    })
}

proptest! {
    #![proptest_config(config())]

    /// §8.1 fail fast: a fragmented text message is refused by the fragment
    /// holding the first byte that proves it invalid, never later and never
    /// when it is valid.
    #[test]
    fn invalid_utf8_is_refused_by_the_fragment_that_proves_it(
        payload in nearly_text(),
        picks in vec(any::<Index>(), 0..8),
    ) {
        let cuts = offsets(payload.len(), &picks);
        let failed = failing_fragment(&payload, &cuts);
        match std::str::from_utf8(&payload) {
            Ok(_) => prop_assert_eq!(failed, None),
            Err(error) => {
                let fragment_of = |byte: usize| cuts.iter().filter(|&&cut| cut <= byte).count();
                let latest = match error.error_len() {
                    // The byte after the bad sequence proves it at the latest.
                    Some(len) => fragment_of((error.valid_up_to() + len).min(payload.len() - 1)),
                    // Cut short: only the end of the message proves it.
                    None => cuts.len(),
                };
                let earliest = fragment_of(error.valid_up_to());
                let failed = failed.expect("invalid text is refused");
                prop_assert!(failed <= latest, "failed at {failed}, proven by {latest}");
                prop_assert!(failed >= earliest, "failed at {failed}, valid until {earliest}");
            }
        }
    }
}

/// The virtual clock is unused here; `receive` only needs some instant.
#[test]
fn receive_with_empty_input_does_nothing() {
    let now: Instant = start();
    let mut conn = Connection::new(Role::Server, quiet(), now);
    conn.receive(now, &mut BytesMut::new()).unwrap();
    assert!(events(&mut conn).is_empty());
    assert!(transmit(&mut conn).is_empty());
}
