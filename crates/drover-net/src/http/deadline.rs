//! The header and idle timeouts of one HTTP connection, enforced on its reads.
//!
//! hyper 1's own `header_read_timeout` starts whenever a connection waits for a request head,
//! so on a keep-alive connection it is also the idle timeout; Drover wants the two apart (a
//! device may keep its connection open for a minute, but must send a request head within
//! seconds once it starts one). So the connection's state is tracked here:
//!
//! * before the first request: a complete head within `header` of the accept;
//! * between requests (HTTP/1.1 keep-alive): the next request's first byte within `idle` of the
//!   last response, then its head within `header` of that byte;
//! * HTTP/2 between requests (no stream open): closed after `idle` (HTTP/2 has no "head
//!   phase" on the connection; streams' bodies are bounded by the body timeout);
//! * while a request is being served, or after an upgrade (WebSocket): no read deadline here.
//!
//! [`TimedIo`] checks the deadline whenever a read has to wait, and fails the read with
//! `TimedOut` when it passed: hyper then closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::HttpTimeouts;

/// What a connection is doing, as far as timeouts go.
pub(crate) struct ConnState {
    timeouts: HttpTimeouts,
    inner: Mutex<Inner>,
}

struct Inner {
    http2: bool,
    upgraded: bool,
    /// Requests whose response has not been sent completely yet.
    in_flight: usize,
    /// Whether a response was sent (the first request's head counts from the accept).
    served: bool,
    /// When the connection was accepted, or its last response finished.
    idle_since: Instant,
    /// When the first byte of the next request arrived (HTTP/1).
    head_since: Option<Instant>,
    /// The task reading the connection, woken when a deadline appears.
    reader: Option<Waker>,
}

impl ConnState {
    pub(crate) fn new(timeouts: HttpTimeouts) -> Arc<ConnState> {
        Arc::new(ConnState {
            timeouts,
            inner: Mutex::new(Inner {
                http2: false,
                upgraded: false,
                in_flight: 0,
                served: false,
                idle_since: Instant::now(),
                head_since: None,
                reader: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds consistent state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request head was parsed: no read deadline until its response is sent.
    pub(crate) fn request_started(self: &Arc<Self>, http2: bool) -> InFlight {
        let mut i = self.lock();
        i.in_flight += 1;
        i.head_since = None;
        i.http2 |= http2;
        InFlight(self.clone())
    }

    /// The connection was upgraded (e.g. to a WebSocket): its new owner decides about time.
    pub(crate) fn upgraded(&self) {
        self.lock().upgraded = true;
    }

    fn request_finished(&self) {
        let mut i = self.lock();
        i.in_flight = i.in_flight.saturating_sub(1);
        if i.in_flight == 0 {
            i.idle_since = Instant::now();
            i.served = true;
            i.head_since = None;
            // The reader may be parked without a timer: let it arm the idle deadline.
            if let Some(w) = i.reader.take() {
                w.wake();
            }
        }
    }

    fn bytes_read(&self) {
        let mut i = self.lock();
        if i.in_flight == 0 && i.head_since.is_none() {
            i.head_since = Some(Instant::now());
        }
    }

    /// The current read deadline and what it is for; remembers the reading task.
    fn deadline(&self, waker: &Waker) -> Option<(Instant, Expired)> {
        let mut i = self.lock();
        if !i.reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
            i.reader = Some(waker.clone());
        }
        let t = &self.timeouts;
        if i.upgraded || i.in_flight > 0 {
            None
        } else if !i.served {
            Some((i.idle_since + t.header, Expired::Header))
        } else {
            match (i.http2, i.head_since) {
                (false, Some(first_byte)) => Some((first_byte + t.header, Expired::Header)),
                _ => Some((i.idle_since + t.idle, Expired::Idle)),
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Expired {
    Header,
    Idle,
}

/// One request being served; dropped when its response was sent (or abandoned).
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A connection's byte stream with the read deadlines of its [`ConnState`].
pub(crate) struct TimedIo<IO> {
    io: IO,
    state: Arc<ConnState>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<IO> TimedIo<IO> {
    pub(crate) fn new(io: IO, state: Arc<ConnState>) -> TimedIo<IO> {
        TimedIo {
            io,
            state,
            sleep: None,
        }
    }

    /// A read has to wait: fail it if the deadline passed, else wake the task at the deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((at, expired)) = self.state.deadline(cx.waker()) else {
            self.sleep = None;
            return Poll::Pending;
        };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let t = &self.state.timeouts;
        let message = match expired {
            Expired::Header => format!("no complete request head within {:?}", t.header),
            Expired::Idle => format!("idle for {:?} between requests", t.idle),
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for TimedIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TimedIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
