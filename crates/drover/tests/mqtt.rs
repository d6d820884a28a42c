//! The MQTT device endpoint end to end: rumqttc (v3.1.1 and v5) devices publish, the events
//! arrive on the WebSocket integration.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use futures::StreamExt;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn ws(t: &TestServer, app: &str) -> Ws {
    let url = format!(
        "{}?username=admin&api_key={}",
        t.ws_url(app),
        common::ADMIN_TOKEN
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next event that is not a connection change.
async fn next_telemetry(ws: &mut Ws) -> Value {
    loop {
        let ev = next_event(ws).await;
        if ev["type"] != "io.drogue.connection.v1" {
            return ev;
        }
    }
}

fn port(t: &TestServer) -> u16 {
    t.server.as_ref().unwrap().mqtt_addr.unwrap().port()
}

fn v4(
    t: &TestServer,
    client_id: &str,
    user: &str,
    pass: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port(t));
    o.set_credentials(user, pass);
    o.set_keep_alive(Duration::from_secs(30));
    rumqttc::AsyncClient::new(o, 10)
}

async fn v4_until<T>(el: &mut rumqttc::EventLoop, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                }
                Err(e) => panic!("mqtt error: {e:?}"),
            }
        }
    })
    .await
    .expect("MQTT event within 10 s")
}

async fn setup(t: &TestServer) {
    let admin = t.admin();
    admin.create_app("app").await;
    for (name, spec) in [
        (
            "dev1",
            json!({"authentication": {"credentials": [{"pass": "secret"}]}}),
        ),
        (
            "gw",
            json!({"authentication": {"credentials": [{"pass": "gwpass"}, {"user": {"username": "alice", "password": "pw"}}]}}),
        ),
        ("behind", json!({"gatewaySelector": {"matchNames": ["gw"]}})),
        (
            "plain",
            json!({"authentication": {"credentials": [{"pass": "p"}]}, "mqtt": {"dialect": {"type": "plainTopic"}}}),
        ),
    ] {
        admin
            .create_device("app", json!({"metadata": {"name": name}, "spec": spec}))
            .await;
    }
}

#[tokio::test]
async fn mqtt_v311_devices_publish_at_qos_1() {
    let t = TestServer::start().await;
    setup(&t).await;
    let mut events = ws(&t, "app").await;
    let (client, mut el) = v4(&t, "c1", "dev1@app", "secret");
    v4_until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    let connected = next_event(&mut events).await;
    assert_eq!(connected["type"], "io.drogue.connection.v1");
    assert_eq!(connected["data"], json!({"connected": true}));
    assert_eq!(connected["device"], "dev1");

    client
        .publish(
            "telemetry",
            QoS::AtLeastOnce,
            false,
            br#"{"temp":1}"#.to_vec(),
        )
        .await
        .unwrap();
    v4_until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let ev = next_telemetry(&mut events).await;
    assert_eq!(ev["subject"], "telemetry");
    assert_eq!(ev["device"], "dev1");
    assert_eq!(ev["data"], json!({"temp": 1}));
    assert_eq!(ev["datacontenttype"], "application/json");

    // As a gateway: `<channel>/<device>`.
    let (gw, mut gel) = v4(&t, "c2", "gw@app", "gwpass");
    gw.publish("state/behind", QoS::AtLeastOnce, false, b"on".to_vec())
        .await
        .unwrap();
    v4_until(&mut gel, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let ev = next_telemetry(&mut events).await;
    assert_eq!(
        (
            ev["device"].as_str(),
            ev["sender"].as_str(),
            ev["subject"].as_str()
        ),
        (Some("behind"), Some("gw"), Some("state"))
    );

    // plainTopic: the whole topic is the channel.
    let (p, mut pel) = v4(&t, "c3", "plain@app", "p");
    p.publish("a/b/c", QoS::AtMostOnce, false, b"x".to_vec())
        .await
        .unwrap();
    p.publish("sync", QoS::AtLeastOnce, false, b"y".to_vec())
        .await
        .unwrap();
    v4_until(&mut pel, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let ev = next_telemetry(&mut events).await;
    assert_eq!(
        (ev["device"].as_str(), ev["subject"].as_str()),
        (Some("plain"), Some("a/b/c"))
    );

    // A `user` credential with the client id naming device and app.
    let (_u, mut uel) = v4(&t, "gw@app", "alice", "pw");
    v4_until(&mut uel, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn mqtt_refusals() {
    let t = TestServer::start().await;
    setup(&t).await;
    for (user, pass) in [
        ("dev1@app", "wrong"),
        ("dev1@nope", "secret"),
        ("ghost@app", "x"),
        ("dev1", "secret"),
    ] {
        let (_c, mut el) = v4(&t, "r", user, pass);
        let code = tokio::time::timeout(WAIT, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => return Some(a.code),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Some(code),
                    Err(e) => panic!("{user}: {e:?}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            code,
            Some(rumqttc::ConnectReturnCode::BadUserNamePassword),
            "{user}"
        );
    }
    // A gateway that the device does not name: QoS 1 to another device is refused (3.1.1:
    // the connection closes), and nothing reaches the stream.
    let mut events = ws(&t, "app").await;
    let (c, mut el) = v4(&t, "g", "dev1@app", "secret");
    c.publish("telemetry/behind", QoS::AtLeastOnce, false, b"x".to_vec())
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Err(_) => return true,
                Ok(Event::Incoming(Packet::PubAck(_))) => return false,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(
        closed,
        "an unauthorized QoS 1 publish must not be acknowledged"
    );
    // Only connection events were recorded.
    c.disconnect().await.ok();
    let (ok, mut okel) = v4(&t, "ok", "dev1@app", "secret");
    ok.publish("marker", QoS::AtLeastOnce, false, b"m".to_vec())
        .await
        .unwrap();
    v4_until(&mut okel, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    assert_eq!(next_telemetry(&mut events).await["subject"], "marker");
}

#[tokio::test]
async fn mqtt_v5_properties_reach_the_event() {
    let t = TestServer::start().await;
    setup(&t).await;
    let mut events = ws(&t, "app").await;
    let mut o = rumqttc::v5::MqttOptions::new("v5", "127.0.0.1", port(&t));
    o.set_credentials("dev1@app", "secret");
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 10);
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("room".into(), "kitchen".into())],
        ..Default::default()
    };
    client
        .publish_with_properties(
            "telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "hello",
            props,
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(_))) = el.poll().await {
                return;
            }
        }
    })
    .await
    .unwrap();
    let ev = next_telemetry(&mut events).await;
    assert_eq!(ev["datacontenttype"], "text/plain");
    assert_eq!(ev["data"], "hello");
    assert_eq!(ev["room"], "kitchen");
    // A JSON content type with a payload that is not JSON: PUBACK 0x99, nothing appended.
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    client
        .publish_with_properties(
            "telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{nope",
            props,
        )
        .await
        .unwrap();
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(a))) = el.poll().await {
                return a.reason;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        reason,
        rumqttc::v5::mqttbytes::v5::PubAckReason::PayloadFormatInvalid
    );
}

