//! Two nodes share registry, events and commands.

use std::time::{Duration, Instant};

use crate::clients::{closed, mqtt_device, next, ws_event, ws_open};
use crate::common::backends::{backends, unique, Cleanup};
use crate::node::{Node, WAIT};
use futures::StreamExt;
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn two_nodes_share_registry_events_and_commands() {
    let (db, nats) = backends();
    let (schema, prefix) = (unique("drover_e2e"), unique("e2e"));
    let _cleanup = Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };
    let a = Node::start("a", &db, &schema, &nats, &prefix);
    let b = Node::start("b", &db, &schema, &nats, &prefix);

    for n in [&a, &b] {
        let r = reqwest::get(format!("{}/health/ready", n.api))
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["registry"], "ok", "{body}");
        assert_eq!(body["checks"]["eventLog"], "ok", "{body}");
        assert_eq!(body["checks"]["commandRouting"], "ok", "{body}");
    }

    // The registry is shared: created through A, read through B.
    a.create_device("pw1").await;
    let r = b
        .admin(
            reqwest::Method::GET,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Telemetry into A, consumed from B's WebSocket integration in consumer group g1.
    let mut ws = ws_open(&b, "?group_id=g1&from=earliest").await;
    let send = |temp: f64| {
        reqwest::Client::new()
            .post(format!("{}/v1/temperature", a.http))
            .basic_auth("dev1@app", Some("pw1"))
            .header("content-type", "application/json")
            .body(json!({ "temp": temp }).to_string())
            .send()
    };
    assert_eq!(send(21.5).await.unwrap().status(), 202);
    let event = ws_event(&mut ws).await;
    assert_eq!(event["device"], "dev1");
    assert_eq!(event["subject"], "temperature");
    assert_eq!(event["instance"], "a", "{event}");
    assert_eq!(event["data"], json!({"temp": 21.5}));
    // The group's position is shared: it resumes on node A after what B delivered.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    assert_eq!(send(22.0).await.unwrap().status(), 202);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut ws = ws_open(&a, "?group_id=g1").await;
        let event = ws_event(&mut ws).await;
        if event["data"] == json!({"temp": 22.0}) {
            break;
        }
        // B's commit (made as its connection closed) may not have been there yet.
        assert_eq!(event["data"], json!({"temp": 21.5}), "{event}");
        assert!(
            Instant::now() < deadline,
            "group g1 never resumed after 21.5 on node A"
        );
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }

    // A command through B reaches the device on A; the reply returns to the caller on B.
    let (d, mut del, code) = mqtt_device(&a, "dev1-a", "pw1", Some("command/inbox//#")).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    let deadline = Instant::now() + WAIT;
    let call = loop {
        // Until A's interest in the device has reached NATS: 404 DeviceNotOnline.
        let call = tokio::spawn(
            b.admin(
                reqwest::Method::POST,
                "/api/command/v1alpha1/apps/app/devices/dev1?command=read&timeout=10",
            )
            .body("?")
            .send(),
        );
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            next(&mut del, |e| match e {
                Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                _ => None,
            })
            .await
        })
        .await;
        match got {
            Ok(p) => break (call, p),
            Err(_) => {
                let r = call.await.unwrap().unwrap();
                assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
                assert!(Instant::now() < deadline, "the command never reached A");
            }
        }
    };
    let (call, p) = call;
    let (topic, id) = p.topic.rsplit_once('/').unwrap();
    assert_eq!(topic, "command/inbox//read");
    assert_eq!(&p.payload[..], b"?");
    d.publish(
        format!("command/reply/{id}/201"),
        QoS::AtLeastOnce,
        false,
        "21.5",
    )
    .await
    .unwrap();
    next(&mut del, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "21.5");

    // The device connects to B: its connection on A is closed (session taken over).
    let (_d2, del2, code) = mqtt_device(&b, "dev1-b", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    closed(&mut del).await;

    // A queued command through A reaches the device when it subscribes on B.
    let r = a
        .admin(
            reqwest::Method::POST,
            "/api/command/v1alpha1/apps/app/devices/dev1?command=later&ttl=60",
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    drop(del2);
    let (_d3, mut del3, _) = mqtt_device(&b, "dev1-b", "pw1", Some("command/inbox//#")).await;
    let p = next(&mut del3, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(p.topic, "command/inbox//later");

    // A credential change through A: B disconnects the device and refuses the old password.
    let r = a
        .admin(
            reqwest::Method::GET,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .send()
        .await
        .unwrap();
    let mut dev: Value = r.json().await.unwrap();
    dev["spec"]["authentication"] = json!({"credentials": [{"pass": "pw2"}]});
    let changed = Instant::now();
    let r = a
        .admin(
            reqwest::Method::PUT,
            "/api/registry/v1alpha1/apps/app/devices/dev1",
        )
        .json(&dev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    closed(&mut del3).await;
    eprintln!(
        "the device's connection on B closed {:?} after the change on A",
        changed.elapsed()
    );
    let (_, _, code) = mqtt_device(&b, "dev1-b2", "pw1", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
    let (_, _, code) = mqtt_device(&b, "dev1-b2", "pw2", None).await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
}
