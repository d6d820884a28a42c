//! Server → client delivery: window, back-pressure, maximum packet size, properties.

use std::time::Duration;

use bytes::Bytes;
use drover_mqtt::{
    DeliveryError, MessageProperties, MqttConfig, OutboundMessage, PublishError, QoS,
    TryPublishError,
};
use rmqtt_codec::v5;

use crate::common::*;

async fn recv_publish(raw: &mut Raw) -> Box<rmqtt_codec::types::Publish> {
    match raw.recv_v5().await {
        Some(v5::Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn in_flight_window_follows_the_client_receive_maximum_and_senders_wait() {
    let ts = TestServer::start(MqttConfig {
        session_queue_limit: 3,
        ..Default::default()
    })
    .await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        receive_max: std::num::NonZeroU16::new(2),
        ..v5_connect("window")
    })
    .await;
    ts.rec
        .wait("connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "window").then_some(())
        })
        .await;
    let handle = ts.handle("window");
    let mut deliveries = Vec::new();
    for i in 0..5 {
        deliveries.push(
            handle
                .publish(OutboundMessage::new("w", i.to_string(), QoS::AtLeastOnce))
                .await
                .expect("queued"),
        );
    }
    let a = recv_publish(&mut raw).await;
    let b = recv_publish(&mut raw).await;
    assert_eq!((&a.payload[..], &b.payload[..]), (&b"0"[..], &b"1"[..]));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), raw.recv_v5())
            .await
            .is_err(),
        "window of 2 is full"
    );
    assert_eq!(handle.in_flight(), 2);
    assert_eq!(handle.queued(), 3);
    // The queue (limit 3) is full: try_publish refuses, publish waits.
    assert!(matches!(
        handle.try_publish(OutboundMessage::new("w", "x", QoS::AtLeastOnce)),
        Err(TryPublishError::Full(_))
    ));
    // Polled once (a zero timeout polls before it looks at the clock): it waits for room.
    let mut waiting = Box::pin(handle.publish(OutboundMessage::new("w", "5", QoS::AtLeastOnce)));
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut waiting)
            .await
            .is_err(),
        "publish waits while the queue is full"
    );
    raw.send_v5(v5::Packet::PublishAck(v5::PublishAck {
        packet_id: a.packet_id.expect("id"),
        ..Default::default()
    }))
    .await;
    let c = recv_publish(&mut raw).await;
    assert_eq!(&c.payload[..], b"2");
    let d5 = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("unblocked")
        .expect("queued");
    let first = deliveries.remove(0);
    assert_eq!(
        first.acknowledged().await,
        Ok(drover_mqtt::ReasonCode::SUCCESS)
    );
    // Ack everything; all arrive in order.
    let mut next = vec![b.packet_id.expect("id"), c.packet_id.expect("id")];
    let mut got = Vec::new();
    while got.len() < 3 {
        for id in next.drain(..) {
            raw.send_v5(v5::Packet::PublishAck(v5::PublishAck {
                packet_id: id,
                ..Default::default()
            }))
            .await;
        }
        let p = recv_publish(&mut raw).await;
        got.push(p.payload.clone());
        next.push(p.packet_id.expect("id"));
    }
    for id in next {
        raw.send_v5(v5::Packet::PublishAck(v5::PublishAck {
            packet_id: id,
            ..Default::default()
        }))
        .await;
    }
    assert_eq!(
        got,
        vec![Bytes::from("3"), Bytes::from("4"), Bytes::from("5")]
    );
    assert!(tokio::time::timeout(WAIT, d5.acknowledged())
        .await
        .expect("acked")
        .is_ok());
    for d in deliveries {
        assert!(d.acknowledged().await.is_ok());
    }
}

