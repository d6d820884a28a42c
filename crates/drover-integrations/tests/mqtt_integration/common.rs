//! A real registry, event log and MQTT integration server in a temporary directory, and
//! rumqttc clients whose events arrive on a channel.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_bus::{EmbeddedLog, EventLog, LogConfig, Offset, StreamKey};
use drover_integrations::mqtt::{IntegrationPolicy, IntegrationSettings};
use drover_model::{Event, MetadataInput, Principal, Resource, ResourceInput};
use drover_mqtt::{MqttConfig, MqttServer};
use drover_registry::{AdminBootstrap, MembersDoc, Registry, SqliteRegistry};
use rumqttc::v5::mqttbytes::v5 as p5;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long any single expectation may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The NATS server (with JetStream) of tests that need one, from `DROVER_TEST_NATS_URL`.
///
/// The convention of every Drover test crate: such tests are `#[ignore]`d with the reason (a
/// plain `cargo test` lists them as ignored) and `--include-ignored` runs them, as CI does;
/// asked to run without the variable, the test fails (never `None`: an `Option` so that callers
/// read as before).
pub fn nats_url() -> Option<String> {
    match std::env::var("DROVER_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("this test");
            panic!("{test} needs DROVER_TEST_NATS_URL (NATS with JetStream, e.g. nats://127.0.0.1:4222)")
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Settings for tests: lag checks off unless a test turns them on.
pub fn settings() -> IntegrationSettings {
    IntegrationSettings {
        max_lag: 0,
        lag_check_interval: Duration::from_millis(50),
        ..IntegrationSettings::default()
    }
}

/// Waits until `check` returns something, polling; panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Registry, log and server over one data directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub registry: Arc<SqliteRegistry>,
    pub log: Arc<EmbeddedLog>,
    pub server: Arc<MqttServer<IntegrationPolicy>>,
    pub addr: SocketAddr,
    pub settings: IntegrationSettings,
    pub mqtt: MqttConfig,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<()>>,
}

pub fn admin() -> Principal {
    Principal::SystemAdmin("admin".into())
}

pub fn user(name: &str) -> Principal {
    Principal::User(name.into())
}

impl Env {
    pub async fn start(settings: IntegrationSettings, mqtt: MqttConfig) -> Env {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let (registry, log, server, addr, stop, serving) =
            Self::open(dir.path().to_path_buf(), settings.clone(), mqtt.clone()).await;
        match registry.bootstrap_admin(None).await.expect("admin") {
            AdminBootstrap::Generated(_) => {}
            other => panic!("unexpected bootstrap {other:?}"),
        }
        Env {
            dir,
            registry,
            log,
            server,
            addr,
            settings,
            mqtt,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    pub async fn default() -> Env {
        Self::start(settings(), MqttConfig::default()).await
    }

    #[allow(clippy::type_complexity)]
    async fn open(
        dir: PathBuf,
        settings: IntegrationSettings,
        mqtt: MqttConfig,
    ) -> (
        Arc<SqliteRegistry>,
        Arc<EmbeddedLog>,
        Arc<MqttServer<IntegrationPolicy>>,
        SocketAddr,
        oneshot::Sender<()>,
        JoinHandle<()>,
    ) {
        let registry = Arc::new(
            SqliteRegistry::open(&dir.join("registry.db"))
                .await
                .expect("registry"),
        );
        let log = Arc::new(
            EmbeddedLog::open(&dir.join("events"), LogConfig::default())
                .await
                .expect("log"),
        );
        let policy = IntegrationPolicy::new(
            registry.clone(),
            users(registry.clone()),
            log.clone(),
            settings,
        );
        let server = policy.into_server(mqtt);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(drover_mqtt::serve_tcp(listener, server.clone(), async {
            let _ = stopped.await;
        }));
        (registry, log, server, addr, stop, serving)
    }

    /// Shuts the server down (every consumer commits and stops), closes the log and the
    /// registry, and opens all three again on the same directory (a new port).
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let (registry, log, server, addr, stop, serving) = Self::open(
            self.dir.path().to_path_buf(),
            self.settings.clone(),
            self.mqtt.clone(),
        )
        .await;
        self.registry = registry;
        self.log = log;
        self.server = server;
        self.addr = addr;
        self.stop = Some(stop);
        self.serving = Some(serving);
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            tokio::time::timeout(WAIT, serving)
                .await
                .expect("server stops")
                .expect("server task");
        }
        self.log.close().await.expect("close log");
        self.registry.close().await;
    }

    pub fn policy(&self) -> &IntegrationPolicy {
        self.server.policy()
    }

    /// Creates a user; returns its access token.
    pub async fn user(&self, name: &str) -> String {
        let (_, token) = self
            .registry
            .create_user(&admin(), name, false)
            .await
            .expect("create user");
        token.token
    }

    pub async fn app(&self, owner: &str, name: &str) -> Resource {
        self.registry
            .create_app(
                &user(owner),
                ResourceInput {
                    metadata: MetadataInput {
                        name: Some(name.into()),
                        ..MetadataInput::default()
                    },
                    ..ResourceInput::default()
                },
            )
            .await
            .expect("create app")
    }

    /// Gives `member` the reader role on `app`.
    pub async fn add_reader(&self, owner: &str, app: &str, member: &str) {
        let mut doc: MembersDoc = self
            .registry
            .get_members(&user(owner), app)
            .await
            .expect("members");
        doc.members.insert(
            member.into(),
            drover_model::MemberEntry {
                role: drover_model::Role::Reader,
            },
        );
        self.registry
            .set_members(&user(owner), app, doc)
            .await
            .expect("set members");
    }

    /// Appends event `n` of `device` on `channel`.
    pub async fn append(&self, app: &Resource, device: &str, channel: &str, n: usize) -> Offset {
        self.log
            .append(&stream(app), event(app, device, channel, n))
            .await
            .expect("append")
    }

    pub async fn committed(&self, app: &Resource, group: &str) -> Option<Offset> {
        self.log
            .committed(&stream(app), group)
            .await
            .expect("committed")
    }

    /// Waits until `group` committed `offset`.
    pub async fn wait_committed(&self, app: &Resource, group: &str, offset: Offset) {
        eventually(&format!("{group} to commit {offset}"), || async {
            (self.committed(app, group).await == Some(offset)).then_some(())
        })
        .await;
    }

    pub fn v4(&self, client_id: &str, user: &str, token: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_credentials(user, token);
        o
    }

    pub fn v5(&self, client_id: &str, user: &str, token: &str) -> rumqttc::v5::MqttOptions {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", self.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_credentials(user, token);
        o
    }
}

pub fn stream(app: &Resource) -> StreamKey {
    StreamKey::new(app.metadata.name.clone(), app.metadata.uid.clone())
}

/// Event `n` of `device`: id `<device>-<n>`, JSON data `{"n": n}`.
pub fn event(app: &Resource, device: &str, channel: &str, n: usize) -> Event {
    Event {
        id: format!("{device}-{n}"),
        ty: "io.drogue.event.v1".into(),
        channel: channel.into(),
        time: chrono::Utc::now(),
        content_type: Some("application/json".into()),
        data_schema: None,
        application: app.metadata.name.clone(),
        application_uid: app.metadata.uid.clone(),
        device: device.into(),
        device_uid: format!("uid-{device}"),
        sender: device.into(),
        sender_uid: format!("uid-{device}"),
        instance: "drover".into(),
        extensions: vec![("Foo".into(), "bar".into())],
        data: Bytes::from(format!("{{\"n\":{n}}}")),
    }
}

/// The `id` of a structured-mode payload.
pub fn ce_id(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("CloudEvent JSON");
    v["id"].as_str().expect("id").to_string()
}

/// A rumqttc MQTT 3.1.1 client whose event loop runs in a task.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::Event, rumqttc::ConnectionError>>,
    task: JoinHandle<()>,
    /// PUBLISHes that arrived while waiting for something else.
    early: VecDeque<rumqttc::Publish>,
}

