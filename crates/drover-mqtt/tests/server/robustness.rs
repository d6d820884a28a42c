//! The server never panics and stays up whatever bytes arrive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use drover_mqtt::{serve_connection, ConnectionInfo, MqttConfig, MqttServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rmqtt_codec::{v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Encoder;

use crate::common::*;

/// A plausible session as bytes: CONNECT, SUBSCRIBE, PUBLISHes, PING, UNSUBSCRIBE, DISCONNECT.
fn session_bytes(v5: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    if v5 {
        let mut c = v5::Codec::new(0, 0);
        let packets: Vec<v5::Packet> = vec![
            v5_connect("fuzz5").into(),
            v5::Packet::Subscribe(v5::Subscribe {
                packet_id: pid(1),
                id: None,
                user_properties: vec![("k".into(), "v".into())],
                topic_filters: vec![("a/#".into(), v5::SubscriptionOptions::default())],
            }),
            v5_publish("a/b", 0, 0, b"zero"),
            v5_publish("a/b", 1, 2, b"one"),
            v5::Packet::PingRequest,
            v5::Packet::Unsubscribe(v5::Unsubscribe {
                packet_id: pid(3),
                user_properties: Vec::new(),
                topic_filters: vec!["a/#".into()],
            }),
            v5::Packet::Disconnect(v5::Disconnect::default()),
        ];
        for p in packets {
            c.encode(p, &mut b).expect("encode");
        }
    } else {
        let mut c = v3::Codec::new(0);
        let packets = vec![
            v3::Packet::Connect(Box::new(v3_connect("fuzz3"))),
            v3::Packet::Subscribe {
                packet_id: pid(1),
                topic_filters: vec![("a/+".into(), rmqtt_codec::types::QoS::AtLeastOnce)],
            },
            v3_publish("a/b", 0, 0, b"zero"),
            v3_publish("a/b", 1, 2, b"one"),
            v3::Packet::PingRequest,
            v3::Packet::Unsubscribe {
                packet_id: pid(3),
                topic_filters: vec!["a/+".into()],
            },
            v3::Packet::Disconnect,
        ];
        for p in packets {
            c.encode(p, &mut b).expect("encode");
        }
    }
    b.to_vec()
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Pure noise.
        prop::collection::vec(any::<u8>(), 0..300),
        // A valid CONNECT followed by noise.
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(v5, noise)| {
            let mut s = session_bytes(v5);
            let connect_len = 2 + usize::from(s[1]);
            s.truncate(connect_len);
            s.extend(noise);
            s
        }),
        // A valid session cut anywhere.
        (any::<bool>(), any::<prop::sample::Index>()).prop_map(|(v5, cut)| {
            let mut s = session_bytes(v5);
            let at = cut.index(s.len() + 1);
            s.truncate(at);
            s
        }),
        // A valid session with a few bytes changed.
        (
            any::<bool>(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
        )
            .prop_map(|(v5, edits)| {
                let mut s = session_bytes(v5);
                for (i, byte) in edits {
                    let at = i.index(s.len());
                    s[at] = byte;
                }
                s
            }),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn fuzz_config() -> MqttConfig {
    MqttConfig {
        connect_timeout: Duration::from_millis(300),
        max_packet_size: 4096,
        ..Default::default()
    }
}

/// In memory: many cases, each connection task must end without panicking.
#[test]
fn arbitrary_bytes_never_panic_a_connection() {
    let rt = runtime();
    let (server, _rec) = rt.block_on(async {
        let ts = TestServer::start(fuzz_config()).await;
        (ts.server.clone(), ts.rec.clone())
    });
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&inputs(), |bytes| {
            rt.block_on(one_in_memory(&server, bytes));
            Ok(())
        })
        .expect("no input panics the server");
}

async fn one_in_memory(server: &Arc<MqttServer<TestPolicy>>, bytes: Vec<u8>) {
    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let task = tokio::spawn(serve_connection(
        server_side,
        ConnectionInfo::new(peer),
        server.clone(),
    ));
    let _ = client.write_all(&bytes).await;
    let _ = client.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut sink)).await;
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("connection task failed on {bytes:02x?}: {e}"),
        Err(_) => panic!("connection did not end on {bytes:02x?}"),
    }
}

/// Over TCP: random input on many connections while a well-behaved client stays connected;
/// afterwards new clients work.
#[test]
fn random_input_over_tcp_leaves_the_server_serving_others() {
    let rt = runtime();
    let ts = rt.block_on(TestServer::start(fuzz_config()));
    let mut steady = rt.block_on(async {
        let mut raw = ts.raw().await;
        raw.connect_v5(v5::Connect {
            keep_alive: 0,
            ..v5_connect("steady")
        })
        .await;
        raw
    });
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&inputs(), |bytes| {
            rt.block_on(async {
                let mut raw = ts.raw().await;
                raw.send(&bytes).await;
                let _ = raw.stream.shutdown().await;
                raw.expect_closed().await;
            });
            Ok(())
        })
        .expect("server survives");
    rt.block_on(async {
        steady.send(b"\xc0\x00").await;
        assert_eq!(
            steady.recv_v5().await,
            Some(v5::Packet::PingResponse),
            "existing client unaffected"
        );
        let (client, mut el) = rumqttc::AsyncClient::new(ts.rumqttc_v4("after-fuzz"), 10);
        client
            .publish("ok/after", rumqttc::QoS::AtLeastOnce, false, "x")
            .await
            .expect("publish");
        v4_until(&mut el, |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
        })
        .await;
    });
}