#[tokio::test]
async fn one_connection_per_device_and_wills() {
    let t = TestServer::start().await;
    setup(&t).await;
    let mut events = ws(&t, "app").await;
    let mut o = rumqttc::MqttOptions::new("first", "127.0.0.1", port(&t));
    o.set_credentials("dev1@app", "secret");
    o.set_last_will(rumqttc::LastWill::new(
        "status",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (_first, mut el1) = rumqttc::AsyncClient::new(o, 10);
    v4_until(&mut el1, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    assert_eq!(
        next_event(&mut events).await["data"],
        json!({"connected": true})
    );
    // A second connection of the same device takes over; the first is closed and its will
    // (an unexpected end) is published.
    let (_second, mut el2) = v4(&t, "second", "dev1@app", "secret");
    v4_until(&mut el2, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if el1.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the first connection was not closed");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = next_event(&mut events).await;
        seen.push(if ev["type"] == "io.drogue.connection.v1" {
            format!("connected={}", ev["data"]["connected"])
        } else {
            // Not JSON and no content type: application/octet-stream, so base64.
            assert_eq!(ev["datacontenttype"], "application/octet-stream");
            format!(
                "{}:{}",
                ev["subject"].as_str().unwrap(),
                ev["data_base64"].as_str().unwrap_or("")
            )
        });
    }
    seen.sort();
    assert_eq!(
        seen,
        ["connected=false", "connected=true", "status:Z29uZQ=="]
    ); // "gone"
}

/// Polls until the connection fails; returns whether it did within the deadline.
async fn closed(el: &mut rumqttc::EventLoop) -> bool {
    tokio::time::timeout(WAIT, async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn registry_changes_disconnect_devices() {
    let t = TestServer::start().await;
    setup(&t).await;
    let admin = t.admin();
    // Disabling a device disconnects it, and it cannot come back.
    let (_c, mut el) = v4(&t, "k1", "dev1@app", "secret");
    v4_until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    let mut dev = admin
        .get_json("/api/registry/v1alpha1/apps/app/devices/dev1")
        .await;
    dev["spec"]["core"] = json!({"disabled": true});
    assert_eq!(
        admin
            .put("/api/registry/v1alpha1/apps/app/devices/dev1", &dev)
            .await
            .status(),
        204
    );
    assert!(closed(&mut el).await, "a disabled device stays connected");
    let (_c, mut el) = v4(&t, "k1", "dev1@app", "secret");
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Ok(Event::Incoming(Packet::ConnAck(a)))
                    if a.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return a.code
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => panic!("a disabled device got in"),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused, rumqttc::ConnectReturnCode::BadUserNamePassword);

    // Changing a device's credentials disconnects it; the new password works.
    let (_g, mut gel) = v4(&t, "k2", "gw@app", "gwpass");
    v4_until(&mut gel, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    let mut gw = admin
        .get_json("/api/registry/v1alpha1/apps/app/devices/gw")
        .await;
    gw["spec"]["authentication"] = json!({"credentials": [{"pass": "rotated"}]});
    assert_eq!(
        admin
            .put("/api/registry/v1alpha1/apps/app/devices/gw", &gw)
            .await
            .status(),
        204
    );
    assert!(
        closed(&mut gel).await,
        "credential change did not disconnect"
    );
    let (_g, mut gel) = v4(&t, "k2", "gw@app", "rotated");
    v4_until(&mut gel, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;

    // Disabling the application disconnects all its devices.
    let mut app = admin.get_json("/api/registry/v1alpha1/apps/app").await;
    app["spec"]["core"] = json!({"disabled": true});
    assert_eq!(
        admin
            .put("/api/registry/v1alpha1/apps/app", &app)
            .await
            .status(),
        204
    );
    assert!(
        closed(&mut gel).await,
        "disabling the app did not disconnect its devices"
    );
}

#[tokio::test]
async fn persistent_sessions_keep_subscriptions() {
    let t = TestServer::start().await;
    setup(&t).await;
    let connect = |clean: bool| {
        let mut o = rumqttc::MqttOptions::new("persistent-dev", "127.0.0.1", port(&t));
        o.set_credentials("dev1@app", "secret");
        o.set_clean_session(clean);
        rumqttc::AsyncClient::new(o, 10)
    };
    let (c, mut el) = connect(false);
    let present = v4_until(&mut el, |e| match e {
        Event::Incoming(Packet::ConnAck(a)) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(!present);
    c.subscribe("command/inbox//#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let granted = v4_until(&mut el, |e| match e {
        Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        granted,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // Devices may only subscribe to their command inboxes.
    c.subscribe("app/other/#", QoS::AtLeastOnce).await.unwrap();
    let refused = v4_until(&mut el, |e| match e {
        Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(refused, vec![rumqttc::SubscribeReasonCode::Failure]);
    c.disconnect().await.unwrap();
    let _ = closed(&mut el).await;
    // The session (with its subscription) is still there on reconnect.
    let (_c, mut el) = connect(false);
    let present = v4_until(&mut el, |e| match e {
        Event::Incoming(Packet::ConnAck(a)) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(present, "the persistent session was lost");
}

/// Publishes of one connection are handed to the log in batches, several at once; a gateway's
/// first message for a device behind it waits for an authorization lookup. Each device's
/// events still reach the log in the order they were sent.
#[tokio::test]
async fn pipelined_publishes_keep_their_order_per_device() {
    let t = TestServer::start().await;
    setup(&t).await;
    let mut events = ws(&t, "app").await;
    // At most 16 QoS 1 messages unacknowledged (the server's receive maximum is higher).
    let mut o = rumqttc::MqttOptions::new("c-order", "127.0.0.1", port(&t));
    o.set_credentials("gw@app", "gwpass");
    o.set_inflight(16);
    let (gw, mut gel) = rumqttc::AsyncClient::new(o, 10);
    v4_until(&mut gel, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    const N: usize = 300;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let topic = if i % 3 == 1 { "seq/behind" } else { "seq" };
            let qos = if i % 2 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            gw.publish(topic, qos, false, format!("{{\"n\":{i}}}").into_bytes())
                .await
                .unwrap();
        }
        gw
    });
    let mut acks = 0;
    v4_until(&mut gel, |e| {
        if matches!(e, Event::Incoming(Packet::PubAck(_))) {
            acks += 1;
        }
        (acks == N / 2).then_some(())
    })
    .await;
    let _gw = sender.await.unwrap();
    let mut last = std::collections::HashMap::new();
    for _ in 0..N {
        let ev = next_telemetry(&mut events).await;
        assert_eq!(ev["subject"], "seq");
        let device = ev["device"].as_str().unwrap().to_string();
        let n = ev["data"]["n"].as_u64().unwrap();
        if let Some(previous) = last.insert(device.clone(), n) {
            assert!(previous < n, "{device}: event {n} after {previous}");
        }
    }
    assert_eq!(last.len(), 2);
}
