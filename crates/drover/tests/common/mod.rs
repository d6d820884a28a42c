//! The in-process test server: `drover::start` on port 0 with a temporary data directory, and a
//! reqwest client that speaks to it as a given user.
#![allow(dead_code, clippy::unwrap_used)]

pub mod backends;
pub mod mqtt;
pub mod stream;

use std::path::{Path, PathBuf};

use drover::{Config, Server};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// The administrator token every test server is configured with (drg format).
pub const ADMIN_TOKEN: &str = "drg_012345_01234567890123456789012345678920BetF";

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    /// Base URL of the HTTP device endpoint.
    pub http_base: String,
    pub dir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

/// With `DROVER_TEST_REGISTRY=postgres` (and `DROVER_TEST_DATABASE_URL`), test servers keep
/// their registry in PostgreSQL, in a schema of their own named after the data directory (so a
/// restart finds it again), dropped when the [`TestServer`] goes. CI runs the API suites both
/// ways.
fn postgres_registry(data_dir: &Path) -> Option<(String, String)> {
    if std::env::var("DROVER_TEST_REGISTRY").ok()? != "postgres" {
        return None;
    }
    let url = std::env::var("DROVER_TEST_DATABASE_URL")
        .expect("DROVER_TEST_REGISTRY=postgres needs DROVER_TEST_DATABASE_URL");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sweep_dead_schemas(&url));
    Some((url, format!("drover_e2e_{}_{h:016x}", std::process::id())))
}

