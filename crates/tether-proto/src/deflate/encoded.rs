//! A data message framed once for many server connections (broadcasts).

use bytes::{BufMut, Bytes, BytesMut};

use super::{MIN_COMPRESS_WINDOW_BITS, codec::compress_fresh};
use crate::{
    Message, UsageError,
    frame::{FrameHeader, OpCode},
};

/// RSV1, the "Per-Message Compressed" bit, in [`FrameHeader::rsv`].
pub(crate) const RSV1: u8 = 0b100;

/// How a server connection frames its outgoing data messages. Connections
/// with equal encodings accept the same [`EncodedFrame`]s, so a broadcast
/// compresses a message once per encoding rather than once per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameEncoding {
    /// Uncompressed frames.
    Plain,
    /// permessage-deflate, each message compressed afresh.
    Deflate {
        /// The largest window the peer accepts, in bits.
        max_window_bits: u8,
        /// zlib compression level.
        level: u32,
        /// Messages shorter than this go uncompressed.
        threshold: usize,
    },
}

impl FrameEncoding {
    /// Frames a text or binary message (unmasked, as a server sends it), in
    /// one buffer that can be queued on any number of connections with
    /// [`Connection::send_encoded`](crate::Connection::send_encoded).
    pub fn encode(&self, message: &Message) -> Result<EncodedFrame, UsageError> {
        let opcode = match message {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
            _ => return Err(UsageError::NotDataMessage),
        };
        let payload = message.as_bytes();
        let compressed = match *self {
            Self::Deflate {
                max_window_bits,
                level,
                threshold,
            } if payload.len() >= threshold && max_window_bits >= MIN_COMPRESS_WINDOW_BITS => {
                compress_fresh(max_window_bits, level, payload).map(|c| (max_window_bits, c))
            }
            _ => None,
        };
        let (rsv, window_bits, payload) = match &compressed {
            Some((bits, bytes)) => (RSV1, Some(*bits), &bytes[..]),
            None => (0, None, payload),
        };
        let header = FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut bytes = BytesMut::with_capacity(header.encoded_len() + payload.len());
        header.encode(&mut bytes);
        bytes.put_slice(payload);
        Ok(EncodedFrame {
            bytes: bytes.freeze(),
            header_len: header.encoded_len() as u8,
            window_bits,
        })
    }
}

/// A complete server frame, shared by every connection it is queued on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    bytes: Bytes,
    /// Where the payload starts in `bytes` (a server header is 2 to 10 bytes).
    header_len: u8,
    /// The window it was compressed with, if it was.
    window_bits: Option<u8>,
}

impl EncodedFrame {
    /// The frame as it goes on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The payload as it goes on the wire (compressed, if it is).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[usize::from(self.header_len)..]
    }

    /// Whether the payload is compressed (RSV1 set).
    pub fn is_compressed(&self) -> bool {
        self.window_bits.is_some()
    }

    pub(crate) fn window_bits(&self) -> Option<u8> {
        self.window_bits
    }
}
