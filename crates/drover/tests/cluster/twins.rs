//! Twins on a cluster: a change through one node reaches a device on another.

use crate::clients::{mqtt_device, next, ws_event, ws_open};
use crate::common::backends::{backends, unique, Cleanup};
use crate::node::Node;
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};

/// Twins on a cluster: a desired change made through node A reaches the device connected to
/// node B, the device's report through B is read through A, and the change events are in the
/// shared stream.
#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_twin_change_through_one_node_reaches_a_device_on_another() {
    let (db, nats) = backends();
    let (schema, prefix) = (unique("drover_twin"), unique("twin"));
    let _cleanup = Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };
    let a = Node::start("a", &db, &schema, &nats, &prefix);
    let b = Node::start("b", &db, &schema, &nats, &prefix);
    a.create_device("pw1").await;
    let twin = "/api/registry/v1alpha1/apps/app/devices/dev1/twin";

    let (c, mut el, code) = mqtt_device(&b, "twin-dev1", "pw1", Some("$twin/#")).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    let current = next(&mut el, |e| match e {
        Event::Incoming(Packet::Publish(p)) if p.topic == "$twin/current" => Some(p.clone()),
        _ => None,
    })
    .await;
    let current: Value = serde_json::from_slice(&current.payload).unwrap();
    assert_eq!(current["desired"]["$version"], 1);

    let r = a
        .admin(reqwest::Method::PATCH, &format!("{twin}/desired"))
        .json(&json!({"mode": "eco"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pushed = next(&mut el, |e| match e {
        Event::Incoming(Packet::Publish(p)) if p.topic == "$twin/desired" => Some(p.clone()),
        _ => None,
    })
    .await;
    let pushed: Value = serde_json::from_slice(&pushed.payload).unwrap();
    assert_eq!(pushed, json!({"mode": "eco", "$version": 2}));

    c.publish(
        "$twin/reported",
        QoS::AtLeastOnce,
        false,
        r#"{"mode": "eco"}"#,
    )
    .await
    .unwrap();
    next(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let r = a.admin(reqwest::Method::GET, twin).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reported"], json!({"mode": "eco"}));

    // Both changes are events of the shared stream, read through A.
    let mut ws = ws_open(&a, "?from=earliest").await;
    let mut types = Vec::new();
    while types.len() < 2 {
        let ev = ws_event(&mut ws).await;
        let ty = ev["type"].as_str().unwrap_or_default().to_string();
        if ty.starts_with("io.drover.twin.") {
            types.push(ty);
        }
    }
    types.sort();
    assert_eq!(
        types,
        ["io.drover.twin.desired.v1", "io.drover.twin.reported.v1"]
    );
}
