//! The accept loop with a protocol of its own: the cap and its refusal, TLS, graceful stop.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_net::{Connection, Handler, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Says hello with what it knows of the peer, echoes until EOF, and says "bye" when stopped.
struct Echo;

impl Handler for Echo {
    async fn serve(self: Arc<Self>, mut conn: Connection, stop: CancellationToken) {
        let sni = conn
            .peer
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| "-".into());
        let _ = conn
            .stream
            .write_all(format!("hello {sni}\n").as_bytes())
            .await;
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                n = conn.stream.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => { let _ = conn.stream.write_all(&buf[..n]).await; }
                },
                _ = stop.cancelled() => {
                    let _ = conn.stream.write_all(b"bye\n").await;
                    return;
                }
            }
        }
    }

    async fn refuse(self: Arc<Self>, mut conn: Connection, limit: usize) {
        let _ = conn
            .stream
            .write_all(format!("busy {limit}\n").as_bytes())
            .await;
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Reads until the peer closes; what arrived.
async fn read_all<R: AsyncReadExt + Unpin>(r: &mut R) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, r.read_to_end(&mut got))
        .await
        .expect("closed within the deadline");
    String::from_utf8_lossy(&got).into_owned()
}

async fn read_line<R: AsyncReadExt + Unpin>(r: &mut R) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while r.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
    })
    .await
    .expect("a line within the deadline");
    String::from_utf8(line).unwrap()
}

#[tokio::test]
async fn the_cap_refuses_through_the_handler_and_a_closed_connection_frees_its_slot() {
    let tcp = bind().await;
    let addr = tcp.local_addr().unwrap();
    let listener = Listener::new(tcp, "echo").max_connections(2);
    tokio::spawn(listener.serve(Echo, std::future::pending()));

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut c).await, "hello -");
        held.push(c);
    }
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_all(&mut over).await, "busy 2\n");

    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = TcpStream::connect(addr).await.unwrap();
        if read_line(&mut c).await == "hello -" {
            c.write_all(b"ping\n").await.unwrap();
            assert_eq!(read_line(&mut c).await, "ping");
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stop_ends_connections_gracefully_and_serve_returns_after_them() {
    let tcp = bind().await;
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(Listener::new(tcp, "echo").serve(Echo, async move {
        let _ = stopped.await;
    }));
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut c).await, "hello -");
    stop.send(()).unwrap();
    assert_eq!(read_all(&mut c).await, "bye\n");
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("serve returns once the connection ended")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert.der().to_vec(),
    )
}

#[tokio::test]
async fn tls_handshakes_are_bounded_and_tell_the_server_name() {
    let (acceptor, cert) = tls_acceptor();
    let tcp = bind().await;
    let addr = tcp.local_addr().unwrap();
    let timeout = Duration::from_millis(300);
    let listener = Listener::new(tcp, "echo over TLS")
        .tls(acceptor)
        .handshake_timeout(timeout);
    tokio::spawn(listener.serve(Echo, std::future::pending()));

    // No handshake at all: closed after the handshake timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_all(&mut silent).await, "");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(50)
            && elapsed < timeout + Duration::from_secs(5),
        "{elapsed:?}"
    );

    // A real handshake: served, and the handler knows the name asked for.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(read_line(&mut tls).await, "hello localhost");
}
