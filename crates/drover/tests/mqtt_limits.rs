//! Limits of the MQTT device endpoint under attack: a session cannot hold more subscriptions
//! than the limit, however it asks, and other devices are served meanwhile.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use rumqttc::{Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn port(t: &TestServer) -> u16 {
    t.server.as_ref().unwrap().mqtt_addr.unwrap().port()
}

async fn setup(t: &TestServer) {
    let admin = t.admin();
    admin.create_app("app").await;
    for name in ["flood", "calm"] {
        admin
            .create_device(
                "app",
                json!({"metadata": {"name": name}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}),
            )
            .await;
    }
}

fn client(t: &TestServer, name: &str, clean: bool) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut o = rumqttc::MqttOptions::new(format!("c-{name}"), "127.0.0.1", port(t));
    o.set_credentials(format!("{name}@app"), "pw");
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(4 << 20, 4 << 20);
    rumqttc::AsyncClient::new(o, 64)
}

/// The codes of the next SUBACK.
async fn suback(el: &mut rumqttc::EventLoop) -> Vec<SubscribeReasonCode> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(a)) = el.poll().await.unwrap() {
                return a.return_codes;
            }
        }
    })
    .await
    .expect("SUBACK in time")
}

/// A device asks for 20 000 command inboxes in one SUBSCRIBE and then 3 000 more one by one, on a
/// persistent session: it gets the session's limit (100) and no more, refusals come back at
/// once, and another device connects and has its QoS 1 publishes acknowledged meanwhile.
#[tokio::test]
async fn a_subscription_flood_gets_the_limit_and_starves_nobody() {
    let t = TestServer::start().await;
    setup(&t).await;
    let (flood, mut fel) = client(&t, "flood", false);
    let filters: Vec<SubscribeFilter> = (0..20_000)
        .map(|i| SubscribeFilter::new(format!("command/inbox/d{i}/#"), QoS::AtLeastOnce))
        .collect();
    flood.subscribe_many(filters).await.unwrap();
    let first = suback(&mut fel).await;
    assert_eq!(first.len(), 20_000);
    let granted = |codes: &[SubscribeReasonCode]| {
        codes
            .iter()
            .filter(|c| matches!(c, SubscribeReasonCode::Success(_)))
            .count()
    };
    assert_eq!(
        granted(&first),
        32,
        "only the first 32 filters of a SUBSCRIBE are considered"
    );

    // The calm device works while the flood goes on.
    let calm = {
        let (c, mut el) = client(&t, "calm", true);
        tokio::spawn(async move {
            for i in 0..20 {
                c.publish("telemetry", QoS::AtLeastOnce, false, format!("{i}"))
                    .await
                    .unwrap();
            }
            let mut acks = 0;
            tokio::time::timeout(WAIT, async {
                while acks < 20 {
                    if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.unwrap() {
                        acks += 1;
                    }
                }
            })
            .await
            .expect("the calm device's publishes acknowledged in time");
            acks
        })
    };

    let sender = {
        let flood = flood.clone();
        tokio::spawn(async move {
            for i in 0..3_000 {
                flood
                    .subscribe(format!("command/inbox/e{i}/#"), QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
        })
    };
    let mut total = granted(&first);
    for _ in 0..3_000 {
        total += granted(&suback(&mut fel).await);
    }
    sender.await.unwrap();
    assert_eq!(total, 100, "the session holds at most max_subscriptions");
    assert_eq!(calm.await.unwrap(), 20);

    // Resuming the persistent session: still at the limit, one more is refused.
    flood.disconnect().await.unwrap();
    drop(fel);
    let (flood, mut fel) = client(&t, "flood", false);
    flood
        .subscribe("command/inbox/late/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(suback(&mut fel).await, vec![SubscribeReasonCode::Failure]);
    // An existing subscription may be renewed.
    flood
        .subscribe("command/inbox/d0/#", QoS::AtMostOnce)
        .await
        .unwrap();
    assert_eq!(
        suback(&mut fel).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
}

/// MQTT 3.1.1 cannot refuse a retained PUBLISH without closing the connection: it is accepted
/// as an ordinary event marked `mqttretain`; MQTT 5 devices are told retain is not available
/// (CONNACK) and one that sets it anyway is disconnected with 0x9A Retain not supported.
#[tokio::test]
async fn retained_publishes_are_marked_on_3_1_1_and_refused_on_5() {
    use futures::StreamExt;
    let t = TestServer::start().await;
    setup(&t).await;
    let url = format!(
        "{}?username=admin&api_key={}",
        t.ws_url("app"),
        common::ADMIN_TOKEN
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    let (c, mut el) = client(&t, "calm", true);
    c.publish("telemetry", QoS::AtLeastOnce, true, "\"r1\"")
        .await
        .unwrap();
    c.publish("telemetry", QoS::AtMostOnce, true, "\"r0\"")
        .await
        .unwrap();
    c.publish("telemetry", QoS::AtLeastOnce, false, "\"plain\"")
        .await
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while seen.len() < 3 {
            tokio::select! {
                msg = ws.next() => {
                    if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = msg {
                        let ev: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                        if ev["subject"] == "telemetry" {
                            seen.push((ev["data"].clone(), ev["mqttretain"].clone()));
                        }
                    }
                }
                ev = el.poll() => { ev.unwrap(); }
            }
        }
    })
    .await
    .expect("three events");
    assert_eq!(
        seen,
        vec![
            (json!("r1"), json!("true")),
            (json!("r0"), json!("true")),
            (json!("plain"), serde_json::Value::Null)
        ]
    );

    // MQTT 5: rumqttc sends what it is told.
    let mut o = rumqttc::v5::MqttOptions::new("c-calm5", "127.0.0.1", port(&t));
    o.set_credentials("calm@app", "pw");
    let (c5, mut el5) = rumqttc::v5::AsyncClient::new(o, 10);
    c5.publish(
        "telemetry",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        "r5",
    )
    .await
    .unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = el5.poll().await {
                return e.to_string();
            }
        }
    })
    .await
    .expect("DISCONNECT in time");
    assert!(ended.contains("RetainNotSupported"), "{ended}");
}
