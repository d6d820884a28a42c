//! What subscribers get: topics, content modes, channels, live start.

use drover_integrations::mqtt::STRUCTURED_CONTENT_TYPE;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::QoS as Q4;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_mode_v3_and_v5() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;

    let (mut c3, _) = V4::ok(env.v4("sub-v3", "alice", &token)).await;
    assert_eq!(
        c3.subscribe("app/app1", Q4::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q4::AtLeastOnce)]
    );
    let (mut c5, _) = V5::ok(env.v5("sub-v5", "alice", &token)).await;
    assert_eq!(
        c5.subscribe("app/app1", Q5::AtMostOnce).await,
        vec![p5::SubscribeReasonCode::Success(Q5::AtMostOnce)]
    );

    for n in 0..3 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    for n in 0..3 {
        let p = c3.publish().await;
        assert_eq!(p.topic, "app/app1");
        assert_eq!(p.qos, Q4::AtLeastOnce);
        assert_eq!(ce_id(&p.payload), format!("dev1-{n}"));
        let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["data"]["n"], n);
        assert_eq!(v["application"], "app1");
        assert_eq!(v["device"], "dev1");
        assert_eq!(v["subject"], "telemetry");

        let p = c5.publish().await;
        assert_eq!(&p.topic[..], b"app/app1");
        assert_eq!(p.qos, Q5::AtMostOnce);
        assert_eq!(ce_id(&p.payload), format!("dev1-{n}"));
        let props = p.properties.expect("properties");
        assert_eq!(props.content_type.as_deref(), Some(STRUCTURED_CONTENT_TYPE));
        assert_eq!(props.payload_format_indicator, Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_v5() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let (mut c, _) = V5::ok(env.v5("bin", "alice", &token)).await;
    assert_eq!(
        c.subscribe_with("app/app1", Q5::AtLeastOnce, &[("content-mode", "binary")])
            .await,
        vec![p5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );
    env.append(&app, "dev1", "telemetry", 7).await;
    let p = c.publish().await;
    assert_eq!(&p.topic[..], b"app/app1");
    assert_eq!(&p.payload[..], b"{\"n\":7}");
    let props = p.properties.expect("properties");
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    let get = |k: &str| {
        props
            .user_properties
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("specversion"), Some("1.0"));
    assert_eq!(get("id"), Some("dev1-7"));
    assert_eq!(get("type"), Some("io.drogue.event.v1"));
    assert_eq!(get("source"), Some("drogue://app1/dev1"));
    assert_eq!(get("subject"), Some("telemetry"));
    assert!(get("time").is_some());
    assert_eq!(get("application"), Some("app1"));
    assert_eq!(get("device"), Some("dev1"));
    assert_eq!(get("partitionkey"), Some("app1/dev1"));
    assert_eq!(get("foo"), Some("bar"));
    assert_eq!(
        get("datacontenttype"),
        None,
        "content type is the MQTT property"
    );
    assert_eq!(get("data"), None);

    // The same client in structured mode on another subscription: the mode is per SUBSCRIBE.
    assert_eq!(
        c.subscribe("a/app1", Q5::AtLeastOnce).await,
        vec![p5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );
    env.append(&app, "dev1", "telemetry", 8).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let p = c.publish().await;
        let topic = String::from_utf8(p.topic.to_vec()).expect("utf8");
        let ct = p.properties.and_then(|p| p.content_type);
        seen.push((topic, ct));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "a/app1".to_string(),
                Some(STRUCTURED_CONTENT_TYPE.to_string())
            ),
            ("app/app1".to_string(), Some("application/json".to_string())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_and_channels() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let (mut a, _) = V4::ok(env.v4("prefix-a", "alice", &token)).await;
    let (mut application, _) = V4::ok(env.v4("prefix-application", "alice", &token)).await;
    let (mut channel, _) = V5::ok(env.v5("channel", "alice", &token)).await;
    assert_eq!(
        a.subscribe("a/app1", Q4::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q4::AtLeastOnce)]
    );
    assert_eq!(
        application
            .subscribe("application/app1", Q4::AtLeastOnce)
            .await,
        vec![rumqttc::SubscribeReasonCode::Success(Q4::AtLeastOnce)]
    );
    assert_eq!(
        channel.subscribe("app/app1/temp", Q5::AtLeastOnce).await,
        vec![p5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );

    env.append(&app, "dev1", "other", 0).await;
    env.append(&app, "dev1", "temp", 1).await;
    env.append(&app, "dev2", "other", 2).await;
    env.append(&app, "dev2", "temp", 3).await;

    for c in [&mut a, &mut application] {
        let mut ids = Vec::new();
        for _ in 0..4 {
            let p = c.publish().await;
            assert!(p.topic == "a/app1" || p.topic == "application/app1");
            ids.push(ce_id(&p.payload));
        }
        assert_eq!(ids, ["dev1-0", "dev1-1", "dev2-2", "dev2-3"]);
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        let p = channel.publish().await;
        assert_eq!(&p.topic[..], b"app/app1/temp");
        ids.push(ce_id(&p.payload));
    }
    assert_eq!(ids, ["dev1-1", "dev2-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_gets_live_events_only() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    for n in 0..5 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    let (mut c, _) = V4::ok(env.v4("live", "alice", &token)).await;
    c.subscribe("app/app1", Q4::AtLeastOnce).await;
    for n in 5..8 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    for n in 5..8 {
        assert_eq!(ce_id(&c.publish().await.payload), format!("dev1-{n}"));
    }
    // A clean session is no durable group: nothing is committed for it.
    assert_eq!(env.committed(&app, "mqtt:alice/live/app/app1").await, None);

    // A second clean connection with the same client id starts live again.
    c.client.disconnect().await.expect("disconnect");
    let (mut c, ack) = V4::ok(env.v4("live", "alice", &token)).await;
    assert!(!ack.session_present);
    env.append(&app, "dev1", "telemetry", 8).await;
    c.subscribe("app/app1", Q4::AtLeastOnce).await;
    env.append(&app, "dev1", "telemetry", 9).await;
    assert_eq!(ce_id(&c.publish().await.payload), "dev1-9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_session_end_stop_consumers() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let (mut c, _) = V5::ok(env.v5("unsub", "alice", &token)).await;
    c.subscribe("app/app1", Q5::AtLeastOnce).await;
    c.subscribe("$share/g/app/app1", Q5::AtLeastOnce).await;
    assert_eq!(env.policy().active_consumers(), 2);
    c.client.unsubscribe("app/app1").await.expect("unsubscribe");
    eventually("the unsubscribed consumer to stop", || async {
        (env.policy().active_consumers() == 1).then_some(())
    })
    .await;
    env.append(&app, "dev1", "telemetry", 0).await;
    let p = c.publish().await;
    assert_eq!(&p.topic[..], b"app/app1", "the shared subscription's topic");
    c.client.disconnect().await.expect("disconnect");
    eventually("the clean session's consumers to stop", || async {
        (env.policy().active_consumers() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stream_stops_delivery() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let (mut c, _) = V5::ok(env.v5("deleted", "alice", &token)).await;
    c.subscribe("app/app1", Q5::AtLeastOnce).await;
    c.subscribe("$share/g/app/app1", Q5::AtLeastOnce).await;
    env.append(&app, "dev1", "telemetry", 0).await;
    c.publish().await;
    c.publish().await;
    assert_eq!(env.policy().active_consumers(), 2);
    drover_bus::EventLog::delete_stream(&*env.log, &stream(&app))
        .await
        .expect("delete");
    eventually("the consumers of a deleted stream to stop", || async {
        (env.policy().active_consumers() == 0).then_some(())
    })
    .await;
    // The connection is not disturbed.
    c.client.unsubscribe("app/app1").await.expect("unsubscribe");
    loop {
        if let rumqttc::v5::Event::Incoming(p5::Packet::UnsubAck(_)) =
            c.next().await.expect("still connected")
        {
            break;
        }
    }
}
