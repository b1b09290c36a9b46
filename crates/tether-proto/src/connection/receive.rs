//! The way in: frames parsed from the caller's buffer, checked as soon as
//! their header is in, then handled by opcode.

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::{Connection, Event, Initiator, State, reassembly::Partial, transmit::PONG_QUEUE_LIMIT};
use crate::{
    CloseCode, CloseFrame, Message, ProtocolError, Utf8Bytes,
    deflate::RSV1,
    frame::{FrameHeader, OpCode, apply_mask},
    utf8,
};

impl Connection {
    /// Consumes every complete frame at the front of `buf`, leaving a partial
    /// frame (if any) for the next call. Header checks (role, limits, control
    /// frame rules) run as soon as the header is in, before the payload is.
    ///
    /// On error a close frame with the matching code is queued, the state is
    /// [`State::Closed`] and events decoded before the bad frame stay queued.
    pub fn receive(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        if !buf.is_empty() {
            self.last_received = now;
            self.ping_sent = None;
        }
        while self.state != State::Closed {
            let Some((header, header_len)) = FrameHeader::parse(buf).map_err(|e| self.fail(e))?
            else {
                return Ok(());
            };
            self.check_header(&header).map_err(|e| self.fail(e))?;
            // check_header bounded the length by a usize limit.
            let len = header.payload_len as usize;
            if buf.len() - header_len < len {
                return Ok(());
            }
            if !header.opcode.is_control() {
                self.last_frame_len = u32::try_from(header_len + len).unwrap_or(u32::MAX);
            }
            buf.advance(header_len);
            let mut payload = buf.split_to(len);
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            self.on_frame(now, header, payload)
                .map_err(|e| self.fail(e))?;
        }
        // Nothing is read after the close handshake (§5.5.1).
        buf.clear();
        Ok(())
    }

