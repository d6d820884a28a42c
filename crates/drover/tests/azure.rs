//! Devices on Azure IoT Hub's MQTT dialect (as Microsoft's SDKs speak it), end to end with a raw
//! MQTT 3.1.1 client: SAS authentication, telemetry with property bags, twin GET / reported
//! PATCH / desired pushes, cloud-to-device messages and direct methods through the command API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::mqtt::{publish_on, refusal, subscribe_all, until};
use common::TestServer;
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const HUB: &str = "az.iot.drover.test";

fn token(resource: &str, key: &str, expiry: u64) -> String {
    let key = drover_auth::sas::decode_key(key).unwrap();
    drover_auth::sas::sign(resource, &key, expiry, None)
}

fn later() -> u64 {
    drover_auth::sas::unix_now() + 3600
}

fn options(t: &TestServer, device: &str, password: String) -> MqttOptions {
    let port = t.server.as_ref().unwrap().mqtt_addr.unwrap().port();
    let mut o = MqttOptions::new(device, "127.0.0.1", port);
    o.set_credentials(
        format!("{HUB}/{device}/?api-version=2021-04-12&DeviceClientType=test"),
        password,
    );
    o.set_clean_session(false);
    o
}

async fn setup(t: &TestServer) {
    let admin = t.admin();
    admin.create_app("az").await;
    admin
        .create_device(
            "az",
            json!({"metadata": {"name": "d1"}, "spec": {"authentication": {"credentials": [
                {"sas": {"primaryKey": KEY}}
            ]}}}),
        )
        .await;
}

#[tokio::test]
async fn an_iot_hub_device_sends_reads_reports_and_is_commanded() {
    let t = TestServer::start().await;
    setup(&t).await;
    let admin = t.admin();
    let password = token(&format!("{HUB}/devices/d1"), KEY, later());
    let (c, mut el) = AsyncClient::new(options(&t, "d1", password), 10);
    subscribe_all(
        &c,
        &mut el,
        &[
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            "devices/d1/messages/devicebound/#",
        ],
    )
    .await;

    // Telemetry with a property bag.
    c.publish(
        "devices/d1/messages/events/%24.ct=application%2Fjson&%24.mid=m-1&room=kitchen%20east",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 21.5}"#,
    )
    .await
    .unwrap();
    until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;

    // Twin: GET, reported PATCH, a desired change pushed.
    c.publish("$iothub/twin/GET/?$rid=1", QoS::AtLeastOnce, false, " ")
        .await
        .unwrap();
    let got = publish_on(&mut el, "$iothub/twin/res/").await;
    assert_eq!(got.topic, "$iothub/twin/res/200/?$rid=1");
    let body: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(body["desired"]["$version"], 1);
    c.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        QoS::AtLeastOnce,
        false,
        r#"{"firmware": "1.2"}"#,
    )
    .await
    .unwrap();
    let res = publish_on(&mut el, "$iothub/twin/res/").await;
    assert_eq!(res.topic, "$iothub/twin/res/204/?$rid=2&$version=2");
    c.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=3",
        QoS::AtLeastOnce,
        false,
        r#"{"$bad": 1}"#,
    )
    .await
    .unwrap();
    let res = publish_on(&mut el, "$iothub/twin/res/").await;
    assert_eq!(res.topic, "$iothub/twin/res/400/?$rid=3");
    let r = admin
        .request(
            Method::PATCH,
            "/api/registry/v1alpha1/apps/az/devices/d1/twin/desired",
        )
        .json(&json!({"interval": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pushed = publish_on(&mut el, "$iothub/twin/PATCH/").await;
    assert_eq!(
        pushed.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    let body: Value = serde_json::from_slice(&pushed.payload).unwrap();
    assert_eq!(body, json!({"interval": 30, "$version": 2}));

    // A one-way command is a cloud-to-device message.
    let r = admin
        .request(
            Method::POST,
            "/api/command/v1alpha1/apps/az/devices/d1?command=blink",
        )
        .header("content-type", "text/plain")
        .body("3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let c2d = publish_on(&mut el, "devices/d1/messages/devicebound/").await;
    assert!(c2d.topic.contains("%24.ct=text%2Fplain"), "{}", c2d.topic);
    assert!(c2d.topic.ends_with("&command=blink"), "{}", c2d.topic);
    assert_eq!(&c2d.payload[..], b"3");

    // A command the caller waits for is a direct method; the device's answer is the reply.
    let caller = admin.clone();
    let call = tokio::spawn(async move {
        caller
            .request(
                Method::POST,
                "/api/command/v1alpha1/apps/az/devices/d1?command=reboot&timeout=10",
            )
            .json(&json!({"delay": 1}))
            .send()
            .await
            .unwrap()
    });
    let method = publish_on(&mut el, "$iothub/methods/POST/").await;
    let rid = method
        .topic
        .strip_prefix("$iothub/methods/POST/reboot/?$rid=")
        .unwrap()
        .to_string();
    c.publish(
        format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtLeastOnce,
        false,
        r#"{"rebooting": true}"#,
    )
    .await
    .unwrap();
    // Keep the event loop turning while the caller gets its answer.
    let answer = tokio::select! {
        a = call => a.unwrap(),
        _ = async { loop { let _ = el.poll().await; } } => unreachable!(),
    };
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body, json!({"rebooting": true}));

    // The telemetry in the application's stream, its bag mapped.
    let url = format!(
        "{}?username=admin&api_key={}&from=earliest",
        t.ws_url("az"),
        common::ADMIN_TOKEN
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let event = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut ws))
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let ev: Value = serde_json::from_str(text.as_str()).unwrap();
        if ev["type"] == "io.drogue.event.v1" {
            break ev;
        }
    };
    assert_eq!(event["subject"], "telemetry");
    assert_eq!(event["device"], "d1");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["messageid"], "m-1");
    assert_eq!(event["room"], "kitchen east");
    assert_eq!(event["data"], json!({"temp": 21.5}));
}

