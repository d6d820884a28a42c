//! A rough throughput check (ignored by default; run in release):
//! `cargo test --release -p drover-mqtt --test server throughput -- --ignored --nocapture`.
//! The server runs on a single-threaded runtime of its own (one core); ten raw clients blast
//! pre-encoded 64-byte QoS 0 (then QoS 1) PUBLISHes from another thread. `THROUGHPUT_QOS=0|1`
//! runs one of the two, `THROUGHPUT_N` sets the messages per client (100,000; QoS 1 half that
//! when both run), e.g. to count instructions per message under callgrind: the inclusive cost
//! of `drover_mqtt::connection::run` divided by the messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use drover_mqtt::{
    serve_tcp, Accepted, ConnectRequest, Inbound, MqttConfig, MqttServer, Policy, PublishRefusal,
    Refusal,
};
use rmqtt_codec::v3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Encoder;

use crate::common::*;

struct Counting(Arc<AtomicU64>);

impl Policy for Counting {
    type Identity = ();

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<()>, Refusal> {
        Ok(Accepted::new((), req.client_id.to_string()))
    }

    async fn publish(&self, _id: &(), _m: Inbound) -> Result<(), PublishRefusal> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn run(qos: u8, clients: usize, per_client: usize) {
    let count = Arc::new(AtomicU64::new(0));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_count = count.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let config = MqttConfig {
                receive_maximum: 1000,
                inbound_concurrency: 1,
                ..Default::default()
            };
            let server = MqttServer::new(Counting(server_count), config);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send");
            serve_tcp(listener, server, std::future::pending()).await;
        });
    });
    let addr = addr_rx.recv().expect("addr");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let started = Instant::now();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for c in 0..clients {
            tasks.push(tokio::spawn(async move {
                let mut raw = Raw::connect(addr).await;
                raw.connect_v3(v3_connect(&format!("bench-{c}"))).await;
                let mut codec = v3::Codec::new(0);
                let mut buf = BytesMut::new();
                let mut acked_bytes = 0usize;
                let mut read_buf = vec![0u8; 64 * 1024];
                let mut sent = 0usize;
                for i in 0..per_client {
                    let id = u16::try_from(i % 60000 + 1).expect("id");
                    let packet_id = if qos == 0 { 0 } else { id };
                    codec
                        .encode(
                            v3_publish("telemetry/bench", qos, packet_id, &[b'x'; 64]),
                            &mut buf,
                        )
                        .expect("encode");
                    sent += 1;
                    if buf.len() > 16 * 1024 || i + 1 == per_client {
                        // QoS 1: stay inside the server's receive maximum (1000), 4-byte PUBACKs.
                        while qos == 1 && sent - acked_bytes / 4 > 1000 {
                            acked_bytes += raw.stream.read(&mut read_buf).await.expect("read");
                        }
                        raw.stream.write_all(&buf).await.expect("write");
                        buf.clear();
                    }
                }
                while qos == 1 && acked_bytes / 4 < per_client {
                    acked_bytes += raw.stream.read(&mut read_buf).await.expect("read");
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
    });
    let total = u64::try_from(clients * per_client).expect("fits");
    while count.load(Ordering::Relaxed) < total {
        std::thread::yield_now();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "QoS {qos}: {total} messages in {secs:.2} s = {:.0} msg/s",
        total as f64 / secs
    );
}

#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn throughput() {
    let n: usize = std::env::var("THROUGHPUT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    match std::env::var("THROUGHPUT_QOS").as_deref() {
        Ok("0") => run(0, 10, n),
        Ok("1") => run(1, 10, n),
        _ => {
            run(0, 10, n);
            run(1, 10, n / 2);
        }
    }
}
