//! Commands end to end: the command API to MQTT devices (own inbox, gateways, 3.1.1 and 5),
//! HTTP long polls, request/response, the offline queue and its expiry, audit events.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
use rumqttc::{Event, Packet, QoS};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn mqtt_port(t: &TestServer) -> u16 {
    t.server.as_ref().unwrap().mqtt_addr.unwrap().port()
}

async fn setup(t: &TestServer) {
    let admin = t.admin();
    admin.create_app("app").await;
    for (name, spec) in [
        (
            "dev1",
            json!({"authentication": {"credentials": [{"pass": "pw"}]}}),
        ),
        (
            "gw",
            json!({"authentication": {"credentials": [{"pass": "pw"}]}}),
        ),
        ("behind", json!({"gatewaySelector": {"matchNames": ["gw"]}})),
    ] {
        admin
            .create_device("app", json!({"metadata": {"name": name}, "spec": spec}))
            .await;
    }
}

/// A v3.1.1 device subscribed to `filter`; returns when the subscription is granted.
async fn device(
    t: &TestServer,
    name: &str,
    filter: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut o = rumqttc::MqttOptions::new(format!("c-{name}"), "127.0.0.1", mqtt_port(t));
    o.set_credentials(format!("{name}@app"), "pw");
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    next(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
    })
    .await;
    // The router learned of the subscription before the SUBACK was sent (the `subscribed` hook).
    (c, el)
}

async fn next<T>(el: &mut rumqttc::EventLoop, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(t) = f(&el.poll().await.unwrap()) {
                return t;
            }
        }
    })
    .await
    .expect("event within 10 s")
}

