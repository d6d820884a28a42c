//! Sessions: takeover, persistence across reconnects (Azure-style CleanSession = 0), clean
//! starts, redelivery, expiry.

use std::time::Duration;

use bytes::Bytes;
use drover_mqtt::{
    CloseReason, DeliveryError, Enqueued, MqttConfig, OutboundMessage, QoS, SessionEndReason,
};
use rmqtt_codec::{v3, v5};

use crate::common::*;

#[tokio::test]
async fn a_new_connection_takes_the_session_over() {
    let ts = TestServer::default().await;
    // MQTT 5: the old connection gets DISCONNECT 0x8E.
    let mut first = ts.raw().await;
    first
        .connect_v5(v5::Connect {
            username: Some("session:app/dev".into()),
            ..v5_connect("first")
        })
        .await;
    ts.rec
        .wait("first connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "first").then_some(())
        })
        .await;
    let mut second = ts.raw().await;
    let ack = second
        .connect_v5(v5::Connect {
            username: Some("session:app/dev".into()),
            clean_start: false,
            session_expiry_interval_secs: 60,
            ..v5_connect("second")
        })
        .await;
    assert!(ack.session_present);
    assert_eq!(expect_disconnect(&mut first).await, 0x8E);
    // The old connection's teardown completed before the new one was established.
    let events = ts.rec.all();
    let pos = |pred: &dyn Fn(&Ev) -> bool| events.iter().position(pred);
    let old_gone = pos(
        &|e| matches!(e, Ev::Disconnected { client_id, reason: CloseReason::TakenOver } if client_id == "first"),
    );
    let new_up = pos(&|e| matches!(e, Ev::Connected { client_id, .. } if client_id == "second"));
    assert!(
        old_gone.is_some() && new_up.is_some() && old_gone < new_up,
        "{events:#?}"
    );
    second.send(b"\xc0\x00").await;
    assert_eq!(second.recv_v5().await, Some(v5::Packet::PingResponse));

    // MQTT 3.1.1 with the same client id: the old connection is closed.
    let mut a = ts.raw().await;
    a.connect_v3(v3_connect("dup")).await;
    let mut b = ts.raw().await;
    b.connect_v3(v3_connect("dup")).await;
    a.expect_closed().await;
    b.send(b"\xc0\x00").await;
    assert_eq!(b.recv_v3().await, Some(v3::Packet::PingResponse));
}

/// The Azure IoT device pattern: MQTT 3.1.1, CleanSession = 0, subscribe once, never again.
#[tokio::test]
async fn persistent_v311_session_keeps_subscriptions_and_queued_messages() {
    let ts = TestServer::default().await;
    let mut opts = ts.rumqttc_v4("azure-dev");
    opts.set_clean_session(false);
    let (client, mut el) = rumqttc::AsyncClient::new(opts.clone(), 10);
    client
        .subscribe(
            "devices/azure-dev/messages/devicebound/#",
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .expect("subscribe");
    v4_until(&mut el, |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))).then_some(())
    })
    .await;
    client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    ts.rec
        .wait("disconnected", |e| {
            matches!(e, Ev::Disconnected { client_id, .. } if client_id == "azure-dev")
                .then_some(())
        })
        .await;

    // Cloud-to-device message while the device is offline.
    let handle = ts.handle("azure-dev");
    assert!(!handle.is_connected());
    let topic = "devices/azure-dev/messages/devicebound/%24.mid=1";
    assert_eq!(handle.subscription_qos(topic), Some(QoS::AtLeastOnce));
    let delivery = handle
        .publish(OutboundMessage::new(topic, "c2d", QoS::AtLeastOnce))
        .await
        .expect("queued");
    assert_eq!(delivery.enqueued(), Enqueued::Offline);
    // QoS 0 is not queued offline.
    assert!(handle
        .publish(OutboundMessage::new(topic, "lost", QoS::AtMostOnce))
        .await
        .is_err());

    // Reconnect without subscribing again.
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let present = v4_until(&mut el, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(present);
    let payload = v4_until(&mut el, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.payload.clone()),
        _ => None,
    })
    .await;
    assert_eq!(payload, Bytes::from("c2d"));
    assert_eq!(
        tokio::time::timeout(WAIT, delivery.acknowledged())
            .await
            .expect("acked"),
        Ok(drover_mqtt::ReasonCode::SUCCESS)
    );
    ts.rec
        .wait("resumed", |e| {
            matches!(e, Ev::Connected { client_id, present: true, .. } if client_id == "azure-dev")
                .then_some(())
        })
        .await;
}

