//! Device twins through the management API: reading, desired merge patches with versions and
//! If-Match, tags, limits and roles; every desired change lands in the application's stream as
//! one CloudEvent.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{expect_error, TestServer, ADMIN_TOKEN};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TWIN: &str = "/api/registry/v1alpha1/apps/tw/devices/d1/twin";

async fn patch(c: &common::Client, body: &str, if_match: Option<&str>) -> reqwest::Response {
    let mut r = c
        .request(Method::PATCH, &format!("{TWIN}/desired"))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string());
    if let Some(v) = if_match {
        r = r.header("if-match", v);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn desired_patches_tags_and_stream_events() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("tw").await;
    admin
        .create_device("tw", json!({"metadata": {"name": "d1"}}))
        .await;

    let r = admin.get(TWIN).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let twin: Value = r.json().await.unwrap();
    assert_eq!(
        twin,
        json!({"desired": {}, "desiredVersion": 1, "reported": {}, "reportedVersion": 1, "tags": {}})
    );

    let r = patch(
        &admin,
        r#"{"mode": "eco", "fan": {"speed": 3}}"#,
        Some("\"1\""),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let r = patch(&admin, r#"{"fan": null}"#, None).await;
    let twin: Value = r.json().await.unwrap();
    assert_eq!(twin["desired"], json!({"mode": "eco"}));
    assert_eq!(twin["desiredVersion"], 3);

    // If-Match on an older version, keys the twin refuses, no object: refused, nothing changes.
    expect_error(
        patch(&admin, r#"{"mode": "max"}"#, Some("\"2\"")).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    let msg = expect_error(
        patch(&admin, r#"{"$version": 9}"#, None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("desired"), "{msg}");
    expect_error(
        patch(&admin, "[1]", None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    expect_error(
        patch(&admin, r#"{"a": 1}"#, Some("x")).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert_eq!(admin.get_json(TWIN).await["desiredVersion"], 3);

    let r = admin
        .put(&format!("{TWIN}/tags"), &json!({"floor": 3}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let twin: Value = r.json().await.unwrap();
    assert_eq!(twin["tags"], json!({"floor": 3}));
    assert_eq!(
        twin["desiredVersion"], 3,
        "tags have no version of their own"
    );

    // Every desired change is one event in the app's stream, in order.
    let url = format!(
        "{}?username=admin&api_key={ADMIN_TOKEN}&from=earliest",
        t.ws_url("tw")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("twin events within 10 s")
            .unwrap()
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let ev: Value = serde_json::from_str(text.as_str()).unwrap();
        if ev["type"] == "io.drover.twin.desired.v1" {
            seen.push(ev);
        }
    }
    assert_eq!(seen[0]["subject"], "twin/desired");
    assert_eq!(seen[0]["device"], "d1");
    assert_eq!(
        seen[0]["data"],
        json!({"patch": {"mode": "eco", "fan": {"speed": 3}}, "version": 2})
    );
    assert_eq!(
        seen[1]["data"],
        json!({"patch": {"fan": null}, "version": 3})
    );
}

#[tokio::test]
async fn roles_and_tenancy() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    alice.create_app("tw").await;
    alice
        .create_device("tw", json!({"metadata": {"name": "d1"}}))
        .await;
    let r = alice
        .put(
            "/api/admin/v1alpha1/apps/tw/members",
            &json!({"members": {"bob": {"role": "reader"}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());

    assert_eq!(bob.get_json(TWIN).await["desiredVersion"], 1);
    expect_error(
        patch(&bob, r#"{"a": 1}"#, None).await,
        StatusCode::FORBIDDEN,
        "AuthenticationError",
    )
    .await;
    for r in [
        carol.get(TWIN).await,
        patch(&carol, r#"{"a": 1}"#, None).await,
    ] {
        expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    }
    expect_error(
        alice
            .get("/api/registry/v1alpha1/apps/tw/devices/nope/twin")
            .await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
}

async fn next_publish(el: &mut rumqttc::EventLoop) -> rumqttc::Publish {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = el.poll().await.unwrap()
            {
                return p;
            }
        }
    })
    .await
    .expect("a publish within 10 s")
}

async fn next_puback(el: &mut rumqttc::EventLoop) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = el.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("a PUBACK within 10 s")
}

fn json_of(p: &rumqttc::Publish) -> Value {
    serde_json::from_slice(&p.payload).unwrap()
}

/// A device over MQTT: the whole twin when it subscribes, desired changes as they happen,
/// reported patches applied, `$twin/get` answered; bad reports refused.
#[tokio::test]
async fn mqtt_devices_read_report_and_follow_their_twin() {
    use rumqttc::QoS;
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("tw").await;
    admin
        .create_device(
            "tw",
            json!({"metadata": {"name": "d1"}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}),
        )
        .await;
    patch(&admin, r#"{"mode": "eco"}"#, None).await;

    let port = t.server.as_ref().unwrap().mqtt_addr.unwrap().port();
    let mut o = rumqttc::MqttOptions::new("twin-d1", "127.0.0.1", port);
    o.set_credentials("d1@tw", "pw");
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    c.subscribe("$twin/#", QoS::AtLeastOnce).await.unwrap();
    let current = next_publish(&mut el).await;
    assert_eq!(current.topic, "$twin/current");
    assert_eq!(
        json_of(&current),
        json!({"desired": {"mode": "eco", "$version": 2}, "reported": {"$version": 1}})
    );

    // A desired change through the API reaches the device, with its version.
    patch(&admin, r#"{"mode": "max", "fan": 3}"#, None).await;
    let pushed = next_publish(&mut el).await;
    assert_eq!(pushed.topic, "$twin/desired");
    assert_eq!(
        json_of(&pushed),
        json!({"mode": "max", "fan": 3, "$version": 3})
    );

    // Reported: applied before the PUBACK.
    c.publish(
        "$twin/reported",
        QoS::AtLeastOnce,
        false,
        r#"{"mode": "max"}"#,
    )
    .await
    .unwrap();
    next_puback(&mut el).await;
    let twin = admin.get_json(TWIN).await;
    assert_eq!(twin["reported"], json!({"mode": "max"}));
    assert_eq!(twin["reportedVersion"], 2);

    c.publish("$twin/get", QoS::AtLeastOnce, false, " ")
        .await
        .unwrap();
    let current = next_publish(&mut el).await;
    assert_eq!(current.topic, "$twin/current");
    assert_eq!(json_of(&current)["reported"]["$version"], 2);

    // Not a JSON object: refused (MQTT 3.1.1 cannot say why: the connection closes); the twin
    // is unchanged.
    c.publish("$twin/reported", QoS::AtLeastOnce, false, "[1]")
        .await
        .unwrap();
    assert!(
        common::mqtt::closes(&mut el, Duration::from_secs(10)).await,
        "the connection stays open after a bad report"
    );
    assert_eq!(admin.get_json(TWIN).await["reportedVersion"], 2);
}
