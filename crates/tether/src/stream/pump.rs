//! [`Pump`]: everything about a connection except its transport, and the
//! loop that moves bytes between the two.
//!
//! read → `Connection::receive` → events → `transmit_slices` → write →
//! `advance_transmit` → re-arm the timer. Non-generic: the transport is a
//! `&mut dyn Transport`, so this is compiled once, not once per transport.

use std::{
    cell::RefCell,
    io,
    io::IoSlice,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::BytesMut;
use tether_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Initiator, Message, Role, State,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep, sleep_until},
};

use super::{DEFAULT_MAX_BUFFERED, TrySendError};
use crate::Error;

/// Size of the per-thread buffer that reads land in while no frame is
/// partially received, so idle connections own no read buffer at all.
const SCRATCH_LEN: usize = 64 * 1024;

/// Most chunks handed to one vectored write.
const MAX_IOVECS: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// What [`IdleExt::recv_or_idle`](crate::idle::IdleExt::recv_or_idle) returns.
#[derive(Debug)]
pub enum Received {
    /// A message, ping, pong or close.
    Message(Message),
    /// What [`WebSocket::recv`](crate::WebSocket::recv) reports as `Some(Err(_))`.
    Error(Error),
    /// Nothing in flight and nothing received for the quiet period.
    Idle,
    /// Closed and the transport shut down ([`WebSocket::recv`](crate::WebSocket::recv)'s `None`).
    Ended,
}

/// Object-safe view of the transport, so the pump's logic is compiled once
/// rather than once per transport type.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for T {}

/// A [`Pump`] while its connection is parked.
pub(crate) enum Parked {
    /// Idle: the rest of the pump is in its initial state.
    Idle {
        conn: Connection,
        max_buffered: usize,
    },
    /// Parked with something in flight (a partial frame, an error to
    /// report): kept whole.
    Busy(Box<Pump>),
}

impl Parked {
    /// The protocol core, for its deadline.
    pub(crate) fn conn(&self) -> &Connection {
        match self {
            Self::Idle { conn, .. } => conn,
            Self::Busy(pump) => &pump.conn,
        }
    }

    /// Back from being parked, with a task of its own again.
    pub(crate) fn wake(self) -> Pump {
        let mut pump = match self {
            Self::Idle { conn, max_buffered } => Pump {
                max_buffered,
                ..Pump::with_connection(conn, &[])
            },
            Self::Busy(pump) => *pump,
        };
        pump.woken = true;
        pump
    }
}

/// Everything about a connection except its transport.
pub(crate) struct Pump {
    pub(crate) conn: Connection,
    /// Bytes of a partially received frame; empty (and unallocated) while idle.
    read_buf: BytesMut,
    /// `read_buf` holds bytes from the handshake not yet decoded.
    leftover: bool,
    /// Total bytes written, so a split half can tell the other it made room.
    pub(super) written: u64,
    /// The outbound queue's bound, in bytes.
    pub(crate) max_buffered: usize,
    timer: Option<Pin<Box<Sleep>>>,
    /// A protocol error, reported after the events decoded before it
    /// (boxed: rare, and the pump lives as long as the connection).
    pending_error: Option<Box<Error>>,
    pub(super) closed_by: Option<Initiator>,
    eof: bool,
    /// Once closed, everything left (the last flush, a client's wait for the
    /// server to close TCP first (§7.1.1), the shutdown) ends by this time,
    /// set from the close timeout.
    finish_by: Option<Instant>,
    done: bool,
    /// A write failed; nothing more is written.
    write_failed: bool,
    /// Back from dormancy and nothing read yet: the runtime learns the
    /// socket's readiness only on its next turn, so the first `Pending`
    /// does not mean the peer is quiet.
    woken: bool,
}

impl Pump {
    /// The state of a connection whose handshake just completed; `leftover`
    /// holds the bytes read past the handshake, decoded first.
    pub(super) fn new(role: Role, config: Arc<Config>, leftover: &[u8]) -> Self {
        let now = Instant::now().into_std();
        Self::with_connection(Connection::new(role, config, now), leftover)
    }