#[tokio::test]
async fn messages_over_the_client_maximum_packet_size_are_dropped() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        max_packet_size: std::num::NonZeroU32::new(64),
        ..v5_connect("small")
    })
    .await;
    ts.rec
        .wait("connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "small").then_some(())
        })
        .await;
    let handle = ts.handle("small");
    let big = handle
        .publish(OutboundMessage::new("t", vec![b'x'; 100], QoS::AtLeastOnce))
        .await
        .expect("queued");
    let _qos0_big = handle
        .publish(OutboundMessage::new("t", vec![b'x'; 100], QoS::AtMostOnce))
        .await
        .expect("queued");
    let small = handle
        .publish(OutboundMessage::new("t", "fits", QoS::AtLeastOnce))
        .await
        .expect("queued");
    assert_eq!(big.acknowledged().await, Err(DeliveryError::TooLarge));
    let p = recv_publish(&mut raw).await;
    assert_eq!(&p.payload[..], b"fits");
    raw.send_v5(v5::Packet::PublishAck(v5::PublishAck {
        packet_id: p.packet_id.expect("id"),
        ..Default::default()
    }))
    .await;
    assert!(small.acknowledged().await.is_ok());
}

#[tokio::test]
async fn invalid_outbound_messages_are_refused() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("invalid-out")).await;
    ts.rec
        .wait("connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "invalid-out").then_some(())
        })
        .await;
    let handle = ts.handle("invalid-out");
    for m in [
        OutboundMessage::new("a/+", "x", QoS::AtMostOnce),
        OutboundMessage::new("", "x", QoS::AtMostOnce),
        OutboundMessage::new("a", "x", QoS::ExactlyOnce),
    ] {
        assert!(matches!(
            handle.publish(m).await,
            Err(PublishError::Invalid { .. })
        ));
    }
}

#[tokio::test]
async fn v5_properties_reach_the_subscriber() {
    let ts = TestServer::default().await;
    let (client, mut el) = rumqttc::v5::AsyncClient::new(ts.rumqttc_v5("props"), 10);
    client
        .subscribe("app/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    v5_until(&mut el, |e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_))
        )
        .then_some(())
    })
    .await;
    let handle = ts.handle("props");
    let props = MessageProperties {
        payload_format_utf8: true,
        message_expiry_interval: Some(300),
        content_type: Some("application/cloudevents+json".into()),
        response_topic: Some("reply/x".into()),
        correlation_data: Some(Bytes::from_static(b"id-1")),
        user_properties: vec![("ce_type".into(), "t".into()), ("ce_id".into(), "1".into())],
    };
    let delivery = handle
        .publish(OutboundMessage::new("app/demo", "{}", QoS::AtLeastOnce).with_properties(props))
        .await
        .expect("queued");
    let p = v5_until(&mut el, |e| match e {
        rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) => {
            Some(p.clone())
        }
        _ => None,
    })
    .await;
    let got = p.properties.expect("properties");
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.response_topic.as_deref(), Some("reply/x"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"id-1"[..]));
    assert!(got
        .message_expiry_interval
        .is_some_and(|s| (295..=300).contains(&s)));
    assert_eq!(
        got.user_properties,
        vec![
            ("ce_type".to_string(), "t".to_string()),
            ("ce_id".to_string(), "1".to_string())
        ]
    );
    assert!(tokio::time::timeout(WAIT, delivery.acknowledged())
        .await
        .expect("acked")
        .is_ok());
}

#[tokio::test]
async fn qos0_outbound_flows_and_offline_qos0_is_refused() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v3(v3_connect("q0")).await;
    ts.rec
        .wait("connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "q0").then_some(())
        })
        .await;
    let handle = ts.handle("q0");
    for i in 0..100 {
        let d = handle
            .publish(OutboundMessage::new("t", i.to_string(), QoS::AtMostOnce))
            .await
            .expect("queued");
        assert!(d.acknowledged().await.is_ok());
    }
    for i in 0..100 {
        match raw.recv_v3().await {
            Some(rmqtt_codec::v3::Packet::Publish(p)) => {
                assert_eq!(p.payload, Bytes::from(i.to_string()))
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    raw.send(b"\xe0\x00").await;
    raw.expect_closed().await;
    assert!(matches!(
        handle
            .publish(OutboundMessage::new("t", "x", QoS::AtMostOnce))
            .await,
        Err(PublishError::SessionEnded(_) | PublishError::Offline(_))
    ));
}