impl V4 {
    /// Connects; returns the client and its CONNACK (or the error).
    pub async fn connect(
        opts: rumqttc::MqttOptions,
    ) -> (V4, Result<rumqttc::ConnAck, rumqttc::ConnectionError>) {
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).is_err() || failed {
                    return; // no reconnects: a test reconnects explicitly
                }
            }
        });
        let mut c = V4 {
            client,
            rx,
            task,
            early: VecDeque::new(),
        };
        let ack = loop {
            match c.next().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => break Ok(a),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        (c, ack)
    }

    /// Connects and expects success.
    pub async fn ok(opts: rumqttc::MqttOptions) -> (V4, rumqttc::ConnAck) {
        let (c, ack) = Self::connect(opts).await;
        let ack = ack.expect("connected");
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        (c, ack)
    }

    pub async fn next(&mut self) -> Result<rumqttc::Event, rumqttc::ConnectionError> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("MQTT event within deadline")
            .expect("event loop running")
    }

    /// Subscribes and returns the SUBACK codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            match self.next().await.expect("no error") {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => return s.return_codes,
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => self.early.push_back(p),
                _ => {}
            }
        }
    }

    /// The next PUBLISH.
    pub async fn publish(&mut self) -> rumqttc::Publish {
        if let Some(p) = self.early.pop_front() {
            return p;
        }
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) =
                self.next().await.expect("no error")
            {
                return p;
            }
        }
    }

    /// Drops the connection without DISCONNECT.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// A rumqttc MQTT 5 client whose event loop runs in a task.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>>,
    task: JoinHandle<()>,
    early: VecDeque<p5::Publish>,
}

