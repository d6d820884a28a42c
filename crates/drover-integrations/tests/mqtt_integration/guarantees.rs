//! Delivery guarantees: shared groups, at least once across a killed consumer and a server
//! restart, lag.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use drover_mqtt::MqttConfig;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::QoS as Q4;

use crate::common::*;

/// `(device, n)` of an id `<device>-<n>`.
fn parse_id(id: &str) -> (String, usize) {
    let (device, n) = id.rsplit_once('-').expect("id");
    (device.to_string(), n.parse().expect("n"))
}

/// Appends `per_device` events for each of `devices`, interleaved.
async fn append_interleaved(
    env: &Env,
    app: &drover_model::Resource,
    devices: usize,
    per_device: usize,
) {
    for n in 0..per_device {
        for d in 0..devices {
            env.append(app, &format!("dev{d}"), "telemetry", n).await;
        }
    }
}

/// Asserts that every device's events in `ids` appear in increasing order.
fn assert_per_device_order(who: &str, ids: &[String]) {
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        let (device, n) = parse_id(id);
        if let Some(prev) = last.get(&device) {
            assert!(n > *prev, "{who}: {device} event {n} after {prev}: {ids:?}");
        }
        last.insert(device, n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_splits_by_device_in_order() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let (mut a, _) = V5::ok(env.v5("member-a", "alice", &token)).await;
    let (mut b, _) = V4::ok(env.v4("member-b", "alice", &token)).await;
    assert_eq!(
        a.subscribe("$share/workers/app/app1", Q5::AtLeastOnce)
            .await,
        vec![p5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );
    assert_eq!(
        b.subscribe("$share/workers/app/app1", Q4::AtLeastOnce)
            .await,
        vec![rumqttc::SubscribeReasonCode::Success(Q4::AtLeastOnce)]
    );
    assert_eq!(
        env.policy().active_consumers(),
        1,
        "one dispatcher per group"
    );

    let (devices, per_device) = (8, 20);
    append_interleaved(&env, &app, devices, per_device).await;
    let total = devices * per_device;

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < total {
        tokio::select! {
            p = a.publish() => {
                assert_eq!(&p.topic[..], b"app/app1");
                got_a.push(ce_id(&p.payload));
            }
            p = b.publish() => {
                assert_eq!(p.topic, "app/app1");
                got_b.push(ce_id(&p.payload));
            }
        }
    }
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both members get a share: {got_a:?} / {got_b:?}"
    );
    assert_per_device_order("member a", &got_a);
    assert_per_device_order("member b", &got_b);
    let devices_a: HashSet<String> = got_a.iter().map(|i| parse_id(i).0).collect();
    let devices_b: HashSet<String> = got_b.iter().map(|i| parse_id(i).0).collect();
    assert!(
        devices_a.is_disjoint(&devices_b),
        "each device goes to one member"
    );
    let all: HashSet<&String> = got_a.iter().chain(&got_b).collect();
    assert_eq!(all.len(), total, "every event exactly once");

    // The group is durable: it committed everything once acknowledged.
    env.wait_committed(&app, "mqtt-share:app1:workers", env.log.end(&stream(&app)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_member_leaving_hands_its_unacknowledged_events_over() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    // `a` never acknowledges, then dies; `b` must get everything, in order per device.
    let mut opts = env.v5("leaver", "alice", &token);
    opts.set_manual_acks(true);
    let (mut a, _) = V5::ok(opts).await;
    let (mut b, _) = V5::ok(env.v5("stayer", "alice", &token)).await;
    a.subscribe("$share/g/app/app1", Q5::AtLeastOnce).await;
    b.subscribe("$share/g/app/app1", Q5::AtLeastOnce).await;

    let (devices, per_device) = (8, 10);
    append_interleaved(&env, &app, devices, per_device).await;
    let total = devices * per_device;

    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    // Wait until `a` has its share (it never acknowledges it), collecting `b`'s meanwhile.
    let first_a = a.publish().await;
    got_a.push(ce_id(&first_a.payload));
    a.kill();
    while got_b.iter().collect::<HashSet<_>>().len() < total {
        got_b.push(ce_id(&b.publish().await.payload));
    }
    assert_per_device_order("remaining member", &got_b);
    let (device, _) = parse_id(&got_a[0]);
    assert!(
        got_b.iter().any(|id| parse_id(id).0 == device),
        "the departed member's devices moved"
    );
    env.wait_committed(&app, "mqtt-share:app1:g", env.log.end(&stream(&app)))
        .await;
}

/// A QoS 1 consumer with a persistent session acknowledges some events and dies; it comes back
/// and gets every unacknowledged event again, in order, then the new ones — no gap, and no
/// duplicates from re-subscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_qos1_consumer_gets_unacknowledged_events_again() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let group = "mqtt:alice/durable/app/app1";
    let persistent = |env: &Env| {
        let mut o = env.v4("durable", "alice", &token);
        o.set_clean_session(false);
        o.set_manual_acks(true);
        o
    };
    let (mut c, _) = V4::ok(persistent(&env)).await;
    c.subscribe("app/app1", Q4::AtLeastOnce).await;
    let start = env
        .committed(&app, group)
        .await
        .expect("durable from the subscription on");

    for n in 0..20 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(c.publish().await);
    }
    let ids: Vec<String> = received.iter().map(|p| ce_id(&p.payload)).collect();
    assert_eq!(
        ids,
        (0..20).map(|n| format!("dev1-{n}")).collect::<Vec<_>>()
    );
    for p in &received[..5] {
        c.client.ack(p).await.expect("ack");
    }
    env.wait_committed(&app, group, start + 5).await;
    c.kill();
    // Events keep coming while it is away.
    for n in 20..23 {
        env.append(&app, "dev1", "telemetry", n).await;
    }

    let (mut c, ack) = V4::ok(persistent(&env)).await;
    assert!(ack.session_present);
    // Clients often subscribe again on reconnect: that must not deliver anything twice.
    c.subscribe("app/app1", Q4::AtLeastOnce).await;
    for n in 23..25 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    let mut again = Vec::new();
    for _ in 5..25 {
        let p = c.publish().await;
        again.push(ce_id(&p.payload));
        c.client.ack(&p).await.expect("ack");
    }
    assert_eq!(
        again,
        (5..25).map(|n| format!("dev1-{n}")).collect::<Vec<_>>()
    );
    env.wait_committed(&app, group, start + 25).await;
    // A sentinel: had anything been queued twice, it would come first.
    env.append(&app, "dev1", "telemetry", 25).await;
    let p = c.publish().await;
    assert_eq!(ce_id(&p.payload), "dev1-25");
}

/// The same over MQTT 5 when the session itself is gone: a consumer that stopped acknowledging
/// is disconnected, its session expires with the connection (expiry 0 at DISCONNECT is not
/// allowed, so it reconnects with Clean Start), and the durable group hands out everything
/// unacknowledged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_session_resumes_from_the_committed_offset_v5() {
    let env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let group = "mqtt:alice/v5-durable/app/app1";
    let opts = |env: &Env, clean: bool| {
        let mut o = env.v5("v5-durable", "alice", &token);
        o.set_clean_start(clean);
        o.set_session_expiry_interval(Some(3600));
        o.set_manual_acks(true);
        o
    };
    let (mut c, _) = V5::ok(opts(&env, true)).await;
    c.subscribe("app/app1", Q5::AtLeastOnce).await;
    let start = env.committed(&app, group).await.expect("durable");
    for n in 0..10 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    let mut received = Vec::new();
    for _ in 0..10 {
        received.push(c.publish().await);
    }
    // Acknowledge 0, 1, 2 and 4: only the contiguous prefix (0..=2) is committed.
    for i in [0, 1, 2, 4] {
        c.client.ack(&received[i]).await.expect("ack");
    }
    env.wait_committed(&app, group, start + 3).await;
    c.kill();

    // Clean Start discards the session; the durable group resumes after offset 3.
    let (mut c, ack) = V5::ok(opts(&env, true)).await;
    assert!(!ack.session_present);
    c.subscribe("app/app1", Q5::AtLeastOnce).await;
    let mut again = Vec::new();
    for _ in 3..10 {
        let p = c.publish().await;
        again.push(ce_id(&p.payload));
        c.client.ack(&p).await.expect("ack");
    }
    assert_eq!(
        again,
        (3..10).map(|n| format!("dev1-{n}")).collect::<Vec<_>>()
    );
    env.wait_committed(&app, group, start + 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_resumes_persistent_subscribers_from_their_committed_offset() {
    let mut env = Env::default().await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;
    let group = "mqtt:alice/restart/app/app1";
    let shared = "mqtt-share:app1:g";
    let persistent = |env: &Env| {
        let mut o = env.v5("restart", "alice", &token);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o.set_manual_acks(true);
        o
    };
    let (mut c, _) = V5::ok(persistent(&env)).await;
    c.subscribe("app/app1", Q5::AtLeastOnce).await;
    let (mut s, _) = V4::ok(env.v4("restart-shared", "alice", &token)).await;
    s.subscribe("$share/g/app/app1", Q4::AtLeastOnce).await;
    let start = env.committed(&app, group).await.expect("durable");
    assert_eq!(env.committed(&app, shared).await, Some(start));

    for n in 0..10 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    let mut received = Vec::new();
    for _ in 0..10 {
        received.push(c.publish().await);
        s.publish().await;
    }
    for p in &received[..6] {
        c.client.ack(p).await.expect("ack");
    }
    env.wait_committed(&app, group, start + 6).await;
    env.wait_committed(&app, shared, start + 10).await;

    env.restart().await;
    c.kill();
    s.kill();
    for n in 10..15 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    assert_eq!(
        env.committed(&app, group).await,
        Some(start + 6),
        "offsets survived"
    );

    // Sessions are in memory: the client finds none and subscribes again.
    let (mut c, ack) = V5::ok(persistent(&env)).await;
    assert!(!ack.session_present);
    c.subscribe("app/app1", Q5::AtLeastOnce).await;
    let mut again = Vec::new();
    for _ in 6..15 {
        let p = c.publish().await;
        again.push(ce_id(&p.payload));
        c.client.ack(&p).await.expect("ack");
    }
    assert_eq!(
        again,
        (6..15).map(|n| format!("dev1-{n}")).collect::<Vec<_>>()
    );

    let (mut s, _) = V4::ok(env.v4("restart-shared", "alice", &token)).await;
    s.subscribe("$share/g/app/app1", Q4::AtLeastOnce).await;
    for n in 10..15 {
        assert_eq!(ce_id(&s.publish().await.payload), format!("dev1-{n}"));
    }
    env.wait_committed(&app, group, start + 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_consumer_is_disconnected() {
    let settings = drover_integrations::mqtt::IntegrationSettings {
        max_lag: 20,
        lag_check_interval: Duration::from_millis(100),
        inflight_window: 2,
        ..settings()
    };
    let mqtt = MqttConfig {
        session_queue_limit: 4,
        ..MqttConfig::default()
    };
    let env = Env::start(settings, mqtt).await;
    let token = env.user("alice").await;
    let app = env.app("alice", "app1").await;

    // A consumer that keeps up is left alone.
    let (mut fast, _) = V5::ok(env.v5("fast", "alice", &token)).await;
    fast.subscribe("app/app1", Q5::AtLeastOnce).await;
    // One that never acknowledges falls behind and is disconnected.
    let mut opts = env.v5("slow", "alice", &token);
    opts.set_manual_acks(true);
    let (mut slow, _) = V5::ok(opts).await;
    slow.subscribe("app/app1", Q5::AtLeastOnce).await;

    for n in 0..60 {
        env.append(&app, "dev1", "telemetry", n).await;
    }
    let reason = loop {
        match slow.next().await {
            Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
            )) => break reason_code,
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(_) => {}
        }
    };
    assert_eq!(reason, p5::DisconnectReasonCode::QuotaExceeded);
    for n in 0..60 {
        assert_eq!(ce_id(&fast.publish().await.payload), format!("dev1-{n}"));
    }
}