    /// How many bytes the frame at the front of `buf` needs in total, once its
    /// header is in and has passed the checks. Lets the caller reserve a read
    /// buffer of the right size at once.
    pub fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let (header, header_len) = FrameHeader::parse(buf).ok()??;
        self.check_header(&header).ok()?;
        Some(header_len + header.payload_len as usize)
    }

    /// Header and payload bytes of the last text, binary or continuation
    /// frame received (0 before the first): a guess at the size of the next
    /// one, so that a caller can read a stream of large frames straight into
    /// buffers of that size instead of copying them out of a shared one.
    pub fn last_frame_len(&self) -> usize {
        self.last_frame_len as usize
    }

    /// The transport reached end-of-file. Unless the close handshake already
    /// finished, this is an abnormal closure (1006).
    pub fn receive_eof(&mut self) {
        if self.state != State::Closed {
            self.abandon("connection closed without a close frame", Initiator::Peer);
        }
    }

    /// The checks a frame passes as soon as its header is in: reserved
    /// bits, masking by role, control frame rules, then the size limits.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        let allowed_rsv = match header.opcode {
            OpCode::Text | OpCode::Binary => self.extension_rsv,
            _ => 0,
        };
        if header.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBitsSet(header.rsv));
        }
        match (self.role.expects_masked_input(), header.mask.is_some()) {
            (true, false) => return Err(ProtocolError::UnmaskedFrame),
            (false, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            check_control_header(header)
        } else {
            self.check_data_size(header)
        }
    }

    /// A data frame must fit the frame limit, continue a message only if one
    /// is in progress, and keep the message within its limits.
    fn check_data_size(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        let limits = &self.config.limits;
        let len = header.payload_len;
        if len > limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooBig {
                len,
                max: limits.max_frame_size,
            });
        }
        let message_len = match (header.opcode, self.message.as_deref()) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(partial)) => {
                if partial.fragments() >= limits.max_fragments {
                    return Err(ProtocolError::TooManyFragments {
                        max: limits.max_fragments,
                    });
                }
                partial.len() as u64 + len
            }
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (_, None) => len,
        };
        if message_len > limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooBig {
                len: message_len,
                max: limits.max_message_size,
            });
        }
        Ok(())
    }

    /// Handles one frame that passed `check_header`, payload unmasked.
    fn on_frame(
        &mut self,
        now: Instant,
        header: FrameHeader,
        payload: BytesMut,
    ) -> Result<(), ProtocolError> {
        match header.opcode {
            OpCode::Text | OpCode::Binary if header.fin && header.rsv & RSV1 == 0 => {
                self.on_message(now, header.opcode, payload)
            }
            OpCode::Text | OpCode::Binary => self.on_first_fragment(now, header, &payload),
            OpCode::Continuation => self.on_continuation(now, header.fin, &payload),
            OpCode::Close => self.on_close(&payload),
            OpCode::Ping => {
                self.on_ping(payload.freeze());
                Ok(())
            }
            OpCode::Pong => {
                self.push_event(Event::Pong(payload.freeze()));
                Ok(())
            }
        }
    }

    /// An uncompressed message in a single frame, the common case: no
    /// reassembly and no copy.
    fn on_message(
        &mut self,
        now: Instant,
        opcode: OpCode,
        payload: BytesMut,
    ) -> Result<(), ProtocolError> {
        let message = if opcode == OpCode::Text {
            utf8::validate(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
            self.take_token(now)?;
            Message::Text(Utf8Bytes::from_validated(payload.freeze()))
        } else {
            self.take_token(now)?;
            Message::Binary(payload.freeze())
        };
        self.push_event(Event::Message(message));
        Ok(())
    }

    /// The first frame of a fragmented or compressed message: the message
    /// is delivered if this is also its last frame, kept otherwise.
    fn on_first_fragment(
        &mut self,
        now: Instant,
        header: FrameHeader,
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        let mut partial = Partial::new(header.opcode, header.rsv & RSV1 != 0);
        let max_message = self.config.limits.max_message_size;
        partial.append(
            self.deflate.as_deref_mut(),
            payload,
            header.fin,
            max_message,
        )?;
        if header.fin {
            self.deliver(now, partial)
        } else {
            self.message = Some(Box::new(partial));
            Ok(())
        }
    }

    /// A continuation frame: added to the message in progress, which is
    /// delivered if this is its last frame.
    fn on_continuation(
        &mut self,
        now: Instant,
        fin: bool,
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        let max_message = self.config.limits.max_message_size;
        let Some(partial) = self.message.as_deref_mut() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        partial.append(self.deflate.as_deref_mut(), payload, fin, max_message)?;
        if fin {
            if let Some(partial) = self.message.take() {
                self.deliver(now, *partial)?;
            }
        }
        Ok(())
    }

    /// A reassembled message, charged to the rate limit and queued as an
    /// event.
    fn deliver(&mut self, now: Instant, partial: Partial) -> Result<(), ProtocolError> {
        self.take_token(now)?;
        let message = partial.finish()?;
        self.push_event(Event::Message(message));
        Ok(())
    }

    /// §5.5.2: every ping gets a pong unless the peer's close was received
    /// (then we are Closed and never get here). Once our output backs up,
    /// only the latest is answered (§5.5.3), so a ping flood cannot grow
    /// the queue.
    fn on_ping(&mut self, data: Bytes) {
        if self.buffered < PONG_QUEUE_LIMIT {
            self.queue_frame(OpCode::Pong, data.clone());
        } else {
            self.queues().pending_pong = Some(data.clone());
        }
        self.push_event(Event::Ping(data));
    }

    fn on_close(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let received = CloseFrame::parse(payload)?;
        let (code, reason) = match &received {
            Some(frame) => (frame.code, frame.reason.clone()),
            None => (CloseCode::NO_STATUS, String::new()),
        };
        let initiator = match self.state {
            State::Open => {
                // Echo the code (§5.5.1); an empty close is answered empty.
                let reply =
                    received.map_or_else(Bytes::new, |frame| CloseFrame::new(frame.code).encode());
                self.queue_frame(OpCode::Close, reply);
                Initiator::Peer
            }
            State::Closing | State::Closed => Initiator::Local,
        };
        self.enter_closed();
        self.push_event(Event::Closed {
            code,
            reason,
            initiator,
        });
        Ok(())
    }
}

/// §5.5: control frames are never fragmented and carry at most 125 bytes.
fn check_control_header(header: &FrameHeader) -> Result<(), ProtocolError> {
    if !header.fin {
        return Err(ProtocolError::FragmentedControlFrame);
    }
    if header.payload_len > 125 {
        return Err(ProtocolError::ControlFrameTooLong(header.payload_len));
    }
    Ok(())
}
