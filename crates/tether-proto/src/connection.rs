//! The connection state machine: frames in, events out.

use std::{
    io::IoSlice,
    mem,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};

use crate::{
    CloseCode, CloseFrame, Limits, Message, ProtocolError, Role, UsageError, Utf8Bytes,
    deflate::{DeflateState, EncodedFrame, FrameEncoding, PerMessageDeflate, RSV1},
    frame::{FrameHeader, OpCode, apply_mask},
    utf8::{self, Validator},
};

mod queues;
use queues::Queues;

/// Frames with payloads up to this size are copied next to their header in
/// one buffer, so a burst of small messages leaves in a single write. Larger
/// payloads are queued as they are (no copy) behind a separate header.
const COALESCE_MAX_PAYLOAD: usize = 1024;

/// Outbound bytes beyond which received pings are no longer answered one
/// by one but only the latest.
const PONG_QUEUE_LIMIT: usize = 64 * 1024;

/// What a connection needs to know besides its role.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Config {
    /// Size limits on received frames and messages.
    pub limits: Limits,
    /// How long the side that sent the first close frame waits for the reply
    /// before reporting an abnormal closure (default 5 s).
    pub close_timeout: Duration,
    /// Pings sent when the peer is silent, to detect dead peers.
    pub keepalive: Keepalive,
    /// Close with 1001 after this long without receiving anything (pings
    /// and pongs count). Default 10 minutes; `None` turns it off.
    pub idle_timeout: Option<Duration>,
    /// Most data messages per second the peer may send; beyond it the
    /// connection is closed with 1008. Default: unlimited.
    pub rate_limit: Option<RateLimit>,
}

impl Config {
    /// Sets [`Config::limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Config::rate_limit`].
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets [`Config::keepalive`].
    pub fn keepalive(mut self, keepalive: Keepalive) -> Self {
        self.keepalive = keepalive;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            close_timeout: Duration::from_secs(5),
            keepalive: Keepalive::default(),
            idle_timeout: Some(Duration::from_secs(600)),
            rate_limit: None,
        }
    }
}

/// Keepalive: after `interval` without receiving anything, send a ping; if
/// still nothing arrives within `timeout`, the peer is declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before a ping is sent; `None` turns keepalive off.
    pub interval: Option<Duration>,
    /// Further silence after the ping before the connection is given up.
    pub timeout: Duration,
}

impl Keepalive {
    /// No keepalive pings; a silent peer is never declared dead.
    pub const OFF: Self = Self {
        interval: None,
        timeout: Duration::ZERO,
    };
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(30)),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A token bucket on received data messages: `burst` messages at once, then
/// `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages that may arrive at once after a quiet period.
    pub burst: u32,
}

/// The state of a [`RateLimit`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// What happened on the connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text or binary message.
    Message(Message),
    /// The peer pinged; the pong is already queued.
    Ping(Bytes),
    /// The peer ponged (an answer to our ping, or unsolicited).
    Pong(Bytes),
    /// The connection is closed; nothing more will be received.
    Closed {
        /// The peer's close code; 1005 if its close frame had none, 1006 if
        /// there was no close frame at all.
        code: CloseCode,
        /// The peer's reason, or why the connection was given up.
        reason: String,
        /// Who sent the first close frame (or gave up).
        initiator: Initiator,
    },
}

/// Who started the closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This endpoint: a local close, a protocol error or a timeout.
    Local,
    /// The remote endpoint.
    Peer,
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Nothing more is received or sent after the queued bytes; once
    /// [`Connection::poll_transmit`] is drained the transport can be closed.
    Closed,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Partial {
    data: BytesMut,
    fragments: usize,
    /// `Some` for text messages.
    utf8: Option<Validator>,
    /// Sent with RSV1: `data` holds what was inflated so far.
    compressed: bool,
}

