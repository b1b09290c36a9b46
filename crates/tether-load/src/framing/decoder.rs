//! Incoming frames: the server's frames decoded from the start of a read
//! buffer, each header checked against the rules a client without
//! extensions enforces, data payloads handed on as they arrive (never
//! buffered whole), control frames once all of each is in.

use tether_proto::frame::{FrameHeader, OpCode};

use super::MAX_CONTROL_PAYLOAD;

/// A piece of what the server sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// Payload bytes of a data message, in order. `start` is the message's
    /// opcode (`Text` or `Binary`) on the piece that opens it; `last` is
    /// set on the piece that ends it.
    Data {
        start: Option<OpCode>,
        bytes: &'a [u8],
        last: bool,
    },
    /// A ping and its payload.
    Ping(&'a [u8]),
    /// A pong and its payload.
    Pong(&'a [u8]),
    /// A close frame and its payload, unchecked.
    Close(&'a [u8]),
}

/// Decodes the server's frames, across reads.
pub(crate) struct ServerFrames {
    /// Longest data frame accepted.
    max_data_frame: u64,
    /// Whether a data message has begun and not ended.
    in_message: bool,
    /// Payload bytes of the current data frame not yet seen.
    frame_left: u64,
    /// Whether the current data frame is its message's last.
    frame_fin: bool,
}

impl ServerFrames {
    /// A decoder that takes data frames of any length.
    pub(crate) fn new() -> Self {
        Self::with_max_data_frame(u64::MAX)
    }

    /// A decoder that fails on a data frame longer than `max` bytes.
    pub(crate) fn with_max_data_frame(max: u64) -> Self {
        Self {
            max_data_frame: max,
            in_message: false,
            frame_left: 0,
            frame_fin: false,
        }
    }

    /// Decodes from the start of `buf`: returns how many bytes it used and
    /// the piece they hold. `(0, None)` means more bytes are needed (at most
    /// [`super::MAX_CONTROL_FRAME`] bytes stay unused).
    #[inline]
    pub(crate) fn decode<'a>(
        &mut self,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Frame<'a>>), String> {
        if self.frame_left > 0 {
            if buf.is_empty() {
                return Ok((0, None));
            }
            return Ok(self.payload(None, buf));
        }
        let Some((header, header_len)) = FrameHeader::parse(buf).map_err(|e| e.to_string())? else {
            return Ok((0, None));
        };
        check_server_header(&header)?;
        if header.opcode.is_control() {
            return Ok(control(&header, header_len, buf));
        }
        if header.payload_len > self.max_data_frame {
            return Err(format!(
                "an unexpected {}-byte frame from the server",
                header.payload_len
            ));
        }
        let start = match (header.opcode, self.in_message) {
            (OpCode::Continuation, false) => {
                return Err(
                    "a continuation frame with no message to continue (RFC 6455 §5.4)".into(),
                );
            }
            (OpCode::Text | OpCode::Binary, true) => {
                return Err("a new message before the last one ended (RFC 6455 §5.4)".into());
            }
            (OpCode::Text | OpCode::Binary, false) => {
                self.in_message = true;
                Some(header.opcode)
            }
            _ => None,
        };
        self.frame_left = header.payload_len;
        self.frame_fin = header.fin;
        let (used, frame) = self.payload(start, &buf[header_len..]);
        Ok((header_len + used, frame))
    }

    /// The current data frame's payload bytes at the start of `buf`.
    #[inline]
    fn payload<'a>(&mut self, start: Option<OpCode>, buf: &'a [u8]) -> (usize, Option<Frame<'a>>) {
        let used = buf
            .len()
            .min(usize::try_from(self.frame_left).unwrap_or(usize::MAX));
        self.frame_left -= used as u64;
        let last = self.frame_left == 0 && self.frame_fin;
        if last {
            self.in_message = false;
            self.frame_fin = false;
        }
        let frame = Frame::Data {
            start,
            bytes: &buf[..used],
            last,
        };
        (used, Some(frame))
    }
}

/// A control frame, once all of it is in `buf`.
fn control<'a>(
    header: &FrameHeader,
    header_len: usize,
    buf: &'a [u8],
) -> (usize, Option<Frame<'a>>) {
    let end = header_len + header.payload_len as usize;
    let Some(payload) = buf.get(header_len..end) else {
        return (0, None);
    };
    let frame = match header.opcode {
        OpCode::Ping => Frame::Ping(payload),
        OpCode::Pong => Frame::Pong(payload),
        // The only other control opcode: `FrameHeader::parse` refuses
        // reserved ones.
        _ => Frame::Close(payload),
    };
    (end, Some(frame))
}

/// The rules a client without extensions checks on every server frame
/// header (the order of fragments is checked by [`ServerFrames`], §5.4).
fn check_server_header(header: &FrameHeader) -> Result<(), String> {
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
