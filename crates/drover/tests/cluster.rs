//! Two `drover serve` processes on one PostgreSQL registry and one NATS JetStream server
//! (`DROVER_TEST_DATABASE_URL`, `DROVER_TEST_NATS_URL`; CI sets both): telemetry into node A is
//! consumed from node B (and a WebSocket consumer group resumes on the other node), commands
//! sent through B reach a device on A and its reply comes back, a credential change made
//! through A is enforced on B, a device connecting to B closes its connection on A. Each test
//! has its own PostgreSQL schema and NATS prefix. Outages of NATS and PostgreSQL use private
//! servers of their own.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::backends::{backends, unique, Cleanup};
use futures::StreamExt;
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "drg_012345_01234567890123456789012345678920BetF";
const WAIT: Duration = Duration::from_secs(15);

/// One running node.
struct Node {
    child: Child,
    api: String,
    http: String,
    mqtt_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// A node of a two-node cluster on `db` (schema) and `nats` (prefix).
    fn start(name: &str, db: &str, schema: &str, nats: &str, prefix: &str) -> Node {
        Node::spawn(
            &[
                "--instance",
                name,
                "--database-url",
                db,
                "--database-schema",
                schema,
                "--nats-url",
                nats,
                "--nats-prefix",
                prefix,
            ],
            "warn",
        )
    }

    /// Starts `drover serve` with `args` on ephemeral ports (HTTP and MQTT devices, API; TLS and
    /// the MQTT integration off) and reads the bound addresses from its banner.
    fn spawn(args: &[&str], log: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args([
                "serve",
                "--api-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--https-addr", "off", "--mqtt-addr", "127.0.0.1:0"])
            .args(["--mqtts-addr", "off", "--integration-mqtt-addr", "off"])
            .args(["--integration-mqtts-addr", "off"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--admin-token", TOKEN])
            .env_remove("DROVER_CONFIG")
            .env("DROVER_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let banner = common::read_banner(&mut child);
        Node {
            child,
            api: banner.api,
            http: banner.http,
            mqtt_port: banner.mqtt_port,
            _dir: dir,
        }
    }

    /// Creates application `app` with device `dev1` authenticated by `password`.
    async fn create_device(&self, password: &str) {
        let r = self
            .admin(reqwest::Method::POST, "/api/registry/v1alpha1/apps")
            .json(&json!({"metadata": {"name": "app"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = self
            .admin(reqwest::Method::POST, "/api/registry/v1alpha1/apps/app/devices")
            .json(&json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": password}]}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.api))
            .basic_auth("admin", Some(TOKEN))
    }
}

/// A v3.1.1 device connection; `filter` subscribed when given. Returns the CONNACK's code.
async fn mqtt_device(
    node: &Node,
    client_id: &str,
    password: &str,
    filter: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    rumqttc::EventLoop,
    rumqttc::ConnectReturnCode,
) {
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", node.mqtt_port);
    o.set_credentials("dev1@app", password);
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("MQTT connect failed: {e}"),
            }
        }
    })
    .await
    .expect("CONNACK within the deadline");
    if let (Some(f), rumqttc::ConnectReturnCode::Success) = (filter, code) {
        c.subscribe(f, QoS::AtLeastOnce).await.unwrap();
        next(&mut el, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
        })
        .await;
    }
    (c, el, code)
}

async fn next<T>(el: &mut rumqttc::EventLoop, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(e) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Err(e) => panic!("MQTT connection failed: {e}"),
            }
        }
    })
    .await
    .expect("MQTT event within the deadline")
}

