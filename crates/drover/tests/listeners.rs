//! The HTTP listeners (management API, HTTP and HTTPS device endpoints) do not let clients hold
//! connections open: header, body and idle timeouts, and a cap on connections with a clear 503.
//! Raw sockets, so that exactly what a slow or silent client does is sent.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, ADMIN_TOKEN};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: Duration = Duration::from_millis(400);
const BODY: Duration = Duration::from_millis(800);
const IDLE: Duration = Duration::from_millis(1500);
/// How much later than its timeout a connection may close on a busy machine.
const LATE: Duration = Duration::from_secs(5);
/// How much earlier than measured here the server may have started its clock.
const EARLY: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
enum Port {
    Api,
    Http,
    Https,
}

const PORTS: [Port; 3] = [Port::Api, Port::Http, Port::Https];

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn short_timeouts(c: &mut drover::Config) {
    c.http_header_timeout = HEADER;
    c.http_body_timeout = BODY;
    c.http_idle_timeout = IDLE;
}

async fn start(adjust: impl FnOnce(&mut drover::Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    adjust(&mut config);
    let mut t = TestServer::start_with(config).await;
    t.dir = Some(dir);
    t
}

fn addr(t: &TestServer, port: Port) -> SocketAddr {
    let s = t.server.as_ref().unwrap();
    match port {
        Port::Api => s.api_addr,
        Port::Http => s.http_addr.unwrap(),
        Port::Https => s.https_addr.unwrap(),
    }
}

/// A connection to `port`; over TLS (trusting the development CA) for HTTPS.
async fn connect(t: &TestServer, port: Port) -> Box<dyn Io> {
    let tcp = TcpStream::connect(addr(t, port)).await.unwrap();
    match port {
        Port::Api | Port::Http => Box::new(tcp),
        Port::Https => {
            let ca = t.server.as_ref().unwrap().dev_ca.clone().unwrap();
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(ca).unwrap())
                .unwrap();
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = ServerName::try_from("localhost").unwrap();
            Box::new(connector.connect(name, tcp).await.unwrap())
        }
    }
}

/// Reads until the server closes the connection (EOF or reset); returns what arrived and when
/// the connection ended. Fails if it is still open after `limit`.
async fn read_until_closed(io: &mut dyn Io, limit: Duration) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {limit:?}; received: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

/// Reads one response with a `Content-Length`; returns its status line and body.
async fn read_response(io: &mut dyn Io) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = find(&got, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .expect("a Content-Length");
                if got.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]);
                    let status = head.lines().next().unwrap().to_string();
                    return (status, body.to_string());
                }
            }
            let n = io.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before a whole response: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// A request that each port answers with a complete response (not necessarily 200).
fn probe(port: Port) -> &'static str {
    match port {
        Port::Api => "GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n",
        Port::Http | Port::Https => "GET /nothing HTTP/1.1\r\nHost: test\r\n\r\n",
    }
}

fn assert_closed_between(what: &str, elapsed: Duration, at_least: Duration) {
    assert!(
        elapsed + EARLY >= at_least && elapsed < at_least + LATE,
        "{what}: closed after {elapsed:?}, expected about {at_least:?}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let t = start(short_timeouts).await;
    for port in PORTS {
        let started = Instant::now();
        let mut io = connect(&t, port).await;
        let (got, closed) = read_until_closed(&mut io, HEADER + LATE).await;
        assert_eq!(got, "", "{port:?}: nothing is answered");
        assert_closed_between(&format!("{port:?}"), closed - started, HEADER);
    }
    // Not even a TLS handshake: closed after the header timeout too.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr(&t, Port::Https)).await.unwrap();
    let (_, closed) = read_until_closed(&mut tcp, HEADER + LATE).await;
    assert_closed_between("HTTPS without handshake", closed - started, HEADER);
}

#[tokio::test]
async fn half_a_header_is_closed_after_the_header_timeout_even_when_trickled() {
    let t = start(short_timeouts).await;
    for port in PORTS {
        let started = Instant::now();
        let mut io = connect(&t, port).await;
        io.write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        let (got, closed) = read_until_closed(&mut io, HEADER + LATE).await;
        assert_eq!(got, "", "{port:?}");
        assert_closed_between(&format!("{port:?} half a header"), closed - started, HEADER);

        // A header line every 100 ms keeps bytes coming, but not the connection.
        let started = Instant::now();
        let mut io = connect(&t, port).await;
        io.write_all(b"GET /health/live HTTP/1.1\r\n")
            .await
            .unwrap();
        let trickle = async {
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let line = format!("X-Slow-{i}: 1\r\n");
                if io.write_all(line.as_bytes()).await.is_err() {
                    return Instant::now();
                }
            }
            unreachable!()
        };
        let closed = tokio::time::timeout(HEADER + LATE, trickle)
            .await
            .expect("the trickled header is cut off");
        assert_closed_between(
            &format!("{port:?} trickled header"),
            closed - started,
            HEADER,
        );
    }
}

/// Sends a chunked POST's head and first chunk.
async fn start_chunked_post(io: &mut dyn Io, port: Port) {
    let head = match port {
        Port::Api => format!(
            "POST /api/registry/v1alpha1/apps HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            basic("admin", ADMIN_TOKEN)
        ),
        Port::Http | Port::Https => format!(
            "POST /v1/telemetry HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            basic("dev1@app", "secret")
        ),
    };
    io.write_all(head.as_bytes()).await.unwrap();
    io.write_all(b"1\r\n{\r\n").await.unwrap();
}