#[tokio::test]
async fn clean_start_discards_the_session() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 300,
        ..v5_connect("cleaner")
    })
    .await;
    raw.send(b"\xe0\x00").await;
    raw.expect_closed().await;
    ts.rec
        .wait("gone", |e| {
            matches!(e, Ev::Disconnected { client_id, .. } if client_id == "cleaner").then_some(())
        })
        .await;
    let handle = ts.handle("cleaner");
    let delivery = handle
        .publish(OutboundMessage::new("x", "queued", QoS::AtLeastOnce))
        .await
        .expect("queued");
    let mut raw = ts.raw().await;
    let ack = raw.connect_v5(v5_connect("cleaner")).await;
    assert!(!ack.session_present);
    assert_eq!(
        delivery.acknowledged().await,
        Err(DeliveryError::SessionEnded)
    );
    assert!(handle.is_ended());
    ts.rec
        .wait("session ended", |e| matches!(e, Ev::SessionEnded { key, reason: SessionEndReason::CleanStart } if key == "cleaner").then_some(()))
        .await;
    // A clean MQTT 5 session with expiry 0 ends with its connection.
    raw.send(b"\xe0\x00").await;
    raw.expect_closed().await;
    ts.rec
        .wait("closed session ended", |e| matches!(e, Ev::SessionEnded { key, reason: SessionEndReason::Closed } if key == "cleaner").then_some(()))
        .await;
    assert!(ts.server.session("cleaner").is_none());
}

