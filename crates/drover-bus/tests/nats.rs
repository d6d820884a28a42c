//! The NATS JetStream log: the shared conformance checks, then what only it does (retention
//! mapped to JetStream, deduplication, several nodes on one prefix, a server restart).
//!
//! Tests against the shared server need `DROVER_TEST_NATS_URL` (`.ci/run` sets
//! `nats://127.0.0.1:4222`); each runs under a prefix of its own whose streams and buckets it
//! deletes at the end. The tests that stop a server start a private `nats-server` on a port it
//! picks itself. These tests are `#[ignore]`d; `--include-ignored` runs them (and fails them
//! without the URL or the binary; see `backend/mod.rs`).

mod backend;
mod conformance;

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conformance::{append_n, event, ids, key, take, within};
use drover_bus::nats::{JetStreamConfig, JetStreamLog};
use drover_bus::{BusError, EventLog, Offset, StartFrom};
use futures::StreamExt;

/// A prefix no other test (or run) uses; it holds no `_`, so `<PREFIX>_` matches only its own
/// streams and buckets.
fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);
    format!("t{}n{n}s{ms}", std::process::id())
}

fn config(url: &str, prefix: &str) -> JetStreamConfig {
    JetStreamConfig {
        url: url.into(),
        prefix: prefix.into(),
        ..JetStreamConfig::default()
    }
}

async fn connect(config: JetStreamConfig) -> JetStreamLog {
    within("connect", JetStreamLog::connect(config))
        .await
        .expect("connect")
}

/// Deletes every stream and bucket of `prefix` (and nothing else).
async fn clean_up(url: &str, prefix: &str) {
    let client = async_nats::connect(url)
        .await
        .expect("connect for clean-up");
    let js = async_nats::jetstream::new(client);
    let upper = prefix.to_uppercase();
    let ours = [format!("{upper}_"), format!("KV_{upper}_")];
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    for name in names
        .into_iter()
        .filter(|n| ours.iter().any(|p| n.starts_with(p.as_str())))
    {
        js.delete_stream(&name).await.expect("delete a test stream");
    }
}

/// A test's own prefix, cleaned up when the test ends, passed or failed.
struct Prefix {
    url: String,
    name: String,
}

