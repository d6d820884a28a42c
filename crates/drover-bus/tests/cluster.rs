//! Command routing between nodes over a real NATS server (`DROVER_TEST_NATS_URL`, set by CI):
//! two routers, each with its own NATS connection, stand for two nodes. These tests are
//! `#[ignore]`d; `--include-ignored` runs them (and fails them without the URL; see
//! `backend/mod.rs`).
#![allow(clippy::unwrap_used)]

mod backend;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_bus::cluster::{ClusterConfig, NatsPeers, TakeoverHandler};
use drover_bus::commands::{
    Command, CommandError, CommandRouter, CommandSink, DeviceKey, Outcome, Reply, RouterConfig,
    SinkRefusal,
};

struct Node {
    router: Arc<CommandRouter>,
    _peers: Arc<NatsPeers>,
    takeovers: Arc<Mutex<Vec<(String, String)>>>,
}

struct Cluster {
    client: async_nats::Client,
    prefix: String,
    url: String,
}

/// Deletes the test's streams even when it failed (on a runtime of its own: the test's may be
/// unwinding).
impl Drop for Cluster {
    fn drop(&mut self) {
        let (url, upper) = (self.url.clone(), self.prefix.to_uppercase());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = async_nats::connect(url).await else {
                    return;
                };
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_stream(format!("{upper}_COMMANDS")).await;
                let _ = js.delete_stream(format!("{upper}_COMMAND_CLAIMS")).await;
            });
        })
        .join();
    }
}

impl Cluster {
    async fn new(url: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(
            "t{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_millis() % 100_000
        );
        let client = async_nats::connect(url).await.unwrap();
        Self {
            client,
            prefix,
            url: url.to_string(),
        }
    }

    async fn node(&self, url: &str, name: &str, queue: i64) -> Node {
        let client = async_nats::connect(url).await.unwrap();
        let router = CommandRouter::new(RouterConfig::default());
        let takeovers = Arc::new(Mutex::new(Vec::new()));
        let t = takeovers.clone();
        let handler: TakeoverHandler = Arc::new(move |app: &str, device: &str| {
            t.lock()
                .unwrap()
                .push((app.to_string(), device.to_string()));
        });
        let peers = NatsPeers::start(
            client,
            ClusterConfig {
                prefix: self.prefix.clone(),
                node: name.into(),
                max_queue_per_device: queue,
                ..ClusterConfig::default()
            },
            &router,
            handler,
        )
        .await
        .unwrap();
        Node {
            router,
            _peers: peers,
            takeovers,
        }
    }

    /// The streams go when the cluster is dropped.
    async fn cleanup(self) {
        let _ = self.client.flush().await;
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<Command>>);

impl CommandSink for Collect {
    fn deliver(&self, c: &Command) -> Result<(), SinkRefusal> {
        self.0.lock().unwrap().push(c.clone());
        Ok(())
    }
}

impl Collect {
    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }
}

fn cmd(id: &str, device: &str, expects_reply: bool) -> Command {
    Command {
        id: id.into(),
        app: "app".into(),
        app_uid: "uid-1".into(),
        device: device.into(),
        name: "set".into(),
        payload: Bytes::from_static(b"{\"on\":true}"),
        content_type: Some("application/json".into()),
        expects_reply,
    }
}

fn key(d: &str) -> DeviceKey {
    ("uid-1".into(), d.into())
}

