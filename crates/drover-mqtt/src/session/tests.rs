//! Unit tests of the session machinery.

use std::num::NonZeroU16;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::reason::ReasonCode;
use crate::types::{OutboundMessage, QoS};

struct VecSink {
    room: usize,
    out: Vec<(Option<NonZeroU16>, bool, String)>,
    max_payload: usize,
}

impl Sink for VecSink {
    fn has_room(&self) -> bool {
        self.out.len() < self.room
    }
    fn emit(&mut self, out: Outgoing<'_>) -> bool {
        let (id, dup, msg) = match &out {
            Outgoing::Qos0(m, _) => (None, false, m),
            Outgoing::Qos1 {
                msg,
                packet_id,
                dup,
                ..
            } => (Some(*packet_id), *dup, *msg),
        };
        if msg.payload.len() > self.max_payload {
            return false;
        }
        self.out
            .push((id, dup, String::from_utf8_lossy(&msg.payload).into_owned()));
        true
    }
}

fn sink(room: usize) -> VecSink {
    VecSink {
        room,
        out: Vec::new(),
        max_payload: usize::MAX,
    }
}

fn msg(payload: &str, qos: QoS) -> OutboundMessage {
    OutboundMessage::new("t", Bytes::copy_from_slice(payload.as_bytes()), qos)
}

fn attach(store: &SessionStore, clean: bool, window: usize) -> Attached {
    let mut ended = Vec::new();
    let params = AttachParams {
        key: "k",
        client_id: ByteString::from_static("c"),
        clean_start: clean,
        expiry: Duration::from_secs(60),
        window,
    };
    store.attach(params, &mut ended).expect("attach")
}

#[tokio::test]
async fn window_redelivery_and_acks() {
    let store = SessionStore::new(10, 100);
    let a = attach(&store, true, 2);
    let h = SessionHandle::new(a.session.clone());
    let mut deliveries = Vec::new();
    for i in 0..4 {
        deliveries.push(
            h.publish(msg(&format!("m{i}"), QoS::AtLeastOnce))
                .await
                .expect("queued"),
        );
    }
    let mut s = sink(100);
    assert!(a.session.pump(a.generation, &mut s));
    assert_eq!(s.out.len(), 2, "window of 2");
    assert_eq!(h.queued(), 2);
    // Reconnect: the two in flight are resent with DUP, in order, before anything new.
    let mut ended = Vec::new();
    store.detach(&a.session, a.generation, &mut ended);
    assert!(ended.is_empty());
    let b = attach(&store, false, 3);
    assert!(b.present);
    let mut s2 = sink(100);
    assert!(
        !a.session.pump(a.generation, &mut s2),
        "stale generation pumps nothing"
    );
    assert!(b.session.pump(b.generation, &mut s2));
    let ids: Vec<_> = s.out.iter().map(|o| o.0).collect();
    assert_eq!(s2.out[0], (ids[0], true, "m0".into()));
    assert_eq!(s2.out[1], (ids[1], true, "m1".into()));
    assert_eq!(s2.out[2].2, "m2");
    assert!(!s2.out[2].1);
    assert_eq!(s2.out.len(), 3);
    assert!(matches!(
        b.session
            .ack(b.generation, s2.out[1].0.expect("id"), ReasonCode::SUCCESS),
        AckOutcome::Acked
    ));
    assert!(matches!(
        b.session
            .ack(a.generation, s2.out[0].0.expect("id"), ReasonCode::SUCCESS),
        AckOutcome::Unknown
    ));
    let d1 = deliveries.remove(1);
    assert_eq!(d1.acknowledged().await, Ok(ReasonCode::SUCCESS));
    // A clean start discards the rest.
    let mut ended = Vec::new();
    store.detach(&b.session, b.generation, &mut ended);
    let c = store
        .attach(
            AttachParams {
                key: "k",
                client_id: "c".into(),
                clean_start: true,
                expiry: Duration::ZERO,
                window: 1,
            },
            &mut ended,
        )
        .expect("attach");
    assert!(!c.present);
    assert_eq!(ended.len(), 1);
    assert_eq!(
        deliveries.remove(0).acknowledged().await,
        Err(DeliveryError::SessionEnded)
    );
    assert!(h.publish(msg("x", QoS::AtLeastOnce)).await.is_err());
}

#[tokio::test]
async fn queue_limit_and_offline() {
    let store = SessionStore::new(10, 2);
    let a = attach(&store, true, 10);
    let h = SessionHandle::new(a.session.clone());
    let _d1 = h.try_publish(msg("a", QoS::AtMostOnce)).expect("room");
    let _d2 = h.try_publish(msg("b", QoS::AtLeastOnce)).expect("room");
    assert!(matches!(
        h.try_publish(msg("c", QoS::AtLeastOnce)),
        Err(TryPublishError::Full(_))
    ));
    let mut s = sink(1);
    a.session.pump(a.generation, &mut s);
    let d3 = h
        .try_publish(msg("c", QoS::AtLeastOnce))
        .expect("one slot freed");
    assert_eq!(d3.enqueued(), Enqueued::Connected);
    let mut ended = Vec::new();
    store.detach(&a.session, a.generation, &mut ended);
    assert!(matches!(
        h.try_publish(msg("d", QoS::AtMostOnce)),
        Err(TryPublishError::Publish(PublishError::Offline(_)))
    ));
    let mut s = sink(10);
    assert!(!a.session.pump(a.generation, &mut s));
    assert!(matches!(
        h.try_publish(msg("", QoS::ExactlyOnce)),
        Err(TryPublishError::Publish(PublishError::Invalid { .. }))
    ));
}

#[tokio::test]
async fn too_large_messages_are_dropped() {
    let store = SessionStore::new(10, 10);
    let a = attach(&store, true, 10);
    let h = SessionHandle::new(a.session.clone());
    let big = h
        .publish(msg("0123456789", QoS::AtLeastOnce))
        .await
        .expect("queued");
    let small = h
        .publish(msg("ok", QoS::AtLeastOnce))
        .await
        .expect("queued");
    let mut s = sink(10);
    s.max_payload = 5;
    a.session.pump(a.generation, &mut s);
    assert_eq!(s.out.len(), 1);
    assert_eq!(big.acknowledged().await, Err(DeliveryError::TooLarge));
    assert_eq!(h.in_flight(), 1);
    drop(small);
}

#[tokio::test(start_paused = true)]
async fn expiry_and_reaping() {
    let store = SessionStore::new(1, 10);
    let a = attach(&store, true, 10);
    let h = SessionHandle::new(a.session.clone());
    let mut ended = Vec::new();
    store.detach(&a.session, a.generation, &mut ended);
    let d = h
        .publish(msg("queued", QoS::AtLeastOnce))
        .await
        .expect("queued offline");
    assert_eq!(d.enqueued(), Enqueued::Offline);
    // Full store: another key is refused until the first session expires.
    let other = AttachParams {
        key: "other",
        client_id: "o".into(),
        clean_start: true,
        expiry: Duration::ZERO,
        window: 1,
    };
    assert!(store.attach(other, &mut ended).is_err());
    tokio::time::advance(Duration::from_secs(61)).await;
    store.reap(&mut ended);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, SessionEndReason::Expired);
    assert_eq!(d.acknowledged().await, Err(DeliveryError::SessionEnded));
    assert!(h.is_ended());
    assert_eq!(store.len(), 0);
}
