//! zlib streams: owned with context takeover, otherwise borrowed from a
//! per-thread pool for one message.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{MIN_COMPRESS_WINDOW_BITS, PerMessageDeflate};
use crate::ProtocolError;

/// What a sync flush ends with, removed by the sender and put back by the
/// receiver (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Most output one inflate step produces before the size limit is checked
/// again: a message that inflates past its limit costs at most this much
/// beyond it.
pub(crate) const INFLATE_CHUNK: usize = 32 << 10;

/// Idle streams a thread keeps for reuse, per kind.
const POOL_MAX: usize = 8;

thread_local! {
    static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    #[expect(clippy::vec_box, reason = "boxed as a connection holds them: moving one in or out allocates nothing")]
    static DECOMPRESSORS: RefCell<Vec<Box<Decompress>>> = const { RefCell::new(Vec::new()) };
    static INFLATE_OUT: RefCell<Box<[u8]>> = RefCell::new(vec![0; INFLATE_CHUNK].into_boxed_slice());
}

/// A connection's permessage-deflate state.
pub(crate) struct DeflateState {
    settings: PerMessageDeflate,
    /// Only with context takeover on our side. (The streams are boxed: a
    /// zlib-rs stream handle is some 150 bytes, and most connections hold
    /// none.)
    compressor: Option<Box<Compress>>,
    /// Owned with context takeover on the peer's side; otherwise borrowed
    /// from the pool while one message is being inflated.
    decompressor: Option<Box<Decompress>>,
}

impl std::fmt::Debug for DeflateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateState")
            .field("settings", &self.settings)
            .field("compressor", &self.compressor.is_some())
            .field("decompressor", &self.decompressor.is_some())
            .finish()
    }
}

impl DeflateState {
    pub(crate) fn new(settings: PerMessageDeflate) -> Self {
        Self {
            settings,
            compressor: None,
            decompressor: None,
        }
    }

    pub(crate) fn settings(&self) -> &PerMessageDeflate {
        &self.settings
    }

    /// Whether any zlib stream is held (for tests of idle memory).
    pub(crate) fn holds_streams(&self) -> bool {
        self.compressor.is_some() || self.decompressor.is_some()
    }

    /// The compressed payload of a message, or `None` if it goes
    /// uncompressed (below the threshold, or an 8-bit window we cannot make).
    pub(crate) fn compress(&mut self, payload: &[u8]) -> Option<Bytes> {
        let outgoing = self.settings.outgoing;
        if payload.len() < self.settings.threshold
            || outgoing.max_window_bits < MIN_COMPRESS_WINDOW_BITS
        {
            return None;
        }
        if outgoing.no_context_takeover {
            return compress_fresh(outgoing.max_window_bits, self.settings.level, payload);
        }
        let compressor = self.compressor.get_or_insert_with(|| {
            Box::new(new_compressor(
                outgoing.max_window_bits,
                self.settings.level,
            ))
        });
        match deflate(compressor, payload) {
            Some(compressed) => Some(compressed),
            None => {
                // The stream's state is unknown: start afresh, which the
                // peer decodes whatever it remembers.
                self.compressor = None;
                None
            }
        }
    }

    /// Forgets our compression history, after a message compressed
    /// elsewhere went out: later messages must not refer to what the peer
    /// saw in its place.
    pub(crate) fn reset_compression(&mut self) {
        self.compressor = None;
    }

    /// Inflates one frame's payload onto `out`; `fin` ends the message.
    /// Fails as soon as `out` grows past `max` bytes, having produced at
    /// most one [`INFLATE_CHUNK`] beyond it.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let incoming = self.settings.incoming;
        let decompressor = self.decompressor.get_or_insert_with(|| {
            if incoming.no_context_takeover {
                pooled_decompressor()
            } else {
                // Inflating with a larger window than the sender's is fine;
                // zlib has no 8-bit raw window.
                Box::new(Decompress::new_with_window_bits(
                    false,
                    incoming.max_window_bits.max(MIN_COMPRESS_WINDOW_BITS),
                ))
            }
        });
        let mut ended = inflate_bounded(decompressor, input, out, max);
        if fin && ended == Ok(false) {
            ended = inflate_bounded(decompressor, &TAIL, out, max);
        }
        match ended {
            Err(error) => {
                // The stream is mid-message and the connection is failing.
                self.decompressor = None;
                Err(error)
            }
            Ok(stream_ended) => {
                if fin {
                    self.end_message(stream_ended);
                }
                Ok(())
            }
        }
    }

    fn end_message(&mut self, stream_ended: bool) {
        if self.settings.incoming.no_context_takeover {
            if let Some(mut decompressor) = self.decompressor.take() {
                decompressor.reset(false);
                DECOMPRESSORS.with_borrow_mut(|pool| {
                    if pool.len() < POOL_MAX {
                        pool.push(decompressor);
                    }
                });
            }
        } else if stream_ended {
            // A final block ends the peer's stream; its next message starts
            // a new one.
            if let Some(decompressor) = &mut self.decompressor {
                decompressor.reset(false);
            }
        }
    }
}