/// Waits until `f` holds, failing after 10 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until node `a`'s interest in `key` reached NATS: a command from `b` gets through.
async fn delivered_eventually(b: &Node, c: Command, k: DeviceKey) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b
            .router
            .route(c.clone(), std::slice::from_ref(&k), None)
            .await
        {
            Ok(o) => return o,
            Err(CommandError::Unreachable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("not delivered: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn commands_and_replies_cross_nodes() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let cluster = Cluster::new(&url).await;
    let a = cluster.node(&url, "a", 50).await;
    let b = cluster.node(&url, "b", 50).await;

    // Not connected anywhere, no ttl: unreachable.
    assert!(matches!(
        b.router
            .route(cmd("c0", "d1", false), &[key("d1")], None)
            .await,
        Err(CommandError::Unreachable(d)) if d == "d1"
    ));

    let sink = Arc::new(Collect::default());
    let _reg = a.router.register(key("d1"), sink.clone());
    let c1 = cmd("c1", "d1", true);
    let rx = b.router.expect_reply(&c1, vec!["d1".into()]).unwrap();
    assert_eq!(
        delivered_eventually(&b, c1, key("d1")).await,
        Outcome::Delivered
    );
    assert_eq!(sink.ids(), ["c1"]);
    let got = sink.0.lock().unwrap()[0].clone();
    assert_eq!(got.payload, Bytes::from_static(b"{\"on\":true}"));
    assert_eq!(got.content_type.as_deref(), Some("application/json"));

    // The device on A replies; the caller waits on B.
    let reply = Reply {
        status: 201,
        payload: Bytes::from_static(b"done"),
        content_type: Some("text/plain".into()),
    };
    assert!(
        a.router
            .reply("uid-1", "intruder", "c1", reply.clone())
            .is_err(),
        "only the device (or its gateways) may reply"
    );
    a.router.reply("uid-1", "d1", "c1", reply.clone()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, reply);

    // A device connecting to B closes its connection on A, not on B.
    b.router.session_started("app", &key("d1"));
    eventually("the takeover reaching node a", || {
        a.takeovers.lock().unwrap().as_slice() == [("app".to_string(), "d1".to_string())]
    })
    .await;
    assert!(b.takeovers.lock().unwrap().is_empty());
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn the_queue_is_shared_and_a_command_is_delivered_once() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let cluster = Cluster::new(&url).await;
    let a = cluster.node(&url, "a", 3).await;
    let b = cluster.node(&url, "b", 3).await;
    let ttl = Some(Duration::from_secs(60));
    // Queued through B for a device behind gateway gw.
    let targets = [key("d2"), key("gw")];
    for id in ["q1", "q2", "q3"] {
        assert_eq!(
            b.router
                .route(cmd(id, "d2", false), &targets, ttl)
                .await
                .expect("routed"),
            Outcome::Queued
        );
    }
    assert!(
        matches!(
            b.router.route(cmd("q4", "d2", false), &targets, ttl).await,
            Err(CommandError::QueueFull(..))
        ),
        "the queue is bounded per device"
    );
    // The gateway connects to A and takes them, in order.
    let gw = Arc::new(Collect::default());
    let _g = a.router.register(key("gw"), gw.clone());
    eventually("the gateway receiving the queue", || gw.ids().len() == 3).await;
    assert_eq!(gw.ids(), ["q1", "q2", "q3"]);
    // The device itself connecting to B later gets nothing twice.
    let dev = Arc::new(Collect::default());
    let _d = b.router.register(key("d2"), dev.clone());
    // A command routed now reaches a live sink: proves B's subscription is in place, and that
    // the drain before it delivered nothing.
    let _ = delivered_eventually(&a, cmd("live", "d2", false), key("d2")).await;
    assert_eq!(dev.ids(), ["live"]);

    // A device connecting while a command is queued for it (the poke path).
    let late = Arc::new(Collect::default());
    let _l = a.router.register(key("d3"), late.clone());
    // d3's sink is on A; route from B with a ttl: delivered directly or via the queue.
    let out = b
        .router
        .route(cmd("p1", "d3", false), &[key("d3")], ttl)
        .await
        .unwrap();
    eventually("the command reaching d3", || late.ids() == ["p1"]).await;
    let _ = out;
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn an_undelivered_command_expires_once() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let cluster = Cluster::new(&url).await;
    let a = cluster.node(&url, "a", 50).await;
    let b = cluster.node(&url, "b", 50).await;
    assert_eq!(
        b.router
            .route(
                cmd("e1", "d4", false),
                &[key("d4")],
                Some(Duration::from_millis(300))
            )
            .await
            .expect("routed"),
        Outcome::Queued
    );
    let mut expired = Vec::new();
    eventually("an expiry report", || {
        expired.extend(a.router.expire(Instant::now()));
        expired.extend(b.router.expire(Instant::now()));
        !expired.is_empty()
    })
    .await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, "e1");
    // Connecting afterwards delivers nothing.
    let sink = Arc::new(Collect::default());
    let _r = a.router.register(key("d4"), sink.clone());
    let _ = delivered_eventually(&b, cmd("after", "d4", false), key("d4")).await;
    assert_eq!(sink.ids(), ["after"]);
    assert!(a.router.expire(Instant::now()).is_empty());
    cluster.cleanup().await;
}

/// Refuses everything: an MQTT session not (yet) subscribed to its command inbox.
struct Refusing;

impl CommandSink for Refusing {
    fn deliver(&self, _: &Command) -> Result<(), SinkRefusal> {
        Err(SinkRefusal::NotSubscribed)
    }
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_queued_command_waits_for_a_sink_that_takes_it() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let cluster = Cluster::new(&url).await;
    let a = cluster.node(&url, "a", 50).await;
    let b = cluster.node(&url, "b", 50).await;
    assert_eq!(
        b.router
            .route(
                cmd("w1", "d5", false),
                &[key("d5")],
                Some(Duration::from_secs(60))
            )
            .await
            .expect("routed"),
        Outcome::Queued
    );
    // Connected but not subscribed: the command stays queued...
    let refusing = a.router.register(key("d5"), Arc::new(Refusing));
    // ...and a command without ttl is refused by it...
    assert!(matches!(
        b.router
            .route(cmd("x", "d5", false), &[key("d5")], None)
            .await,
        Err(CommandError::Unreachable(d)) if d == "d5"
    ));
    // ...until the session subscribes (registers again, as the device policy does).
    let sink = Arc::new(Collect::default());
    let _taking = a.router.register(key("d5"), sink.clone());
    drop(refusing);
    eventually("the queued command after subscribing", || {
        sink.ids() == ["w1"]
    })
    .await;
    cluster.cleanup().await;
}
