//! Inbound PUBLISH: acknowledgement after the policy, refusals, protocol violations, ordering.

use std::time::Duration;

use bytes::Bytes;
use drover_mqtt::{CloseReason, MqttConfig, ReasonCode};
use rmqtt_codec::{v3, v5};

use crate::common::*;

async fn v5_client(ts: &TestServer, id: &str) -> Raw {
    let mut raw = ts.raw().await;
    let ack = raw.connect_v5(v5_connect(id)).await;
    assert_eq!(ack.reason_code, v5::ConnectAckReason::Success);
    raw
}

async fn v3_client(ts: &TestServer, id: &str) -> Raw {
    let mut raw = ts.raw().await;
    let ack = raw.connect_v3(v3_connect(id)).await;
    assert_eq!(u8::from(ack.return_code), 0);
    raw
}

#[tokio::test]
async fn qos1_is_acknowledged_only_after_the_policy_resolved() {
    let ts = TestServer::default().await;
    let mut raw = v5_client(&ts, "gated").await;
    raw.send_v5(v5_publish("gate/1", 1, 7, b"x")).await;
    ts.rec
        .wait("publish reached the policy", |e| {
            matches!(e, Ev::Publish { topic, .. } if topic == "gate/1").then_some(())
        })
        .await;
    // No PUBACK while the policy holds the message: a PINGRESP overtakes it.
    raw.send(b"\xc0\x00").await;
    assert_eq!(raw.recv_v5().await, Some(v5::Packet::PingResponse));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), raw.recv_v5())
            .await
            .is_err(),
        "no PUBACK yet"
    );
    ts.policy().open_gate(1);
    match raw.recv_v5().await {
        Some(v5::Packet::PublishAck(ack)) => {
            assert_eq!(ack.packet_id, pid(7));
            assert_eq!(ack.reason_code, v5::PublishAckReason::Success);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn v5_refusals_are_negative_pubacks_and_qos0_refusals_are_dropped() {
    let ts = TestServer::default().await;
    let mut raw = v5_client(&ts, "refused").await;
    raw.send_v5(v5_publish("deny/a", 0, 0, b"dropped")).await;
    for (i, (topic, code)) in [
        ("deny/a", 0x87u8),
        ("quota/a", 0x97),
        ("format/a", 0x99),
        ("ok/a", 0x00),
    ]
    .into_iter()
    .enumerate()
    {
        let id = u16::try_from(i + 1).expect("small");
        raw.send_v5(v5_publish(topic, 1, id, b"x")).await;
        match raw.recv_v5().await {
            Some(v5::Packet::PublishAck(ack)) => {
                assert_eq!(ack.packet_id, pid(id));
                assert_eq!(u8::from(ack.reason_code), code, "{topic}");
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // The connection is still fine.
    raw.send(b"\xc0\x00").await;
    assert_eq!(raw.recv_v5().await, Some(v5::Packet::PingResponse));
}

#[tokio::test]
async fn v311_qos1_refusal_disconnects_and_qos0_refusal_does_not() {
    let ts = TestServer::default().await;
    let mut raw = v3_client(&ts, "v3-refused").await;
    raw.send_v3(v3_publish("deny/a", 0, 0, b"dropped")).await;
    raw.send(b"\xc0\x00").await;
    assert_eq!(raw.recv_v3().await, Some(v3::Packet::PingResponse));
    raw.send_v3(v3_publish("deny/a", 1, 1, b"x")).await;
    assert_eq!(raw.recv_v3().await, None, "closed without PUBACK");
    ts.rec
        .wait("disconnected", |e| match e {
            Ev::Disconnected {
                client_id,
                reason: CloseReason::PublishRefused(_),
            } if client_id == "v3-refused" => Some(()),
            _ => None,
        })
        .await;
}

async fn v5_violation(ts: &TestServer, id: &str, bytes: &[u8]) -> u8 {
    let mut raw = v5_client(ts, id).await;
    raw.send(bytes).await;
    let code = expect_disconnect(&mut raw).await;
    let reason = ts
        .rec
        .wait("disconnected", |e| match e {
            Ev::Disconnected { client_id, reason } if client_id == id => Some(reason.clone()),
            _ => None,
        })
        .await;
    match reason {
        CloseReason::ProtocolError(violation) => assert_eq!(violation.reason_code().0, code),
        other => panic!("{id}: expected a protocol error, got {other:?}"),
    }
    code
}

#[tokio::test]
async fn v5_protocol_violations_disconnect_with_precise_reasons() {
    let config = MqttConfig {
        max_packet_size: 1024,
        topic_alias_maximum: 2,
        ..Default::default()
    };
    let ts = TestServer::start(config).await;
    // QoS 2.
    assert_eq!(
        v5_violation(&ts, "qos2", b"\x34\x07\x00\x01a\x00\x01\x00x").await,
        0x9B
    );
    // Retain.
    assert_eq!(
        v5_violation(&ts, "retain", b"\x31\x05\x00\x01a\x00x").await,
        0x9A
    );
    // Wildcards in the topic name.
    assert_eq!(
        v5_violation(&ts, "wild", b"\x30\x07\x00\x03a/+\x00x").await,
        0x90
    );
    assert_eq!(
        v5_violation(&ts, "hash", b"\x30\x05\x00\x01#\x00x").await,
        0x90
    );
    // Empty topic without alias.
    assert_eq!(
        v5_violation(&ts, "empty", b"\x30\x04\x00\x00\x00x").await,
        0x82
    );
    // Invalid UTF-8 in the topic.
    assert_eq!(
        v5_violation(&ts, "utf8", b"\x30\x06\x00\x02\xc3\x28\x00x").await,
        0x81
    );
    // Oversized packet (remaining length 2000 > 1024).
    let mut big = vec![0x30, 0xd0, 0x0f, 0x00, 0x01, b'a', 0x00];
    big.resize(3 + 2000, b'x');
    assert_eq!(v5_violation(&ts, "big", &big).await, 0x95);
    // Topic alias above the maximum, unknown alias.
    assert_eq!(
        v5_violation(&ts, "alias3", b"\x30\x08\x00\x01a\x03\x23\x00\x03x").await,
        0x94
    );
    assert_eq!(
        v5_violation(&ts, "alias?", b"\x30\x07\x00\x00\x03\x23\x00\x01x").await,
        0x82
    );
    // QoS 2 flow packets, AUTH, a second CONNECT.
    assert_eq!(v5_violation(&ts, "pubrel", b"\x62\x02\x00\x01").await, 0x82);
    assert_eq!(v5_violation(&ts, "auth", b"\xf0\x00").await, 0x82);
    let mut again = rmqtt_codec::v5::Codec::new(0, 0);
    let mut buf = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut again, v5::Packet::from(v5_connect("x")), &mut buf)
        .expect("encode");
    assert_eq!(v5_violation(&ts, "twice", &buf).await, 0x82);
    // Reserved packet type 0.
    assert_eq!(v5_violation(&ts, "type0", b"\x00\x00").await, 0x82);
}

#[tokio::test]
async fn receive_maximum_exceeded_disconnects() {
    let ts = TestServer::start(MqttConfig {
        receive_maximum: 2,
        ..Default::default()
    })
    .await;
    let mut raw = v5_client(&ts, "flood").await;
    for id in 1..=3 {
        raw.send_v5(v5_publish("gate/x", 1, id, b"x")).await;
    }
    assert_eq!(expect_disconnect(&mut raw).await, 0x93);
}

#[tokio::test]
async fn v311_protocol_violations_close_the_connection() {
    let ts = TestServer::start(MqttConfig {
        max_packet_size: 1024,
        ..Default::default()
    })
    .await;
    let mut big = vec![0x30, 0xd0, 0x0f, 0x00, 0x01, b'a'];
    big.resize(3 + 2000, b'x');
    for (id, bytes) in [
        ("qos2", &b"\x34\x06\x00\x01a\x00\x01x"[..]),
        ("wild", &b"\x30\x06\x00\x03a/#x"[..]),
        ("empty", &b"\x30\x03\x00\x00x"[..]),
        ("pubrec", &b"\x50\x02\x00\x01"[..]),
        ("big", &big[..]),
    ] {
        let mut raw = v3_client(&ts, id).await;
        raw.send(bytes).await;
        raw.expect_closed().await;
        ts.rec
            .wait("disconnected", |e| match e {
                Ev::Disconnected {
                    client_id,
                    reason: CloseReason::ProtocolError(_),
                } if client_id == id => Some(()),
                _ => None,
            })
            .await;
    }
    // A retained MQTT 3 publish is passed to the policy with the flag.
    let mut raw = v3_client(&ts, "retain3").await;
    raw.send(b"\x31\x04\x00\x01ax").await;
    ts.rec
        .wait("retained publish", |e| {
            matches!(e, Ev::Publish { retain: true, .. }).then_some(())
        })
        .await;
}

#[tokio::test]
async fn inbound_topic_aliases_are_resolved() {
    let ts = TestServer::default().await;
    let mut raw = v5_client(&ts, "alias").await;
    // Alias 1 = "a/b" with the first publish, then the alias alone.
    raw.send(b"\x30\x0a\x00\x03a/b\x03\x23\x00\x01x").await;
    raw.send(b"\x30\x07\x00\x00\x03\x23\x00\x01y").await;
    raw.send(b"\xc0\x00").await;
    assert_eq!(raw.recv_v5().await, Some(v5::Packet::PingResponse));
    let seen: Vec<(String, Bytes)> = ts
        .rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Publish { topic, payload, .. } => Some((topic, payload)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a/b".into(), Bytes::from("x")),
            ("a/b".into(), Bytes::from("y"))
        ]
    );
    let _ = ReasonCode::SUCCESS;
}

#[tokio::test]
async fn pipelined_publishes_are_processed_and_acknowledged_in_order() {
    let ts = TestServer::start(MqttConfig {
        inbound_concurrency: 8,
        receive_maximum: 100,
        ..Default::default()
    })
    .await;
    let mut raw = v5_client(&ts, "pipeline").await;
    let mut codec = rmqtt_codec::v5::Codec::new(0, 0);
    let mut batch = bytes::BytesMut::new();
    let n: u16 = 60;
    for i in 1..=n {
        // Later messages finish faster: without ordering, acks would come back reversed.
        let delay = u64::from(n - i) % 7;
        let topic = format!("slow/{delay}/{i}");
        let p = v5::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
            dup: false,
            retain: false,
            qos: rmqtt_codec::types::QoS::AtLeastOnce,
            topic: topic.into(),
            packet_id: Some(pid(i)),
            payload: Bytes::from(i.to_string()),
            properties: Some(v5::PublishProperties::default()),
        }));
        tokio_util::codec::Encoder::encode(&mut codec, p, &mut batch).expect("encode");
    }
    raw.send(&batch).await;
    let mut acks = Vec::new();
    while acks.len() < usize::from(n) {
        match raw.recv_v5().await {
            Some(v5::Packet::PublishAck(a)) => acks.push(a.packet_id.get()),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(acks, (1..=n).collect::<Vec<_>>());
    let calls: Vec<Bytes> = ts
        .rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Publish { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        (1..=n)
            .map(|i| Bytes::from(i.to_string()))
            .collect::<Vec<_>>(),
        "policy called in order"
    );
}

#[tokio::test]
async fn messages_before_disconnect_are_processed() {
    let ts = TestServer::default().await;
    let mut raw = v3_client(&ts, "last-words").await;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\x30\x09\x00\x06slow/1x");
    bytes.extend_from_slice(b"\x32\x0a\x00\x05slow/\x00\x01y");
    bytes.extend_from_slice(b"\xe0\x00");
    raw.send(&bytes).await;
    assert_eq!(
        raw.recv_v3().await,
        Some(v3::Packet::PublishAck { packet_id: pid(1) })
    );
    raw.expect_closed().await;
    let reason = ts
        .rec
        .wait("disconnected", |e| match e {
            Ev::Disconnected { client_id, reason } if client_id == "last-words" => {
                Some(reason.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(reason, CloseReason::ClientDisconnect(ReasonCode::SUCCESS));
    assert_eq!(
        ts.rec
            .count(|e| matches!(e, Ev::Published { client_id, .. } if client_id == "last-words")),
        2
    );
}

#[tokio::test]
async fn packets_pipelined_with_the_connect_are_served() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    let mut codec = rmqtt_codec::v3::Codec::new(0);
    let mut bytes = bytes::BytesMut::new();
    for p in [
        v3::Packet::Connect(Box::new(v3_connect("eager"))),
        v3_publish("eager/t", 1, 9, b"x"),
    ] {
        tokio_util::codec::Encoder::encode(&mut codec, p, &mut bytes).expect("encode");
    }
    raw.send(&bytes).await;
    assert!(matches!(
        raw.recv_v3().await,
        Some(v3::Packet::ConnectAck(_))
    ));
    assert_eq!(
        raw.recv_v3().await,
        Some(v3::Packet::PublishAck { packet_id: pid(9) })
    );
}