fn new_compressor(window_bits: u8, level: u32) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, window_bits)
}

/// Compresses `payload` with no history, using a pooled stream.
pub(crate) fn compress_fresh(window_bits: u8, level: u32, payload: &[u8]) -> Option<Bytes> {
    let mut compressor = COMPRESSORS
        .with_borrow_mut(|pool| {
            let found = pool
                .iter()
                .position(|(bits, lvl, _)| (*bits, *lvl) == (window_bits, level))?;
            Some(pool.swap_remove(found).2)
        })
        .unwrap_or_else(|| new_compressor(window_bits, level));
    let compressed = deflate(&mut compressor, payload)?;
    compressor.reset();
    COMPRESSORS.with_borrow_mut(|pool| {
        if pool.len() < POOL_MAX {
            pool.push((window_bits, level, compressor));
        }
    });
    Some(compressed)
}

fn pooled_decompressor() -> Box<Decompress> {
    DECOMPRESSORS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Box::new(Decompress::new(false)))
}

/// Deflates `payload` with a sync flush and strips the flush's tail.
/// `None` if zlib reports an error (which a valid stream never does).
fn deflate(compressor: &mut Compress, payload: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let start = compressor.total_in();
    loop {
        let consumed = usize::try_from(compressor.total_in() - start).ok()?;
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        compressor
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .ok()?;
        let done = compressor.total_in() - start == payload.len() as u64;
        // A flush is complete once zlib left output space unused.
        if done && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Some(Bytes::from(out))
}

/// Inflates `input` onto `out` in steps of at most [`INFLATE_CHUNK`] bytes,
/// checking `max` after each. `Ok(true)` if the deflate stream ended (a
/// final block); whatever follows it is ignored.
fn inflate_bounded(
    decompressor: &mut Decompress,
    mut input: &[u8],
    out: &mut BytesMut,
    max: usize,
) -> Result<bool, ProtocolError> {
    INFLATE_OUT.with_borrow_mut(|scratch| {
        loop {
            // One byte past the limit is enough to know it was passed.
            let room = (max + 1).saturating_sub(out.len()).min(scratch.len());
            let (in_before, out_before) = (decompressor.total_in(), decompressor.total_out());
            let status = decompressor
                .decompress(input, &mut scratch[..room], FlushDecompress::None)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            // Both deltas are bounded by the slices just passed in.
            let consumed = (decompressor.total_in() - in_before) as usize;
            let produced = (decompressor.total_out() - out_before) as usize;
            grow(out, produced, max);
            out.extend_from_slice(&scratch[..produced]);
            input = &input[consumed..];
            if out.len() > max {
                return Err(ProtocolError::MessageTooBig {
                    len: out.len() as u64,
                    max,
                });
            }
            match status {
                Status::StreamEnd => return Ok(true),
                _ if input.is_empty() && produced < room => return Ok(false),
                _ if consumed == 0 && produced == 0 => {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                _ => {}
            }
        }
    })
}

/// Makes room for `more` bytes: doubling, but straight to `max + 1` once
/// doubling would reach half of `max`. The buffer never has more room than
/// the limit needs, and the buffers it outgrew (which an allocator may keep
/// resident for a while) add up to less than half the limit.
fn grow(out: &mut BytesMut, more: usize, max: usize) {
    if out.capacity() - out.len() >= more {
        return;
    }
    let needed = out.len() + more;
    let doubled = out.capacity().saturating_mul(2).max(needed);
    let capacity = if doubled >= max / 2 { max + 1 } else { doubled };
    let mut grown = BytesMut::with_capacity(capacity.max(needed));
    grown.extend_from_slice(out);
    *out = grown;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Direction;

    fn settings(outgoing_reset: bool, incoming_reset: bool) -> PerMessageDeflate {
        PerMessageDeflate {
            outgoing: Direction {
                no_context_takeover: outgoing_reset,
                max_window_bits: 15,
            },
            incoming: Direction {
                no_context_takeover: incoming_reset,
                max_window_bits: 15,
            },
            threshold: 0,
            level: 6,
        }
    }

    #[test]
    fn an_idle_connection_holds_a_small_state() {
        // Every connection that negotiated deflate holds one; the streams
        // are boxed so that one holding none stays this small.
        assert!(
            size_of::<DeflateState>() <= 32,
            "DeflateState: {} bytes",
            size_of::<DeflateState>()
        );
        assert!(!DeflateState::new(settings(true, true)).holds_streams());
    }

    fn round_trip(sender: &mut DeflateState, receiver: &mut DeflateState, message: &[u8]) -> usize {
        let compressed = sender.compress(message).unwrap();
        let mut out = BytesMut::new();
        receiver
            .inflate(&compressed, true, &mut out, 1 << 20)
            .unwrap();
        assert_eq!(&out[..], message);
        compressed.len()
    }

    #[test]
    fn context_takeover_shrinks_repeated_messages() {
        let message = b"{\"channel\":\"news\",\"data\":{\"price\":42,\"symbol\":\"TTHR\"}}";
        let mut sender = DeflateState::new(settings(false, false));
        let mut receiver = DeflateState::new(settings(false, false));
        let first = round_trip(&mut sender, &mut receiver, message);
        let second = round_trip(&mut sender, &mut receiver, message);
        assert!(second < first / 2, "{second} vs {first}");
        assert!(sender.holds_streams() && receiver.holds_streams());
    }

    #[test]
    fn no_context_takeover_holds_no_stream_between_messages() {
        let message = b"hello hello hello hello hello hello";
        let mut sender = DeflateState::new(settings(true, true));
        let mut receiver = DeflateState::new(settings(true, true));
        let first = round_trip(&mut sender, &mut receiver, message);
        let second = round_trip(&mut sender, &mut receiver, message);
        assert_eq!(first, second);
        assert!(!sender.holds_streams() && !receiver.holds_streams());
    }

    #[test]
    fn split_input_inflates_the_same() {
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let compressed = compress_fresh(15, 6, &message).unwrap();
        let mut receiver = DeflateState::new(settings(true, true));
        let mut out = BytesMut::new();
        for (i, piece) in compressed.chunks(7).enumerate() {
            let fin = (i + 1) * 7 >= compressed.len();
            receiver.inflate(piece, fin, &mut out, 1 << 20).unwrap();
        }
        assert_eq!(&out[..], &message[..]);
    }

    #[test]
    fn inflation_stops_one_chunk_past_the_limit() {
        let bomb = compress_fresh(15, 9, &vec![0u8; 10 << 20]).unwrap();
        assert!(bomb.len() < 16 << 10);
        let mut receiver = DeflateState::new(settings(true, true));
        let mut out = BytesMut::new();
        let max = 100_000;
        let error = receiver.inflate(&bomb, true, &mut out, max).unwrap_err();
        assert!(
            matches!(error, ProtocolError::MessageTooBig { .. }),
            "{error:?}"
        );
        assert!(out.len() > max && out.len() <= max + 1, "{}", out.len());
        assert_eq!(out.capacity(), max + 1, "never more room than the limit");
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut receiver = DeflateState::new(settings(true, true));
        let mut out = BytesMut::new();
        let error = receiver
            .inflate(&[0xff; 16], true, &mut out, 1 << 20)
            .unwrap_err();
        assert_eq!(error, ProtocolError::InvalidCompressedData);
    }

    #[test]
    fn a_final_block_ends_the_message_and_resets_the_stream() {
        // "a" as a fixed-Huffman final block, as zlib writes it at Z_FINISH.
        let mut compressor = Compress::new(Compression::default(), false);
        let mut block = Vec::with_capacity(64);
        compressor
            .compress_vec(b"a", &mut block, FlushCompress::Finish)
            .unwrap();
        let mut receiver = DeflateState::new(settings(false, false));
        for _ in 0..2 {
            let mut out = BytesMut::new();
            receiver.inflate(&block, true, &mut out, 100).unwrap();
            assert_eq!(&out[..], b"a");
        }
    }

    #[test]
    fn below_threshold_and_eight_bit_windows_go_uncompressed() {
        let mut small = settings(true, true);
        small.threshold = 10;
        assert_eq!(DeflateState::new(small).compress(b"short"), None);
        let mut eight = settings(true, true);
        eight.outgoing.max_window_bits = 8;
        assert_eq!(
            DeflateState::new(eight).compress(b"long enough message"),
            None
        );
    }
}
