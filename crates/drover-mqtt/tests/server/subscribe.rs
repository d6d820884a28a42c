//! SUBSCRIBE / UNSUBSCRIBE: per-filter outcomes, shared subscriptions, user properties.

use drover_mqtt::{MqttConfig, QoS, ReasonCode, Subscription};
use rmqtt_codec::{v3, v5};

use crate::common::*;

fn opts(qos: u8) -> v5::SubscriptionOptions {
    v5::SubscriptionOptions {
        qos: qos.try_into().expect("qos"),
        ..Default::default()
    }
}

fn subscribe(
    packet_id: u16,
    filters: &[(&str, u8)],
    user_properties: &[(&str, &str)],
) -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: pid(packet_id),
        id: None,
        user_properties: user_properties
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        topic_filters: filters
            .iter()
            .map(|(f, q)| ((*f).into(), opts(*q)))
            .collect(),
    })
}

async fn suback(raw: &mut Raw) -> Vec<u8> {
    match raw.recv_v5().await {
        Some(v5::Packet::SubscribeAck(ack)) => ack.status.into_iter().map(u8::from).collect(),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn v5_suback_reasons_per_filter_and_what_the_policy_sees() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("sub5")).await;
    raw.send_v5(subscribe(
        1,
        &[
            ("app/a1", 1),
            ("deny/x", 1),
            ("a/#/b", 1),
            ("$share/g1/app/a1", 2),
            ("q0/x", 1),
            ("$share//x", 0),
            ("command/inbox/#", 0),
        ],
        &[("content-mode", "binary"), ("x", "y")],
    ))
    .await;
    assert_eq!(
        suback(&mut raw).await,
        vec![0x01, 0x87, 0x8F, 0x01, 0x00, 0x8F, 0x00]
    );
    let (filters, props) = ts
        .rec
        .wait("subscribe", |e| match e {
            Ev::Subscribe {
                client_id,
                filters,
                user_properties,
            } if client_id == "sub5" => Some((filters.clone(), user_properties.clone())),
            _ => None,
        })
        .await;
    let seen: Vec<(String, Option<String>, QoS)> = filters
        .iter()
        .map(|f| {
            (
                f.filter.to_string(),
                f.share_group.as_ref().map(|g| g.to_string()),
                f.options.qos,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("app/a1".into(), None, QoS::AtLeastOnce),
            ("deny/x".into(), None, QoS::AtLeastOnce),
            ("app/a1".into(), Some("g1".into()), QoS::ExactlyOnce),
            ("q0/x".into(), None, QoS::AtLeastOnce),
            ("command/inbox/#".into(), None, QoS::AtMostOnce),
        ],
        "invalid filters never reach the policy"
    );
    assert_eq!(
        props,
        vec![
            ("content-mode".to_string(), "binary".to_string()),
            ("x".to_string(), "y".to_string())
        ]
    );
    // The session holds what was granted, with the packet's user properties.
    let subs = ts.handle("sub5").subscriptions();
    assert_eq!(subs.len(), 4);
    let shared = subs
        .iter()
        .find(|s| s.share_group.is_some())
        .expect("shared");
    assert_eq!(
        (&*shared.filter, shared.qos),
        ("app/a1", QoS::AtLeastOnce),
        "QoS 2 lowered to 1"
    );
    assert_eq!(&*shared.user_properties[0].1, "binary");
    assert_eq!(
        ts.handle("sub5").subscription_qos("app/a1"),
        Some(QoS::AtLeastOnce)
    );
    assert_eq!(
        ts.handle("sub5").subscription_qos("command/inbox//reboot"),
        Some(QoS::AtMostOnce)
    );
    assert_eq!(ts.handle("sub5").subscription_qos("other"), None);
}

#[tokio::test]
async fn wildcards_and_shared_subscriptions_can_be_unavailable() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        username: Some("nowild".into()),
        ..v5_connect("nw")
    })
    .await;
    raw.send_v5(subscribe(
        1,
        &[
            ("app/+", 1),
            ("app/#", 1),
            ("app/a", 1),
            ("$share/g/app/+", 1),
        ],
        &[],
    ))
    .await;
    assert_eq!(suback(&mut raw).await, vec![0xA2, 0xA2, 0x01, 0xA2]);
    let mut raw = ts.raw().await;
    raw.connect_v5(v5::Connect {
        username: Some("noshare".into()),
        ..v5_connect("ns")
    })
    .await;
    raw.send_v5(subscribe(1, &[("$share/g/app/a", 1), ("app/#", 1)], &[]))
        .await;
    assert_eq!(suback(&mut raw).await, vec![0x9E, 0x01]);
}

