//! Servers of the test's own: nothing to connect to, no JetStream, and a restart.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend;
use crate::conformance::{event, ids, key, take, within};
use crate::helpers::connect;
use drover_bus::nats::{JetStreamConfig, JetStreamLog};
use drover_bus::{BusError, EventLog, Offset, StartFrom};

#[tokio::test]
async fn connecting_to_nothing_fails_in_time() {
    // A port nobody listens on: bound by this test (so nobody else gets it) but not listening,
    // so a connection to it is refused.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = closed.local_addr().expect("address").port();
    let started = Instant::now();
    let result = JetStreamLog::connect(JetStreamConfig {
        url: format!("nats://127.0.0.1:{port}"),
        op_timeout: Duration::from_secs(2),
        ..JetStreamConfig::default()
    })
    .await;
    let Err(BusError::Unavailable(why)) = result else {
        panic!("connected to nothing? {result:?}");
    };
    assert!(
        why.to_string().contains(&format!("127.0.0.1:{port}")),
        "{why}"
    );
    // The NATS client's error is kept as the cause, not only as text.
    let cause = std::error::Error::source(&why).expect("the NATS error");
    assert!(
        cause.downcast_ref::<async_nats::ConnectError>().is_some(),
        "{cause:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(closed);
    let bad = JetStreamLog::connect(JetStreamConfig {
        prefix: "no.dots".into(),
        ..JetStreamConfig::default()
    })
    .await;
    assert!(matches!(bad, Err(BusError::Invalid(_))), "{bad:?}");
    let bad = JetStreamLog::connect(JetStreamConfig {
        url: "nats://[::1".into(),
        ..JetStreamConfig::default()
    })
    .await;
    assert!(matches!(bad, Err(BusError::Invalid(_))), "{bad:?}");
}

/// A private `nats-server` with JetStream; killed when dropped.
struct NatsServer {
    child: Child,
    /// The port it listens on for clients.
    port: u16,
}

/// What `nats-server` logs when it listens for clients (the address follows).
const LISTENING: &str = "Listening for client connections on ";

impl NatsServer {
    /// Starts it on a port it picks itself (`port` 0) or on `port`, with JetStream storing in
    /// `store` if given, and waits until it says it is ready; the port it took is read back
    /// from its log.
    async fn start(binary: &Path, port: u16, store: Option<&Path>) -> Self {
        let mut command = Command::new(binary);
        let port_arg = if port == 0 {
            "-1".to_string() // nats-server's "any free port"
        } else {
            port.to_string()
        };
        command.args(["-a", "127.0.0.1", "-p", &port_arg]);
        if let Some(store) = store {
            command.args(["-js", "-sd"]).arg(store);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Reads the log to its end (so the server never blocks on a full pipe).
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            let mut listening = None;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, addr)) = line.split_once(LISTENING) {
                    listening = addr
                        .trim()
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok());
                }
                if line.contains("Server is ready") {
                    if let (Some(tx), Some(port)) = (ready.take(), listening) {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = within("nats-server is ready", ready_rx)
            .await
            .expect("nats-server exited before it was ready (or did not say its port)");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
#[ignore = "needs the nats-server binary: run with --include-ignored (CI does)"]
async fn a_server_without_jetstream_is_refused() {
    let Some(binary) = backend::nats_server() else {
        return;
    };
    let server = NatsServer::start(&binary, 0, None).await;
    let result = JetStreamLog::connect(JetStreamConfig {
        url: server.url(),
        op_timeout: Duration::from_secs(2),
        ..JetStreamConfig::default()
    })
    .await;
    let Err(BusError::Unavailable(why)) = result else {
        panic!("connected without JetStream? {result:?}");
    };
    assert!(why.to_string().contains("JetStream"), "{why}");
}

/// NATS goes away while events are appended and read, and comes back: appends fail in bounded
/// time meanwhile, succeed again afterwards, and a consumer opened before the outage goes on
/// to see every acknowledged event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the nats-server binary: run with --include-ignored (CI does)"]
async fn a_server_restart_loses_nothing_acknowledged() {
    let Some(binary) = backend::nats_server() else {
        return;
    };
    let store = tempfile::tempdir().expect("tempdir");
    let mut server = NatsServer::start(&binary, 0, Some(store.path())).await;
    let port = server.port;
    let op_timeout = Duration::from_secs(1);
    let log = connect(JetStreamConfig {
        url: server.url(),
        prefix: "FAULT".into(),
        op_timeout,
        ..JetStreamConfig::default()
    })
    .await;
    assert!(log.is_connected());
    let s = key("restart");
    let mut acknowledged: Vec<(String, Offset)> = Vec::new();
    for i in 0..10 {
        let id = format!("before{i}");
        let offset = log.append(&s, event(&s, &id)).await.expect("append");
        acknowledged.push((id, offset));
    }
    let mut consumer = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let mut seen = take(&mut *consumer, 5).await;
    // It goes on reading (waiting, mostly) through the outage.
    let (records, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match consumer.next_batch(100).await {
                Ok(batch) if batch.is_empty() => return,
                Ok(batch) => {
                    if records.send(batch).is_err() {
                        return;
                    }
                }
                Err(e) => panic!("the consumer failed: {e}"),
            }
        }
    });

    server.kill();
    // Appends fail within their timeout (several at once: none hangs).
    let started = Instant::now();
    let during =
        futures::future::join_all((0..5).map(|i| log.append(&s, event(&s, format!("during{i}")))))
            .await;
    for r in &during {
        assert!(matches!(r, Err(BusError::Unavailable(_))), "{r:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited < op_timeout + Duration::from_millis(500),
        "appends failed after {waited:?}"
    );
    assert!(!log.is_connected());

    // The same port, for the client reconnects to the URL it was given. (Freed by the kill a
    // moment ago; should another process take it meanwhile, this start fails loudly.)
    let _server = NatsServer::start(&binary, port, Some(store.path())).await;
    let restarted = Instant::now();
    // Appends succeed again once the connection is back; each is retried with the same event
    // (id) until it is acknowledged, and deduplication stores it once.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..10 {
        let id = format!("after{i}");
        loop {
            match log.append(&s, event(&s, &id)).await {
                Ok(offset) => {
                    acknowledged.push((id, offset));
                    break;
                }
                Err(BusError::Unavailable(e)) if Instant::now() < deadline => {
                    println!("append after the restart failed (retrying): {e}");
                }
                Err(e) => panic!("append after the restart: {e}"),
            }
        }
    }
    assert!(log.is_connected());

    // The consumer opened before the outage reads on: every acknowledged event once, in order.
    let last = acknowledged.last().map_or(0, |(_, o)| *o);
    let resumed = Instant::now();
    while seen.last().map_or(0, |r| r.offset) < last {
        let batch = within("the consumer reads on", received.recv())
            .await
            .expect("the consumer ended");
        seen.extend(batch);
    }
    println!(
        "the consumer caught up {:?} after the appends (restart to caught up: {:?})",
        resumed.elapsed(),
        restarted.elapsed()
    );
    assert!(
        seen.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets increase"
    );
    let mut distinct = HashSet::new();
    assert!(
        seen.iter().all(|r| distinct.insert(r.event.id.clone())),
        "no event twice: {:?}",
        ids(&seen)
    );
    let acked_ids: Vec<&str> = acknowledged.iter().map(|(id, _)| id.as_str()).collect();
    let seen_acked: Vec<&str> = seen
        .iter()
        .map(|r| r.event.id.as_str())
        .filter(|id| !id.starts_with("during"))
        .collect();
    assert_eq!(seen_acked, acked_ids, "every acknowledged event, in order");
    for (id, offset) in &acknowledged {
        let r = seen.iter().find(|r| &r.event.id == id).expect("seen");
        assert_eq!(r.offset, *offset, "{id} at its acknowledged offset");
    }
    log.close().await.expect("close");
    within("the consumer ends", reader).await.expect("reader");
}
