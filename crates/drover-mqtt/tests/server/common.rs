//! Test server, recording policy, and a raw MQTT client built on the codec.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use drover_mqtt::{
    serve, Accepted, CloseReason, ConnectRequest, Inbound, MessageProperties, MqttConfig,
    MqttServer, Policy, ProtocolVersion, PublishRefusal, QoS, Refusal, SessionEndReason,
    SessionHandle, SubscribeRefusal, SubscribeRequest, Subscription, SubscriptionRequest,
};
use rmqtt_codec::{v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

pub const WAIT: Duration = Duration::from_secs(10);

/// What the policy saw.
#[derive(Clone, Debug)]
pub enum Ev {
    Connect {
        client_id: String,
        username: Option<String>,
        clean: bool,
        keep_alive: u16,
        protocol: ProtocolVersion,
        expiry: Duration,
        assigned: bool,
        user_properties: Vec<(String, String)>,
    },
    Connected {
        key: String,
        client_id: String,
        present: bool,
    },
    Publish {
        client_id: String,
        topic: String,
        payload: Bytes,
        qos: QoS,
        dup: bool,
        retain: bool,
        props: MessageProperties,
    },
    Published {
        client_id: String,
        topic: String,
    },
    Subscribe {
        client_id: String,
        filters: Vec<SubscriptionRequest>,
        user_properties: Vec<(String, String)>,
    },
    /// The `subscribed` hook: what the session holds by then.
    Subscribed {
        client_id: String,
        granted: Vec<Subscription>,
        held: Vec<Subscription>,
    },
    Unsubscribe {
        client_id: String,
        removed: Vec<Subscription>,
    },
    Will {
        client_id: String,
        topic: String,
        payload: Bytes,
    },
    Disconnected {
        client_id: String,
        reason: CloseReason,
    },
    SessionEnded {
        key: String,
        reason: SessionEndReason,
    },
}

#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Ev>>,
    notify: Notify,
}

impl Recorder {
    pub fn push(&self, ev: Ev) {
        self.events.lock().expect("lock").push(ev);
        self.notify.notify_waiters();
    }

    pub fn all(&self) -> Vec<Ev> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits (up to [`WAIT`]) for an event matching `pred` and returns it.
    pub async fn wait<T>(&self, what: &str, pred: impl Fn(&Ev) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.events.lock().expect("lock").iter().find_map(&pred) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; events: {:#?}", self.all());
            }
        }
    }

    pub fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pred(e))
            .count()
    }
}

/// Identity: the client id.
#[derive(Clone, Debug)]
pub struct Id {
    pub client_id: String,
}

/// Test policy. Conventions:
/// - username `bad` → bad credentials, `deny` → not authorized, `down` → server unavailable,
///   client id `invalid` → client id invalid; username `nowild` / `noshare` disable wildcard /
///   shared subscriptions; username `session:<key>` chooses the session key (else the client id).
/// - publish topics: `deny/…` not authorized, `quota/…` quota exceeded, `format/…` payload
///   format invalid, `gate/…` waits for [`TestPolicy::open_gate`], `slow/<ms>/…` sleeps.
/// - subscribe filters starting with `deny` are refused, `q0/…` granted QoS 0, others as asked.
pub struct TestPolicy {
    pub rec: Arc<Recorder>,
    pub gate: Arc<Semaphore>,
    pub handles: Mutex<HashMap<String, SessionHandle>>,
}

