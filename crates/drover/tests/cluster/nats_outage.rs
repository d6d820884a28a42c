//! A NATS outage: retryable errors while it lasts, nothing acknowledged is lost.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{ws_event, ws_open};
use crate::node::{ready, Node, WAIT};
use serde_json::{json, Value};

/// A NATS server of the test's own (so that it can be stopped), with JetStream storage in `dir`.
struct PrivateNats {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateNats {
    fn binary() -> Option<String> {
        [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
    }

    /// Starts nats-server on `port`, or on a port it picks itself (read back from the ports
    /// file it writes: nothing else can take the port between choosing and binding it).
    fn start(port: Option<u16>, dir: &std::path::Path) -> PrivateNats {
        let binary = Self::binary()
            .expect("this test needs nats-server (Debian package nats-server) on the PATH");
        let ports = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).unwrap();
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(dir)
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        let port = loop {
            let written = std::fs::read_dir(&ports)
                .unwrap()
                .filter_map(Result::ok)
                .find_map(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            let listed = written
                .as_ref()
                .and_then(|v| v["nats"][0].as_str())
                .and_then(|url| {
                    url.rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                });
            if let Some(p) = listed {
                if std::net::TcpStream::connect(("127.0.0.1", p)).is_ok() {
                    break p;
                }
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        PrivateNats {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        *self = PrivateNats::start(Some(self.port), &self.dir.clone());
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a node on the embedded registry and the given NATS server.
fn node_on_nats(nats_port: u16) -> Node {
    Node::spawn(
        &["--nats-url", &format!("nats://127.0.0.1:{nats_port}")],
        "error",
    )
}

/// Reads the publisher's results until `after` of them were `want`, recording acknowledged ones;
/// anything but 202 must be a retryable 503.
async fn answers(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, u16)>,
    acked: &mut Vec<u64>,
    want: u16,
    after: usize,
) {
    let mut seen = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((n, status)) = rx.recv().await {
            if status == 202 {
                acked.push(n);
            } else {
                assert_eq!(
                    status, 503,
                    "publish {n}: a retryable error while NATS is away"
                );
            }
            if status == want {
                seen += 1;
                if seen >= after {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {after} answers {want} within 30 s"));
}

/// NATS goes away while a device publishes: the device gets 503 (retryable), readiness says so,
/// the node recovers by itself when NATS is back, and every acknowledged event is in the stream
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_nats_outage_loses_nothing_acknowledged() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = PrivateNats::start(None, store.path());
    let node = node_on_nats(nats.port);
    assert_eq!(ready(&node).await, 200);
    node.create_device("pw").await;

    // The publisher: n = 0, 1, ... one after the other; records which were acknowledged.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u16)>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (url, stop) = (format!("{}/v1/telemetry", node.http), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = match client
                    .post(&url)
                    .basic_auth("dev1@app", Some("pw"))
                    .header("content-type", "application/json")
                    .body(json!({"n": n}).to_string())
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                let _ = tx.send((n, status));
                n += 1;
            }
        })
    };
    let mut acked = Vec::new();
    answers(&mut rx, &mut acked, 202, 20).await;
    nats.kill();
    answers(&mut rx, &mut acked, 503, 1).await;
    assert_eq!(ready(&node).await, 503, "not ready without NATS");
    nats.restart();
    answers(&mut rx, &mut acked, 202, 20).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
    while let Ok((n, status)) = rx.try_recv() {
        if status == 202 {
            acked.push(n);
        }
    }
    let deadline = Instant::now() + WAIT;
    while ready(&node).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the node did not become ready again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Read the stream back from the start.
    let mut ws = ws_open(&node, "?from=earliest").await;
    let last = *acked.last().unwrap();
    let mut seen: Vec<u64> = Vec::new();
    while seen.last() != Some(&last) {
        seen.push(ws_event(&mut ws).await["data"]["n"].as_u64().unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, each once: {seen:?}"
    );
    for n in &acked {
        assert!(
            seen.contains(n),
            "acknowledged event {n} lost; stream: {seen:?}"
        );
    }
    eprintln!(
        "{} acknowledged, {} in the stream (the rest were refused with 503)",
        acked.len(),
        seen.len()
    );
}