impl Prefix {
    fn new(url: &str) -> Self {
        Self {
            url: url.into(),
            name: unique_prefix(),
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.name.clone());
        // On a thread of its own: this may run inside the test's runtime.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(clean_up(&url, &prefix));
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleaning up {} failed", self.name);
        }
    }
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn conformance() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(config(&url, prefix)).await;
    conformance::all(&log).await;
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn conformance_with_tiny_read_batches() {
    // The same checks with a pull of two messages at a time.
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(JetStreamConfig {
        read_batch: 2,
        ..config(&url, prefix)
    })
    .await;
    conformance::all(&log).await;
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn retention_is_mapped_to_the_stream() {
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(JetStreamConfig {
        max_age: Duration::from_secs(3600),
        max_bytes_per_stream: 5 << 20,
        ..config(&url, prefix)
    })
    .await;
    let s = key("retention");
    append_n(&log, &s, "e", 1).await;

    let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
    let name = log.stream_name(&s);
    assert!(
        name.starts_with(&format!("{}_EV_", prefix.to_uppercase())),
        "{name}"
    );
    let mut stream = js.get_stream(&name).await.expect("the stream exists");
    let info = stream.info().await.expect("info");
    let c = &info.config;
    assert_eq!(c.max_age, Duration::from_secs(3600));
    assert_eq!(c.max_bytes, 5 << 20);
    assert_eq!(c.discard, DiscardPolicy::Old);
    assert_eq!(c.retention, RetentionPolicy::Limits);
    assert_eq!(c.storage, StorageType::File);
    assert_eq!(c.num_replicas, 1);
    assert_eq!(c.subjects, [format!("{prefix}.ev.{}", s.app_uid)]);
    assert_eq!(info.state.messages, 1);
    log.close().await.expect("close");

    // Another node with other settings brings the stream to its settings.
    let log = connect(JetStreamConfig {
        max_age: Duration::from_secs(60),
        max_bytes_per_stream: 0,
        ..config(&url, prefix)
    })
    .await;
    append_n(&log, &s, "f", 1).await;
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.max_age, Duration::from_secs(60));
    assert_eq!(info.config.max_bytes, -1, "0 means no limit");
    assert_eq!(info.config.duplicate_window, Duration::from_secs(60));
    assert_eq!(info.state.messages, 2);
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn retried_appends_are_deduplicated() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(config(&url, prefix)).await;
    let s = key("dedup");
    let first = log.append(&s, event(&s, "once")).await.expect("append");
    // The same event again (a retry after a lost acknowledgement): the same offset, stored once.
    let again = log.append(&s, event(&s, "once")).await.expect("append");
    assert_eq!((first, again), (1, 1));
    assert_eq!(log.append(&s, event(&s, "next")).await.expect("append"), 2);
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *c, 2).await), ["once", "next"]);
    assert_eq!(c.end(), 2);
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn two_nodes_share_streams_groups_and_deletions() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let a = connect(config(&url, prefix)).await;
    let b = connect(config(&url, prefix)).await;
    let s = key("nodes");

    // Appends through A are consumed through B, live and from the start.
    let mut live = b.consume(&s, StartFrom::Latest).await.expect("consume");
    append_n(&a, &s, "e", 3).await;
    assert_eq!(ids(&take(&mut *live, 3).await), ["e0", "e1", "e2"]);
    assert_eq!(live.end(), 3);
    let mut all = b.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *all, 3).await), ["e0", "e1", "e2"]);
    // Both append; offsets stay dense and each sees the other's.
    let offsets = futures::future::join_all((0..10).map(|i| {
        let log = if i % 2 == 0 { &a } else { &b };
        log.append(&s, event(&s, format!("x{i}")))
    }))
    .await;
    let mut offsets: Vec<Offset> = offsets.into_iter().map(|o| o.expect("append")).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (4..=13).collect::<Vec<_>>());
    let mut from_a = a.consume(&s, StartFrom::After(3)).await.expect("consume");
    assert_eq!(take(&mut *from_a, 10).await.len(), 10);
    assert_eq!(take(&mut *live, 10).await.len(), 10);

    // A group committed through A is where B finds it.
    a.commit(&s, "shared", 2).await.expect("commit");
    assert_eq!(b.committed(&s, "shared").await.expect("committed"), Some(2));
    // B knows of offsets appended through A (it read them) and may commit them.
    b.commit(&s, "shared", 13).await.expect("commit");
    assert_eq!(
        a.committed(&s, "shared").await.expect("committed"),
        Some(13)
    );

    // Deleting through A ends B's waiting consumer, and B's appends are refused.
    let waiting = tokio::spawn(async move { live.next().await });
    let deleting = Instant::now();
    a.delete_stream(&s).await.expect("delete");
    let ended = within("B's consumer ends", waiting).await.expect("join");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    // JetStream tells B's pull consumer at once (no waiting for missed heartbeats).
    let took = deleting.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "B's consumer ended after {took:?}"
    );
    assert!(matches!(
        b.append(&s, event(&s, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
    assert_eq!(b.committed(&s, "shared").await.expect("committed"), None);
    let mut c = b.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(within("ends", c.next()).await.expect("next"), None);
    // B deleting it too is fine.
    b.delete_stream(&s).await.expect("delete again");

    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn oversized_events_are_refused() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(JetStreamConfig {
        max_event_bytes: 1000,
        ..config(&url, prefix)
    })
    .await;
    let s = key("large");
    let mut e = event(&s, "big");
    e.data = vec![0; 1000].into();
    assert!(matches!(
        log.append(&s, e).await,
        Err(BusError::TooLarge(_))
    ));
    let mut e = event(&s, "fits");
    e.data = vec![0; 700].into();
    assert_eq!(log.append(&s, e).await.expect("append"), 1);
    log.close().await.expect("close");

    // Beyond what the server takes, whatever the configuration says.
    let log = connect(JetStreamConfig {
        max_event_bytes: 64 << 20,
        ..config(&url, prefix)
    })
    .await;
    let mut e = event(&s, "huge");
    e.data = vec![0; 32 << 20].into();
    let refused = log.append(&s, e).await;
    assert!(matches!(refused, Err(BusError::TooLarge(_))), "{refused:?}");
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn close_ends_consumers_and_refuses_work() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = std::sync::Arc::new(connect(config(&url, prefix)).await);
    let s = key("close");
    append_n(&*log, &s, "e", 2).await;
    let mut c = log.consume(&s, StartFrom::Latest).await.expect("consume");
    let waiting = tokio::spawn(async move { c.next().await });
    log.close().await.expect("close");
    assert_eq!(
        within("consumer ends", waiting)
            .await
            .expect("join")
            .expect("next"),
        None
    );
    assert!(!log.is_connected());
    assert!(matches!(
        log.append(&s, event(&s, "late")).await,
        Err(BusError::Closed)
    ));
    assert!(matches!(
        log.consume(&s, StartFrom::Earliest).await,
        Err(BusError::Closed)
    ));
    log.close().await.expect("closing twice is fine");
}

/// Three callers with 50 appends in flight each: every caller's appends are stored in call
/// order, and many appends share a round trip (prints the rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn pipelined_appends_keep_their_order() {
    use futures::TryStreamExt;
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(config(&url, prefix)).await;
    let s = key("pipelined");
    const CALLERS: usize = 3;
    const EACH: usize = 2000;
    let started = Instant::now();
    let callers = (0..CALLERS).map(|c| {
        let (log, s) = (&log, &s);
        futures::stream::iter(0..EACH)
            .map(move |i| log.append(s, event(s, format!("{c}/{i}"))))
            .buffered(50)
            .try_collect::<Vec<Offset>>()
    });
    let offsets = within("appends", futures::future::try_join_all(callers))
        .await
        .expect("appends");
    let elapsed = started.elapsed();
    println!(
        "{} pipelined appends in {elapsed:?}: {:.0} appends/s",
        CALLERS * EACH,
        (CALLERS * EACH) as f64 / elapsed.as_secs_f64()
    );
    for o in &offsets {
        assert!(
            o.windows(2).all(|w| w[0] < w[1]),
            "a caller's appends are stored in call order"
        );
    }
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let mut next = [0usize; CALLERS];
    let mut read = 0;
    while read < CALLERS * EACH {
        let batch = within("batch", c.next_batch(1000)).await.expect("batch");
        assert!(!batch.is_empty());
        for r in batch {
            let (caller, i) = r.event.id.split_once('/').expect("id");
            let (caller, i): (usize, usize) = (caller.parse().expect("n"), i.parse().expect("n"));
            assert_eq!(i, next[caller]);
            next[caller] += 1;
            read += 1;
        }
    }
    log.close().await.expect("close");
}

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
