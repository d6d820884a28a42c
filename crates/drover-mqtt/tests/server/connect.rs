//! CONNECT handling: versions, CONNACK codes and properties, timeouts, keep-alive.

use std::time::Duration;

use bytes::Bytes;
use drover_mqtt::{CloseReason, MqttConfig, ProtocolVersion, QoS, ReasonCode};
use rmqtt_codec::v5;
use tokio::io::AsyncWriteExt;

use crate::common::*;

#[tokio::test]
async fn v311_client_connects_and_publishes_qos0_and_qos1() {
    let ts = TestServer::default().await;
    let (client, mut el) = rumqttc::AsyncClient::new(ts.rumqttc_v4("dev-1"), 10);
    let ack = v4_until(&mut el, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => Some(a.clone()),
        _ => None,
    })
    .await;
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    assert!(!ack.session_present);
    client
        .publish("telemetry", rumqttc::QoS::AtMostOnce, false, "zero")
        .await
        .expect("publish");
    client
        .publish("telemetry", rumqttc::QoS::AtLeastOnce, false, "one")
        .await
        .expect("publish");
    v4_until(&mut el, |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
    })
    .await;
    let publishes: Vec<(Bytes, QoS)> = ts
        .rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Publish {
                payload,
                qos,
                topic,
                ..
            } if topic == "telemetry" => Some((payload, qos)),
            _ => None,
        })
        .collect();
    assert_eq!(
        publishes,
        vec![
            (Bytes::from("zero"), QoS::AtMostOnce),
            (Bytes::from("one"), QoS::AtLeastOnce)
        ]
    );
    let connect = ts.rec.wait("connect", |e| match e {
        Ev::Connect {
            protocol,
            keep_alive,
            ..
        } => Some((*protocol, *keep_alive)),
        _ => None,
    });
    assert_eq!(connect.await, (ProtocolVersion::V3_1_1, 30));
}

#[tokio::test]
async fn v5_client_publishes_with_properties() {
    let ts = TestServer::default().await;
    let (client, mut el) = rumqttc::v5::AsyncClient::new(ts.rumqttc_v5("dev-5"), 10);
    v5_until(&mut el, |e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))
        )
        .then_some(())
    })
    .await;
    let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        ..Default::default()
    };
    client
        .publish_with_properties(
            "telemetry/json",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{}",
            props,
        )
        .await
        .expect("publish");
    v5_until(&mut el, |e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_))
        )
        .then_some(())
    })
    .await;
    let p = ts
        .rec
        .wait("publish", |e| match e {
            Ev::Publish { props, topic, .. } if topic == "telemetry/json" => Some(props.clone()),
            _ => None,
        })
        .await;
    assert!(p.payload_format_utf8);
    assert_eq!(p.message_expiry_interval, Some(60));
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr"[..]));
    let up: Vec<(String, String)> = p
        .user_properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        up,
        vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into())
        ]
    );
}

