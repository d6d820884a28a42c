//! HTTP/2 (prior knowledge, as a client of the plain port may speak it) gets the same limits as
//! HTTP/1.1: idle connections close, bodies have a deadline, the cap answers 503.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use bytes::Bytes;
use drover_net::http::HttpTimeouts;
use drover_net::Listener;
use http::{Request, StatusCode};
use http_body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TIMEOUTS: HttpTimeouts = HttpTimeouts {
    header: Duration::from_millis(300),
    body: Duration::from_millis(500),
    idle: Duration::from_millis(800),
};
const LATE: Duration = Duration::from_secs(5);

/// A request body that sends its first bytes and then never ends.
struct Endless(Option<Bytes>);

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut().0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

async fn server(max_connections: usize) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(|body: Bytes| async move { body }));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = Listener::new(tcp, "h2 test").max_connections(max_connections);
    tokio::spawn(drover_net::http::serve(
        listener,
        app,
        TIMEOUTS,
        std::future::pending(),
    ));
    addr
}

/// An HTTP/2 connection; the task ends when the server closes it.
async fn h2<B>(addr: std::net::SocketAddr) -> (SendRequest<B>, JoinHandle<()>)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

fn get_root() -> Request<String> {
    Request::get("http://test/").body(String::new()).unwrap()
}

#[tokio::test]
async fn idle_http2_connections_close_and_the_cap_answers_503() {
    let addr = server(1).await;
    let (mut send, closed) = h2::<String>(addr).await;
    let r = send.send_request(get_root()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(r);
    let idle_from = Instant::now();

    // Over the cap: a 503 in HTTP/2.
    let (mut other, _) = h2::<String>(addr).await;
    let r = other.send_request(get_root()).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    tokio::time::timeout(TIMEOUTS.idle + LATE, closed)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    let elapsed = idle_from.elapsed();
    assert!(
        elapsed + Duration::from_millis(50) >= TIMEOUTS.idle,
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn an_http2_body_without_its_end_gets_408() {
    let addr = server(10).await;
    let (mut send, _) = h2::<Endless>(addr).await;
    let started = Instant::now();
    let request = Request::post("http://test/echo")
        .body(Endless(Some(Bytes::from_static(b"{"))))
        .unwrap();
    let r = tokio::time::timeout(TIMEOUTS.body + LATE, send.send_request(request))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() + Duration::from_millis(50) >= TIMEOUTS.body);
}