impl V5 {
    pub async fn connect(
        opts: rumqttc::v5::MqttOptions,
    ) -> (V5, Result<p5::ConnAck, rumqttc::v5::ConnectionError>) {
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).is_err() || failed {
                    return;
                }
            }
        });
        let mut c = V5 {
            client,
            rx,
            task,
            early: VecDeque::new(),
        };
        let ack = loop {
            match c.next().await {
                Ok(rumqttc::v5::Event::Incoming(p5::Packet::ConnAck(a))) => break Ok(a),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        (c, ack)
    }

    pub async fn ok(opts: rumqttc::v5::MqttOptions) -> (V5, p5::ConnAck) {
        let (c, ack) = Self::connect(opts).await;
        let ack = ack.expect("connected");
        assert_eq!(ack.code, p5::ConnectReturnCode::Success);
        (c, ack)
    }

    pub async fn next(&mut self) -> Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("MQTT event within deadline")
            .expect("event loop running")
    }

    pub async fn suback(&mut self) -> Vec<p5::SubscribeReasonCode> {
        loop {
            match self.next().await.expect("no error") {
                rumqttc::v5::Event::Incoming(p5::Packet::SubAck(s)) => return s.return_codes,
                rumqttc::v5::Event::Incoming(p5::Packet::Publish(p)) => self.early.push_back(p),
                _ => {}
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> Vec<p5::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.suback().await
    }

    /// Subscribes with user properties.
    pub async fn subscribe_with(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
        props: &[(&str, &str)],
    ) -> Vec<p5::SubscribeReasonCode> {
        let props = p5::SubscribeProperties {
            id: None,
            user_properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.client
            .subscribe_with_properties(filter, qos, props)
            .await
            .expect("subscribe");
        self.suback().await
    }

    pub async fn publish(&mut self) -> p5::Publish {
        if let Some(p) = self.early.pop_front() {
            return p;
        }
        loop {
            if let rumqttc::v5::Event::Incoming(p5::Packet::Publish(p)) =
                self.next().await.expect("no error")
            {
                return p;
            }
        }
    }

    pub fn kill(self) {
        self.task.abort();
    }
}

/// The user authenticator of a test server: access tokens of `registry`, nothing throttled.
pub fn users(registry: Arc<SqliteRegistry>) -> Arc<drover_auth::user::UserAuthenticator> {
    Arc::new(drover_auth::user::UserAuthenticator::new(
        registry,
        None,
        Arc::new(drover_auth::throttle::Throttle::disabled()),
    ))
}