#[tokio::test]
async fn bad_tokens_and_foreign_topics_are_refused() {
    let t = TestServer::start().await;
    setup(&t).await;
    let refused = |password: String| {
        let (_c, mut el) = AsyncClient::new(options(&t, "d1", password), 10);
        async move { refusal(&mut el).await }
    };
    let resource = format!("{HUB}/devices/d1");
    let other_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    for password in [
        token(&resource, KEY, 1000),
        token(&resource, other_key, later()),
        token(&format!("{HUB}/devices/d2"), KEY, later()),
        "not a token".to_string(),
    ] {
        let e = refused(password).await;
        assert!(
            e.contains("BadUserNamePassword") || e.contains("NotAuthorized"),
            "{e}"
        );
    }

    // Connected: another device's topic and a Drogue topic are refused.
    let password = token(&resource, KEY, later());
    let (c, mut el) = AsyncClient::new(options(&t, "d1", password), 10);
    c.subscribe("devices/d2/messages/devicebound/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let codes = until(&mut el, |e| match e {
        Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);

    // QoS 2 subscriptions are granted QoS 1.
    c.subscribe("$iothub/twin/res/#", QoS::ExactlyOnce)
        .await
        .unwrap();
    let codes = until(&mut el, |e| match e {
        Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // Telemetry over IoT Hub's 256 KiB is refused (MQTT 3.1.1: the connection closes).
    let big = vec![b'x'; 256 * 1024 + 1];
    c.publish("devices/d1/messages/events/", QoS::AtLeastOnce, false, big)
        .await
        .unwrap();
    assert!(
        common::mqtt::closes(&mut el, Duration::from_secs(10)).await,
        "oversized telemetry must end the connection"
    );
}

#[tokio::test]
async fn commands_over_iot_hub_limits_are_not_sent() {
    let t = TestServer::start().await;
    setup(&t).await;
    let admin = t.admin();
    // A method call to the device while it is offline: IoT Hub's 404.
    let r = admin
        .request(
            Method::POST,
            "/api/command/v1alpha1/apps/az/devices/d1?command=reboot&timeout=5",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "DeviceNotOnline");

    let password = token(&format!("{HUB}/devices/d1"), KEY, later());
    let mut o = options(&t, "d1", password);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut el) = AsyncClient::new(o, 10);
    subscribe_all(
        &c,
        &mut el,
        &[
            "$iothub/methods/POST/#",
            "devices/d1/messages/devicebound/#",
        ],
    )
    .await;
    let send = |query: &'static str, size: usize| {
        let admin = admin.clone();
        async move {
            admin
                .request(
                    Method::POST,
                    &format!("/api/command/v1alpha1/apps/az/devices/d1?{query}"),
                )
                .body(vec![b'x'; size])
                .send()
                .await
                .unwrap()
        }
    };
    // A method request over 128 KiB: the caller gets 413 and why; the device gets nothing.
    let call = tokio::spawn(send("command=big&timeout=10", 128 * 1024 + 1));
    let answer = tokio::select! {
        a = call => a.unwrap(),
        _ = async { loop { let _ = el.poll().await.unwrap(); } } => unreachable!(),
    };
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = answer.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("over IoT Hub's limit of 128 KiB"),
        "{message}"
    );
    // One at the limit goes through.
    let call = tokio::spawn(send("command=fits&timeout=10", 128 * 1024));
    let method = publish_on(&mut el, "$iothub/methods/POST/").await;
    assert!(
        method.topic.starts_with("$iothub/methods/POST/fits/"),
        "{}",
        method.topic
    );
    assert_eq!(method.payload.len(), 128 * 1024);
    call.abort();

    // A cloud-to-device message over 64 KiB is not sent; the next one is.
    assert_eq!(
        send("command=huge", 64 * 1024 + 1).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send("command=small", 64 * 1024).await.status(),
        StatusCode::ACCEPTED
    );
    let c2d = publish_on(&mut el, "devices/d1/messages/devicebound/").await;
    assert!(c2d.topic.ends_with("&command=small"), "{}", c2d.topic);
    assert_eq!(c2d.payload.len(), 64 * 1024);
}

