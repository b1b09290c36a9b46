//! What a connection has in flight, and the per-thread spares that let the
//! next burst reuse a drained set instead of growing new buffers.

use std::{cell::RefCell, collections::VecDeque, mem};

use bytes::{Bytes, BytesMut};

use super::Event;

/// Room the coalescing buffer makes once a second frame does not fit: a
/// burst of small frames grows it once, where doubling from the first
/// frame's size took a `realloc` every few frames (1–2% of a 16 B echo's
/// CPU). A lone frame still gets a buffer of its own size.
const COALESCE_BURST_RESERVE: usize = 4096;

/// Drained sets a thread keeps. Connections on one thread run one at a
/// time, so a few cover any number of busy connections.
const MAX_SPARES: usize = 8;

/// Most queued events, outgoing chunks and coalescing bytes a spare set may
/// keep room for, so that spares hold at most about 20 KiB each: a set whose
/// queues a large burst grew goes back to the allocator, and so does a
/// coalescing buffer grown past 16 KiB (8 echoes of 1 KiB grow it to 10 KiB).
const SPARE_MAX_EVENTS: usize = 64;
const SPARE_MAX_OUTGOING: usize = 64;
const SPARE_MAX_COALESCED: usize = 4 * COALESCE_BURST_RESERVE;

thread_local! {
    /// Sets given back by connections that went idle. A closed-loop echo
    /// goes idle between every two bursts; without spares each burst
    /// allocated the set, grew the event queue twice and the coalescing
    /// buffer once, and freed it all again (about a sixth of the protocol's
    /// user-space instructions per 16 B message).
    #[expect(clippy::vec_box, reason = "connections hold the set boxed; the box is reused too")]
    static SPARES: RefCell<Vec<Box<Queues>>> = const { RefCell::new(Vec::new()) };
}

/// What is in flight: events not yet taken and bytes not yet written. Boxed
/// and held only while something is, so that an idle connection (the common
/// case on a server with many) holds one pointer instead of four empty
/// queues.
#[derive(Debug, Default)]
pub(super) struct Queues {
    pub(super) events: VecDeque<Event>,
    /// The latest ping not yet answered while output is backed up.
    pub(super) pending_pong: Option<Bytes>,
    /// Whole frames ready to write, oldest first, followed by `coalesced`.
    pub(super) outgoing: VecDeque<Bytes>,
    pub(super) coalesced: BytesMut,
}

impl Queues {
    /// An empty set: a spare from this thread if there is one.
    pub(super) fn take() -> Box<Self> {
        SPARES
            .try_with(|spares| spares.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps this drained set for the next connection that needs one, unless
    /// the thread has enough or a burst left it large.
    pub(super) fn give_back(mut self: Box<Self>) {
        debug_assert!(self.is_empty());
        // An advanced buffer shows only the room after its start; moving
        // back to the start (nothing to copy) makes `capacity` the whole
        // allocation, which is what a spare would hold on to.
        let whole = self.coalesced.capacity() + 1;
        let _ = self.coalesced.try_reclaim(whole);
        if self.coalesced.capacity() > SPARE_MAX_COALESCED {
            self.coalesced = BytesMut::new();
        }
        if self.events.capacity() > SPARE_MAX_EVENTS
            || self.outgoing.capacity() > SPARE_MAX_OUTGOING
        {
            return;
        }
        let _ = SPARES.try_with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < MAX_SPARES {
                spares.push(self);
            }
        });
    }

    /// Ends the coalesced chunk, so a frame queued next goes after it.
    pub(super) fn flush_coalesced(&mut self) {
        if !self.coalesced.is_empty() {
            self.outgoing
                .push_back(mem::take(&mut self.coalesced).freeze());
        }
    }

    pub(super) fn reserve_coalesced(&mut self, additional: usize) {
        let buf = &mut self.coalesced;
        let burst = !buf.is_empty() && buf.capacity() - buf.len() < additional;
        buf.reserve(if burst {
            additional.max(COALESCE_BURST_RESERVE)
        } else {
            additional
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.pending_pong.is_none()
            && self.outgoing.is_empty()
            && self.coalesced.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> usize {
        SPARES.with_borrow(Vec::len)
    }

    #[test]
    fn a_drained_set_is_reused_with_its_room() {
        SPARES.with_borrow_mut(Vec::clear);
        let mut queues = Queues::take();
        queues.reserve_coalesced(18);
        queues.coalesced.extend_from_slice(&[0; 18]);
        queues.reserve_coalesced(18);
        queues.coalesced.extend_from_slice(&[0; 18]);
        bytes::Buf::advance(&mut queues.coalesced, 36);
        queues.events.reserve(8);
        let (events, coalesced) = (queues.events.capacity(), COALESCE_BURST_RESERVE);
        queues.give_back();
        assert_eq!(spares(), 1);

        let reused = Queues::take();
        assert_eq!(spares(), 0);
        assert!(reused.is_empty());
        assert_eq!(reused.events.capacity(), events);
        assert!(reused.coalesced.capacity() >= coalesced, "room reclaimed");
    }

    #[test]
    fn large_buffers_and_sets_beyond_the_limit_go_back_to_the_allocator() {
        SPARES.with_borrow_mut(Vec::clear);
        let mut many_events = Queues::take();
        many_events.events.reserve(SPARE_MAX_EVENTS + 1);
        many_events.give_back();
        let mut many_chunks = Queues::take();
        many_chunks.outgoing.reserve(SPARE_MAX_OUTGOING + 1);
        many_chunks.give_back();
        assert_eq!(spares(), 0);

        let mut large = Queues::take();
        large.coalesced.reserve(SPARE_MAX_COALESCED + 1);
        large.give_back();
        assert_eq!(spares(), 1, "the set is kept");
        assert_eq!(
            Queues::take().coalesced.capacity(),
            0,
            "its large buffer is not"
        );

        for _ in 0..MAX_SPARES + 3 {
            Box::<Queues>::default().give_back();
        }
        assert_eq!(spares(), MAX_SPARES);
    }
}
