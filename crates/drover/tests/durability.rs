//! Nothing acknowledged is lost: devices publish while the server is killed with SIGKILL; after a
//! restart every acknowledged message is in the stream, in per-device order.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

const TOKEN: &str = "drg_012345_01234567890123456789012345678920BetF";

struct Running {
    child: Child,
    api: String,
    http: String,
    mqtt_port: u16,
}

/// Starts the binary on ephemeral ports and reads the bound addresses from its banner.
fn start(data: &std::path::Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "off",
            "--mqtt-addr",
            "127.0.0.1:0",
            "--mqtts-addr",
            "off",
            "--integration-mqtt-addr",
            "off",
            "--integration-mqtts-addr",
            "off",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(["--admin-token", TOKEN])
        .env_remove("DROVER_CONFIG")
        .env("DROVER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = common::read_banner(&mut child);
    Running {
        child,
        api: banner.api,
        http: banner.http,
        mqtt_port: banner.mqtt_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    killed_while_publishing(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_mqtt_qos1_messages_survive_sigkill() {
    killed_while_publishing(Transport::Mqtt).await;
}

#[derive(Clone, Copy)]
enum Transport {
    Http,
    Mqtt,
}

/// Publishes `{"d", "n"}` for n = 0, 1, ... as device `d<d>`, each after the previous one was
/// acknowledged, recording the acknowledged ones; returns when the server is gone.
async fn publisher(
    transport: Transport,
    server: (String, u16),
    d: usize,
    acked: Arc<Mutex<HashMap<usize, Vec<u64>>>>,
) {
    match transport {
        Transport::Http => {
            let client = reqwest::Client::new();
            for n in 0u64.. {
                let r = client
                    .post(format!("{}/v1/telemetry", server.0))
                    .basic_auth(format!("d{d}@app"), Some("pw"))
                    .header("content-type", "application/json")
                    .body(json!({"d": d, "n": n}).to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        acked.lock().unwrap().entry(d).or_default().push(n)
                    }
                    _ => return,
                }
            }
        }
        Transport::Mqtt => {
            let mut o = rumqttc::MqttOptions::new(format!("d{d}"), "127.0.0.1", server.1);
            o.set_credentials(format!("d{d}@app"), "pw");
            let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
            for n in 0u64.. {
                let payload = json!({"d": d, "n": n}).to_string();
                if client
                    .publish("telemetry", rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    match el.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => break,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
                acked.lock().unwrap().entry(d).or_default().push(n);
            }
        }
    }
}

async fn killed_while_publishing(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/registry/v1alpha1/apps", server.api))
        .basic_auth("admin", Some(TOKEN))
        .json(&json!({"metadata": {"name": "app"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    const DEVICES: usize = 4;
    for d in 0..DEVICES {
        let r = client
            .post(format!("{}/api/registry/v1alpha1/apps/app/devices", server.api))
            .basic_auth("admin", Some(TOKEN))
            .json(&json!({"metadata": {"name": format!("d{d}")}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    // Publishers: each device sends 0, 1, 2, ... and records what was acknowledged.
    let acked: Arc<Mutex<HashMap<usize, Vec<u64>>>> = Arc::default();
    let mut publishers = Vec::new();
    for d in 0..DEVICES {
        let target = (server.http.clone(), server.mqtt_port);
        publishers.push(tokio::spawn(publisher(transport, target, d, acked.clone())));
    }
    // Kill the server hard once enough messages were acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().values().map(Vec::len).sum::<usize>() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few acknowledgements"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for p in publishers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(Vec::len).sum();

    // Restart on the same data and read everything back.
    let mut server = start(dir.path());
    let ws = format!(
        "{}{}app?from=earliest&username=admin&api_key={TOKEN}",
        server.api.replacen("http", "ws", 1),
        drover_api::WS_PATH
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut missing = total;
    while missing > 0 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("stream ended with {missing} acknowledged messages missing"))
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let ev: Value = serde_json::from_str(t.as_str()).unwrap();
            if ev["type"] == "io.drogue.connection.v1" {
                continue;
            }
            let (d, n) = (
                ev["data"]["d"].as_u64().unwrap() as usize,
                ev["data"]["n"].as_u64().unwrap(),
            );
            if acked.get(&d).is_some_and(|a| a.contains(&n)) {
                missing -= 1;
            }
            seen.entry(d).or_default().push(n);
        }
    }
    for (d, ns) in &seen {
        // Exactly in order, each message once; the acknowledged ones a prefix of what is there.
        let expected: Vec<u64> = (0..ns.len() as u64).collect();
        assert_eq!(ns, &expected, "device d{d}: out of order or duplicated");
        assert!(acked[d].len() <= ns.len());
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