async fn incoming_publish(el: &mut rumqttc::EventLoop) -> rumqttc::Publish {
    next(el, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await
}

fn command(t: &TestServer, device: &str, query: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(t.url(&format!(
            "/api/command/v1alpha1/apps/app/devices/{device}?{query}"
        )))
        .basic_auth("admin", Some(common::ADMIN_TOKEN))
}

#[tokio::test]
async fn one_way_commands_reach_mqtt_devices_and_gateways() {
    let t = TestServer::start().await;
    setup(&t).await;
    let (_d, mut del) = device(&t, "dev1", "command/inbox//#").await;
    let r = command(&t, "dev1", "command=set-led")
        .body(r#"{"on":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let p = incoming_publish(&mut del).await;
    assert_eq!(p.topic, "command/inbox//set-led");
    assert_eq!(&p.payload[..], br#"{"on":true}"#);

    // A device behind a gateway: the gateway gets it on the device's inbox.
    let (_g, mut gel) = device(&t, "gw", "command/inbox/#").await;
    let r = command(&t, "behind", "command=reboot")
        .body("now")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let p = incoming_publish(&mut gel).await;
    assert_eq!(p.topic, "command/inbox/behind/reboot");

    // Unreachable without ttl: a clear error, not a silent 202.
    let r = command(&t, "gw", "command=x").send().await.unwrap();
    assert_eq!(
        r.status(),
        202,
        "gw itself is subscribed to command/inbox/#"
    );
    let r = reqwest::Client::new()
        .post(t.url("/api/command/v1alpha1/apps/app/devices/ghost?command=x"))
        .basic_auth("admin", Some(common::ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    t.admin()
        .create_device("app", json!({"metadata": {"name": "offline"}}))
        .await;
    let r = command(&t, "offline", "command=x").send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "DeviceUnreachable");
    // A caller that would wait for the answer gets IoT Hub's 404 for an offline device.
    let r = command(&t, "offline", "command=x&timeout=5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "DeviceNotOnline");
    // Bad input.
    for q in [
        "command=",
        "command=a/b",
        "command=x&timeout=0",
        "command=x&ttl=99999999",
    ] {
        assert_eq!(
            command(&t, "dev1", q).send().await.unwrap().status(),
            400,
            "{q}"
        );
    }
    // A reader may not send commands.
    let bob = t.user("bob").await;
    let mut members = t
        .admin()
        .get_json("/api/admin/v1alpha1/apps/app/members")
        .await;
    members["members"] = json!({"bob": {"role": "reader"}});
    t.admin()
        .put("/api/admin/v1alpha1/apps/app/members", &members)
        .await;
    let r = bob
        .request(
            reqwest::Method::POST,
            "/api/command/v1alpha1/apps/app/devices/dev1?command=x",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn request_response_over_mqtt_3_and_5() {
    let t = TestServer::start().await;
    setup(&t).await;
    // MQTT 3.1.1: the request id is the topic's last level; reply on command/reply/<id>/<status>.
    let (d, mut del) = device(&t, "dev1", "command/inbox//#").await;
    let call = tokio::spawn(
        command(&t, "dev1", "command=read&timeout=10")
            .body("?")
            .send(),
    );
    let p = incoming_publish(&mut del).await;
    let (prefix, id) = p.topic.rsplit_once('/').unwrap();
    assert_eq!(prefix, "command/inbox//read");
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

    // MQTT 5: response topic and correlation data.
    let mut o = rumqttc::v5::MqttOptions::new("v5-gw", "127.0.0.1", mqtt_port(&t));
    o.set_credentials("gw@app", "pw");
    let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 10);
    c.subscribe("command/inbox/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while !matches!(
            el.poll().await,
            Ok(rumqttc::v5::Event::Incoming(Packet5::SubAck(_)))
        ) {}
    })
    .await
    .unwrap();
    let call = tokio::spawn(command(&t, "behind", "command=read&timeout=10").send());
    let publish = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) = el.poll().await {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(publish.topic, "command/inbox/behind/read");
    let props = publish.properties.unwrap();
    let response_topic = props.response_topic.unwrap();
    assert!(response_topic.starts_with("command/reply/"));
    let reply_props = PublishProperties {
        correlation_data: props.correlation_data,
        ..Default::default()
    };
    c.publish_with_properties(
        response_topic,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "ok",
        reply_props,
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, async {
        while !matches!(
            el.poll().await,
            Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(_)))
        ) {}
    })
    .await
    .unwrap();
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    // No reply in time: 504.
    let r = command(&t, "dev1", "command=silent&timeout=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    // A reply for an unknown request is refused (3.1.1: the connection closes).
    d.publish("command/reply/unknown/200", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if del.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok());
}

#[tokio::test]
async fn http_devices_long_poll_and_reply() {
    let t = TestServer::start().await;
    setup(&t).await;
    let http = t.http_base.clone();
    let mut poll = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{http}/v1/telemetry?ct=10"))
            .basic_auth("dev1@app", Some("pw"))
            .body("{}")
            .send()
            .await
            .unwrap()
    });
    // Send until the long poll is waiting (it registers when its telemetry was appended): a
    // command before that is refused with 404 DeviceNotOnline; the one that reaches it ends the poll.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (caller, r) = loop {
        let mut call = tokio::spawn(
            command(&t, "dev1", "command=blink&timeout=10")
                .body("3")
                .send(),
        );
        tokio::select! {
            polled = &mut poll => break (call, polled.unwrap()),
            answer = &mut call => {
                let r = answer.unwrap().unwrap();
                assert_eq!(r.status(), 404, "unexpected answer while nobody polls");
                assert!(tokio::time::Instant::now() < deadline);
            }
        }
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["command"], "blink");
    let id = r.headers()["command-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.text().await.unwrap(), "3");
    let reply = reqwest::Client::new()
        .post(format!("{}/command-reply/{id}?status=200", t.http_base))
        .basic_auth("dev1@app", Some("pw"))
        .body("done")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    let r = caller.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done");
    // Replying again, or for another device's command: refused.
    let again = reqwest::Client::new()
        .post(format!("{}/command-reply/{id}", t.http_base))
        .basic_auth("dev1@app", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn queued_commands_wait_for_the_device_and_expire() {
    let t = TestServer::start().await;
    setup(&t).await;
    let r = command(&t, "dev1", "command=first&ttl=60")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = command(&t, "dev1", "command=second&ttl=60")
        .body("2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = command(&t, "gw", "command=lost&ttl=1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The device connects and subscribes: both arrive, in order.
    let (_d, mut del) = device(&t, "dev1", "command/inbox//#").await;
    assert_eq!(
        incoming_publish(&mut del).await.topic,
        "command/inbox//first"
    );
    assert_eq!(
        incoming_publish(&mut del).await.topic,
        "command/inbox//second"
    );

    // The stream has the commands and, after its ttl, the expiry of the one nobody took.
    let url = format!(
        "{}?username=admin&api_key={}&from=earliest",
        t.ws_url("app"),
        common::ADMIN_TOKEN
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::StreamExt;
    let mut types = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let ev: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                types.push(format!(
                    "{} {}",
                    ev["type"].as_str().unwrap(),
                    ev["subject"].as_str().unwrap()
                ));
                if ev["type"] == "io.drogue.command.expired.v1" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no expiry event: {types:?}");
    assert!(
        types.contains(&"io.drogue.command.v1 first".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"io.drogue.command.expired.v1 lost".to_string()),
        "{types:?}"
    );
}

#[tokio::test]
async fn applications_send_commands_through_the_mqtt_integration() {
    let t = TestServer::start().await;
    setup(&t).await;
    let (d, mut del) = device(&t, "dev1", "command/inbox//#").await;
    let port = t
        .server
        .as_ref()
        .unwrap()
        .integration_mqtt_addr
        .unwrap()
        .port();
    let mut o = rumqttc::v5::MqttOptions::new("backend", "127.0.0.1", port);
    o.set_credentials("admin", common::ADMIN_TOKEN);
    let (app, mut ael) = rumqttc::v5::AsyncClient::new(o, 10);
    let props = PublishProperties {
        response_topic: Some("replies/backend".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"req-7")),
        ..Default::default()
    };
    app.publish_with_properties(
        "command/app/dev1/read",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "?",
        props,
    )
    .await
    .unwrap();
    // The device gets it (3.1.1: request id as the last topic level) and answers.
    let p = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                e = del.poll() => if let Ok(Event::Incoming(Packet::Publish(p))) = e { return p },
                _ = ael.poll() => {}
            }
        }
    })
    .await
    .unwrap();
    let (prefix, id) = p.topic.rsplit_once('/').unwrap();
    assert_eq!(prefix, "command/inbox//read");
    d.publish(
        format!("command/reply/{id}/200"),
        QoS::AtLeastOnce,
        false,
        "42",
    )
    .await
    .unwrap();
    // The application gets the reply on its response topic, with its correlation data.
    let reply = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                e = ael.poll() => if let Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) = e { return p },
                _ = del.poll() => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reply.topic, "replies/backend");
    assert_eq!(&reply.payload[..], b"42");
    let props = reply.properties.unwrap();
    assert_eq!(props.correlation_data.as_deref(), Some(&b"req-7"[..]));
    assert!(props
        .user_properties
        .contains(&("status".to_string(), "200".to_string())));

    // Other topics are refused (PUBACK 0x90), and so is a device the user cannot see.
    for topic in ["app/app", "command/app/ghost/x"] {
        app.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
        let reason = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(a))) = ael.poll().await {
                    return a.reason;
                }
            }
        })
        .await
        .unwrap();
        assert_ne!(
            reason,
            rumqttc::v5::mqttbytes::v5::PubAckReason::Success,
            "{topic}"
        );
    }
}