    fn with_connection(conn: Connection, leftover: &[u8]) -> Self {
        Self {
            conn,
            read_buf: BytesMut::from(leftover),
            leftover: !leftover.is_empty(),
            written: 0,
            max_buffered: DEFAULT_MAX_BUFFERED,
            timer: None,
            pending_error: None,
            closed_by: None,
            eof: false,
            finish_by: None,
            done: false,
            write_failed: false,
            woken: false,
        }
    }

    /// About to be parked without a task. A parked connection holds no
    /// timer (the pool watches its deadline) and, when it is idle as
    /// [`Received::Idle`] means it, nothing but the protocol core and the
    /// outbound bound: the rest is rebuilt on waking. Parked connections
    /// are what a server holds most of, so every byte here counts.
    pub(crate) fn park(self) -> Parked {
        if self.is_idle() && self.read_buf.is_empty() && self.closed_by.is_none() {
            Parked::Idle {
                conn: self.conn,
                max_buffered: self.max_buffered,
            }
        } else {
            let mut pump = self;
            pump.timer = None;
            Parked::Busy(Box::new(pump))
        }
    }

    pub(crate) fn poll_next(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        self.poll_received(io, cx, None)
            .map(|received| match received {
                Received::Message(message) => Some(Ok(message)),
                Received::Error(error) => Some(Err(error)),
                Received::Ended => None,
                Received::Idle => unreachable!("idle is only reported with a quiet period"),
            })
    }

    /// The next message; with `quiet`, [`Received::Idle`] once nothing is in
    /// flight and nothing arrived for that long.
    pub(crate) fn poll_received(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
        quiet: Option<Duration>,
    ) -> Poll<Received> {
        loop {
            if let Some(event) = self.conn.poll_event() {
                let message = match event {
                    Event::Message(message) => message,
                    Event::Ping(data) => {
                        // Send the pong now rather than when the caller next polls.
                        let _ = self.poll_write_out(io, cx);
                        Message::Ping(data)
                    }
                    Event::Pong(data) => Message::Pong(data),
                    Event::Closed {
                        code,
                        reason,
                        initiator,
                    } => {
                        self.closed_by = Some(initiator);
                        Message::Close(Some(CloseFrame { code, reason }))
                    }
                    // Events added to the core later are not for the application.
                    _ => continue,
                };
                return Poll::Ready(Received::Message(message));
            }
            if let Some(error) = self.pending_error.take() {
                return Poll::Ready(Received::Error(*error));
            }
            if self.done {
                return Poll::Ready(Received::Ended);
            }
            if self.conn.state() == State::Closed {
                return self.poll_finish(io, cx).map(|()| Received::Ended);
            }
            // Write errors are not reported here: the peer's close frame or
            // reset may still be waiting on the read side, and it says more.
            let _ = self.poll_write_out(io, cx);
            if self.timer_fired() {
                self.on_timer();
                continue;
            }
            if self.leftover {
                self.leftover = false;
                self.decode();
                continue;
            }
            let filled = match self.poll_fill(io, cx) {
                Poll::Ready(filled) => {
                    self.woken = false;
                    filled
                }
                Poll::Pending => {
                    self.release_idle_buffers();
                    let quiet = quiet.filter(|_| self.is_idle());
                    return self.poll_wait(cx, quiet);
                }
            };
            match filled {
                Ok(0) => {
                    self.eof = true;
                    self.conn.receive_eof();
                }
                Ok(_) => self.decode(),
                Err(error) => return Poll::Ready(Received::Error(self.fail_io(error))),
            }
        }
    }

    /// Whether the connection is open and has nothing to deliver or write.
    fn is_idle(&self) -> bool {
        self.conn.state() == State::Open
            && !self.conn.has_queued()
            && self.pending_error.is_none()
            && !(self.leftover || self.eof || self.done || self.write_failed || self.woken)
    }

