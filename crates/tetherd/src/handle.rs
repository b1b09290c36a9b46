//! What the rest of the node holds of one session: a [`SessionHandle`]
//! with its bounded outbox of encoded pushes ([`Frame`]s), the commands the
//! HTTP API sent it, the time it next wants to be woken, and who it is once
//! connected. The hub queues publications to it, the node's ticker and
//! drain and the API address sessions through it, and the session's task
//! takes from it.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use tether::Utf8Bytes;

use crate::{compression::Encodings, wire::Disconnect};

/// What the node asks of a session besides delivering frames: the server
/// API's subscribe, unsubscribe and refresh, from any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerCommand {
    /// Subscribe the session to this channel.
    Subscribe(String),
    /// Unsubscribe the session from this channel.
    Unsubscribe(String),
    /// End the connection as expired (`expired`), or move its expiry to
    /// `expire_at` (Unix seconds; `None`: it no longer expires).
    Refresh {
        expired: bool,
        expire_at: Option<u64>,
    },
}

/// One encoded push for a connection.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The JSON object, checked to be UTF-8 once and shared by every
    /// subscriber it goes to.
    pub(crate) text: Utf8Bytes,
    /// For a publication with history: where it stands in its channel's
    /// stream, so a session can drop what it already recovered and notice
    /// what it missed.
    pub(crate) position: Option<Position>,
    /// While compression is enabled, for pushes to several subscribers: the
    /// compressed frames made so far, shared by every copy of this frame.
    pub(crate) encodings: Option<Arc<Encodings>>,
}

/// A publication's place in its channel's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) channel: Arc<str>,
    pub(crate) offset: u64,
    /// [`epoch_tag`] of the stream's epoch.
    pub(crate) epoch: u64,
}

/// A stream epoch reduced to a number that sessions compare cheaply (and
/// store in 8 bytes): a changed epoch means the stream was lost.
pub(crate) fn epoch_tag(epoch: &str) -> u64 {
    // FNV-1a: stable, and an accidental collision only hides an epoch
    // change that the offsets then still reveal as a gap or a repeat.
    epoch.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Frame {
    /// A frame of encoded JSON; `None` (logged) if it is not UTF-8, which
    /// can only be a raw payload that did not come through the API, e.g.
    /// published straight into the broker by something else.
    pub(crate) fn new(bytes: Bytes, position: Option<Position>) -> Option<Self> {
        match Utf8Bytes::try_from_bytes(bytes) {
            Ok(text) => Some(Self {
                text,
                position,
                encodings: None,
            }),
            Err(_) => {
                tracing::warn!("dropped a push that is not UTF-8");
                None
            }
        }
    }

    /// A frame that is not a positioned publication.
    pub(crate) fn plain(bytes: Bytes) -> Option<Self> {
        Self::new(bytes, None)
    }

    /// Lets the subscribers that negotiated permessage-deflate share the
    /// compressed frames (see [`Encodings`]).
    pub(crate) fn shared_encodings(mut self) -> Self {
        self.encodings = Some(Arc::default());
        self
    }
}

/// What the rest of the node holds of one session: its outbox of frames,
/// bounded in bytes, the commands the HTTP API sent it, the time it next
/// wants to be woken (the node's ticker does it, so no connection owns a
/// timer) and, once connected, who it is.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    state: Mutex<HandleState>,
    limit: usize,
    /// Node clock milliseconds (since the node started) after which the
    /// ticker wakes the session; `u64::MAX` for never.
    deadline: AtomicU64,
    identity: OnceLock<Identity>,
}

/// A connected client's identity.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) client: ClientId,
    pub(crate) user: String,
}

/// The id the server gives a connection at `connect`: 128 random bits,
/// shown as 32 hex digits. Kept as a number (one less allocation per
/// connection) in two halves (a `u128` would align the outbox to 16 bytes
/// and pad it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientId([u64; 2]);

impl ClientId {
    pub(crate) fn random() -> Self {
        Self(rand::random())
    }

    fn value(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }

    /// Whether `text` is this id as shown.
    pub(crate) fn is(self, text: &str) -> bool {
        text.len() == 32 && u128::from_str_radix(text, 16) == Ok(self.value())
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.value())
    }
}