#[tokio::test]
async fn v311_connack_return_codes() {
    let ts = TestServer::default().await;
    for (username, client_id, code) in [
        ("bad", "c", rumqttc::ConnectReturnCode::BadUserNamePassword),
        ("deny", "c", rumqttc::ConnectReturnCode::NotAuthorized),
        ("down", "c", rumqttc::ConnectReturnCode::ServiceUnavailable),
        ("ok", "invalid", rumqttc::ConnectReturnCode::BadClientId),
    ] {
        let mut opts = ts.rumqttc_v4(client_id);
        opts.set_credentials(username, "secret");
        let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
        match tokio::time::timeout(WAIT, el.poll()).await.expect("answer") {
            Err(rumqttc::ConnectionError::ConnectionRefused(c)) => {
                assert_eq!(c, code, "{username}")
            }
            other => panic!("{username}: expected refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn v5_connack_reason_codes() {
    let ts = TestServer::default().await;
    for (username, client_id, code) in [
        ("bad", "c", 0x86u8),
        ("deny", "c", 0x87),
        ("down", "c", 0x88),
        ("ok", "invalid", 0x85),
    ] {
        let mut raw = ts.raw().await;
        let ack = raw
            .connect_v5(v5::Connect {
                username: Some(username.into()),
                ..v5_connect(client_id)
            })
            .await;
        assert_eq!(u8::from(ack.reason_code), code, "{username}");
        assert!(!ack.session_present);
        raw.expect_closed().await;
    }
    // rumqttc sees the same.
    let mut opts = ts.rumqttc_v5("c");
    opts.set_credentials("deny", "x");
    let (_c, mut el) = rumqttc::v5::AsyncClient::new(opts, 10);
    match tokio::time::timeout(WAIT, el.poll()).await.expect("answer") {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(c)) => {
            assert_eq!(
                c,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::NotAuthorized
            )
        }
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn v5_connack_advertises_server_limits() {
    let config = MqttConfig {
        receive_maximum: 7,
        max_packet_size: 4096,
        topic_alias_maximum: 3,
        max_keep_alive: 20,
        ..Default::default()
    };
    let ts = TestServer::start(config).await;
    let mut raw = ts.raw().await;
    let ack = raw
        .connect_v5(v5::Connect {
            client_id: "".into(),
            keep_alive: 0,
            session_expiry_interval_secs: u32::MAX,
            ..v5_connect("")
        })
        .await;
    assert_eq!(ack.reason_code, v5::ConnectAckReason::Success);
    assert_eq!(ack.max_qos, rmqtt_codec::types::QoS::AtLeastOnce);
    assert!(!ack.retain_available);
    assert_eq!(ack.receive_max.get(), 7);
    assert_eq!(ack.max_packet_size, Some(4096));
    assert_eq!(ack.topic_alias_max, 3);
    assert!(ack.wildcard_subscription_available);
    assert!(ack.shared_subscription_available);
    assert!(!ack.subscription_identifiers_available);
    assert_eq!(
        ack.server_keepalive_sec,
        Some(20),
        "keep-alive 0 is raised to the server maximum"
    );
    assert_eq!(
        ack.session_expiry_interval_secs,
        Some(24 * 3600),
        "expiry capped"
    );
    let assigned = ack.assigned_client_id.expect("assigned client id");
    assert!(assigned.starts_with("drover-"), "{assigned}");
    ts.rec
        .wait("connect with assigned id", |e| match e {
            Ev::Connect {
                client_id,
                assigned: true,
                keep_alive: 20,
                ..
            } if *client_id == *assigned => Some(()),
            _ => None,
        })
        .await;

    // Per-connection overrides from the policy.
    let mut raw = ts.raw().await;
    let ack = raw
        .connect_v5(v5::Connect {
            username: Some("nowild".into()),
            ..v5_connect("w")
        })
        .await;
    assert!(!ack.wildcard_subscription_available);
    let mut raw = ts.raw().await;
    let ack = raw
        .connect_v5(v5::Connect {
            username: Some("noshare".into()),
            ..v5_connect("s")
        })
        .await;
    assert!(!ack.shared_subscription_available);
}

#[tokio::test]
async fn empty_client_id_refused_when_not_allowed() {
    let ts = TestServer::start(MqttConfig {
        allow_empty_client_id: false,
        ..Default::default()
    })
    .await;
    let mut raw = ts.raw().await;
    let ack = raw.connect_v5(v5_connect("")).await;
    assert_eq!(u8::from(ack.reason_code), 0x85);
    let mut raw = ts.raw().await;
    let ack = raw.connect_v3(v3_connect("")).await;
    assert_eq!(u8::from(ack.return_code), 2);
    // CleanSession = 0 with an empty id is refused by the decoder already (3.1.1 rule; the
    // codec applies it to MQTT 5 too).
    let mut raw = ts.raw().await;
    let ack = raw
        .connect_v5(v5::Connect {
            clean_start: false,
            ..v5_connect("")
        })
        .await;
    assert_eq!(u8::from(ack.reason_code), 0x85);
    let mut raw = ts.raw().await;
    let ack = raw
        .connect_v3(rmqtt_codec::v3::Connect {
            clean_session: false,
            ..v3_connect("")
        })
        .await;
    assert_eq!(u8::from(ack.return_code), 2);
}

#[tokio::test]
async fn mqtt_31_is_accepted() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    // Hand-written: the codec's client-side encoder writes level 4 even for "MQIsdp".
    raw.send(b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03old")
        .await;
    assert_eq!(
        raw.recv_v3().await,
        Some(rmqtt_codec::v3::Packet::ConnectAck(
            rmqtt_codec::v3::ConnectAck {
                return_code: rmqtt_codec::v3::ConnectAckReason::ConnectionAccepted,
                session_present: false,
            }
        ))
    );
    ts.rec
        .wait("3.1 connect", |e| {
            matches!(
                e,
                Ev::Connect {
                    protocol: ProtocolVersion::V3_1,
                    ..
                }
            )
            .then_some(())
        })
        .await;
}

#[tokio::test]
async fn unknown_protocol_level_gets_return_code_1() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.send(b"\x10\x0f\x00\x04MQTT\x06\x02\x00\x3c\x00\x03abc")
        .await;
    let mut b = Vec::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut raw.stream, &mut b),
    )
    .await
    .expect("closed")
    .ok();
    assert_eq!(b, b"\x20\x02\x00\x01");
}

#[tokio::test]
async fn connect_must_arrive_in_time() {
    let ts = TestServer::start(MqttConfig {
        connect_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let mut raw = ts.raw().await;
    // Half a CONNECT, then silence.
    raw.send(b"\x10\x10\x00\x04MQ").await;
    raw.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(180));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing at all: same.
    let mut raw = ts.raw().await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn keep_alive_enforced_at_one_and_a_half_times() {
    let ts = TestServer::default().await;
    // MQTT 5: DISCONNECT 0x8D.
    let mut raw = ts.raw().await;
    let started = std::time::Instant::now();
    raw.connect_v5(v5::Connect {
        keep_alive: 1,
        ..v5_connect("ka5")
    })
    .await;
    assert_eq!(expect_disconnect(&mut raw).await, 0x8D);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    ts.rec
        .wait("keep-alive close", |e| match e {
            Ev::Disconnected {
                client_id,
                reason: CloseReason::KeepAliveTimeout,
            } if client_id == "ka5" => Some(()),
            _ => None,
        })
        .await;
    // MQTT 3.1.1: closed; pings keep it alive.
    let mut raw = ts.raw().await;
    raw.connect_v3(rmqtt_codec::v3::Connect {
        keep_alive: 1,
        ..v3_connect("ka3")
    })
    .await;
    // The client's pings at intervals are the load under test (time passing), not a wait.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.send(b"\xc0\x00").await;
        assert_eq!(
            raw.recv_v3().await,
            Some(rmqtt_codec::v3::Packet::PingResponse)
        );
    }
    let quiet = std::time::Instant::now();
    raw.expect_closed().await;
    assert!(
        quiet.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn server_caps_keep_alive() {
    let ts = TestServer::start(MqttConfig {
        max_keep_alive: 1,
        ..Default::default()
    })
    .await;
    let mut raw = ts.raw().await;
    let ack = raw
        .connect_v5(v5::Connect {
            keep_alive: 600,
            ..v5_connect("cap")
        })
        .await;
    assert_eq!(ack.server_keepalive_sec, Some(1));
    assert_eq!(expect_disconnect(&mut raw).await, 0x8D);
}

#[tokio::test]
async fn garbage_before_connect_is_refused_and_the_server_stays_up() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.send(b"GET / HTTP/1.1\r\n\r\n").await;
    raw.expect_closed().await;
    let mut raw = ts.raw().await;
    raw.stream.shutdown().await.ok();
    let mut raw = ts.raw().await;
    assert_eq!(
        raw.connect_v5(v5_connect("after")).await.reason_code,
        v5::ConnectAckReason::Success
    );
    let _ = ReasonCode::SUCCESS;
}
