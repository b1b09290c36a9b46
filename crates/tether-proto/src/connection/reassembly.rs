//! Messages that arrive in more than one piece: fragmented messages (§5.4)
//! and compressed ones (RFC 7692 §6.2), which are inflated frame by frame.

use bytes::BytesMut;

use crate::{
    Message, ProtocolError, Utf8Bytes,
    deflate::{DeflateState, RSV1},
    frame::OpCode,
    utf8::Validator,
};

/// A message being reassembled.
#[derive(Debug)]
pub(super) struct Partial {
    data: BytesMut,
    fragments: usize,
    /// `Some` for text messages.
    utf8: Option<Validator>,
    /// Sent with RSV1: `data` holds what was inflated so far.
    compressed: bool,
}

impl Partial {
    /// An empty text or binary message, before its first frame.
    pub(super) fn new(opcode: OpCode, compressed: bool) -> Self {
        Self {
            data: BytesMut::new(),
            fragments: 0,
            utf8: (opcode == OpCode::Text).then(Validator::default),
            compressed,
        }
    }

    /// Bytes so far (inflated, if the message is compressed).
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    /// Frames so far.
    pub(super) fn fragments(&self) -> usize {
        self.fragments
    }

    /// Adds one frame's payload, inflated if the message is compressed,
    /// validating text as it grows. The payload is copied, so the
    /// reassembly never pins the read buffer a frame arrived in.
    pub(super) fn append(
        &mut self,
        deflate: Option<&mut DeflateState>,
        payload: &[u8],
        fin: bool,
        max_message: usize,
    ) -> Result<(), ProtocolError> {
        if self.compressed {
            // check_header lets RSV1 through only once deflate is on.
            let Some(deflate) = deflate else {
                return Err(ProtocolError::ReservedBitsSet(RSV1));
            };
            let start = self.data.len();
            deflate.inflate(payload, fin, &mut self.data, max_message)?;
            feed(&mut self.utf8, &self.data[start..])?;
        } else {
            feed(&mut self.utf8, payload)?;
            self.data.extend_from_slice(payload);
        }
        self.fragments += 1;
        Ok(())
    }

    /// The whole message, once its last frame is in.
    pub(super) fn finish(self) -> Result<Message, ProtocolError> {
        let data = self.data.freeze();
        match self.utf8 {
            Some(validator) => {
                validator.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Message::Text(Utf8Bytes::from_validated(data)))
            }
            None => Ok(Message::Binary(data)),
        }
    }
}

/// Feeds the next bytes of a text message to its UTF-8 validator; nothing
/// for a binary message.
fn feed(utf8: &mut Option<Validator>, text: &[u8]) -> Result<(), ProtocolError> {
    match utf8 {
        Some(validator) => validator.feed(text).map_err(|_| ProtocolError::InvalidUtf8),
        None => Ok(()),
    }
}