#[tokio::test]
async fn a_body_without_its_end_gets_408_and_is_closed_after_the_body_timeout() {
    let t = start(short_timeouts).await;
    t.admin().create_app("app").await;
    t.admin()
        .create_device(
            "app",
            json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        )
        .await;
    for port in PORTS {
        let mut io = connect(&t, port).await;
        start_chunked_post(&mut io, port).await;
        let started = Instant::now();
        let (got, closed) = read_until_closed(&mut io, BODY + LATE).await;
        assert!(
            got.starts_with("HTTP/1.1 408"),
            "{port:?}: a 408 before the close: {got}"
        );
        assert!(got.contains("\"error\":\"RequestTimeout\""), "{got}");
        assert_closed_between(&format!("{port:?} body"), closed - started, BODY);
    }
}

#[tokio::test]
async fn a_slow_body_that_completes_within_the_body_timeout_is_served() {
    let t = start(short_timeouts).await;
    t.admin().create_app("app").await;
    t.admin()
        .create_device(
            "app",
            json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        )
        .await;
    for (i, port) in PORTS.into_iter().enumerate() {
        let mut io = connect(&t, port).await;
        start_chunked_post(&mut io, port).await;
        // The rest of the JSON in pieces over half the body timeout.
        let rest = match port {
            Port::Api => format!("\"metadata\": {{\"name\": \"slow{i}\"}}}}"),
            Port::Http | Port::Https => "\"temp\": 21}".to_string(),
        };
        for piece in rest.as_bytes().chunks(rest.len().div_ceil(4)) {
            tokio::time::sleep(BODY / 8).await;
            io.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await
                .unwrap();
            io.write_all(piece).await.unwrap();
            io.write_all(b"\r\n").await.unwrap();
        }
        io.write_all(b"0\r\n\r\n").await.unwrap();
        let (status, body) = read_response(&mut io).await;
        let expected = match port {
            Port::Api => "HTTP/1.1 201",
            Port::Http | Port::Https => "HTTP/1.1 202",
        };
        assert!(status.starts_with(expected), "{port:?}: {status} {body}");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let t = start(short_timeouts).await;
    for port in PORTS {
        let mut io = connect(&t, port).await;
        io.write_all(probe(port).as_bytes()).await.unwrap();
        read_response(&mut io).await;
        // Idle longer than the header timeout but within the idle timeout: still served.
        tokio::time::sleep(HEADER * 2).await;
        io.write_all(probe(port).as_bytes()).await.unwrap();
        read_response(&mut io).await;
        let idle_from = Instant::now();
        let (got, closed) = read_until_closed(&mut io, IDLE + LATE).await;
        assert_eq!(got, "", "{port:?}");
        assert_closed_between(&format!("{port:?} idle"), closed - idle_from, IDLE);
    }
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_and_the_listener_recovers() {
    let t = start(|c| {
        c.http_max_connections = 2;
        c.api_max_connections = 2;
    })
    .await;
    for port in PORTS {
        // Two connections served (which proves they hold their slots).
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut io = connect(&t, port).await;
            io.write_all(probe(port).as_bytes()).await.unwrap();
            let (status, _) = read_response(&mut io).await;
            assert!(!status.contains("503"), "{port:?}: {status}");
            held.push(io);
        }
        let mut third = connect(&t, port).await;
        third.write_all(probe(port).as_bytes()).await.unwrap();
        let (got, _) = read_until_closed(&mut third, Duration::from_secs(10)).await;
        assert!(
            got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{port:?}: {got}"
        );
        assert!(
            got.to_ascii_lowercase().contains("connection: close"),
            "{got}"
        );
        assert!(
            got.ends_with(
                "{\"error\":\"ServiceUnavailable\",\"message\":\"too many connections to this listener (limit 2)\"}"
            ),
            "{got}"
        );
        // When one goes, the listener serves again (once it noticed the close).
        held.pop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut io = connect(&t, port).await;
            io.write_all(probe(port).as_bytes()).await.unwrap();
            let (status, _) = read_response(&mut io).await;
            if !status.contains("503") {
                break;
            }
            assert!(Instant::now() < deadline, "{port:?} still refusing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
    }
}

#[tokio::test]
async fn a_websocket_outlives_the_idle_timeout_and_holds_its_slot() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let t = start(|c| {
        short_timeouts(c);
        c.api_max_connections = 2;
    })
    .await;
    t.admin().create_app("app").await;
    t.admin()
        .create_device(
            "app",
            json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        )
        .await;
    let mut req = t.ws_url("app").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Basic {}", basic("admin", ADMIN_TOKEN))
            .parse()
            .unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    // The client says nothing for longer than the idle and header timeouts.
    tokio::time::sleep(IDLE + HEADER).await;

    // The WebSocket holds one of the API's two slots: one more connection is served (once the
    // setup's kept-alive connection went idle and was closed), the next is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _held = loop {
        let mut io = connect(&t, Port::Api).await;
        io.write_all(probe(Port::Api).as_bytes()).await.unwrap();
        let (status, _) = read_response(&mut io).await;
        if !status.contains("503") {
            break io;
        }
        assert!(Instant::now() < deadline, "the API keeps refusing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut over = connect(&t, Port::Api).await;
    over.write_all(probe(Port::Api).as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut over).await;
    assert!(status.contains("503"), "{status}");

    // And it still delivers.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/telemetry", t.http_base))
        .basic_auth("dev1@app", Some("secret"))
        .body("{\"temp\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let event = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s")
            .expect("the WebSocket is open")
            .unwrap();
        match msg {
            Message::Text(text) => break text,
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    };
    assert!(event.contains("dev1"), "{event}");
}
