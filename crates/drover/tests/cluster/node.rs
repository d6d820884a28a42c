//! One running `drover serve` node of a test cluster.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common;
use serde_json::json;

pub(crate) const TOKEN: &str = "drg_012345_01234567890123456789012345678920BetF";

pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// One running node.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) api: String,
    pub(crate) http: String,
    pub(crate) mqtt_port: u16,
    /// The MQTT-over-TLS port (with the node's own development CA).
    pub(crate) mqtts_port: Option<u16>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// A node of a two-node cluster on `db` (schema) and `nats` (prefix).
    pub(crate) fn start(name: &str, db: &str, schema: &str, nats: &str, prefix: &str) -> Node {
        Node::spawn(
            &[
                "--instance",
                name,
                "--database-url",
                db,
                "--database-schema",
                schema,
                "--nats-url",
                nats,
                "--nats-prefix",
                prefix,
            ],
            "warn",
        )
    }

    /// Starts `drover serve` with `args` on ephemeral ports (HTTP, MQTT and MQTTS devices, API;
    /// HTTPS and the MQTT integration off) and reads the bound addresses from its banner.
    pub(crate) fn spawn(args: &[&str], log: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args([
                "serve",
                "--api-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--https-addr", "off", "--mqtt-addr", "127.0.0.1:0"])
            .args([
                "--mqtts-addr",
                "127.0.0.1:0",
                "--integration-mqtt-addr",
                "off",
            ])
            .args(["--integration-mqtts-addr", "off"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--admin-token", TOKEN])
            .env_remove("DROVER_CONFIG")
            .env("DROVER_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let banner = common::read_banner(&mut child);
        Node {
            child,
            api: banner.api,
            http: banner.http,
            mqtt_port: banner.mqtt_port,
            mqtts_port: banner.mqtts_port,
            _dir: dir,
        }
    }

    /// Creates application `app` with device `dev1` authenticated by `password`.
    pub(crate) async fn create_device(&self, password: &str) {
        let r = self
            .admin(reqwest::Method::POST, "/api/registry/v1alpha1/apps")
            .json(&json!({"metadata": {"name": "app"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = self
            .admin(reqwest::Method::POST, "/api/registry/v1alpha1/apps/app/devices")
            .json(&json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": password}]}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    pub(crate) fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.api))
            .basic_auth("admin", Some(TOKEN))
    }
}

pub(crate) async fn ready(node: &Node) -> u16 {
    reqwest::get(format!("{}/health/ready", node.api))
        .await
        .unwrap()
        .status()
        .as_u16()
}