/// Waits until the connection is closed by the server.
async fn closed(el: &mut rumqttc::EventLoop) {
    tokio::time::timeout(WAIT, async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("the connection to be closed within the deadline")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket integration of `app` on `node` as the administrator.
async fn ws_open(node: &Node, query: &str) -> Ws {
    let mut req = format!(
        "{}{}app{query}",
        node.api.replacen("http", "ws", 1),
        drover_api::WS_PATH
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("authorization", basic("admin", TOKEN).parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next event of a WebSocket consumer.
async fn ws_event(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event within the deadline")
            .expect("the stream goes on")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn two_nodes_share_registry_events_and_commands() {
    let (db, nats) = backends();
    let (schema, prefix) = (unique("drover_e2e"), unique("e2e"));
    let _cleanup = Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };
    let a = Node::start("a", &db, &schema, &nats, &prefix);
    let b = Node::start("b", &db, &schema, &nats, &prefix);

    for n in [&a, &b] {
        let r = reqwest::get(format!("{}/health/ready", n.api))
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["registry"], "ok", "{body}");
        assert_eq!(body["checks"]["eventLog"], "ok", "{body}");
        assert_eq!(body["checks"]["commandRouting"], "ok", "{body}");
    }

    // The registry is shared: created through A, read through B.
    a.create_device("pw1").await;
    let r = b
        .admin(
            reqwest::Method::GET,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Telemetry into A, consumed from B's WebSocket integration in consumer group g1.
    let mut ws = ws_open(&b, "?group_id=g1&from=earliest").await;
    let send = |temp: f64| {
        reqwest::Client::new()
            .post(format!("{}/v1/temperature", a.http))
            .basic_auth("dev1@app", Some("pw1"))
            .header("content-type", "application/json")
            .body(json!({ "temp": temp }).to_string())
            .send()
    };
    assert_eq!(send(21.5).await.unwrap().status(), 202);
    let event = ws_event(&mut ws).await;
    assert_eq!(event["device"], "dev1");
    assert_eq!(event["subject"], "temperature");
    assert_eq!(event["instance"], "a", "{event}");
    assert_eq!(event["data"], json!({"temp": 21.5}));
    // The group's position is shared: it resumes on node A after what B delivered.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    assert_eq!(send(22.0).await.unwrap().status(), 202);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut ws = ws_open(&a, "?group_id=g1").await;
        let event = ws_event(&mut ws).await;
        if event["data"] == json!({"temp": 22.0}) {
            break;
        }
        // B's commit (made as its connection closed) may not have been there yet.
        assert_eq!(event["data"], json!({"temp": 21.5}), "{event}");
        assert!(
            Instant::now() < deadline,
            "group g1 never resumed after 21.5 on node A"
        );
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }

    // A command through B reaches the device on A; the reply returns to the caller on B.
    let (d, mut del, code) = mqtt_device(&a, "dev1-a", "pw1", Some("command/inbox//#")).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    let deadline = Instant::now() + WAIT;
    let call = loop {
        // Until A's interest in the device has reached NATS: 404 DeviceNotOnline.
        let call = tokio::spawn(
            b.admin(
                reqwest::Method::POST,
                "/api/command/v1alpha1/apps/app/devices/dev1?command=read&timeout=10",
            )
            .body("?")
            .send(),
        );
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            next(&mut del, |e| match e {
                Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
        })
        .await;
        match got {
            Ok(p) => break (call, p),
            Err(_) => {
                let r = call.await.unwrap().unwrap();
                assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
                assert!(Instant::now() < deadline, "the command never reached A");
            }
        }
    };
    let (call, p) = call;
    let (topic, id) = p.topic.rsplit_once('/').unwrap();
    assert_eq!(topic, "command/inbox//read");
    assert_eq!(&p.payload[..], b"?");
    d.publish(
        format!("command/reply/{id}/201"),
        QoS::AtLeastOnce,
        false,
        "21.5",
    )
    .await
    .unwrap();
    next(&mut del, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "21.5");

    // The device connects to B: its connection on A is closed (session taken over).
    let (_d2, del2, code) = mqtt_device(&b, "dev1-b", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    closed(&mut del).await;

    // A queued command through A reaches the device when it subscribes on B.
    let r = a
        .admin(
            reqwest::Method::POST,
            "/api/command/v1alpha1/apps/app/devices/dev1?command=later&ttl=60",
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    drop(del2);
    let (_d3, mut del3, _) = mqtt_device(&b, "dev1-b", "pw1", Some("command/inbox//#")).await;
    let p = next(&mut del3, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(p.topic, "command/inbox//later");

    // A credential change through A: B disconnects the device and refuses the old password.
    let r = a
        .admin(
            reqwest::Method::GET,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .send()
        .await
        .unwrap();
    let mut dev: Value = r.json().await.unwrap();
    dev["spec"]["authentication"] = json!({"credentials": [{"pass": "pw2"}]});
    let changed = Instant::now();
    let r = a
        .admin(
            reqwest::Method::PUT,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .json(&dev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    closed(&mut del3).await;
    eprintln!(
        "the device's connection on B closed {:?} after the change on A",
        changed.elapsed()
    );
    let (_, _, code) = mqtt_device(&b, "dev1-b2", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
    let (_, _, code) = mqtt_device(&b, "dev1-b2", "pw2", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
}

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

/// A port nothing listens on now. Only for PostgreSQL, which cannot pick its own: the server
/// may lose it to another process before it binds, so [`PrivatePostgres`] retries with another.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a node on the embedded registry and the given NATS server.
fn node_on_nats(nats_port: u16) -> Node {
    Node::spawn(
        &["--nats-url", &format!("nats://127.0.0.1:{nats_port}")],
        "error",
    )
}

async fn ready(node: &Node) -> u16 {
    reqwest::get(format!("{}/health/ready", node.api))
        .await
        .unwrap()
        .status()
        .as_u16()
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

/// A PostgreSQL server of the test's own (so that it can be stopped): `initdb` in a temporary
/// directory, run as the `postgres` system user (the server refuses to run as root).
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    fn bin_dir() -> Option<std::path::PathBuf> {
        let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
            .collect();
        dirs.sort();
        let runuser = Command::new("runuser")
            .args(["-u", "postgres", "--", "true"])
            .status()
            .is_ok_and(|s| s.success());
        dirs.pop().filter(|_| runuser)
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }

    fn start_new() -> PrivatePostgres {
        let bin = Self::bin_dir().expect(
            "this test needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) and runuser",
        );
        let dir = tempfile::tempdir().unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let mut pg = PrivatePostgres {
            dir,
            port: unused_port(),
            bin,
        };
        let data = pg.data();
        assert!(pg
            .as_postgres("initdb", &["-D", &data, "-U", "postgres", "--auth=trust"])
            .success());
        // The port may be taken between choosing and binding it: then try another.
        for _ in 0..5 {
            if pg.try_start() {
                return pg;
            }
            pg.port = unused_port();
        }
        panic!(
            "the private PostgreSQL did not start (see {}/log)",
            pg.dir.path().display()
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        assert!(
            self.try_start(),
            "the private PostgreSQL did not start again"
        );
    }

    fn try_start(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        )
        .success()
    }

    fn stop(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// PostgreSQL goes away: the API and devices get 503 / "server unavailable" (retryable),
/// readiness says so, and the node recovers by itself when the database is back, with what was
/// acknowledged before still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_postgres_outage_is_survived() {
    let pg = PrivatePostgres::start_new();
    let node = Node::spawn(&["--database-url", &pg.url()], "off");
    node.create_device("pw1").await;
    let publish = || async {
        reqwest::Client::new()
            .post(format!("{}/v1/telemetry", node.http))
            .basic_auth("dev1@app", Some("pw1"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(publish().await, 202);

    pg.stop();
    let r = node
        .admin(reqwest::Method::GET, "/api/registry/v1alpha1/apps/app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the API says: retry later");
    assert_eq!(publish().await, 503, "devices are told to retry later");
    let (_c, _el, code) = mqtt_device(&node, "dev1", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable);
    assert_eq!(ready(&node).await, 503);

    pg.start();
    let deadline = Instant::now() + WAIT;
    while publish().await != 202 || ready(&node).await != 200 {
        assert!(Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = node
        .admin(
            reqwest::Method::GET,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "what was acknowledged before is there");
    let (_c, _el, code) = mqtt_device(&node, "dev1", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
}

/// Twins on a cluster: a desired change made through node A reaches the device connected to
/// node B, the device's report through B is read through A, and the change events are in the
/// shared stream.
#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_twin_change_through_one_node_reaches_a_device_on_another() {
    let (db, nats) = backends();
    let (schema, prefix) = (unique("drover_twin"), unique("twin"));
    let _cleanup = Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };
    let a = Node::start("a", &db, &schema, &nats, &prefix);
    let b = Node::start("b", &db, &schema, &nats, &prefix);
    a.create_device("pw1").await;
    let twin = "/api/registry/v1alpha1/apps/app/devices/dev1/twin";

    let (c, mut el, code) = mqtt_device(&b, "twin-dev1", "pw1", Some("$twin/#")).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    let current = next(&mut el, |e| match e {
        Event::Incoming(Packet::Publish(p)) if p.topic == "$twin/current" => Some(p.clone()),
        _ => None,
    })
    .await;
    let current: Value = serde_json::from_slice(&current.payload).unwrap();
    assert_eq!(current["desired"]["$version"], 1);

    let r = a
        .admin(reqwest::Method::PATCH, &format!("{twin}/desired"))
        .json(&json!({"mode": "eco"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pushed = next(&mut el, |e| match e {
        Event::Incoming(Packet::Publish(p)) if p.topic == "$twin/desired" => Some(p.clone()),
        _ => None,
    })
    .await;
    let pushed: Value = serde_json::from_slice(&pushed.payload).unwrap();
    assert_eq!(pushed, json!({"mode": "eco", "$version": 2}));

    c.publish(
        "$twin/reported",
        QoS::AtLeastOnce,
        false,
        r#"{"mode": "eco"}"#,
    )
    .await
    .unwrap();
    next(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let r = a.admin(reqwest::Method::GET, twin).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reported"], json!({"mode": "eco"}));

    // Both changes are events of the shared stream, read through A.
    let mut ws = ws_open(&a, "?from=earliest").await;
    let mut types = Vec::new();
    while types.len() < 2 {
        let ev = ws_event(&mut ws).await;
        let ty = ev["type"].as_str().unwrap_or_default().to_string();
        if ty.starts_with("io.drover.twin.") {
            types.push(ty);
        }
    }
    types.sort();
    assert_eq!(
        types,
        ["io.drover.twin.desired.v1", "io.drover.twin.reported.v1"]
    );
}