#[tokio::test]
async fn v311_failures_are_0x80() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v3(v3_connect("sub3")).await;
    raw.send_v3(v3::Packet::Subscribe {
        packet_id: pid(3),
        topic_filters: vec![
            ("a/b".into(), rmqtt_codec::types::QoS::AtLeastOnce),
            ("deny/b".into(), rmqtt_codec::types::QoS::AtLeastOnce),
            ("a/#/c".into(), rmqtt_codec::types::QoS::AtMostOnce),
            ("q0/z".into(), rmqtt_codec::types::QoS::AtLeastOnce),
        ],
    })
    .await;
    match raw.recv_v3().await {
        Some(v3::Packet::SubscribeAck { packet_id, status }) => {
            assert_eq!(packet_id, pid(3));
            assert_eq!(
                status,
                vec![
                    v3::SubscribeReturnCode::Success(rmqtt_codec::types::QoS::AtLeastOnce),
                    v3::SubscribeReturnCode::Failure,
                    v3::SubscribeReturnCode::Failure,
                    v3::SubscribeReturnCode::Success(rmqtt_codec::types::QoS::AtMostOnce),
                ]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn unsubscribe_removes_and_reports() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("unsub")).await;
    raw.send_v5(subscribe(1, &[("a/b", 1), ("$share/g/a/b", 0)], &[]))
        .await;
    assert_eq!(suback(&mut raw).await, vec![1, 0]);
    raw.send_v5(v5::Packet::Unsubscribe(v5::Unsubscribe {
        packet_id: pid(2),
        user_properties: Vec::new(),
        topic_filters: vec![
            "a/b".into(),
            "nothing".into(),
            "$share/g/a/b".into(),
            "a/#/x".into(),
        ],
    }))
    .await;
    match raw.recv_v5().await {
        Some(v5::Packet::UnsubscribeAck(ack)) => {
            assert_eq!(ack.packet_id, pid(2));
            let codes: Vec<u8> = ack.status.into_iter().map(u8::from).collect();
            assert_eq!(codes, vec![0x00, 0x11, 0x00, 0x8F]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    let removed = ts
        .rec
        .wait("unsubscribe", |e| match e {
            Ev::Unsubscribe { removed, .. } => Some(removed.clone()),
            _ => None,
        })
        .await;
    assert_eq!(removed.len(), 2);
    assert!(ts.handle("unsub").subscriptions().is_empty());
}

#[tokio::test]
async fn subscription_identifiers_and_no_local_on_shared_are_protocol_errors() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("subid")).await;
    raw.send_v5(v5::Packet::Subscribe(v5::Subscribe {
        packet_id: pid(1),
        id: Some(std::num::NonZeroU32::new(5).expect("non-zero")),
        user_properties: Vec::new(),
        topic_filters: vec![("a".into(), opts(1))],
    }))
    .await;
    assert_eq!(
        expect_disconnect(&mut raw).await,
        ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED.0
    );
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("nolocal")).await;
    raw.send_v5(v5::Packet::Subscribe(v5::Subscribe {
        packet_id: pid(1),
        id: None,
        user_properties: Vec::new(),
        topic_filters: vec![(
            "$share/g/a".into(),
            v5::SubscriptionOptions {
                no_local: true,
                ..opts(1)
            },
        )],
    }))
    .await;
    assert_eq!(expect_disconnect(&mut raw).await, 0x82);
}

#[tokio::test]
async fn rumqttc_v5_subscribe_with_user_properties() {
    let ts = TestServer::default().await;
    let (client, mut el) = rumqttc::v5::AsyncClient::new(ts.rumqttc_v5("rv5"), 10);
    let props = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
        id: None,
        user_properties: vec![("content-mode".into(), "binary".into())],
    };
    client
        .subscribe_with_properties(
            "$share/workers/app/demo",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            props,
        )
        .await
        .expect("subscribe");
    let codes = v5_until(&mut el, |e| match e {
        rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(a)) => {
            Some(a.return_codes.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce
        )]
    );
    let (filters, props) = ts
        .rec
        .wait("subscribe", |e| match e {
            Ev::Subscribe {
                filters,
                user_properties,
                ..
            } => Some((filters.clone(), user_properties.clone())),
            _ => None,
        })
        .await;
    assert_eq!(filters[0].share_group.as_deref(), Some("workers"));
    assert_eq!(&*filters[0].filter, "app/demo");
    assert_eq!(
        props,
        vec![("content-mode".to_string(), "binary".to_string())]
    );
}

#[tokio::test]
async fn subscribed_hook_sees_the_stored_subscriptions_before_suback() {
    let ts = TestServer::default().await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("hook")).await;
    raw.send_v5(subscribe(1, &[("a/b", 1), ("deny/x", 1)], &[]))
        .await;
    assert_eq!(suback(&mut raw).await, vec![0x01, 0x87]);
    // The hook ran before the SUBACK went out: it is recorded by now, no waiting needed.
    let hooks: Vec<(Vec<Subscription>, Vec<Subscription>)> = ts
        .rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Subscribed {
                client_id,
                granted,
                held,
            } if client_id == "hook" => Some((granted, held)),
            _ => None,
        })
        .collect();
    assert_eq!(hooks.len(), 1, "one hook call per SUBSCRIBE");
    let (granted, held) = &hooks[0];
    assert_eq!(granted.len(), 1, "only granted filters: {granted:?}");
    assert_eq!(&*granted[0].filter, "a/b");
    assert_eq!(held, granted, "stored in the session when the hook runs");
    // A SUBSCRIBE that grants nothing calls no hook.
    raw.send_v5(subscribe(2, &[("deny/y", 1)], &[])).await;
    assert_eq!(suback(&mut raw).await, vec![0x87]);
    let calls = ts
        .rec
        .count(|e| matches!(e, Ev::Subscribed { client_id, .. } if client_id == "hook"));
    assert_eq!(calls, 1);
}