impl TestPolicy {
    pub fn open_gate(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

fn s(b: &bytestring::ByteString) -> String {
    b.to_string()
}

impl Policy for TestPolicy {
    type Identity = Id;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Id>, Refusal> {
        let username = req.username.as_ref().map(s);
        self.rec.push(Ev::Connect {
            client_id: s(&req.client_id),
            username: username.clone(),
            clean: req.clean_start,
            keep_alive: req.keep_alive,
            protocol: req.protocol,
            expiry: req.session_expiry,
            assigned: req.client_id_assigned,
            user_properties: req
                .user_properties
                .iter()
                .map(|(k, v)| (s(k), s(v)))
                .collect(),
        });
        match username.as_deref() {
            Some("bad") => return Err(Refusal::BadCredentials),
            Some("deny") => return Err(Refusal::NotAuthorized),
            Some("down") => return Err(Refusal::ServerUnavailable),
            _ => {}
        }
        if &*req.client_id == "invalid" {
            return Err(Refusal::ClientIdInvalid);
        }
        let key = match username.as_deref().and_then(|u| u.strip_prefix("session:")) {
            Some(key) => key.to_string(),
            None => s(&req.client_id),
        };
        let mut accepted = Accepted::new(
            Id {
                client_id: s(&req.client_id),
            },
            key,
        );
        match username.as_deref() {
            Some("nowild") => accepted = accepted.wildcard_subscriptions(false),
            Some("noshare") => accepted = accepted.shared_subscriptions(false),
            _ => {}
        }
        Ok(accepted)
    }

    async fn connected(&self, id: &Id, session: &SessionHandle, present: bool) {
        self.handles
            .lock()
            .expect("lock")
            .insert(session.key().to_string(), session.clone());
        self.rec.push(Ev::Connected {
            key: session.key().to_string(),
            client_id: id.client_id.clone(),
            present,
        });
    }

    async fn publish(&self, id: &Id, m: Inbound) -> Result<(), PublishRefusal> {
        let topic = s(&m.topic);
        self.rec.push(Ev::Publish {
            client_id: id.client_id.clone(),
            topic: topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            dup: m.dup,
            retain: m.retain,
            props: m.properties.clone(),
        });
        let result = if topic.starts_with("deny/") {
            Err(PublishRefusal::NotAuthorized)
        } else if topic.starts_with("quota/") {
            Err(PublishRefusal::QuotaExceeded)
        } else if topic.starts_with("format/") {
            Err(PublishRefusal::PayloadFormatInvalid)
        } else if topic.starts_with("gate/") {
            let permit = self.gate.acquire().await.expect("gate");
            permit.forget();
            Ok(())
        } else if let Some(rest) = topic.strip_prefix("slow/") {
            let ms: u64 = rest
                .split('/')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(10);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        } else {
            Ok(())
        };
        self.rec.push(Ev::Published {
            client_id: id.client_id.clone(),
            topic,
        });
        result
    }

    async fn subscribe(
        &self,
        id: &Id,
        _session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        self.rec.push(Ev::Subscribe {
            client_id: id.client_id.clone(),
            filters: req.filters.clone(),
            user_properties: req
                .user_properties
                .iter()
                .map(|(k, v)| (s(k), s(v)))
                .collect(),
        });
        req.filters
            .iter()
            .map(|f| {
                if f.filter.starts_with("deny") {
                    Err(SubscribeRefusal::NotAuthorized)
                } else if f.filter.starts_with("q0/") {
                    Ok(QoS::AtMostOnce)
                } else {
                    Ok(f.options.qos)
                }
            })
            .collect()
    }

    async fn subscribed(&self, id: &Id, session: &SessionHandle, granted: &[Subscription]) {
        self.rec.push(Ev::Subscribed {
            client_id: id.client_id.clone(),
            granted: granted.to_vec(),
            held: session.subscriptions(),
        });
    }

    async fn unsubscribed(&self, id: &Id, _session: &SessionHandle, removed: &[Subscription]) {
        self.rec.push(Ev::Unsubscribe {
            client_id: id.client_id.clone(),
            removed: removed.to_vec(),
        });
    }

    async fn will(&self, id: &Id, will: Inbound) {
        self.rec.push(Ev::Will {
            client_id: id.client_id.clone(),
            topic: s(&will.topic),
            payload: will.payload,
        });
    }

    async fn disconnected(&self, id: &Id, reason: &CloseReason) {
        self.rec.push(Ev::Disconnected {
            client_id: id.client_id.clone(),
            reason: reason.clone(),
        });
    }

    async fn session_ended(&self, key: &str, reason: SessionEndReason) {
        self.rec.push(Ev::SessionEnded {
            key: key.to_string(),
            reason,
        });
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Arc<MqttServer<TestPolicy>>,
    pub rec: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    pub join: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: MqttConfig) -> TestServer {
        Self::start_on(config, |tcp| drover_net::Listener::new(tcp, "MQTT")).await
    }

    /// A server on the listener `listen` makes of a bound TCP listener (cap, TLS).
    pub async fn start_on(
        config: MqttConfig,
        listen: impl FnOnce(TcpListener) -> drover_net::Listener,
    ) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let rec = Arc::new(Recorder::default());
        let policy = TestPolicy {
            rec: rec.clone(),
            gate: Arc::new(Semaphore::new(0)),
            handles: Mutex::new(HashMap::new()),
        };
        let server = MqttServer::new(policy, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(serve(listen(listener), server.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            server,
            rec,
            stop: Some(stop),
            join: Some(join),
        }
    }

    pub async fn default() -> TestServer {
        Self::start(MqttConfig::default()).await
    }

    pub fn policy(&self) -> &TestPolicy {
        self.server.policy()
    }

    /// The session handle the policy got in `connected`.
    pub fn handle(&self, key: &str) -> SessionHandle {
        self.server.session(key).expect("session exists")
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(WAIT, join)
                .await
                .expect("serve_tcp returns")
                .expect("no panic");
        }
    }

    pub fn rumqttc_v4(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub fn rumqttc_v5(&self, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", self.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }
}

/// Polls a rumqttc v4 event loop until `pred` returns something.
pub async fn v4_until<T>(
    el: &mut rumqttc::EventLoop,
    mut pred: impl FnMut(&rumqttc::Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if let Some(t) = pred(&ev) {
                        return t;
                    }
                }
                Err(e) => panic!("rumqttc v4 error: {e:?}"),
            }
        }
    })
    .await
    .expect("rumqttc v4 event within deadline")
}

