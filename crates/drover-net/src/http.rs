//! HTTP/1.1 and HTTP/2 (hyper) on a [`Listener`], with the timeouts that keep idle and slow
//! clients from holding connections open:
//!
//! | what | bound | then |
//! |---|---|---|
//! | TLS handshake (HTTPS) | [`Listener::handshake_timeout`] | closed |
//! | first request's head | `header` from the accept | closed |
//! | next request on a keep-alive connection | its first byte within `idle` of the last response, its head within `header` of that byte | closed |
//! | HTTP/2 connection without open streams | `idle` | closed |
//! | request body | all of it within `body` of the handler's first read | `408` JSON, connection closed |
//! | HTTP/2 peer that stopped answering | PING every `idle`, answer within `header` | closed |
//! | over the listener's cap | — | `503` JSON, `Connection: close` |
//!
//! Each request carries the [`Peer`] as an extension; its body is a [`RequestBody`].
//! Upgraded connections (WebSocket) leave these timeouts behind and keep their slot of the cap
//! until closed.

mod body;
mod deadline;

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use body::ResponseBody;
pub use body::{BodyError, RequestBody};
use deadline::{ConnState, TimedIo};

use crate::listener::{Connection, Handler, Listener};
use crate::stream::Peer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an HTTP client may take; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// For a request's head (default 10 s).
    pub header: Duration,
    /// For a request's whole body (default 30 s).
    pub body: Duration,
    /// Between requests on a kept-alive connection (default 60 s).
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// Serves `service` (e.g. an `axum::Router`) on `listener` until `shutdown` resolves; then stops
/// accepting, lets requests in progress finish (idle connections close at once) and returns
/// when every connection has ended. Dropping the future closes them.
pub async fn serve<S, B>(
    listener: Listener,
    service: S,
    timeouts: HttpTimeouts,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header timeout is ours (see `deadline`): hyper's would also close idle connections.
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.idle)
        .keep_alive_timeout(timeouts.header);
    let handler = HttpHandler {
        service,
        timeouts,
        builder,
    };
    listener.serve(handler, shutdown).await;
}

struct HttpHandler<S> {
    service: S,
    timeouts: HttpTimeouts,
    builder: auto::Builder<TokioExecutor>,
}

impl<S, B> Handler for HttpHandler<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async fn serve(self: Arc<Self>, conn: Connection, stop: CancellationToken) {
        let state = ConnState::new(self.timeouts);
        let io = TokioIo::new(TimedIo::new(conn.stream, state.clone()));
        let service = ConnService {
            inner: self.service.clone(),
            state,
            peer: conn.peer,
            body_timeout: self.timeouts.body,
        };
        let mut served = pin!(self.builder.serve_connection_with_upgrades(io, service));
        let result = tokio::select! {
            r = served.as_mut() => r,
            _ = stop.cancelled() => {
                served.as_mut().graceful_shutdown();
                served.await
            }
        };
        if let Err(e) = result {
            // As an error value: the subscriber prints its causes (`error.sources`).
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            tracing::debug!(error, "HTTP connection closed");
        }
    }

    async fn refuse(self: Arc<Self>, conn: Connection, limit: usize) {
        // Read the request and answer it, so that the client sees the 503 (a response written
        // before the request was read can be lost to a reset) and HTTP/2 clients get HTTP/2.
        let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
            Ok::<_, Infallible>(refusal::<B>(limit, req.version()))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(false).header_read_timeout(None);
        let io = TokioIo::new(conn.stream);
        let served = builder.serve_connection(io, service);
        if tokio::time::timeout(self.timeouts.header, served)
            .await
            .is_err()
        {
            tracing::debug!("refused connection sent no request in time; closed");
        }
    }
}

/// A connection's service: the request gets the peer and a timed body, the response tells the
/// connection when it was sent.
#[derive(Clone)]
struct ConnService<S> {
    inner: S,
    state: Arc<ConnState>,
    peer: Peer,
    body_timeout: Duration,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let version = req.version();
        let in_flight = self.state.request_started(version == Version::HTTP_2);
        let timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(self.peer.clone());
        let body = RequestBody::new(body, self.body_timeout, timed_out.clone());
        let req = Request::from_parts(parts, body);
        let mut inner = self.inner.clone();
        let (state, body_timeout) = (self.state.clone(), self.body_timeout);
        Box::pin(async move {
            let response = match poll_fn(|cx| inner.poll_ready(cx)).await {
                Ok(()) => inner.call(req).await,
                Err(e) => Err(e),
            };
            let Ok(response) = response;
            if timed_out.load(Ordering::Acquire) {
                tracing::debug!("request body not complete within {body_timeout:?}");
                return Ok(body_timed_out(body_timeout, version, in_flight));
            }
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                state.upgraded();
            }
            Ok(response.map(|b| ResponseBody::service(b, in_flight)))
        })
    }
}

/// The answer to a connection over the cap.
fn refusal<B>(limit: usize, version: Version) -> Response<ResponseBody<B>> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        &format!("too many connections to this listener (limit {limit})"),
        version,
        None,
    )
}

/// The answer to a request whose body did not arrive in time (replacing the handler's).
fn body_timed_out<B>(
    timeout: Duration,
    version: Version,
    in_flight: deadline::InFlight,
) -> Response<ResponseBody<B>> {
    error_response(
        StatusCode::REQUEST_TIMEOUT,
        "RequestTimeout",
        &format!("the request body did not arrive within {timeout:?}"),
        version,
        Some(in_flight),
    )
}

/// `{"error": kind, "message": message}`, closing HTTP/1 connections.
fn error_response<B>(
    status: StatusCode,
    kind: &str,
    message: &str,
    version: Version,
    in_flight: Option<deadline::InFlight>,
) -> Response<ResponseBody<B>> {
    let body = format!(
        "{{\"error\":\"{kind}\",\"message\":\"{}\"}}",
        message.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let mut response = Response::new(ResponseBody::fixed(Bytes::from(body), in_flight));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
