//! Wills, connected/disconnected callbacks, kicks and graceful shutdown.

use std::time::Duration;

use bytes::Bytes;
use drover_mqtt::{CloseReason, ReasonCode};
use rmqtt_codec::{v3, v5};

use crate::common::*;

fn v3_will(client_id: &str) -> v3::Connect {
    v3::Connect {
        last_will: Some(v3::LastWill {
            qos: rmqtt_codec::types::QoS::AtLeastOnce,
            retain: false,
            topic: "status/gone".into(),
            message: Bytes::from_static(b"offline"),
        }),
        ..v3_connect(client_id)
    }
}

fn v5_will(client_id: &str, delay: Option<u32>) -> v5::Connect {
    v5::Connect {
        last_will: Some(v5::LastWill {
            qos: rmqtt_codec::types::QoS::AtMostOnce,
            retain: false,
            topic: "status/gone".into(),
            message: Bytes::from_static(b"bye"),
            will_delay_interval_sec: delay,
            correlation_data: None,
            message_expiry_interval: None,
            content_type: None,
            user_properties: Vec::new(),
            is_utf8_payload: None,
            response_topic: None,
        }),
        ..v5_connect(client_id)
    }
}

async fn wait_disconnected(ts: &TestServer, id: &str) -> CloseReason {
    ts.rec
        .wait("disconnected", |e| match e {
            Ev::Disconnected { client_id, reason } if client_id == id => Some(reason.clone()),
            _ => None,
        })
        .await
}

fn wills(ts: &TestServer, id: &str) -> usize {
    ts.rec
        .count(|e| matches!(e, Ev::Will { client_id, .. } if client_id == id))
}

#[tokio::test]
async fn will_is_handed_to_the_policy_on_unexpected_disconnect_only() {
    let ts = TestServer::default().await;
    // Connection dropped: will.
    let mut raw = ts.raw().await;
    raw.connect_v3(v3_will("dropper")).await;
    drop(raw);
    assert_eq!(
        wait_disconnected(&ts, "dropper").await,
        CloseReason::ConnectionLost
    );
    let (topic, payload) = ts
        .rec
        .wait("will", |e| match e {
            Ev::Will {
                client_id,
                topic,
                payload,
            } if client_id == "dropper" => Some((topic.clone(), payload.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        (topic.as_str(), &payload[..]),
        ("status/gone", &b"offline"[..])
    );

    // Clean DISCONNECT: no will.
    let mut raw = ts.raw().await;
    raw.connect_v3(v3_will("polite")).await;
    raw.send(b"\xe0\x00").await;
    raw.expect_closed().await;
    assert_eq!(
        wait_disconnected(&ts, "polite").await,
        CloseReason::ClientDisconnect(ReasonCode::SUCCESS)
    );
    assert_eq!(wills(&ts, "polite"), 0);

    // MQTT 5 DISCONNECT 0x04: will.
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_will("with-will", None)).await;
    raw.send(b"\xe0\x01\x04").await;
    raw.expect_closed().await;
    assert_eq!(
        wait_disconnected(&ts, "with-will").await,
        CloseReason::ClientDisconnect(ReasonCode::DISCONNECT_WITH_WILL)
    );
    ts.rec
        .wait("will", |e| {
            matches!(e, Ev::Will { client_id, .. } if client_id == "with-will").then_some(())
        })
        .await;

    // Protocol error: will.
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_will("violator", None)).await;
    raw.send(b"\x34\x07\x00\x01a\x00\x01\x00x").await;
    assert_eq!(expect_disconnect(&mut raw).await, 0x9B);
    ts.rec
        .wait("will", |e| {
            matches!(e, Ev::Will { client_id, .. } if client_id == "violator").then_some(())
        })
        .await;
}

#[tokio::test]
async fn will_delay_is_cancelled_by_a_resumed_session() {
    let ts = TestServer::default().await;
    let connect = v5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 60,
        ..v5_will("delayed", Some(1))
    };
    let mut raw = ts.raw().await;
    raw.connect_v5(connect.clone()).await;
    drop(raw);
    wait_disconnected(&ts, "delayed").await;
    let mut raw = ts.raw().await;
    assert!(raw.connect_v5(connect).await.session_present);
    // Not a synchronisation: the will's delay (1 s) has to pass with the session resumed for
    // the absence of the will to mean anything, and nothing observable marks that moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        wills(&ts, "delayed"),
        0,
        "resumed within the delay: no will"
    );
    drop(raw);
    ts.rec
        .wait("delayed will", |e| {
            matches!(e, Ev::Will { client_id, .. } if client_id == "delayed").then_some(())
        })
        .await;
}

#[tokio::test]
async fn invalid_wills_are_refused() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    let mut c = v5_will("w2", None);
    if let Some(w) = c.last_will.as_mut() {
        w.qos = rmqtt_codec::types::QoS::ExactlyOnce;
    }
    assert_eq!(u8::from(raw.connect_v5(c).await.reason_code), 0x9B);
    let mut raw = ts.raw().await;
    let mut c = v5_will("wr", None);
    if let Some(w) = c.last_will.as_mut() {
        w.retain = true;
    }
    assert_eq!(u8::from(raw.connect_v5(c).await.reason_code), 0x9A);
    let mut raw = ts.raw().await;
    let mut c = v5_will("wt", None);
    if let Some(w) = c.last_will.as_mut() {
        w.topic = "a/#".into();
    }
    assert_eq!(u8::from(raw.connect_v5(c).await.reason_code), 0x90);
    let mut raw = ts.raw().await;
    let c = v5::Connect {
        auth_method: Some("SCRAM".into()),
        ..v5_connect("scram")
    };
    assert_eq!(u8::from(raw.connect_v5(c).await.reason_code), 0x8C);
}

#[tokio::test]
async fn session_handle_can_close_the_connection() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("kicked")).await;
    ts.rec
        .wait("connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "kicked").then_some(())
        })
        .await;
    assert!(ts
        .handle("kicked")
        .disconnect(ReasonCode::ADMINISTRATIVE_ACTION));
    assert_eq!(expect_disconnect(&mut raw).await, 0x98);
    assert_eq!(
        wait_disconnected(&ts, "kicked").await,
        CloseReason::Kicked(ReasonCode::ADMINISTRATIVE_ACTION)
    );
}

#[tokio::test]
async fn graceful_shutdown_disconnects_everyone_and_stops_accepting() {
    let mut ts = TestServer::default().await;
    let mut v5c = ts.raw().await;
    v5c.connect_v5(v5_connect("s5")).await;
    let mut v3c = ts.raw().await;
    v3c.connect_v3(v3_connect("s3")).await;
    ts.rec
        .wait("both connected", |e| {
            matches!(e, Ev::Connected { client_id, .. } if client_id == "s3").then_some(())
        })
        .await;
    assert_eq!(ts.server.connection_count(), 2);
    ts.stop().await;
    assert_eq!(expect_disconnect(&mut v5c).await, 0x8B);
    v3c.expect_closed().await;
    assert_eq!(
        wait_disconnected(&ts, "s5").await,
        CloseReason::ServerShutdown
    );
    assert_eq!(
        wait_disconnected(&ts, "s3").await,
        CloseReason::ServerShutdown
    );
    assert_eq!(ts.server.connection_count(), 0);
    assert!(
        tokio::net::TcpStream::connect(ts.addr).await.is_err(),
        "listener closed"
    );
}