/// Drops the schemas of test processes that are gone (a server still busy when its
/// [`TestServer`] was dropped can make that drop fail).
fn sweep_dead_schemas(url: &str) {
    let Ok(out) = std::process::Command::new("psql")
        .arg(url)
        .args([
            "-tAc",
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'drover\\_e2e\\_%'",
        ])
        .output()
    else {
        return;
    };
    for schema in String::from_utf8_lossy(&out.stdout).lines() {
        let pid = schema.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if pid.is_some() && !alive {
            let _ = std::process::Command::new("psql")
                .arg(url)
                .args(["-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Configuration for a test server in `data_dir`, API on an ephemeral port.
pub fn config(data_dir: &Path) -> Config {
    let (database_url, database_schema) = match postgres_registry(data_dir) {
        Some((url, schema)) => (Some(url), Some(schema)),
        None => (None, None),
    };
    Config {
        database_url,
        database_schema,
        data_dir: data_dir.to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        https_addr: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_addr: Some("127.0.0.1:0".parse().unwrap()),
        mqtts_addr: Some("127.0.0.1:0".parse().unwrap()),
        integration_mqtt_addr: Some("127.0.0.1:0".parse().unwrap()),
        integration_mqtts_addr: Some("127.0.0.1:0".parse().unwrap()),
        admin_token: Some(ADMIN_TOKEN.to_string()),
        // Every test client comes from 127.0.0.1, and many tests send wrong credentials on
        // purpose: throttling is tested on its own (tests/brute_force.rs).
        auth_throttle: false,
        ..Config::default()
    }
}

fn http_base(server: &Server) -> String {
    server
        .http_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_default()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some((url, schema)) = postgres_registry(&self.data_dir) {
            let _ = std::process::Command::new("psql")
                .arg(url)
                .args([
                    "-qc",
                    &format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let mut t = Self::start_with(config(&data_dir)).await;
        t.dir = Some(dir);
        t
    }

    pub async fn start_with(config: Config) -> TestServer {
        let data_dir = config.data_dir.clone();
        let server = drover::start(config).await.unwrap();
        let base = format!("http://{}", server.api_addr);
        let http_base = http_base(&server);
        TestServer {
            server: Some(server),
            base,
            http_base,
            dir: None,
            data_dir,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        let c = config(&self.data_dir);
        self.restart_with(c).await;
    }

    /// Stops the server and starts a new one with `config` (on its data directory).
    pub async fn restart_with(&mut self, config: Config) {
        self.server.take().unwrap().shutdown().await.unwrap();
        let server = drover::start(config).await.unwrap();
        self.base = format!("http://{}", server.api_addr);
        self.http_base = http_base(&server);
        self.server = Some(server);
    }

    /// Starts a server on the data directory of a stopped one.
    pub async fn restart_stopped(&mut self) {
        assert!(self.server.is_none(), "server still running");
        let server = drover::start(config(&self.data_dir)).await.unwrap();
        self.base = format!("http://{}", server.api_addr);
        self.http_base = http_base(&server);
        self.server = Some(server);
    }

    /// The WebSocket integration URL of an application.
    pub fn ws_url(&self, app: &str) -> String {
        format!(
            "{}{}{app}",
            self.base.replacen("http", "ws", 1),
            drover_api::WS_PATH
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A client acting as the administrator.
    pub fn admin(&self) -> Client {
        self.client("admin", ADMIN_TOKEN)
    }

    pub fn client(&self, user: &str, token: &str) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
            user: Some((user.to_string(), token.to_string())),
        }
    }

    pub fn anonymous(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
            user: None,
        }
    }

    /// Creates a user through the admin API and returns a client acting as it.
    pub async fn user(&self, name: &str) -> Client {
        let r = self
            .admin()
            .post("/api/admin/v1alpha1/users", &json!({ "name": name }))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "creating user {name}");
        let body: Value = r.json().await.unwrap();
        self.client(name, body["token"].as_str().unwrap())
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub user: Option<(String, String)>,
}

impl Client {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.user {
            Some((u, t)) => r.basic_auth(u, Some(t)),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.unwrap()
    }

    /// Creates an app, asserting 201.
    pub async fn create_app(&self, name: &str) -> Value {
        let r = self
            .post(
                "/api/registry/v1alpha1/apps",
                &json!({"metadata": {"name": name}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "create app {name}");
        r.json().await.unwrap()
    }

    /// Creates a device, asserting 201.
    pub async fn create_device(&self, app: &str, body: Value) -> Value {
        let r = self
            .post(&format!("/api/registry/v1alpha1/apps/{app}/devices"), &body)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "create device in {app}: {body}"
        );
        r.json().await.unwrap()
    }
}

/// Asserts status and error kind of a failed request; returns the message.
pub async fn expect_error(r: Response, status: StatusCode, kind: &str) -> String {
    assert_eq!(r.status(), status, "status");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], kind, "error kind in {body}");
    body["message"].as_str().unwrap().to_string()
}

/// Where a `drover serve` process listens, read from its banner.
pub struct Banner {
    /// `http://<api addr>`
    pub api: String,
    /// `http://<HTTP device endpoint addr>`
    pub http: String,
    pub mqtt_port: u16,
    pub mqtts_port: Option<u16>,
}

/// Reads the banner of a `drover serve` child (stdout piped) up to "Press Ctrl+C": the bound
/// addresses of the API, the HTTP device endpoint and MQTT.
pub fn read_banner(child: &mut std::process::Child) -> Banner {
    use std::io::BufRead;
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout piped"));
    let (mut api, mut http, mut mqtt, mut mqtts) = (None, None, None, None);
    for line in stdout.lines() {
        let line = line.unwrap();
        let bound = || {
            line.rsplit_once("listening on ")
                .map(|(_, a)| a.trim_end_matches(')').to_string())
        };
        if line.contains("Management API") {
            api = bound();
        } else if line.contains("HTTP devices") {
            http = bound();
        } else if line.contains("MQTT devices") {
            mqtt = bound();
        } else if line.contains("MQTTS devices") {
            mqtts = bound();
        } else if line.contains("Press Ctrl+C") {
            break;
        }
    }
    Banner {
        api: format!("http://{}", api.expect("the server did not start")),
        http: format!(
            "http://{}",
            http.expect("no HTTP device endpoint in the banner")
        ),
        mqtt_port: mqtt
            .and_then(|m| m.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .expect("no MQTT endpoint in the banner"),
        mqtts_port: mqtts.and_then(|m| m.rsplit_once(':').and_then(|(_, p)| p.parse().ok())),
    }
}
