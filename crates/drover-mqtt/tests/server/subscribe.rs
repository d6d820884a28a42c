//! SUBSCRIBE / UNSUBSCRIBE: per-filter outcomes, shared subscriptions, user properties.

use drover_mqtt::{QoS, ReasonCode};
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
