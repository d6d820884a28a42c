//! The MQTT integration wired into the platform: a device publishes (HTTP and MQTT), the
//! application consumes over MQTT with its user's access token.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn integration_port(t: &TestServer) -> u16 {
    t.server
        .as_ref()
        .unwrap()
        .integration_mqtt_addr
        .unwrap()
        .port()
}

async fn until<T>(el: &mut rumqttc::EventLoop, mut f: impl FnMut(&Event) -> Option<T>) -> T {
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

#[tokio::test]
async fn applications_consume_device_events_over_mqtt() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let (_, token) = alice.user.clone().unwrap();
    alice.create_app("app").await;
    alice
        .create_device("app", json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}))
        .await;

    let mut o = rumqttc::MqttOptions::new("consumer-1", "127.0.0.1", integration_port(&t));
    o.set_credentials("alice", token.as_str());
    o.set_clean_session(false);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
    client.subscribe("app/app", QoS::AtLeastOnce).await.unwrap();
    let granted = until(&mut el, |e| match e {
        Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        granted,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    let r = reqwest::Client::new()
        .post(format!("{}/v1/telemetry", t.http_base))
        .basic_auth("dev1@app", Some("secret"))
        .header("content-type", "application/json")
        .body(r#"{"temp":21}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let publish = until(&mut el, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(publish.topic, "app/app");
    let ev: Value = serde_json::from_slice(&publish.payload).unwrap();
    assert_eq!(ev["device"], "dev1");
    assert_eq!(ev["data"], json!({"temp": 21}));

    // Another user may not read the app: refused exactly like an app that does not exist.
    let bob = t.user("bob").await;
    let (_, bob_token) = bob.user.clone().unwrap();
    let mut o = rumqttc::MqttOptions::new("bob-1", "127.0.0.1", integration_port(&t));
    o.set_credentials("bob", bob_token.as_str());
    let (bc, mut bel) = rumqttc::AsyncClient::new(o, 10);
    bc.subscribe("app/app", QoS::AtLeastOnce).await.unwrap();
    bc.subscribe("app/missing", QoS::AtLeastOnce).await.unwrap();
    for _ in 0..2 {
        let codes = until(&mut bel, |e| match e {
            Event::Incoming(Packet::SubAck(a)) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await;
        assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    }
    // A wrong token is refused at CONNECT.
    let mut o = rumqttc::MqttOptions::new("x", "127.0.0.1", integration_port(&t));
    o.set_credentials("alice", "drg_nope");
    let (_x, mut xel) = rumqttc::AsyncClient::new(o, 10);
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match xel.poll().await {
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Ok(Event::Incoming(Packet::ConnAck(a)))
                    if a.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return a.code
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => panic!("a wrong token got in"),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused, rumqttc::ConnectReturnCode::BadUserNamePassword);

    // Discovery advertises the integration (its TLS port when TLS is on).
    let doc = t
        .anonymous()
        .get_json("/.well-known/drogue-endpoints")
        .await;
    assert_eq!(
        doc["mqtt_integration"]["port"].as_u64(),
        Some(u64::from(
            t.server
                .as_ref()
                .unwrap()
                .integration_mqtts_addr
                .unwrap()
                .port()
        ))
    );
}