    /// About to wait for input: arms the timer for the core's next deadline
    /// or, with `quiet`, for the moment the connection counts as idle if that
    /// comes first. The timer is polled (which registers the task's waker)
    /// here only, once per wait, not on every pass of the loop.
    fn poll_wait(&mut self, cx: &mut Context<'_>, quiet: Option<Duration>) -> Poll<Received> {
        if quiet.is_some_and(|quiet| quiet.is_zero()) {
            return Poll::Ready(Received::Idle);
        }
        let idle_at = quiet.map(|quiet| Instant::from_std(self.conn.last_received()) + quiet);
        let due = self.conn.poll_timeout().map(Instant::from_std);
        let Some(deadline) = due.into_iter().chain(idle_at).min() else {
            return Poll::Pending;
        };
        if self.poll_deadline(cx, deadline).is_ready() {
            // The clock is read only when the timer fires, not on every wait.
            if idle_at.is_some_and(|idle_at| idle_at <= Instant::now()) {
                return Poll::Ready(Received::Idle);
            }
            // The core's deadline: run it from the top.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Whether the timer went off since it was last armed.
    fn timer_fired(&self) -> bool {
        self.timer.as_ref().is_some_and(|sleep| sleep.is_elapsed())
    }

    /// Lets the core act on its deadline (it may find nothing due: the timer
    /// is not moved later when the deadline is) and re-arms the timer for the
    /// next one; the next wait polls it.
    fn on_timer(&mut self) {
        self.conn.handle_timeout(Instant::now().into_std());
        match self.conn.poll_timeout() {
            Some(next) => {
                if let Some(sleep) = &mut self.timer {
                    sleep.as_mut().reset(Instant::from_std(next));
                }
            }
            None => self.timer = None,
        }
    }

    /// About to wait for the peer: give back queue capacity left over from
    /// the last burst, so an idle connection holds no buffers (once per
    /// wait, not per message).
    fn release_idle_buffers(&mut self) {
        self.conn.release_idle_buffers();
    }

    fn decode(&mut self) {
        let now = Instant::now().into_std();
        if let Err(error) = self.conn.receive(now, &mut self.read_buf) {
            // The core queued a close frame with the error's code: we closed.
            self.closed_by = Some(Initiator::Local);
            self.pending_error = Some(Box::new(error.into()));
        }
        if self.read_buf.is_empty() {
            // Give the allocation back: idle connections hold no buffer.
            self.read_buf = BytesMut::new();
        }
    }

    /// After the close handshake: flush the last frames, let a client wait for
    /// the server's FIN, then shut the transport down, all within the close
    /// timeout: a peer that stopped reading must not keep the connection (and
    /// its queue) alive with a write that never finishes.
    fn poll_finish(&mut self, io: &mut dyn Transport, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = *self
            .finish_by
            .get_or_insert_with(|| Instant::now() + self.conn.config().close_timeout);
        let flushed = match self.poll_write_out(io, cx) {
            Poll::Ready(result) => result.is_ok(),
            Poll::Pending => {
                ready!(self.poll_expired(cx, deadline));
                false
            }
        };
        if flushed && self.conn.role() == Role::Client {
            while !self.eof {
                if self.poll_expired(cx, deadline).is_ready() {
                    break;
                }
                match ready!(self.poll_fill(io, cx)) {
                    Ok(0) | Err(_) => self.eof = true,
                    Ok(_) => self.read_buf.clear(),
                }
            }
        }
        if Pin::new(&mut *io).poll_shutdown(cx).is_pending() {
            ready!(self.poll_expired(cx, deadline));
        }
        self.done = true;
        self.timer = None;
        self.read_buf = BytesMut::new();
        // Bytes the peer never took, if the deadline cut the flush short.
        self.conn.discard_transmit();
        Poll::Ready(())
    }

    fn fail_io(&mut self, error: io::Error) -> Error {
        self.conn.receive_eof();
        while self.conn.poll_event().is_some() {}
        self.closed_by.get_or_insert(Initiator::Peer);
        self.done = true;
        Error::Io(error)
    }

    fn poll_fill(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        /// A last frame at least this large sends the next read straight
        /// into a buffer of the connection's own.
        const DIRECT_READ_MIN: usize = 16 * 1024;
        /// Most bytes reserved ahead of a read, whatever a header announces.
        const MAX_RESERVE: usize = 4 << 20;
        if self.read_buf.is_empty() {
            let expected = self.conn.last_frame_len();
            if expected < DIRECT_READ_MIN {
                return SCRATCH.with_borrow_mut(|scratch| {
                    let mut buf = ReadBuf::new(scratch);
                    ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
                    let filled = buf.filled();
                    // Room for all of a frame that did not fit, so reading
                    // its rest does not move what is here.
                    let frame_len = self.conn.frame_len_hint(filled).unwrap_or(0);
                    let capacity = filled.len().max(frame_len.min(MAX_RESERVE));
                    self.read_buf = BytesMut::with_capacity(capacity);
                    self.read_buf.extend_from_slice(filled);
                    Poll::Ready(Ok(filled.len()))
                });
            }
            // The peer sends large frames: read the next one straight into
            // a buffer of its likely size rather than copy it out of the
            // scratch buffer. Nothing arrived: the buffer goes again, so an
            // idle connection holds none.
            self.read_buf
                .reserve(expected.clamp(SCRATCH_LEN, MAX_RESERVE));
            let io = Pin::new(&mut *io);
            let polled = tokio_util::io::poll_read_buf(io, cx, &mut self.read_buf);
            if self.read_buf.is_empty() {
                self.read_buf = BytesMut::new();
            }
            return polled;
        }
        let missing = self
            .conn
            .frame_len_hint(&self.read_buf)
            .map_or(0, |len| len.saturating_sub(self.read_buf.len()));
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if missing == 0 || spare < missing {
            self.read_buf.reserve(missing.clamp(4096, MAX_RESERVE));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut self.read_buf)
    }

    /// Writes everything the core has queued, several chunks per syscall.
    fn poll_write_out(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let result = ready!(self.poll_write_queue(io, cx));
        if result.is_err() {
            // The write side is gone: drop what was queued rather than retry
            // it on every poll; the read side may still hold the peer's
            // close frame and is read to the end.
            self.write_failed = true;
            self.conn.discard_transmit();
        }
        Poll::Ready(result)
    }

    fn poll_write_queue(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.write_failed {
                self.conn.discard_transmit();
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.buffered() == 0 {
                return Pin::new(&mut *io).poll_flush(cx);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.conn.transmit_slices(&mut slices);
            // One slice goes out with `write`, which a TCP socket turns into
            // `send(2)`: no iovec to import and no file-position lock, a few
            // per cent of the CPU of a fan-out's many one-frame writes.
            let written = if count > 1 && io.is_write_vectored() {
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            } else {
                ready!(Pin::new(&mut *io).poll_write(cx, &slices[0]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.conn.advance_transmit(written);
            self.written += written as u64;
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// Polls one lazily allocated timer. When the deadline moves later (each
    /// received frame pushes keepalive back) the timer is not reset: it fires
    /// early, the core finds nothing due, and the timer is re-armed then.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = self
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if deadline < sleep.deadline() || (deadline > sleep.deadline() && sleep.is_elapsed()) {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }

    /// Like [`poll_deadline`](Self::poll_deadline), but ready only at
    /// `deadline` itself, not at an earlier deadline the timer still holds.
    fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        loop {
            ready!(self.poll_deadline(cx, deadline));
            if self
                .timer
                .as_ref()
                .is_some_and(|sleep| sleep.deadline() >= deadline)
            {
                return Poll::Ready(());
            }
        }
    }

    pub(crate) fn poll_ready(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if self.conn.state() != State::Open {
            return Poll::Ready(Err(tether_proto::UsageError::AlreadyClosing.into()));
        }
        if self.buffered() >= self.max_buffered {
            ready!(self.poll_write_out(io, cx))?;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn start_send(&mut self, message: Message) -> Result<(), Error> {
        Ok(self.conn.send(self.send_time(&message), message)?)
    }

    /// The core reads the time of a send only for a close (to start its
    /// deadline), so other messages skip the clock (2% of a small-message
    /// echo's CPU) and pass a time it ignores.
    fn send_time(&self, message: &Message) -> std::time::Instant {
        match message {
            Message::Close(_) => Instant::now().into_std(),
            _ => self.conn.last_received(),
        }
    }

    pub(crate) fn try_send(&mut self, message: Message) -> Result<(), TrySendError> {
        if self.conn.state() != State::Open {
            return Err(TrySendError::Closed(message));
        }
        if self.buffered() >= self.max_buffered {
            return Err(TrySendError::Full(message));
        }
        self.conn
            .send(self.send_time(&message), message)
            .map_err(TrySendError::Invalid)
    }

    pub(crate) fn poll_flush(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        Poll::Ready(ready!(self.poll_write_out(io, cx)).map_err(Error::Io))
    }

    pub(crate) fn poll_close(
        &mut self,
        io: &mut dyn Transport,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if self.conn.state() == State::Open {
            self.start_send(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL))))?;
        }
        self.poll_flush(io, cx)
    }
}
