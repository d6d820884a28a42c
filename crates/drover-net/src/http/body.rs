//! Request bodies with a deadline, and response bodies that tell the connection when they are
//! done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::deadline::InFlight;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The whole body did not arrive within the body timeout (counted from the handler's first
    /// read).
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The connection failed or the body was malformed.
    #[error("cannot read the request body")]
    Transport(#[source] hyper::Error),
}

/// The body of a request served by [`serve`](super::serve): all of it must arrive within the
/// body timeout of the first read. hyper has no body timeout, and tower-http's `TimeoutBody`
/// only bounds the pause between two frames, which a client sending a byte now and then passes
/// forever.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
    ended: bool,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        RequestBody {
            inner,
            timeout,
            sleep: None,
            timed_out,
            ended: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                Poll::Ready(Some(Err(BodyError::Transport(e))))
            }
            Poll::Pending => match sleep.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.ended = true;
                    this.timed_out.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(BodyError::TimedOut(timeout))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body: the service's, or one of the listener's own; the connection counts the
/// request as served when it is dropped.
pub(crate) struct ResponseBody<B> {
    kind: Kind<B>,
    _in_flight: Option<InFlight>,
}

enum Kind<B> {
    Service(B),
    Fixed(Option<Bytes>),
}

impl<B> ResponseBody<B> {
    pub(crate) fn service(body: B, in_flight: InFlight) -> Self {
        ResponseBody {
            kind: Kind::Service(body),
            _in_flight: Some(in_flight),
        }
    }

    pub(crate) fn fixed(bytes: Bytes, in_flight: Option<InFlight>) -> Self {
        ResponseBody {
            kind: Kind::Fixed(Some(bytes)),
            _in_flight: in_flight,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Service(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Kind::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Service(b) => b.is_end_stream(),
            Kind::Fixed(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Service(b) => b.size_hint(),
            Kind::Fixed(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