#[tokio::test]
async fn unacknowledged_messages_are_redelivered_with_dup_after_reconnect() {
    let ts = TestServer::default().await;
    let connect = v5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 300,
        ..v5_connect("redeliver")
    };
    let mut raw = ts.raw().await;
    raw.connect_v5(connect.clone()).await;
    ts.rec
        .wait("connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "redeliver").then_some(())
        })
        .await;
    let handle = ts.handle("redeliver");
    let first = handle
        .publish(OutboundMessage::new("cmd/a", "1", QoS::AtLeastOnce))
        .await
        .expect("queued");
    assert_eq!(first.enqueued(), Enqueued::Connected);
    let second = handle
        .publish(OutboundMessage::new("cmd/b", "2", QoS::AtLeastOnce))
        .await
        .expect("queued");
    let mut ids = Vec::new();
    for _ in 0..2 {
        match raw.recv_v5().await {
            Some(v5::Packet::Publish(p)) => {
                assert!(!p.dup);
                ids.push(p.packet_id.expect("id"));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    drop(raw); // vanish without acknowledging
    ts.rec.wait("lost", |e| matches!(e, Ev::Disconnected { client_id, reason: CloseReason::ConnectionLost } if client_id == "redeliver").then_some(())).await;
    let mut raw = ts.raw().await;
    assert!(raw.connect_v5(connect).await.session_present);
    for expected in [("cmd/a", ids[0]), ("cmd/b", ids[1])] {
        match raw.recv_v5().await {
            Some(v5::Packet::Publish(p)) => {
                assert!(p.dup, "redelivery carries DUP");
                assert_eq!((&*p.topic, p.packet_id.expect("id")), expected);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    raw.send_v5(v5::Packet::PublishAck(v5::PublishAck {
        packet_id: ids[1],
        ..Default::default()
    }))
    .await;
    raw.send_v5(v5::Packet::PublishAck(v5::PublishAck {
        packet_id: ids[0],
        reason_code: v5::PublishAckReason::UnspecifiedError,
        ..Default::default()
    }))
    .await;
    assert_eq!(
        second.acknowledged().await,
        Ok(drover_mqtt::ReasonCode::SUCCESS)
    );
    assert_eq!(
        first.acknowledged().await,
        Ok(drover_mqtt::ReasonCode::UNSPECIFIED_ERROR)
    );
}

#[tokio::test]
async fn expired_sessions_are_reaped() {
    let ts = TestServer::start(MqttConfig {
        reap_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 1,
        ..v5_connect("short")
    })
    .await;
    raw.send(b"\xe0\x00").await;
    raw.expect_closed().await;
    ts.rec
        .wait("gone", |e| {
            matches!(e, Ev::Disconnected { client_id, .. } if client_id == "short").then_some(())
        })
        .await;
    let handle = ts.handle("short");
    let delivery = handle
        .publish(OutboundMessage::new("x", "q", QoS::AtLeastOnce))
        .await
        .expect("queued offline");
    ts.rec
        .wait("expired", |e| matches!(e, Ev::SessionEnded { key, reason: SessionEndReason::Expired } if key == "short").then_some(()))
        .await;
    assert_eq!(
        delivery.acknowledged().await,
        Err(DeliveryError::SessionEnded)
    );
    assert!(ts.server.session("short").is_none());
    // DISCONNECT may shorten the expiry; an MQTT 3 persistent session uses the configured expiry.
    let mut raw = ts.raw().await;
    raw.connect_v3(v3::Connect {
        clean_session: false,
        ..v3_connect("v3-persistent")
    })
    .await;
    ts.rec
        .wait("v3 expiry", |e| match e {
            Ev::Connect {
                client_id, expiry, ..
            } if client_id == "v3-persistent" => Some(*expiry),
            _ => None,
        })
        .await;
    assert_eq!(
        ts.server
            .session("v3-persistent")
            .map(|h| h.key().to_string()),
        Some("v3-persistent".into())
    );
}

#[tokio::test]
async fn session_limit_refuses_new_sessions() {
    let ts = TestServer::start(MqttConfig {
        max_sessions: 1,
        ..Default::default()
    })
    .await;
    let mut a = ts.raw().await;
    a.connect_v5(v5_connect("one")).await;
    let mut b = ts.raw().await;
    assert_eq!(
        u8::from(b.connect_v5(v5_connect("two")).await.reason_code),
        0x89
    );
    let mut c = ts.raw().await;
    assert_eq!(
        u8::from(c.connect_v3(v3_connect("three")).await.return_code),
        3
    );
    // Taking over the existing session is still possible.
    let mut d = ts.raw().await;
    assert_eq!(
        d.connect_v5(v5_connect("one")).await.reason_code,
        v5::ConnectAckReason::Success
    );
}

#[tokio::test]
async fn the_policy_can_end_a_session_and_its_connection() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        username: Some("session:app/ended".into()),
        clean_start: false,
        session_expiry_interval_secs: 600,
        ..v5_connect("ended")
    })
    .await;
    raw.send_v5(v5::Packet::Subscribe(v5::Subscribe {
        packet_id: pid(1),
        id: None,
        user_properties: Vec::new(),
        topic_filters: vec![("a/b".into(), Default::default())],
    }))
    .await;
    assert!(matches!(
        raw.recv_v5().await,
        Some(v5::Packet::SubscribeAck(_))
    ));
    let key = "app/ended";
    let handle = ts.handle(key);
    assert!(
        ts.server
            .end_session(key, drover_mqtt::ReasonCode::NOT_AUTHORIZED)
            .await
    );
    assert_eq!(expect_disconnect(&mut raw).await, 0x87);
    assert!(handle.is_ended());
    assert!(ts.server.session(key).is_none());
    ts.rec
        .wait("session_ended", |e| {
            matches!(e, Ev::SessionEnded { key: k, reason: SessionEndReason::Ended } if k == key)
                .then_some(())
        })
        .await;
    // Connecting again starts over: no session present, no subscriptions.
    let mut again = ts.raw().await;
    let ack = again
        .connect_v5(v5::Connect {
            username: Some("session:app/ended".into()),
            clean_start: false,
            session_expiry_interval_secs: 600,
            ..v5_connect("ended")
        })
        .await;
    assert!(!ack.session_present);
    assert!(ts.handle(key).subscriptions().is_empty());
    assert!(
        !ts.server
            .end_session("no/such", drover_mqtt::ReasonCode::NOT_AUTHORIZED)
            .await
    );
}
