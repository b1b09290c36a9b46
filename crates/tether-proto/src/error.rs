//! Errors, sorted by whose fault they are.

use std::fmt;

use crate::CloseCode;

/// The peer broke RFC 6455 or exceeded a limit. Each variant names the rule;
/// [`ProtocolError::close_code`] says how the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// §5.2: RSV1–3 must be 0 unless an extension defines them.
    ReservedBitsSet(u8),
    /// §5.2: opcodes 0x3–0x7 and 0xB–0xF are reserved.
    ReservedOpcode(u8),
    /// §5.1: a server must close on a frame without a mask.
    UnmaskedFrame,
    /// §5.1: a client must close on a masked frame.
    MaskedFrame,
    /// §5.2: the most significant bit of a 64-bit length must be 0.
    LengthMsbSet,
    /// §5.5: control frames carry at most 125 bytes.
    ControlFrameTooLong(u64),
    /// §5.5: control frames must not be fragmented.
    FragmentedControlFrame,
    /// §5.4: a continuation frame arrived with no message in progress.
    UnexpectedContinuation,
    /// §5.4: a new data frame arrived while a fragmented message was unfinished.
    ExpectedContinuation,
    /// §5.5.1: a close payload of one byte has no room for the code.
    ClosePayloadTooShort,
    /// §7.4: the close code is reserved, unassigned or local-only.
    InvalidCloseCode(u16),
    /// §5.5.1: the close reason must be UTF-8.
    InvalidCloseReason,
    /// §8.1: text messages must be UTF-8 (reported as soon as a byte proves it).
    InvalidUtf8,
    /// RFC 7692 §6.2: a compressed message is not a valid deflate stream.
    InvalidCompressedData,
    /// Limit: a frame's declared length exceeds `Limits::max_frame_size`.
    FrameTooBig {
        /// Declared payload length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// Limit: a message grew past `Limits::max_message_size`.
    MessageTooBig {
        /// Size the message would have reached.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// Policy: the peer sent data messages faster than `Config::rate_limit`.
    RateLimited {
        /// Sustained messages per second allowed.
        per_second: u32,
        /// Burst allowed.
        burst: u32,
    },
    /// Limit: a message arrived in more than `Limits::max_fragments` frames.
    TooManyFragments {
        /// Configured maximum.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code to send (§7.4.1): 1007 for bad UTF-8, 1009 for size
    /// limits, 1008 for the rate limit, 1002 for everything else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCloseReason | Self::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            Self::RateLimited { .. } => CloseCode::POLICY_VIOLATION,
            Self::FrameTooBig { .. }
            | Self::MessageTooBig { .. }
            | Self::TooManyFragments { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// Whether the peer exceeded a configured limit rather than broke the RFC.
    pub fn is_limit(&self) -> bool {
        self.close_code() == CloseCode::MESSAGE_TOO_BIG
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBitsSet(bits) => write!(
                f,
                "reserved bits set without an extension (RSV {bits:#05b})"
            ),
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::UnmaskedFrame => f.write_str("client frame is not masked"),
            Self::MaskedFrame => f.write_str("server frame is masked"),
            Self::LengthMsbSet => {
                f.write_str("64-bit payload length has its most significant bit set")
            }
            Self::ControlFrameTooLong(len) => {
                write!(f, "control frame payload of {len} bytes exceeds 125")
            }
            Self::FragmentedControlFrame => f.write_str("control frame is fragmented"),
            Self::UnexpectedContinuation => {
                f.write_str("continuation frame without a message in progress")
            }
            Self::ExpectedContinuation => {
                f.write_str("new data frame while a fragmented message is unfinished")
            }
            Self::ClosePayloadTooShort => f.write_str("close payload of 1 byte"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::InvalidCloseReason => f.write_str("close reason is not valid UTF-8"),
            Self::InvalidUtf8 => f.write_str("text message is not valid UTF-8"),
            Self::InvalidCompressedData => {
                f.write_str("compressed message is not valid deflate data")
            }
            Self::FrameTooBig { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            Self::MessageTooBig { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            Self::RateLimited { per_second, burst } => {
                write!(
                    f,
                    "more than {per_second} messages per second (burst {burst})"
                )
            }
            Self::TooManyFragments { max } => write!(f, "message has more than {max} fragments"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The caller misused the connection; the peer did nothing wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A message, ping or close was queued after our close frame was sent.
    AlreadyClosing,
    /// A ping or pong payload over 125 bytes.
    ControlPayloadTooLong(usize),
    /// A close code that may not be sent (1005, 1006, 1015, unassigned ranges).
    UnsendableCloseCode(u16),
    /// Only text and binary messages can be encoded for sharing.
    NotDataMessage,
    /// A shared frame was queued on a client connection, which must mask
    /// every frame itself.
    EncodedFrameOnClient,
    /// A shared frame was compressed in a way this connection did not
    /// negotiate (no permessage-deflate, or a smaller window).
    EncodingMismatch,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyClosing => {
                f.write_str("the connection is closing; nothing more can be sent")
            }
            Self::ControlPayloadTooLong(len) => {
                write!(f, "control payload of {len} bytes exceeds 125")
            }
            Self::UnsendableCloseCode(code) => {
                write!(f, "close code {code} may not be sent on the wire")
            }
            Self::NotDataMessage => f.write_str("only text and binary messages can be encoded"),
            Self::EncodedFrameOnClient => {
                f.write_str("a client masks each frame, so it cannot send a shared frame")
            }
            Self::EncodingMismatch => {
                f.write_str("the frame's compression was not negotiated on this connection")
            }
        }
    }
}

impl std::error::Error for UsageError {}