fn limited() -> MqttConfig {
    MqttConfig {
        max_subscriptions: 3,
        max_filters_per_subscribe: 4,
        max_topic_length: 32,
        ..MqttConfig::default()
    }
}

#[tokio::test]
async fn subscriptions_per_session_are_capped_with_quota_exceeded() {
    let ts = TestServer::start(limited()).await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("cap")).await;
    raw.send_v5(subscribe(1, &[("t/1", 1), ("t/2", 1)], &[]))
        .await;
    assert_eq!(suback(&mut raw).await, vec![1, 1]);
    // One slot left: the first new filter takes it, a repeat in the same packet and a
    // replacement of a held subscription need none, the next new one is over the quota.
    raw.send_v5(subscribe(
        2,
        &[("t/3", 1), ("t/3", 0), ("t/1", 0), ("t/4", 1)],
        &[],
    ))
    .await;
    assert_eq!(suback(&mut raw).await, vec![1, 0, 0, 0x97]);
    assert_eq!(ts.handle("cap").subscriptions().len(), 3);
    // The refused filter never reached the policy.
    let seen: Vec<String> = ts
        .rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Subscribe { filters, .. } => Some(filters),
            _ => None,
        })
        .flatten()
        .map(|f| f.filter.to_string())
        .collect();
    assert!(!seen.contains(&"t/4".to_string()), "{seen:?}");
    // After an UNSUBSCRIBE there is room again.
    raw.send_v5(v5::Packet::Unsubscribe(v5::Unsubscribe {
        packet_id: pid(3),
        user_properties: Vec::new(),
        topic_filters: vec!["t/2".into()],
    }))
    .await;
    assert!(matches!(
        raw.recv_v5().await,
        Some(v5::Packet::UnsubscribeAck(_))
    ));
    raw.send_v5(subscribe(4, &[("t/4", 1)], &[])).await;
    assert_eq!(suback(&mut raw).await, vec![1]);
}

#[tokio::test]
async fn filters_per_subscribe_and_filter_length_are_capped() {
    let ts = TestServer::start(MqttConfig {
        max_subscriptions: 100,
        ..limited()
    })
    .await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("flood")).await;
    let long = format!("t/{}", "x".repeat(40));
    let filters: Vec<String> = (0..6).map(|i| format!("f/{i}")).collect();
    let mut list: Vec<(&str, u8)> = vec![(long.as_str(), 1)];
    list.extend(filters.iter().map(|f| (f.as_str(), 1)));
    raw.send_v5(subscribe(1, &list, &[])).await;
    assert_eq!(
        suback(&mut raw).await,
        vec![0x8F, 1, 1, 1, 0x97, 0x97, 0x97],
        "the long filter is invalid, only the first 4 filters are considered"
    );
    // MQTT 3.1.1 gets 0x80 for each refusal, and the connection stays.
    let mut raw3 = ts.raw().await;
    raw3.connect_v3(v3_connect("flood3")).await;
    let q = rmqtt_codec::types::QoS::AtLeastOnce;
    raw3.send_v3(v3::Packet::Subscribe {
        packet_id: pid(1),
        topic_filters: (0..6).map(|i| (format!("g/{i}").into(), q)).collect(),
    })
    .await;
    match raw3.recv_v3().await {
        Some(v3::Packet::SubscribeAck { status, .. }) => {
            let ok = v3::SubscribeReturnCode::Success(q);
            let no = v3::SubscribeReturnCode::Failure;
            assert_eq!(status, vec![ok, ok, ok, ok, no, no]);
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    raw3.send_v3(v3::Packet::PingRequest).await;
    assert!(matches!(
        raw3.recv_v3().await,
        Some(v3::Packet::PingResponse)
    ));
}

#[tokio::test]
async fn a_publish_topic_over_the_length_limit_closes_with_0x90() {
    let ts = TestServer::start(limited()).await;
    let mut raw = ts.raw().await;
    raw.connect_v5(v5_connect("longtopic")).await;
    let topic = "x".repeat(33);
    raw.send_v5(v5_publish(&topic, 1, 1, b"p")).await;
    assert_eq!(expect_disconnect(&mut raw).await, 0x90);
    assert_eq!(
        ts.rec
            .count(|e| matches!(e, Ev::Publish { client_id, .. } if client_id == "longtopic")),
        0
    );
}