#[tokio::test]
async fn gateways_with_external_endpoints_get_an_http_call() {
    use std::sync::{Arc, Mutex};
    // The external system (e.g. a LoRaWAN network server): fails once, then takes the command.
    let calls: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let c2 = calls.clone();
    let app = axum::Router::new().route(
        "/downlink",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                let calls = c2.clone();
                async move {
                    let mut calls = calls.lock().unwrap();
                    let auth = headers
                        .get("x-api-key")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    calls.push((auth, body.0));
                    if calls.len() == 1 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::ACCEPTED
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/downlink", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The endpoint listens on 127.0.0.1: the operator allows it (docs/commands.md).
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.outbound_allow = vec!["127.0.0.1".parse().unwrap()];
    let mut t = TestServer::start_with(config).await;
    t.dir = Some(dir);
    setup(&t).await;
    let admin = t.admin();
    admin
        .create_device("app", json!({"metadata": {"name": "lns"}, "spec": {"commands": {"commands": [
            {"external": {"type": null, "url": url, "method": "POST", "headers": {"x-api-key": "k1"}}}]}}}))
        .await;
    admin
        .create_device("app", json!({"metadata": {"name": "lora-1"}, "spec": {"gatewaySelector": {"matchNames": ["lns"]}}}))
        .await;
    let r = command(&t, "lora-1", "command=open")
        .body("\u{1}\u{2}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "retried once after a 503");
    let (auth, body) = &calls[1];
    assert_eq!(auth, "k1");
    assert_eq!(
        body,
        &json!({"application": "app", "device": "lora-1", "command": "open", "payload": "AQI="})
    );
}
