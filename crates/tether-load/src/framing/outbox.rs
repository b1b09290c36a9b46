//! Outgoing frames: whole masked frames appended to one buffer, written
//! by the caller in as few writes as the socket takes.

use std::io;

use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};
use tether_proto::frame::{FrameHeader, OpCode, apply_mask};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

use super::MAX_CONTROL_PAYLOAD;

/// Outgoing bytes: whole frames, each masked with its own key.
pub(crate) struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written to the socket.
    written: usize,
    /// Masking keys: a fresh one per frame. Not a cryptographic generator:
    /// §5.3 asks for keys the application cannot predict, so that a script
    /// cannot choose the bytes a proxy sees; here the payloads are our own,
    /// not a script's, and a fast generator per connection, seeded from
    /// `rand`'s thread generator (itself seeded by the operating system),
    /// gives keys no peer can predict for a few nanoseconds each.
    keys: SmallRng,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::new(),
            written: 0,
            keys: SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// Appends one masked frame of `len` payload bytes, which `put_payload`
    /// appends to the buffer it is given.
    #[inline]
    pub(crate) fn push_frame_with(
        &mut self,
        opcode: OpCode,
        len: usize,
        put_payload: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.push_header(opcode, len);
        put_payload(&mut self.buf);
        debug_assert_eq!(self.buf.len() - start, len);
        self.mask_from(start);
    }

    /// Appends one masked frame holding `payload`.
    pub(crate) fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        self.push_frame_with(opcode, payload.len(), |buf| {
            buf.extend_from_slice(payload);
        });
    }

    /// Appends a masked control frame; `payload` must fit one (§5.5).
    pub(crate) fn push_control(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        self.push_frame(opcode, payload);
    }

    /// Appends a close frame with `code` and `reason` (§5.5.1).
    pub(crate) fn push_close(&mut self, code: u16, reason: &str) {
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
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }

    /// Bytes waiting, written or not: what new frames are measured against.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records that `n` more bytes were written.
    pub(crate) fn advance(&mut self, n: usize) {
        self.written += n;
        if self.is_empty() {
            self.buf.clear();
            self.written = 0;
        }
    }

    /// Writes every pending byte to `tcp`.
    pub(crate) async fn write_all(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        tcp.write_all(self.pending()).await?;
        self.advance(self.pending().len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_leave_the_outbox() {
        let mut outbox = Outbox::new();
        outbox.push_frame(OpCode::Binary, &[7; 100]);
        let total = outbox.len();
        outbox.advance(10);
        assert_eq!(outbox.pending().len(), total - 10);
        assert!(!outbox.is_empty());
        outbox.advance(total - 10);
        assert!(outbox.is_empty());
        assert_eq!(outbox.len(), 0, "the buffer is reused from its start");
    }
}
