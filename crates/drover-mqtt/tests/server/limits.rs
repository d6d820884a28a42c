//! Limits that keep clients from holding connections: the packet timeout, the listener's cap.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use drover_mqtt::{CloseReason, MqttConfig};
use rmqtt_codec::{v3, v5};
use tokio_util::codec::Encoder;

use crate::common::*;

const PACKET_TIMEOUT: Duration = Duration::from_millis(500);

fn packet_timeout() -> MqttConfig {
    MqttConfig {
        packet_timeout: PACKET_TIMEOUT,
        ..Default::default()
    }
}

/// Sends `bytes` one at a time, 100 ms apart (so the keep-alive of 1 s sees traffic), until
/// the server sends something or closes; returns when that happened.
async fn trickle(raw: &mut Raw, bytes: &[u8]) -> Instant {
    let started = Instant::now();
    let mut rest = bytes.iter();
    loop {
        if let Some(b) = rest.next() {
            raw.send(&[*b]).await;
        }
        let mut peek = [0u8; 1];
        let answered =
            tokio::time::timeout(Duration::from_millis(100), raw.stream.peek(&mut peek)).await;
        if answered.is_ok() {
            return Instant::now();
        }
        assert!(started.elapsed() < WAIT, "the server never reacted");
    }
}

#[tokio::test]
async fn a_trickled_publish_is_cut_off_after_the_packet_timeout() {
    let ts = TestServer::start(packet_timeout()).await;
    // 200 bytes of payload at 10 bytes per second would take 20 s; the keep-alive of 1 s is
    // kept by the bytes, the packet timeout is not.
    let mut publish = BytesMut::new();
    v5::Codec::new(0, 0)
        .encode(v5_publish("t", 0, 0, &[b'x'; 200]), &mut publish)
        .expect("encode");
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        keep_alive: 1,
        ..v5_connect("trickle5")
    })
    .await;
    let started = Instant::now();
    let answered = trickle(&mut raw, &publish).await;
    let elapsed = answered - started;
    assert!(
        elapsed >= PACKET_TIMEOUT - Duration::from_millis(50) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert_eq!(
        expect_disconnect(&mut raw).await,
        0x8D,
        "Keep Alive timeout"
    );
    let t = ts
        .rec
        .wait("packet timeout", |e| match e {
            Ev::Disconnected {
                client_id,
                reason: CloseReason::PacketTimeout(t),
            } if client_id == "trickle5" => Some(*t),
            _ => None,
        })
        .await;
    assert_eq!(t, PACKET_TIMEOUT);

    // MQTT 3.1.1: closed.
    let mut publish = BytesMut::new();
    v3::Codec::new(0)
        .encode(v3_publish("t", 0, 0, &[b'x'; 200]), &mut publish)
        .expect("encode");
    let mut raw = ts.raw().await;
    raw.connect_v3(v3::Connect {
        keep_alive: 1,
        ..v3_connect("trickle3")
    })
    .await;
    let started = Instant::now();
    let answered = trickle(&mut raw, &publish).await;
    assert!(answered - started < Duration::from_secs(4));
    raw.expect_closed().await;
    ts.rec
        .wait("packet timeout v3", |e| match e {
            Ev::Disconnected {
                client_id,
                reason: CloseReason::PacketTimeout(_),
            } if client_id == "trickle3" => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn a_slow_packet_that_completes_in_time_is_served() {
    let ts = TestServer::start(packet_timeout()).await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("slow")).await;
    let mut publish = BytesMut::new();
    let codec = &mut v5::Codec::new(0, 0);
    codec
        .encode(v5_publish("slow/1", 0, 0, b"first"), &mut publish)
        .expect("encode");
    let first = publish.len();
    codec
        .encode(v5_publish("slow/2", 0, 0, b"second"), &mut publish)
        .expect("encode");
    // Each packet in three pieces over 300 ms; the second starts with the end of the first, so
    // its time counts from then, not from the first packet's first byte.
    let (a, b) = publish.split_at(first);
    for piece in [&a[..3], &a[3..], &b[..3]] {
        raw.send(piece).await;
        tokio::time::sleep(PACKET_TIMEOUT * 3 / 10).await;
    }
    raw.send(&b[3..]).await;
    for topic in ["slow/1", "slow/2"] {
        ts.rec
            .wait(topic, |e| match e {
                Ev::Publish { topic: t, .. } if t == topic => Some(()),
                _ => None,
            })
            .await;
    }
    // Still connected.
    raw.send(b"\xc0\x00").await;
    assert_eq!(raw.recv_v5().await, Some(v5::Packet::PingResponse));
}

#[tokio::test]
async fn connections_over_the_listener_cap_are_refused_server_busy() {
    let ts = TestServer::start_on(MqttConfig::default(), |tcp| {
        drover_net::Listener::new(tcp, "MQTT").max_connections(1)
    })
    .await;
    let mut first = ts.raw().await;
    let ack = first.connect_v5(v5_connect("first")).await;
    assert_eq!(u8::from(ack.reason_code), 0x00);

    let mut second = ts.raw().await;
    let ack = second.connect_v5(v5_connect("second")).await;
    assert_eq!(u8::from(ack.reason_code), 0x89, "Server busy");
    second.expect_closed().await;
    let mut third = ts.raw().await;
    let ack = third.connect_v3(v3_connect("third")).await;
    assert_eq!(
        ack.return_code,
        v3::ConnectAckReason::ServiceUnavailable,
        "MQTT 3: server unavailable"
    );
    third.expect_closed().await;

    // The first leaves: the listener takes connections again once the connection's task has
    // ended, right after the policy heard of the close. Each refused attempt is a round trip
    // that lets that task finish, so the retries need no pause.
    first
        .send_v5(v5::Packet::Disconnect(Default::default()))
        .await;
    first.expect_closed().await;
    ts.rec
        .wait("first disconnected", |e| match e {
            Ev::Disconnected { client_id, .. } if client_id == "first" => Some(()),
            _ => None,
        })
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = ts.raw().await;
        let ack = again.connect_v5(v5_connect("again")).await;
        if u8::from(ack.reason_code) == 0x00 {
            break;
        }
        again.expect_closed().await;
        assert!(Instant::now() < deadline, "still refused");
    }
}