#[derive(Debug, Default)]
struct HandleState {
    frames: VecDeque<Frame>,
    bytes: usize,
    commands: Vec<ServerCommand>,
    /// The deadline passed; the session has not looked yet.
    due: bool,
    /// Set once: the connection must end with this disconnect (boxed: it
    /// is rare, and the outbox lives as long as the connection).
    closed: Option<Box<Disconnect>>,
    /// The session's task, while it waits for something to take.
    waker: Option<Waker>,
}

/// What [`SessionHandle::queue`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// The session was asleep on an empty outbox: it needs a wake
    /// ([`SessionHandle::wake_for_frames`]).
    Asleep,
    /// The session is awake, or a wake is already on its way.
    Awake,
    /// Past the bound: the outbox closed (3008) and the session was woken
    /// to end.
    Refused,
}

/// What a session takes from its outbox, in this order of priority.
#[derive(Debug)]
pub(crate) enum Item {
    Frame(Frame),
    Command(ServerCommand),
    /// The deadline the session set has passed.
    Due,
    /// The connection must end: queued frames went first.
    Closed(Disconnect),
}

impl SessionHandle {
    /// An empty outbox holding at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            limit,
            deadline: AtomicU64::new(u64::MAX),
            identity: OnceLock::new(),
        }
    }

    /// Queues `frame` and wakes the session; if that would pass the bound,
    /// the outbox closes with [`Disconnect::SLOW`] instead and `false` is
    /// returned.
    pub(crate) fn push(&self, frame: Frame) -> bool {
        match self.queue(frame) {
            Queued::Asleep => {
                self.wake_for_frames();
                true
            }
            Queued::Awake => true,
            Queued::Refused => false,
        }
    }

    /// Queues `frame` without waking the session: a fan-out queues to every
    /// subscriber first and wakes the sleeping ones afterwards, a slice at a
    /// time (the hub's wake queue). Past the bound it is [`push`](Self::push): the
    /// outbox closes and the session is woken to end.
    pub(crate) fn queue(&self, frame: Frame) -> Queued {
        let mut state = self.lock();
        if state.closed.is_some() {
            return Queued::Refused;
        }
        if state.bytes + frame.text.len() > self.limit {
            state.closed = Some(Box::new(Disconnect::SLOW));
            state.frames = VecDeque::new();
            state.bytes = 0;
            Self::wake(state);
            return Queued::Refused;
        }
        state.bytes += frame.text.len();
        state.frames.push_back(frame);
        // A session sleeps only with an empty outbox; the frame that ends
        // the emptiness is the one that must see it woken.
        if state.frames.len() == 1 && state.waker.is_some() {
            Queued::Asleep
        } else {
            Queued::Awake
        }
    }

    /// Wakes the session if frames wait for it (and it is not awake yet).
    pub(crate) fn wake_for_frames(&self) {
        let state = self.lock();
        if !state.frames.is_empty() {
            Self::wake(state);
        }
    }

    /// Ends the connection with `disconnect` once the session sees it;
    /// frames already queued are still delivered first.
    pub(crate) fn close(&self, disconnect: Disconnect) {
        let mut state = self.lock();
        state.closed.get_or_insert_with(|| Box::new(disconnect));
        Self::wake(state);
    }

    /// Queues a command for the session.
    pub(crate) fn command(&self, command: ServerCommand) {
        let mut state = self.lock();
        state.commands.push(command);
        Self::wake(state);
    }

    /// Sets when the session next wants [`Item::Due`] (`None`: never).
    pub(crate) fn set_deadline(&self, at: Option<u64>) {
        self.deadline
            .store(at.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Called by the node's ticker: wakes the session if its deadline is
    /// at or before `now`.
    pub(crate) fn tick(&self, now: u64) {
        if self.deadline.load(Ordering::Relaxed) > now {
            return;
        }
        let mut state = self.lock();
        if !state.due {
            state.due = true;
            Self::wake(state);
        }
    }

    /// Ready when there is something to [`take`](Self::take); otherwise
    /// the task is woken when there is.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if !state.frames.is_empty()
            || !state.commands.is_empty()
            || state.due
            || state.closed.is_some()
        {
            return Poll::Ready(());
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next thing for the session, if any.
    pub(crate) fn take(&self) -> Option<Item> {
        let mut state = self.lock();
        if let Some(frame) = Self::pop_frame(&mut state) {
            return Some(Item::Frame(frame));
        }
        if !state.commands.is_empty() {
            return Some(Item::Command(state.commands.remove(0)));
        }
        if std::mem::take(&mut state.due) {
            return Some(Item::Due);
        }
        state.closed.as_deref().cloned().map(Item::Closed)
    }

    /// The next push only, leaving commands, deadlines and the close for
    /// [`take`](Self::take).
    pub(crate) fn take_frame(&self) -> Option<Frame> {
        Self::pop_frame(&mut self.lock())
    }

    fn pop_frame(state: &mut HandleState) -> Option<Frame> {
        let frame = state.frames.pop_front()?;
        state.bytes -= frame.text.len();
        if state.frames.is_empty() {
            // An idle connection keeps no queue capacity.
            state.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Bytes of pushes waiting for the session to take them.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Records who the session is, once it connected.
    pub(crate) fn set_identity(&self, identity: Identity) {
        let _ = self.identity.set(identity);
    }

    /// Who the session is; `None` until it connected.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.get()
    }

    /// Whether this is a connected session of `user` (and of `client`,
    /// when given): the HTTP API's way of addressing sessions.
    pub(crate) fn belongs_to(&self, user: &str, client: Option<&str>) -> bool {
        self.identity()
            .is_some_and(|id| id.user == user && client.is_none_or(|c| id.client.is(c)))
    }

    /// Wakes the waiting session after the lock is released.
    fn wake(mut state: MutexGuard<'_, HandleState>) {
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's id on this node.
pub(crate) type ConnId = u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_before_commands_deadlines_and_the_close() {
        let handle = SessionHandle::new(100);
        handle.set_deadline(Some(5));
        handle.tick(4);
        handle.command(ServerCommand::Subscribe("c".into()));
        assert!(handle.push(Frame::plain(Bytes::from_static(b"x")).unwrap()));
        handle.close(Disconnect::SHUTDOWN);
        assert!(
            !handle.push(Frame::plain(Bytes::from_static(b"y")).unwrap()),
            "closed: nothing more is queued"
        );
        handle.tick(5);
        assert!(matches!(handle.take(), Some(Item::Frame(_))));
        assert!(
            matches!(handle.take(), Some(Item::Command(ServerCommand::Subscribe(c))) if c == "c")
        );
        assert!(matches!(handle.take(), Some(Item::Due)));
        assert!(matches!(handle.take(), Some(Item::Closed(d)) if d == Disconnect::SHUTDOWN));
        assert!(
            matches!(handle.take(), Some(Item::Closed(_))),
            "the close stays"
        );
    }

    #[tokio::test]
    async fn the_waiting_session_wakes_on_push_close_and_deadline() {
        let handle = Arc::new(SessionHandle::new(100));
        let ready = |handle: Arc<SessionHandle>| {
            tokio::spawn(async move { std::future::poll_fn(|cx| handle.poll_ready(cx)).await })
        };
        let waiter = ready(handle.clone());
        tokio::task::yield_now().await;
        handle.push(Frame::plain(Bytes::from_static(b"x")).unwrap());
        waiter.await.unwrap();
        assert!(matches!(handle.take(), Some(Item::Frame(_))));

        handle.set_deadline(Some(10));
        let waiter = ready(handle.clone());
        tokio::task::yield_now().await;
        handle.tick(9);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken before its deadline");
        handle.tick(10);
        waiter.await.unwrap();
        assert!(matches!(handle.take(), Some(Item::Due)));

        let waiter = ready(handle.clone());
        tokio::task::yield_now().await;
        handle.close(Disconnect::SHUTDOWN);
        waiter.await.unwrap();
    }

    #[test]
    fn sessions_are_addressed_by_user_and_client_once_connected() {
        let handle = SessionHandle::new(100);
        assert!(!handle.belongs_to("", None), "not connected yet");
        let client = ClientId([0, 0xab]);
        handle.set_identity(Identity {
            client,
            user: "alice".into(),
        });
        let shown = client.to_string();
        assert_eq!(shown, "000000000000000000000000000000ab");
        assert!(handle.belongs_to("alice", None));
        assert!(handle.belongs_to("alice", Some(&shown)));
        assert!(!handle.belongs_to("alice", Some("ab")), "only as shown");
        assert!(!handle.belongs_to("alice", Some("000000000000000000000000000000ac")));
        assert!(!handle.belongs_to("bob", None));
        let high = ClientId([1, 0]).to_string();
        assert_eq!(high, "00000000000000010000000000000000");
        assert!(ClientId([1, 0]).is(&high));
    }
}
