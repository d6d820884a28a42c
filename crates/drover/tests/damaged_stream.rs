//! One application's damaged event-stream file does not stop the server: the binary starts,
//! names the file in its log, takes only that stream out of service (HTTP 503, MQTT PUBACK
//! refused) and serves every other application; `/health/ready` reports the degraded stream
//! and stays ready.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use serde_json::{json, Value};

const TOKEN: &str = "drg_012345_01234567890123456789012345678920BetF";
const WAIT: Duration = Duration::from_secs(20);

struct Running {
    child: Child,
    api: String,
    http: String,
    mqtt_port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on ephemeral ports, its log (warnings and errors) going to `log`.
fn start(data: &Path, log: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--https-addr",
            "off",
            "--mqtt-addr",
            "127.0.0.1:0",
            "--mqtts-addr",
            "off",
        ])
        .args([
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
        .stderr(std::fs::File::create(log).unwrap())
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

async fn create_app_with_device(api: &str, app: &str) -> String {
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{api}/api/registry/v1alpha1/apps"))
        .basic_auth("admin", Some(TOKEN))
        .json(&json!({"metadata": {"name": app}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let uid = r.json::<Value>().await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client
        .post(format!("{api}/api/registry/v1alpha1/apps/{app}/devices"))
        .basic_auth("admin", Some(TOKEN))
        .json(&json!({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    uid
}

async fn telemetry(http: &str, app: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{http}/v1/telemetry"))
        .basic_auth(format!("d@{app}"), Some("pw"))
        .header("content-type", "application/json")
        .body(r#"{"temp":21}"#)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Publishes one QoS 1 message over MQTT 5 as device `d` of `app`; returns the PUBACK reason.
async fn mqtt_publish(port: u16, app: &str) -> PubAckReason {
    let mut o = rumqttc::v5::MqttOptions::new(format!("d-{app}"), "127.0.0.1", port);
    o.set_credentials(format!("d@{app}"), "pw");
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 10);
    client
        .publish(
            "telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            r#"{"temp":22}"#,
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(ack))) => return ack.reason,
                Ok(_) => {}
                Err(e) => panic!("MQTT connection of {app} failed: {e}"),
            }
        }
    })
    .await
    .expect("a PUBACK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_stream_meta_takes_only_its_stream_out_of_service() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &dir.path().join("first.log"));
    let broken_uid = create_app_with_device(&server.api, "broken").await;
    create_app_with_device(&server.api, "fine").await;
    for app in ["broken", "fine"] {
        assert_eq!(telemetry(&server.http, app).await.0, 202, "{app}");
    }
    drop(server); // killed

    // Invalid UTF-8 in the broken application's stream.meta.
    let meta = data.join("events").join(&broken_uid).join("stream.meta");
    assert!(meta.exists(), "{} missing", meta.display());
    std::fs::write(&meta, b"drover-stream 1\napp=bro\xffken\nuid=x\n").unwrap();

    let log = dir.path().join("second.log");
    let server = start(&data, &log);
    // The log names the file.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&*meta.to_string_lossy()) && logged.contains("out of service"),
        "{logged}"
    );

    // Every other application is served; the broken one answers 503 with the reason.
    assert_eq!(telemetry(&server.http, "fine").await.0, 202);
    let (status, body) = telemetry(&server.http, "broken").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("out of service") && body.contains("stream.meta"),
        "{body}"
    );
    assert_eq!(
        mqtt_publish(server.mqtt_port, "fine").await,
        PubAckReason::Success
    );
    assert_eq!(
        mqtt_publish(server.mqtt_port, "broken").await,
        PubAckReason::ImplementationSpecificError
    );

    // Ready (one tenant's damage does not take the node out), the stream named as degraded.
    let r = reqwest::get(format!("{}/health/ready", server.api))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["degraded"], json!(["eventLog"]), "{ready}");
    let check = ready["checks"]["eventLog"].as_str().unwrap();
    assert!(
        check.starts_with("degraded:")
            && check.contains(&broken_uid)
            && check.contains("stream.meta"),
        "{check}"
    );
    assert!(
        !check.contains(&*data.to_string_lossy()),
        "no paths: {check}"
    );
    assert_eq!(ready["checks"]["registry"], "ok", "{ready}");
}