/// Polls a rumqttc v5 event loop until `pred` returns something.
pub async fn v5_until<T>(
    el: &mut rumqttc::v5::EventLoop,
    mut pred: impl FnMut(&rumqttc::v5::Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if let Some(t) = pred(&ev) {
                        return t;
                    }
                }
                Err(e) => panic!("rumqttc v5 error: {e:?}"),
            }
        }
    })
    .await
    .expect("rumqttc v5 event within deadline")
}

/// A raw client: writes any bytes, decodes what the server sends with the codec.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    v3: v3::Codec,
    v5: v5::Codec,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: BytesMut::new(),
            v3: v3::Codec::new(0),
            v5: v5::Codec::new(0, 0),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn send_v5(&mut self, packet: impl Into<v5::Packet>) {
        let mut b = BytesMut::new();
        self.v5.encode(packet.into(), &mut b).expect("encode v5");
        self.send(&b).await;
    }

    pub async fn send_v3(&mut self, packet: v3::Packet) {
        let mut b = BytesMut::new();
        self.v3.encode(packet, &mut b).expect("encode v3");
        self.send(&b).await;
    }

    /// Next v5 packet; `None` once the server closed the connection.
    pub async fn recv_v5(&mut self) -> Option<v5::Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some((p, _)) = self
                    .v5
                    .decode(&mut self.buf)
                    .expect("server sends valid v5")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("packet or close within deadline")
    }

    pub async fn recv_v3(&mut self) -> Option<v3::Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some((p, _)) = self
                    .v3
                    .decode(&mut self.buf)
                    .expect("server sends valid v3")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("packet or close within deadline")
    }

    /// Reads until the server closes; panics if it sends anything but `allowed` bytes.
    pub async fn expect_closed(&mut self) {
        tokio::time::timeout(WAIT, async {
            let mut b = [0u8; 256];
            loop {
                match self.stream.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("server closes the connection");
    }

    /// Sends an MQTT 5 CONNECT and returns the CONNACK.
    pub async fn connect_v5(&mut self, connect: v5::Connect) -> v5::ConnectAck {
        self.send_v5(connect).await;
        match self.recv_v5().await {
            Some(v5::Packet::ConnectAck(ack)) => *ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn connect_v3(&mut self, connect: v3::Connect) -> v3::ConnectAck {
        self.send_v3(v3::Packet::Connect(Box::new(connect))).await;
        match self.recv_v3().await {
            Some(v3::Packet::ConnectAck(ack)) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

pub fn v5_connect(client_id: &str) -> v5::Connect {
    v5::Connect {
        client_id: client_id.into(),
        clean_start: true,
        keep_alive: 30,
        ..Default::default()
    }
}

pub fn v3_connect(client_id: &str) -> v3::Connect {
    v3::Connect {
        client_id: client_id.into(),
        clean_session: true,
        keep_alive: 30,
        ..Default::default()
    }
}

pub fn pid(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).expect("non-zero")
}

/// A v5 PUBLISH.
pub fn v5_publish(topic: &str, qos: u8, packet_id: u16, payload: &'static [u8]) -> v5::Packet {
    v5::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
        dup: false,
        retain: false,
        qos: qos.try_into().expect("qos"),
        topic: topic.into(),
        packet_id: std::num::NonZeroU16::new(packet_id),
        payload: Bytes::from_static(payload),
        properties: Some(v5::PublishProperties::default()),
    }))
}

pub fn v3_publish(topic: &str, qos: u8, packet_id: u16, payload: &'static [u8]) -> v3::Packet {
    v3::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
        dup: false,
        retain: false,
        qos: qos.try_into().expect("qos"),
        topic: topic.into(),
        packet_id: std::num::NonZeroU16::new(packet_id),
        payload: Bytes::from_static(payload),
        properties: None,
    }))
}

/// The reason code of a server DISCONNECT, or panics.
pub async fn expect_disconnect(raw: &mut Raw) -> u8 {
    match raw.recv_v5().await {
        Some(v5::Packet::Disconnect(d)) => {
            let code = u8::from(d.reason_code);
            raw.expect_closed().await;
            code
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}