/// One WebSocket connection after the handshake.
///
/// Call order: feed bytes with [`receive`](Self::receive), then drain
/// [`poll_event`](Self::poll_event) and [`poll_transmit`](Self::poll_transmit);
/// after anything that may have changed timers, re-arm with
/// [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout) when it expires.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared by every connection of a server.
    config: Arc<Config>,
    state: State,
    /// RSV bits an extension has claimed for the first frame of a message.
    extension_rsv: u8,
    message: Option<Box<Partial>>,
    /// permessage-deflate, once negotiated.
    deflate: Option<Box<DeflateState>>,
    /// `None` while nothing is in flight.
    queues: Option<Box<Queues>>,
    /// Bytes in `queues.outgoing` and `queues.coalesced`.
    buffered: usize,
    last_received: Instant,
    ping_sent: Option<Instant>,
    close_deadline: Option<Instant>,
    bucket: Option<Bucket>,
    /// Header and payload bytes of the last data frame received, saturated
    /// (a `u32` so it fits the padding after the one-byte fields).
    last_frame_len: u32,
}

impl Connection {
    /// A connection whose handshake completed at `now`. Pass an
    /// `Arc<Config>` to share one configuration between many connections.
    pub fn new(role: Role, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let config: Arc<Config> = config.into();
        let bucket = config.rate_limit.map(|limit| Bucket {
            tokens: f64::from(limit.burst),
            refilled_at: now,
        });
        Self {
            role,
            config,
            state: State::Open,
            extension_rsv: 0,
            message: None,
            deflate: None,
            queues: None,
            buffered: 0,
            last_received: now,
            ping_sent: None,
            close_deadline: None,
            bucket,
            last_frame_len: 0,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The close handshake's progress.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns on permessage-deflate as negotiated in the handshake: RSV1 on a
    /// message's first frame then means "compressed", and outgoing messages
    /// from the threshold up are compressed. Call before any frame is
    /// received or sent.
    pub fn set_deflate(&mut self, negotiated: PerMessageDeflate) {
        self.extension_rsv |= RSV1;
        self.deflate = Some(Box::new(DeflateState::new(negotiated)));
    }

    /// The negotiated permessage-deflate, if any.
    pub fn deflate(&self) -> Option<&PerMessageDeflate> {
        self.deflate.as_deref().map(DeflateState::settings)
    }

    /// Whether a zlib stream is held between messages (only with context
    /// takeover); an idle connection without it holds none.
    pub fn holds_deflate_streams(&self) -> bool {
        self.deflate
            .as_deref()
            .is_some_and(DeflateState::holds_streams)
    }

    /// How this server connection frames data messages, so a broadcast can
    /// encode each message once per encoding; `None` for a client, which
    /// masks every frame itself.
    pub fn frame_encoding(&self) -> Option<FrameEncoding> {
        if self.role == Role::Client {
            return None;
        }
        Some(match self.deflate() {
            Some(d) => FrameEncoding::Deflate {
                max_window_bits: d.outgoing.max_window_bits,
                level: d.level,
                threshold: d.threshold,
            },
            None => FrameEncoding::Plain,
        })
    }

    /// Queues a frame encoded once for many connections (see
    /// [`FrameEncoding::encode`]). The bytes are shared, not copied, unless
    /// the frame is small enough to be coalesced.
    pub fn send_encoded(&mut self, frame: &EncodedFrame) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::AlreadyClosing);
        }
        if self.role == Role::Client {
            return Err(UsageError::EncodedFrameOnClient);
        }
        if let Some(bits) = frame.window_bits() {
            let deflate = self
                .deflate
                .as_deref_mut()
                .ok_or(UsageError::EncodingMismatch)?;
            if bits > deflate.settings().outgoing.max_window_bits {
                return Err(UsageError::EncodingMismatch);
            }
            deflate.reset_compression();
        }
        self.queue_bytes(frame.as_bytes().clone());
        Ok(())
    }

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

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.queues.as_mut()?.events.pop_front()
    }

    /// Queues a message, ping, pong or close frame. `now` starts the close
    /// timeout when `message` is a close.
    pub fn send(&mut self, now: Instant, message: Message) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::AlreadyClosing);
        }
        match message {
            Message::Text(text) => self.queue_data(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => self.queue_data(OpCode::Binary, data),
            Message::Ping(data) => self.queue_control(OpCode::Ping, data)?,
            Message::Pong(data) => self.queue_control(OpCode::Pong, data)?,
            Message::Close(frame) => {
                let payload = match frame {
                    Some(frame) if !frame.code.is_sendable() => {
                        return Err(UsageError::UnsendableCloseCode(frame.code.0));
                    }
                    Some(frame) => frame.encode(),
                    None => Bytes::new(),
                };
                // A held-back pong goes first: nothing follows our close.
                if let Some(pong) = self.take_pending_pong() {
                    self.queue_frame(OpCode::Pong, pong);
                }
                self.start_close(now, payload);
            }
        }
        Ok(())
    }

    fn start_close(&mut self, now: Instant, payload: Bytes) {
        self.queue_frame(OpCode::Close, payload);
        self.state = State::Closing;
        self.close_deadline = Some(now + self.config.close_timeout);
    }

    /// The next chunk of bytes to write, oldest first. Small frames queued
    /// together come out as one chunk.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if let Some(payload) = self.take_pending_pong() {
            self.queue_frame(OpCode::Pong, payload);
        }
        let queues = self.queues.as_deref_mut()?;
        let chunk = match queues.outgoing.pop_front() {
            Some(chunk) => chunk,
            None if !queues.coalesced.is_empty() => mem::take(&mut queues.coalesced).freeze(),
            None => return None,
        };
        self.buffered -= chunk.len();
        Some(chunk)
    }

    /// The queued bytes as slices for one vectored write, oldest first;
    /// returns how many entries of `out` it filled (0: nothing to write).
    /// Report what the write took with
    /// [`advance_transmit`](Self::advance_transmit). Unlike
    /// [`poll_transmit`](Self::poll_transmit) this hands out no buffers:
    /// the one small frames are coalesced in is reused once written.
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

    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Queues::take)
    }

    fn take_pending_pong(&mut self) -> Option<Bytes> {
        self.queues.as_deref_mut()?.pending_pong.take()
    }

    /// Bytes queued but not yet taken by [`poll_transmit`](Self::poll_transmit).
    pub fn buffered_amount(&self) -> usize {
        // A pong payload is at most 125 bytes: a 2-byte header, plus the
        // masking key when we are the client.
        let header = if self.role == Role::Client { 6 } else { 2 };
        let pong = self.queues.as_deref().and_then(|q| q.pending_pong.as_ref());
        self.buffered + pong.map_or(0, |p| header + p.len())
    }

    /// Whether the transport can be closed: the close handshake is over (or
    /// was abandoned) and every queued byte was taken.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed && self.buffered_amount() == 0
    }

    /// When bytes last arrived (the handshake's time until then).
    pub fn last_received(&self) -> Instant {
        self.last_received
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open => {
                let idle = self
                    .config
                    .idle_timeout
                    .map(|idle| self.last_received + idle);
                let keepalive = self.config.keepalive;
                let keepalive = keepalive.interval.map(|interval| match self.ping_sent {
                    Some(sent) => sent + keepalive.timeout,
                    None => self.last_received + interval,
                });
                match (idle, keepalive) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Closing => self.close_deadline,
            State::Closed => None,
        }
    }

    /// Runs whatever timer expired by `now`: keepalive pings, dead-peer
    /// detection and the close timeout. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Open => {
                if self
                    .config
                    .idle_timeout
                    .is_some_and(|idle| now >= self.last_received + idle)
                {
                    let frame = CloseFrame {
                        code: CloseCode::GOING_AWAY,
                        reason: "idle timeout".to_owned(),
                    };
                    self.start_close(now, frame.encode());
                    return;
                }
                let keepalive = self.config.keepalive;
                let Some(interval) = keepalive.interval else {
                    return;
                };
                match self.ping_sent {
                    Some(sent) if now >= sent + keepalive.timeout => {
                        self.abandon(
                            "keepalive timeout: the peer stopped answering",
                            Initiator::Local,
                        );
                    }
                    None if now >= self.last_received + interval => {
                        self.queue_frame(OpCode::Ping, Bytes::new());
                        self.ping_sent = Some(now);
                    }
                    _ => {}
                }
            }
            State::Closing => {
                if self.close_deadline.is_some_and(|deadline| now >= deadline) {
                    self.abandon("the peer did not answer our close frame", Initiator::Local);
                }
            }
            State::Closed => {}
        }
    }

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
        let len = header.payload_len;
        if header.opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len > 125 {
                return Err(ProtocolError::ControlFrameTooLong(len));
            }
            return Ok(());
        }
        let limits = &self.config.limits;
        if len > limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooBig {
                len,
                max: limits.max_frame_size,
            });
        }
        let message_len = match (header.opcode, &self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(partial)) => {
                if partial.fragments >= limits.max_fragments {
                    return Err(ProtocolError::TooManyFragments {
                        max: limits.max_fragments,
                    });
                }
                partial.data.len() as u64 + len
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
        let invalid_utf8 = |_| ProtocolError::InvalidUtf8;
        let max_message = self.config.limits.max_message_size;
        match header.opcode {
            OpCode::Text | OpCode::Binary if header.rsv & RSV1 != 0 => {
                let mut partial = Partial {
                    data: BytesMut::new(),
                    fragments: 1,
                    utf8: (header.opcode == OpCode::Text).then(Validator::default),
                    compressed: true,
                };
                inflate(
                    self.deflate.as_deref_mut(),
                    &mut partial,
                    &payload,
                    header.fin,
                    max_message,
                )?;
                if header.fin {
                    self.take_token(now)?;
                    self.finish_message(partial)?;
                } else {
                    self.message = Some(Box::new(partial));
                }
            }
            OpCode::Text if header.fin => {
                utf8::validate(&payload).map_err(invalid_utf8)?;
                self.take_token(now)?;
                let text = Utf8Bytes::from_validated(payload.freeze());
                self.queues()
                    .events
                    .push_back(Event::Message(Message::Text(text)));
            }
            OpCode::Binary if header.fin => {
                self.take_token(now)?;
                let data = payload.freeze();
                self.queues()
                    .events
                    .push_back(Event::Message(Message::Binary(data)));
            }
            OpCode::Text | OpCode::Binary => {
                let mut utf8 = (header.opcode == OpCode::Text).then(Validator::default);
                if let Some(validator) = &mut utf8 {
                    validator.feed(&payload).map_err(invalid_utf8)?;
                }
                // A copy, so the reassembly never pins the read buffer the
                // first fragment arrived in.
                self.message = Some(Box::new(Partial {
                    data: BytesMut::from(&payload[..]),
                    fragments: 1,
                    utf8,
                    compressed: false,
                }));
            }
            OpCode::Continuation => {
                let Some(partial) = self.message.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if partial.compressed {
                    let deflate = self.deflate.as_deref_mut();
                    inflate(deflate, partial, &payload, header.fin, max_message)?;
                } else {
                    if let Some(validator) = &mut partial.utf8 {
                        validator.feed(&payload).map_err(invalid_utf8)?;
                    }
                    partial.data.extend_from_slice(&payload);
                }
                partial.fragments += 1;
                if header.fin {
                    if let Some(partial) = self.message.take() {
                        self.take_token(now)?;
                        self.finish_message(*partial)?;
                    }
                }
            }
            OpCode::Close => self.on_close(&payload)?,
            OpCode::Ping => {
                let data = payload.freeze();
                // §5.5.2: every ping gets a pong unless the peer's close was
                // received (then we are Closed and never get here). Once our
                // output backs up, only the latest is answered (§5.5.3), so a
                // ping flood cannot grow the queue.
                if self.buffered < PONG_QUEUE_LIMIT {
                    self.queue_frame(OpCode::Pong, data.clone());
                } else {
                    self.queues().pending_pong = Some(data.clone());
                }
                self.queues().events.push_back(Event::Ping(data));
            }
            OpCode::Pong => self
                .queues()
                .events
                .push_back(Event::Pong(payload.freeze())),
        }
        Ok(())
    }

    /// Charges one message to the rate limit, if there is one.
    fn take_token(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let (Some(bucket), Some(limit)) = (self.bucket.as_mut(), self.config.rate_limit) else {
            return Ok(());
        };
        // Every frame of one read shares its `now`: refill once per read.
        if now != bucket.refilled_at {
            let elapsed = now
                .saturating_duration_since(bucket.refilled_at)
                .as_secs_f64();
            bucket.tokens =
                (bucket.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
            bucket.refilled_at = now;
        }
        if bucket.tokens < 1.0 {
            return Err(ProtocolError::RateLimited {
                per_second: limit.per_second,
                burst: limit.burst,
            });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    fn finish_message(&mut self, partial: Partial) -> Result<(), ProtocolError> {
        let data = partial.data.freeze();
        let message = match partial.utf8 {
            Some(validator) => {
                validator.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(Utf8Bytes::from_validated(data))
            }
            None => Message::Binary(data),
        };
        self.queues().events.push_back(Event::Message(message));
        Ok(())
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
        self.queues().events.push_back(Event::Closed {
            code,
            reason,
            initiator,
        });
        Ok(())
    }

    /// Fails the connection (§7.1.7): a close frame with the error's code if
    /// we have not sent one yet, then nothing more.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let frame = CloseFrame {
                code: error.close_code(),
                reason: error.to_string(),
            };
            self.queue_frame(OpCode::Close, frame.encode());
        }
        self.enter_closed();
        error
    }

    /// Gives up without a close handshake (dead peer, timeout, EOF).
    fn abandon(&mut self, reason: &str, initiator: Initiator) {
        self.enter_closed();
        self.queues().events.push_back(Event::Closed {
            code: CloseCode::ABNORMAL,
            reason: reason.to_owned(),
            initiator,
        });
    }

    fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.message = None;
        self.take_pending_pong();
        self.close_deadline = None;
    }

    fn queue_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), UsageError> {
        if payload.len() > 125 {
            return Err(UsageError::ControlPayloadTooLong(payload.len()));
        }
        self.queue_frame(opcode, payload);
        Ok(())
    }

    /// Queues a text or binary message, compressed if negotiated and worth it.
    fn queue_data(&mut self, opcode: OpCode, payload: Bytes) {
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
    fn queue_bytes(&mut self, frame: Bytes) {
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

    fn queue_frame(&mut self, opcode: OpCode, payload: Bytes) {
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

/// Inflates one frame of a compressed message onto `partial`, validating
/// text as it grows.
fn inflate(
    deflate: Option<&mut DeflateState>,
    partial: &mut Partial,
    payload: &[u8],
    fin: bool,
    max_message: usize,
) -> Result<(), ProtocolError> {
    // check_header lets RSV1 through only once deflate is on.
    let Some(deflate) = deflate else {
        return Err(ProtocolError::ReservedBitsSet(RSV1));
    };
    let start = partial.data.len();
    deflate.inflate(payload, fin, &mut partial.data, max_message)?;
    if let Some(validator) = &mut partial.utf8 {
        validator
            .feed(&partial.data[start..])
            .map_err(|_| ProtocolError::InvalidUtf8)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::disallowed_methods,
        reason = "a starting point; the core itself never reads the clock"
    )]
    fn start() -> Instant {
        Instant::now()
    }

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
        assert_eq!(conn.poll_transmit().as_deref(), Some(&b"\x8a\x02hi"[..]));
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
        while let Some(chunk) = reference.poll_transmit() {
            expected.extend_from_slice(&chunk);
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

    #[test]
    fn connections_share_one_config() {
        let config = Arc::new(Config::default());
        let now = start();
        let a = Connection::new(Role::Server, config.clone(), now);
        let b = Connection::new(Role::Server, config.clone(), now);
        assert!(std::ptr::eq(a.config(), b.config()));
        // Idle per-connection state stays small: this is what a server
        // holding many idle connections pays for each, before the transport.
        assert!(
            size_of::<Connection>() <= 128,
            "Connection grew to {} bytes",
            size_of::<Connection>()
        );
    }
}
