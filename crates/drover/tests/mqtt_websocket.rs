//! MQTT over WebSocket on the HTTP device listener, with rumqttc's WebSocket transport: an IoT
//! Hub device on `/$iothub/websocket` and a Drogue-dialect device on `/mqtt` publish, are
//! commanded and read their twin exactly as over TCP; an upgrade without the `mqtt` subprotocol
//! is refused with a message that says so.
#![allow(clippy::unwrap_used)]

mod common;

use common::mqtt::{publish_on as received, published, refusal, subscribe_all};
use common::stream::{next_of_type, open};
use common::TestServer;
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, MqttOptions, QoS, Transport};
use serde_json::json;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn ws_options(t: &TestServer, client_id: &str, path: &str) -> MqttOptions {
    let port = t.server.as_ref().unwrap().http_addr.unwrap().port();
    let mut o = MqttOptions::new(client_id, format!("ws://127.0.0.1:{port}{path}"), port);
    o.set_transport(Transport::Ws);
    o
}

async fn command(t: &TestServer, app: &str, device: &str, name: &str) {
    let r = t
        .admin()
        .request(
            Method::POST,
            &format!("/api/command/v1alpha1/apps/{app}/devices/{device}?command={name}"),
        )
        .header("content-type", "text/plain")
        .body("go")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_iot_hub_device_over_websocket() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("hub").await;
    admin
        .create_device(
            "hub",
            json!({"metadata": {"name": "d1"}, "spec": {"authentication": {"credentials": [
                {"sas": {"primaryKey": KEY}}
            ]}}}),
        )
        .await;
    let host = "hub.azure-devices.net";
    let key = drover_auth::sas::decode_key(KEY).unwrap();
    let token = drover_auth::sas::sign(
        &format!("{host}/devices/d1"),
        &key,
        drover_auth::sas::unix_now() + 3600,
        None,
    );
    let mut o = ws_options(&t, "d1", "/$iothub/websocket");
    o.set_credentials(format!("{host}/d1/?api-version=2021-04-12"), token);
    let (c, mut el) = AsyncClient::new(o, 10);
    let mut events = open(&t, "hub", "").await;

    subscribe_all(&c, &mut el, &["devices/d1/messages/devicebound/#"]).await;
    published(
        &c,
        &mut el,
        "devices/d1/messages/events/room=hall",
        "{\"t\": 1}",
    )
    .await;
    let ev = next_of_type(&mut events, "io.drogue.event.v1").await;
    assert_eq!(ev["device"], "d1");
    assert_eq!(ev["room"], "hall");

    command(&t, "hub", "d1", "blink").await;
    let c2d = received(&mut el, "devices/d1/messages/devicebound/").await;
    assert!(c2d.topic.ends_with("&command=blink"), "{}", c2d.topic);
    assert_eq!(&c2d.payload[..], b"go");

    subscribe_all(&c, &mut el, &["$iothub/twin/res/#"]).await;
    c.publish("$iothub/twin/GET/?$rid=7", QoS::AtLeastOnce, false, "")
        .await
        .unwrap();
    let twin = received(&mut el, "$iothub/twin/res/").await;
    assert_eq!(twin.topic, "$iothub/twin/res/200/?$rid=7");
}

#[tokio::test]
async fn a_drogue_device_over_websocket_and_refusals() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("app").await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [
                {"pass": "secret"}
            ]}}}),
        )
        .await;
    let mut o = ws_options(&t, "dev1", "/mqtt");
    o.set_credentials("dev1@app", "secret");
    let (c, mut el) = AsyncClient::new(o, 10);
    let mut events = open(&t, "app", "").await;
    subscribe_all(&c, &mut el, &["command/inbox//#"]).await;
    published(&c, &mut el, "temperature", "21").await;
    let ev = next_of_type(&mut events, "io.drogue.event.v1").await;
    assert_eq!(ev["subject"], "temperature");
    assert_eq!(ev["device"], "dev1");
    command(&t, "app", "dev1", "on").await;
    let cmd = received(&mut el, "command/inbox/").await;
    assert_eq!(cmd.topic, "command/inbox//on");

    // A wrong password is refused as over TCP.
    let mut o = ws_options(&t, "dev1", "/mqtt");
    o.set_credentials("dev1@app", "wrong");
    let (_c2, mut el2) = AsyncClient::new(o, 10);
    let e = refusal(&mut el2).await;
    assert!(
        e.contains("BadUserNamePassword") || e.contains("NotAuthorized"),
        "{e}"
    );

    // Another subprotocol is refused, and said so.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/mqtt", t.http_base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "wamp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(text.contains("subprotocol 'mqtt'"), "{text}");
    // A plain GET is not an upgrade.
    let r = http
        .get(format!("{}/$iothub/websocket", t.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("not a WebSocket upgrade"));
}
