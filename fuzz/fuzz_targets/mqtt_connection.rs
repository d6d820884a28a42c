//! A whole MQTT connection with arbitrary client bytes: `serve_connection` over an in-memory
//! duplex stream, with a policy that accepts every CONNECT, PUBLISH and SUBSCRIBE. The server
//! must never panic, must end the connection once the client's bytes end (or earlier), and
//! keeps its memory within the configured limits (small packets, queues and sessions here).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use drover_mqtt::{
    serve_connection, Accepted, ConnectRequest, ConnectionInfo, Inbound, MqttConfig, MqttServer,
    Policy, PublishRefusal, QoS, Refusal, SessionHandle, SubscribeRefusal, SubscribeRequest,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct AcceptAll;

impl Policy for AcceptAll {
    type Identity = ();

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<()>, Refusal> {
        Ok(Accepted::new((), req.client_id.to_string()))
    }

    async fn publish(&self, _: &(), _: Inbound) -> Result<(), PublishRefusal> {
        Ok(())
    }

    async fn subscribe(
        &self,
        _: &(),
        _: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        req.filters.iter().map(|f| Ok(f.options.qos)).collect()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn config() -> MqttConfig {
    MqttConfig {
        max_packet_size: 4096,
        inbound_queue: 16,
        session_queue_limit: 16,
        max_sessions: 4,
        read_buffer_size: 1024,
        write_buffer_high_water: 4096,
        close_timeout: Duration::from_millis(100),
        ..MqttConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let server = MqttServer::new(AcceptAll, config());
        let (mut client, conn) = tokio::io::duplex(8192);
        let peer: SocketAddr = ([127, 0, 0, 1], 1883).into();
        let task = tokio::spawn(serve_connection(conn, ConnectionInfo::new(peer), server.clone()));
        // The client writes everything, then closes its side, while reading whatever the
        // server answers (so that the server never waits for the client to read).
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut buf = vec![0u8; 4096];
            while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(write, read);
            task.await.expect("connection task panicked");
        })
        .await;
        assert!(done.is_ok(), "the connection did not end after the client's bytes did");
        server.shutdown();
        server.closed().await;
    });
});
