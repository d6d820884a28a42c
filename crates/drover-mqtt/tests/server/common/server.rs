//! The test server on 127.0.0.1:0, and waiting on rumqttc clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::policy::{Recorder, TestPolicy};
use super::raw::Raw;
use drover_mqtt::{serve, MqttConfig, MqttServer, SessionHandle};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(10);

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
