//! [`ReadHalf`] and [`WriteHalf`]: one [`WebSocket`] shared by two tasks.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use futures_core::Stream;
use futures_sink::Sink;
use tether_proto::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{TrySendError, WebSocket, pump::Pump};
use crate::Error;

/// The two halves of `ws`, sharing it behind a mutex.
pub(super) fn split<S>(ws: WebSocket<S>) -> (ReadHalf<S>, WriteHalf<S>) {
    let shared = Arc::new(Mutex::new(Shared {
        ws,
        reader: None,
        writer: None,
    }));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

/// State shared by the halves of a split [`WebSocket`].
struct Shared<S> {
    ws: WebSocket<S>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl<S> Shared<S> {
    /// Runs `poll` for one half. The transport keeps one write waker, so when
    /// both halves write, the one woken may not be the one waiting: whenever
    /// a half's poll writes bytes, it wakes the other half too.
    fn poll_half<T>(
        &mut self,
        is_reader: bool,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Pump, &mut S, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let before = self.ws.pump.written;
        let result = poll(&mut self.ws.pump, &mut self.ws.io, cx);
        let (mine, other) = if is_reader {
            (&mut self.reader, &mut self.writer)
        } else {
            (&mut self.writer, &mut self.reader)
        };
        if result.is_pending() {
            mine.replace(cx.waker().clone());
        }
        if self.ws.pump.written != before {
            if let Some(waker) = other.take() {
                waker.wake();
            }
        }
        result
    }
}

fn lock<S>(shared: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receiving half of a split [`WebSocket`]; it also sends pongs and close
/// replies, so keep polling it.
pub struct ReadHalf<S>(Arc<Mutex<Shared<S>>>);

/// The sending half of a split [`WebSocket`].
pub struct WriteHalf<S>(Arc<Mutex<Shared<S>>>);

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// Like [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for ReadHalf<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        lock(&self.0).poll_half(true, cx, |pump, io, cx| pump.poll_next(io, cx))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// Like [`WebSocket::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        Pin::new(&mut *self).start_send(message)?;
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Like [`WebSocket::try_send`].
    pub fn try_send(&mut self, message: Message) -> Result<(), TrySendError> {
        lock(&self.0).ws.pump.try_send(message)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WriteHalf<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.0).poll_half(false, cx, |pump, io, cx| pump.poll_ready(io, cx))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        lock(&self.0).ws.pump.start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.0).poll_half(false, cx, |pump, io, cx| pump.poll_flush(io, cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.0).poll_half(false, cx, |pump, io, cx| pump.poll_close(io, cx))
    }
}