#[tokio::test]
async fn a_qos_2_publish_closes_the_connection() {
    let t = TestServer::start().await;
    setup(&t).await;
    let password = token(&format!("{HUB}/devices/d1"), KEY, later());
    let (c, mut el) = AsyncClient::new(options(&t, "d1", password), 10);
    until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
    c.publish("devices/d1/messages/events/", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    assert!(
        common::mqtt::closes(&mut el, Duration::from_secs(10)).await,
        "a QoS 2 publish must end the connection"
    );
}

#[tokio::test]
async fn sessions_outlive_connections_and_modules_are_refused() {
    let t = TestServer::start().await;
    setup(&t).await;
    let resource = format!("{HUB}/devices/d1");
    // The SDK subscribes once; with CleanSession 0 the subscription outlives the connection.
    let (c, mut el) = AsyncClient::new(options(&t, "d1", token(&resource, KEY, later())), 10);
    subscribe_all(&c, &mut el, &["devices/d1/messages/devicebound/#"]).await;
    c.disconnect().await.unwrap();
    assert!(common::mqtt::closes(&mut el, Duration::from_secs(10)).await);
    let (_c, mut el) = AsyncClient::new(options(&t, "d1", token(&resource, KEY, later())), 10);
    let present = until(&mut el, |e| match e {
        Event::Incoming(Packet::ConnAck(a)) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(present, "the session is still there");
    let r = t
        .admin()
        .request(
            Method::POST,
            "/api/command/v1alpha1/apps/az/devices/d1?command=again",
        )
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let c2d = publish_on(&mut el, "devices/d1/messages/devicebound/").await;
    assert!(c2d.topic.ends_with("&command=again"), "{}", c2d.topic);

    // A module identity is refused.
    let port = t.server.as_ref().unwrap().mqtt_addr.unwrap().port();
    let mut o = MqttOptions::new("d1/m1", "127.0.0.1", port);
    o.set_credentials(
        format!("{HUB}/d1/m1/?api-version=2021-04-12"),
        token(&format!("{resource}/modules/m1"), KEY, later()),
    );
    let (_m, mut el) = AsyncClient::new(o, 10);
    let e = refusal(&mut el).await;
    assert!(e.contains("BadUserNamePassword"), "{e}");
}
