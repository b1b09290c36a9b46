//! The way out: frames queued by `send`, pongs and close replies, handed to
//! the caller's write as slices and dropped once written.

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::{Connection, queues::Queues};
use crate::{
    Role, UsageError,
    deflate::RSV1,
    frame::{FrameHeader, OpCode, apply_mask},
};

/// Frames with payloads up to this size are copied next to their header in
/// one buffer, so a burst of small messages leaves in a single write. Larger
/// payloads are queued as they are (no copy) behind a separate header.
const COALESCE_MAX_PAYLOAD: usize = 1024;

/// Outbound bytes beyond which received pings are no longer answered one
/// by one but only the latest.
pub(super) const PONG_QUEUE_LIMIT: usize = 64 * 1024;

impl Connection {
    /// The queued bytes as slices for one vectored write, oldest first;
    /// returns how many entries of `out` it filled (0: nothing to write).
    /// Report what the write took with
    /// [`advance_transmit`](Self::advance_transmit); bytes not taken are
    /// offered again. Nothing is copied or handed out: large payloads are
    /// offered as they were queued, and the buffer small frames are
    /// coalesced in is reused once written. This is the only way out, for
    /// a socket's `writev` and for a caller that wants the bytes in a
    /// buffer of its own (copy the slices, then advance by their length).
    pub fn transmit_slices<'a>(&'a mut self, out: &mut [IoSlice<'a>]) -> usize {
        if let Some(payload) = self.take_pending_pong() {
            self.queue_frame(OpCode::Pong, payload);
        }
        let Some(queues) = self.queues.as_deref() else {
            return 0;
        };
        let coalesced = (!queues.coalesced.is_empty()).then_some(&queues.coalesced[..]);
        let chunks = queues
            .outgoing
            .iter()
            .map(|chunk| &chunk[..])
            .chain(coalesced);
        let mut filled = 0;
        for (slot, chunk) in out.iter_mut().zip(chunks) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    /// Drops the first `written` queued bytes: a write took them.
    pub fn advance_transmit(&mut self, written: usize) {
        let mut written = written.min(self.buffered);
        self.buffered -= written;
        let Some(queues) = self.queues.as_deref_mut() else {
            return;
        };
        while written > 0 {
            match queues.outgoing.front_mut() {
                Some(front) if written < front.len() => {
                    front.advance(written);
                    return;
                }
                Some(front) => {
                    written -= front.len();
                    queues.outgoing.pop_front();
                }
                None => {
                    queues.coalesced.advance(written);
                    return;
                }
            }
        }
    }

    /// Drops every byte queued for writing: the transport can take no more.
    pub fn discard_transmit(&mut self) {
        self.buffered = 0;
        if let Some(queues) = self.queues.as_deref_mut() {
            queues.pending_pong = None;
            queues.outgoing.clear();
            queues.coalesced.clear();
        }
    }

    /// Bytes queued and not yet reported written with
    /// [`advance_transmit`](Self::advance_transmit).
    pub fn buffered_amount(&self) -> usize {
        // A pong payload is at most 125 bytes: a 2-byte header, plus the
        // masking key when we are the client.
        let header = if self.role == Role::Client { 6 } else { 2 };
        let pong = self.queues.as_deref().and_then(|q| q.pending_pong.as_ref());
        self.buffered + pong.map_or(0, |p| header + p.len())
    }

    /// Gives the internal queues back if they are empty, so an idle
    /// connection holds none. Call when the connection goes idle, not after
    /// every message. A few drained sets stay with the thread for the next
    /// connection that needs one.
    pub fn release_idle_buffers(&mut self) {
        if let Some(queues) = self.queues.take_if(|queues| queues.is_empty()) {
            queues.give_back();
        }
    }

    /// Whether events or bytes are queued, i.e. whether
    /// [`release_idle_buffers`](Self::release_idle_buffers) would keep
    /// the queues.
    pub fn has_queued(&self) -> bool {
        self.queues.as_deref().is_some_and(|q| !q.is_empty())
    }

    pub(super) fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Queues::take)
    }

    pub(super) fn take_pending_pong(&mut self) -> Option<Bytes> {
        self.queues.as_deref_mut()?.pending_pong.take()
    }

    pub(super) fn queue_control(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
    ) -> Result<(), UsageError> {
        if payload.len() > 125 {
            return Err(UsageError::ControlPayloadTooLong(payload.len()));
        }
        self.queue_frame(opcode, payload);
        Ok(())
    }

    /// Queues a text or binary message, compressed if negotiated and worth it.
    pub(super) fn queue_data(&mut self, opcode: OpCode, payload: Bytes) {
        match self
            .deflate
            .as_deref_mut()
            .and_then(|d| d.compress(&payload))
        {
            Some(compressed) => self.queue_frame_with_rsv(opcode, RSV1, compressed),
            None => self.queue_frame(opcode, payload),
        }
    }

    /// Queues complete frame bytes.
    pub(super) fn queue_bytes(&mut self, frame: Bytes) {
        self.buffered += frame.len();
        let queues = self.queues();
        if frame.len() <= COALESCE_MAX_PAYLOAD {
            queues.reserve_coalesced(frame.len());
            queues.coalesced.extend_from_slice(&frame);
        } else {
            queues.flush_coalesced();
            queues.outgoing.push_back(frame);
        }
    }

    pub(super) fn queue_frame(&mut self, opcode: OpCode, payload: Bytes) {
        self.queue_frame_with_rsv(opcode, 0, payload);
    }

    fn queue_frame_with_rsv(&mut self, opcode: OpCode, rsv: u8, payload: Bytes) {
        let mask = (self.role == Role::Client).then(rand::random::<[u8; 4]>);
        let header = FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let total = header.encoded_len() + payload.len();
        self.buffered += total;
        let queues = self.queues();
        if mask.is_some() || payload.len() <= COALESCE_MAX_PAYLOAD {
            // Clients must copy anyway to mask; small frames are cheaper
            // copied than written separately.
            queues.reserve_coalesced(total);
            let coalesced = &mut queues.coalesced;
            header.encode(coalesced);
            let start = coalesced.len();
            coalesced.extend_from_slice(&payload);
            if let Some(key) = mask {
                apply_mask(&mut coalesced[start..], key, 0);
            }
        } else {
            queues.flush_coalesced();
            let mut head = BytesMut::with_capacity(header.encoded_len());
            header.encode(&mut head);
            queues.outgoing.push_back(head.freeze());
            queues.outgoing.push_back(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Config, Message,
        connection::{Event, tests::start},
    };

    fn masked_ping(payload: &[u8]) -> BytesMut {
        let mut frame = BytesMut::from(&[0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0][..]);
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn queues_exist_only_while_something_is_in_flight() {
        let now = start();
        let mut conn = Connection::new(Role::Server, Config::default(), now);
        assert!(conn.queues.is_none(), "a new connection holds no queues");

        conn.receive(now, &mut masked_ping(b"hi")).unwrap();
        conn.release_idle_buffers();
        assert!(conn.has_queued(), "an untaken event and pong are kept");
        assert_eq!(
            conn.poll_event(),
            Some(Event::Ping(Bytes::from_static(b"hi")))
        );
        conn.release_idle_buffers();
        assert!(conn.has_queued(), "the unwritten pong is kept");
        assert_eq!(write_some(&mut conn, usize::MAX), b"\x8a\x02hi");
        assert!(!conn.has_queued());
        conn.release_idle_buffers();
        assert!(conn.queues.is_none(), "drained queues are freed");

        conn.send(now, Message::Text("unwritten".into())).unwrap();
        conn.discard_transmit();
        assert_eq!(conn.buffered_amount(), 0);
        assert_eq!(conn.transmit_slices(&mut [IoSlice::new(&[])]), 0);
    }

    /// Takes at most `limit` bytes of what `transmit_slices` offers, as a
    /// short write would.
    fn write_some(conn: &mut Connection, limit: usize) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 3];
        let count = conn.transmit_slices(&mut slices);
        let mut taken: Vec<u8> = slices[..count]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        taken.truncate(limit);
        conn.advance_transmit(taken.len());
        taken
    }

    #[test]
    fn vectored_transmit_writes_the_same_bytes_in_order() {
        let now = start();
        let messages = || {
            [
                Message::Text("small".into()),
                Message::Binary(Bytes::from(vec![7; 3000])),
                Message::Binary(Bytes::from_static(b"after the big one")),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Binary(Bytes::from(vec![9; 1500])),
            ]
        };
        let mut reference = Connection::new(Role::Server, Config::default(), now);
        let mut expected = Vec::new();
        for message in messages() {
            reference.send(now, message).unwrap();
        }
        while reference.buffered_amount() > 0 {
            expected.extend(write_some(&mut reference, usize::MAX));
        }

        let mut conn = Connection::new(Role::Server, Config::default(), now);
        let mut written = Vec::new();
        // Queue while earlier bytes are half written, in short writes.
        for message in messages() {
            conn.send(now, message).unwrap();
            written.extend(write_some(&mut conn, 7));
        }
        while conn.buffered_amount() > 0 {
            written.extend(write_some(&mut conn, 1000));
        }
        assert_eq!(written, expected);
        assert_eq!(conn.transmit_slices(&mut [IoSlice::new(&[])]), 0);
        conn.release_idle_buffers();
        assert!(conn.queues.is_none());
    }
}
