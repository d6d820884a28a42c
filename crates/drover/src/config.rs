//! Configuration: defaults < TOML file (`--config`) < environment (`DROVER_*`) < flags.
//! Validated before any port is bound; problems name the setting to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

mod limits;

pub use limits::{LimitArgs, Limits};

/// A configuration problem: exit code 64 with this one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Settings of `drover serve` as flags and environment variables (each overrides the file).
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as in `--print-config`).
    #[arg(long, env = "DROVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded database and generated files [default: ./drover-data].
    #[arg(long, env = "DROVER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address of the management API [default: 0.0.0.0:8011].
    #[arg(long, env = "DROVER_API_ADDR", value_name = "ADDR")]
    pub api_addr: Option<String>,
    /// Listen address of the HTTP device endpoint, or `off` [default: 0.0.0.0:8088].
    #[arg(long, env = "DROVER_HTTP_ADDR", value_name = "ADDR|off")]
    pub http_addr: Option<String>,
    /// Listen address of the HTTPS device endpoint, or `off` [default: 0.0.0.0:8443].
    #[arg(long, env = "DROVER_HTTPS_ADDR", value_name = "ADDR|off")]
    pub https_addr: Option<String>,
    /// Listen address of the MQTT device endpoint, or `off` [default: 0.0.0.0:1883].
    #[arg(long, env = "DROVER_MQTT_ADDR", value_name = "ADDR|off")]
    pub mqtt_addr: Option<String>,
    /// Listen address of the MQTT-over-TLS device endpoint, or `off` [default: 0.0.0.0:8883].
    #[arg(long, env = "DROVER_MQTTS_ADDR", value_name = "ADDR|off")]
    pub mqtts_addr: Option<String>,
    /// Listen address of the MQTT integration (applications), or `off` [default: 0.0.0.0:18883].
    #[arg(long, env = "DROVER_INTEGRATION_MQTT_ADDR", value_name = "ADDR|off")]
    pub integration_mqtt_addr: Option<String>,
    /// Listen address of the MQTT integration over TLS, or `off` [default: 0.0.0.0:18884].
    #[arg(long, env = "DROVER_INTEGRATION_MQTTS_ADDR", value_name = "ADDR|off")]
    pub integration_mqtts_addr: Option<String>,
    /// MQTT-integration consumers this many events behind (and not catching up) are disconnected
    /// [default: 10000; 0: never].
    #[arg(long, env = "DROVER_INTEGRATION_MAX_LAG", value_name = "EVENTS")]
    pub integration_max_lag: Option<u64>,
    /// Server certificate chain (PEM) for TLS listeners [default: a generated development CA].
    #[arg(long, env = "DROVER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "DROVER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Largest HTTP telemetry payload, in bytes [default: 262144].
    #[arg(long, env = "DROVER_HTTP_BODY_LIMIT", value_name = "BYTES")]
    pub http_body_limit: Option<usize>,
    /// Days events are kept in each application's stream [default: 7].
    #[arg(long, env = "DROVER_EVENT_RETENTION_DAYS", value_name = "DAYS")]
    pub event_retention_days: Option<u32>,
    /// Most bytes kept per application stream (oldest events go first) [default: 1073741824].
    #[arg(long, env = "DROVER_EVENT_RETENTION_BYTES", value_name = "BYTES")]
    pub event_retention_bytes: Option<u64>,
    /// WebSocket consumers this many events behind are disconnected [default: 10000].
    #[arg(long, env = "DROVER_WS_MAX_LAG", value_name = "EVENTS")]
    pub ws_max_lag: Option<u64>,
    /// Name of this node, carried in events as `instance` [default: drover].
    #[arg(long, env = "DROVER_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,
    /// Access token of the system administrator `admin` (else generated at first start).
    #[arg(
        long,
        env = "DROVER_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Externally visible URL of the API (advertised to clients) [default: from each request].
    #[arg(long, env = "DROVER_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Largest management API request body, in bytes [default: 1048576].
    #[arg(long, env = "DROVER_API_BODY_LIMIT", value_name = "BYTES")]
    pub api_body_limit: Option<usize>,
    /// OIDC issuer whose Bearer JWTs are accepted (single sign-on) [default: none].
    #[arg(long, env = "DROVER_OIDC_ISSUER_URL", value_name = "URL")]
    pub oidc_issuer_url: Option<String>,
    /// Required `aud` of OIDC tokens [default: not checked].
    #[arg(long, env = "DROVER_OIDC_AUDIENCE", value_name = "AUD")]
    pub oidc_audience: Option<String>,
    /// Claim holding the user name in OIDC tokens [default: preferred_username].
    #[arg(long, env = "DROVER_OIDC_USERNAME_CLAIM", value_name = "CLAIM")]
    pub oidc_username_claim: Option<String>,
    /// JWKS URL of the issuer [default: from its discovery document].
    #[arg(long, env = "DROVER_OIDC_JWKS_URL", value_name = "URL")]
    pub oidc_jwks_url: Option<String>,
    /// Days registry change events are kept for watchers to resume from [default: 7].
    #[arg(long, env = "DROVER_CHANGE_RETENTION_DAYS", value_name = "DAYS")]
    pub change_retention_days: Option<u32>,
    /// Seconds to wait for requests to finish on shutdown [default: 10].
    #[arg(long, env = "DROVER_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// The cluster's backends (PostgreSQL, NATS JetStream).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Timeouts and connection caps of the listeners.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Where a cluster keeps its state; `drover serve` and `drover migrate` take the same flags.
#[derive(Debug, Default, Args)]
pub struct ClusterArgs {
    /// PostgreSQL registry shared by all nodes, `postgres://user:pass@host/db`
    /// [default: none, the embedded SQLite registry in the data directory].
    #[arg(
        long,
        env = "DROVER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// PostgreSQL schema of the registry tables [default: public].
    #[arg(long, env = "DROVER_DATABASE_SCHEMA", value_name = "NAME")]
    pub database_schema: Option<String>,
    /// Most PostgreSQL connections of this node [default: 16].
    #[arg(long, env = "DROVER_DATABASE_MAX_CONNECTIONS", value_name = "N")]
    pub database_max_connections: Option<u32>,
    /// NATS server with JetStream for event streams and command routing between nodes,
    /// `nats://host:4222` [default: none, the embedded event log].
    #[arg(
        long,
        env = "DROVER_NATS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub nats_url: Option<String>,
    /// Prefix of Drover's NATS subjects, streams and buckets (one per cluster) [default: drover].
    #[arg(long, env = "DROVER_NATS_PREFIX", value_name = "PREFIX")]
    pub nats_prefix: Option<String>,
    /// JetStream replicas of Drover's streams [default: 1].
    #[arg(long, env = "DROVER_NATS_REPLICAS", value_name = "N")]
    pub nats_replicas: Option<usize>,
}

/// The configuration file; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    api_addr: Option<String>,
    http_addr: Option<String>,
    https_addr: Option<String>,
    mqtt_addr: Option<String>,
    mqtts_addr: Option<String>,
    integration_mqtt_addr: Option<String>,
    integration_mqtts_addr: Option<String>,
    integration_max_lag: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    http_body_limit: Option<usize>,
    event_retention_days: Option<u32>,
    event_retention_bytes: Option<u64>,
    ws_max_lag: Option<u64>,
    instance: Option<String>,
    admin_token: Option<String>,
    public_url: Option<String>,
    api_body_limit: Option<usize>,
    shutdown_grace: Option<u64>,
    change_retention_days: Option<u32>,
    database_url: Option<String>,
    database_schema: Option<String>,
    database_max_connections: Option<u32>,
    nats_url: Option<String>,
    nats_prefix: Option<String>,
    nats_replicas: Option<usize>,
    http_header_timeout: Option<u64>,
    http_body_timeout: Option<u64>,
    http_idle_timeout: Option<u64>,
    http_max_connections: Option<usize>,
    api_max_connections: Option<usize>,
    mqtt_max_connections: Option<usize>,
    integration_max_connections: Option<usize>,
    mqtt_packet_timeout: Option<u64>,
    oidc: Option<FileOidc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOidc {
    issuer_url: Option<String>,
    audience: Option<String>,
    username_claim: Option<String>,
    jwks_url: Option<String>,
}

/// Single sign-on settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OidcSettings {
    pub issuer_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    pub username_claim: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}

/// The effective configuration.
#[derive(Clone, Serialize, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    /// `None`: the listener is off.
    #[serde(serialize_with = "listener")]
    pub http_addr: Option<SocketAddr>,
    #[serde(serialize_with = "listener")]
    pub https_addr: Option<SocketAddr>,
    #[serde(serialize_with = "listener")]
    pub mqtt_addr: Option<SocketAddr>,
    #[serde(serialize_with = "listener")]
    pub mqtts_addr: Option<SocketAddr>,
    #[serde(serialize_with = "listener")]
    pub integration_mqtt_addr: Option<SocketAddr>,
    #[serde(serialize_with = "listener")]
    pub integration_mqtts_addr: Option<SocketAddr>,
    pub integration_max_lag: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    pub http_body_limit: usize,
    pub event_retention_days: u32,
    pub event_retention_bytes: u64,
    pub ws_max_lag: u64,
    pub instance: String,
    #[serde(serialize_with = "redact")]
    pub admin_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    pub api_body_limit: usize,
    pub shutdown_grace: u64,
    pub change_retention_days: u32,
    /// The PostgreSQL registry (`None`: embedded SQLite).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redact_url")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_schema: Option<String>,
    pub database_max_connections: u32,
    /// The NATS JetStream event log and command routing (`None`: embedded log, one node).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redact_url")]
    pub nats_url: Option<String>,
    pub nats_prefix: String,
    pub nats_replicas: usize,
    /// Timeouts and connection caps of the listeners.
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSettings>,
}

/// A URL (or several, separated by commas) with passwords replaced by `***`.
pub fn redacted_url(u: &str) -> String {
    u.split(',')
        .map(|one| match url::Url::parse(one.trim()) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            Ok(_) => one.trim().to_string(),
            Err(_) => "<unparsable URL>".into(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_url<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.serialize_str(&redacted_url(u)),
        None => s.serialize_none(),
    }
}

fn listener<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str("off"),
    }
}

fn redact<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("api_addr", &self.api_addr)
            .field("http_addr", &self.http_addr)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("public_url", &self.public_url)
            .field("api_body_limit", &self.api_body_limit)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redacted_url),
            )
            .field("nats_url", &self.nats_url.as_deref().map(redacted_url))
            .field("nats_prefix", &self.nats_prefix)
            .field("limits", &self.limits)
            .field("oidc", &self.oidc)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./drover-data"),
            api_addr: SocketAddr::from(([0, 0, 0, 0], 8011)),
            http_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8088))),
            https_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
            mqtt_addr: Some(SocketAddr::from(([0, 0, 0, 0], 1883))),
            mqtts_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8883))),
            integration_mqtt_addr: Some(SocketAddr::from(([0, 0, 0, 0], 18883))),
            integration_mqtts_addr: Some(SocketAddr::from(([0, 0, 0, 0], 18884))),
            integration_max_lag: 10_000,
            tls_cert: None,
            tls_key: None,
            http_body_limit: 256 * 1024,
            event_retention_days: 7,
            event_retention_bytes: 1 << 30,
            ws_max_lag: 10_000,
            instance: "drover".into(),
            admin_token: None,
            public_url: None,
            api_body_limit: 1024 * 1024,
            shutdown_grace: 10,
            change_retention_days: 7,
            database_url: None,
            database_schema: None,
            database_max_connections: 16,
            nats_url: None,
            nats_prefix: "drover".into(),
            nats_replicas: 1,
            limits: Limits::default(),
            oidc: None,
        }
    }
}

fn addr(value: &str, key: &str, flag: &str, env: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError(format!(
            "invalid {key} '{value}': expected IP:PORT such as 0.0.0.0:8011 (set {flag} / {env} or '{key}' in the config file)"
        ))
    })
}

/// A listener address, or `off`.
fn listener_addr(
    value: &str,
    key: &str,
    flag: &str,
    env: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    if value.eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        addr(value, key, flag, env).map(Some)
    }
}

fn http_url(value: &str, key: &str, flag: &str, env: &str) -> Result<String, ConfigError> {
    let ok = url::Url::parse(value)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false);
    if ok {
        Ok(value.trim_end_matches('/').to_string())
    } else {
        Err(ConfigError(format!(
            "invalid {key} '{value}': expected an http(s) URL (set {flag} / {env} or '{key}' in the config file)"
        )))
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read config file {} (--config / DROVER_CONFIG): {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        ConfigError(format!("invalid config file {}: {msg}", path.display()))
    })
}

impl Config {
    /// Layers defaults, the file, the environment and the flags, and validates the result.
    pub fn load(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or(d.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError(
                "data_dir is empty (set --data-dir / DROVER_DATA_DIR)".into(),
            ));
        }
        let api_addr = match args.api_addr.or(file.api_addr) {
            Some(a) => addr(&a, "api_addr", "--api-addr", "DROVER_API_ADDR")?,
            None => d.api_addr,
        };
        let http_addr = match args.http_addr.or(file.http_addr) {
            Some(a) => listener_addr(&a, "http_addr", "--http-addr", "DROVER_HTTP_ADDR")?,
            None => d.http_addr,
        };
        let https_addr = match args.https_addr.or(file.https_addr) {
            Some(a) => listener_addr(&a, "https_addr", "--https-addr", "DROVER_HTTPS_ADDR")?,
            None => d.https_addr,
        };
        let mqtt_addr = match args.mqtt_addr.or(file.mqtt_addr) {
            Some(a) => listener_addr(&a, "mqtt_addr", "--mqtt-addr", "DROVER_MQTT_ADDR")?,
            None => d.mqtt_addr,
        };
        let mqtts_addr = match args.mqtts_addr.or(file.mqtts_addr) {
            Some(a) => listener_addr(&a, "mqtts_addr", "--mqtts-addr", "DROVER_MQTTS_ADDR")?,
            None => d.mqtts_addr,
        };
        let integration_mqtt_addr = match args.integration_mqtt_addr.or(file.integration_mqtt_addr)
        {
            Some(a) => listener_addr(
                &a,
                "integration_mqtt_addr",
                "--integration-mqtt-addr",
                "DROVER_INTEGRATION_MQTT_ADDR",
            )?,
            None => d.integration_mqtt_addr,
        };
        let integration_mqtts_addr =
            match args.integration_mqtts_addr.or(file.integration_mqtts_addr) {
                Some(a) => listener_addr(
                    &a,
                    "integration_mqtts_addr",
                    "--integration-mqtts-addr",
                    "DROVER_INTEGRATION_MQTTS_ADDR",
                )?,
                None => d.integration_mqtts_addr,
            };
        let integration_max_lag = args
            .integration_max_lag
            .or(file.integration_max_lag)
            .unwrap_or(d.integration_max_lag);
        let tls_cert = args.tls_cert.or(file.tls_cert);
        let tls_key = args.tls_key.or(file.tls_key);
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError(
                "tls_cert and tls_key go together: set both --tls-cert / DROVER_TLS_CERT and --tls-key / DROVER_TLS_KEY, or neither".into(),
            ));
        }
        let http_body_limit = args
            .http_body_limit
            .or(file.http_body_limit)
            .unwrap_or(d.http_body_limit);
        if http_body_limit == 0 {
            return Err(ConfigError(
                "http_body_limit must be at least 1 byte (set --http-body-limit / DROVER_HTTP_BODY_LIMIT)".into(),
            ));
        }
        let event_retention_days = args
            .event_retention_days
            .or(file.event_retention_days)
            .unwrap_or(d.event_retention_days);
        if event_retention_days == 0 {
            return Err(ConfigError(
                "event_retention_days must be at least 1 (set --event-retention-days / DROVER_EVENT_RETENTION_DAYS)".into(),
            ));
        }
        let event_retention_bytes = args
            .event_retention_bytes
            .or(file.event_retention_bytes)
            .unwrap_or(d.event_retention_bytes);
        if event_retention_bytes < 1 << 20 {
            return Err(ConfigError(
                "event_retention_bytes must be at least 1048576 (set --event-retention-bytes / DROVER_EVENT_RETENTION_BYTES)".into(),
            ));
        }
        let ws_max_lag = args.ws_max_lag.or(file.ws_max_lag).unwrap_or(d.ws_max_lag);
        let instance = args.instance.or(file.instance).unwrap_or(d.instance);
        if instance.is_empty()
            || instance.len() > 64
            || !instance.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError(
                "instance must be 1 to 64 printable characters (set --instance / DROVER_INSTANCE)"
                    .into(),
            ));
        }
        let admin_token = args
            .admin_token
            .or(file.admin_token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &admin_token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError(
                    "admin_token is too weak: use at least 16 characters without spaces (set --admin-token / DROVER_ADMIN_TOKEN)".into(),
                ));
            }
        }
        let public_url = args
            .public_url
            .or(file.public_url)
            .map(|u| http_url(&u, "public_url", "--public-url", "DROVER_PUBLIC_URL"))
            .transpose()?;
        let api_body_limit = args
            .api_body_limit
            .or(file.api_body_limit)
            .unwrap_or(d.api_body_limit);
        if api_body_limit == 0 {
            return Err(ConfigError(
                "api_body_limit must be at least 1 byte (set --api-body-limit / DROVER_API_BODY_LIMIT)".into(),
            ));
        }
        let shutdown_grace = args
            .shutdown_grace
            .or(file.shutdown_grace)
            .unwrap_or(d.shutdown_grace);
        let change_retention_days = args
            .change_retention_days
            .or(file.change_retention_days)
            .unwrap_or(d.change_retention_days);
        if change_retention_days == 0 {
            return Err(ConfigError(
                "change_retention_days must be at least 1 (set --change-retention-days / DROVER_CHANGE_RETENTION_DAYS)".into(),
            ));
        }
        let database_url = args
            .cluster
            .database_url
            .or(file.database_url)
            .filter(|u| !u.is_empty());
        if let Some(u) = &database_url {
            let ok = url::Url::parse(u)
                .map(|p| matches!(p.scheme(), "postgres" | "postgresql"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError(format!(
                    "invalid database_url '{}': expected postgres://user[:password]@host[:port]/database (set --database-url / DROVER_DATABASE_URL)",
                    redacted_url(u)
                )));
            }
        }
        let database_schema = args.cluster.database_schema.or(file.database_schema);
        if let Some(s) = &database_schema {
            let ok = !s.is_empty()
                && s.len() <= 48
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !s.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(ConfigError(format!(
                    "invalid database_schema '{s}': 1 to 48 characters of a-z, 0-9 and _, not starting with a digit (set --database-schema / DROVER_DATABASE_SCHEMA)"
                )));
            }
        }
        let database_max_connections = args
            .cluster
            .database_max_connections
            .or(file.database_max_connections)
            .unwrap_or(d.database_max_connections);
        if database_max_connections < 2 {
            return Err(ConfigError(
                "database_max_connections must be at least 2 (set --database-max-connections / DROVER_DATABASE_MAX_CONNECTIONS)".into(),
            ));
        }
        let nats_url = args
            .cluster
            .nats_url
            .or(file.nats_url)
            .filter(|u| !u.is_empty());
        if let Some(u) = &nats_url {
            let ok = u.split(',').all(|one| {
                url::Url::parse(one.trim())
                    .map(|p| {
                        matches!(p.scheme(), "nats" | "tls" | "ws" | "wss") && p.host().is_some()
                    })
                    .unwrap_or(false)
            });
            if !ok {
                return Err(ConfigError(format!(
                    "invalid nats_url '{}': expected nats://host:port (several separated by commas) (set --nats-url / DROVER_NATS_URL)",
                    redacted_url(u)
                )));
            }
        }
        let nats_prefix = args
            .cluster
            .nats_prefix
            .or(file.nats_prefix)
            .unwrap_or(d.nats_prefix);
        let ok = !nats_prefix.is_empty()
            && nats_prefix.len() <= 32
            && nats_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(ConfigError(format!(
                "invalid nats_prefix '{nats_prefix}': 1 to 32 characters of a-z, 0-9 and _ (set --nats-prefix / DROVER_NATS_PREFIX)"
            )));
        }
        let nats_replicas = args
            .cluster
            .nats_replicas
            .or(file.nats_replicas)
            .unwrap_or(d.nats_replicas);
        if !(1..=5).contains(&nats_replicas) {
            return Err(ConfigError(
                "nats_replicas must be 1 to 5 (set --nats-replicas / DROVER_NATS_REPLICAS)".into(),
            ));
        }
        // (Their own struct cannot be flattened into a file struct that denies unknown keys.)
        let file_limits = limits::FileLimits {
            http_header_timeout: file.http_header_timeout,
            http_body_timeout: file.http_body_timeout,
            http_idle_timeout: file.http_idle_timeout,
            http_max_connections: file.http_max_connections,
            api_max_connections: file.api_max_connections,
            mqtt_max_connections: file.mqtt_max_connections,
            integration_max_connections: file.integration_max_connections,
            mqtt_packet_timeout: file.mqtt_packet_timeout,
        };
        let limits = Limits::load(args.limits, file_limits)?;
        let fo = file.oidc.unwrap_or_default();
        let oidc = match args.oidc_issuer_url.or(fo.issuer_url) {
            Some(issuer) => Some(OidcSettings {
                issuer_url: http_url(
                    &issuer,
                    "oidc.issuer_url",
                    "--oidc-issuer-url",
                    "DROVER_OIDC_ISSUER_URL",
                )?,
                audience: args.oidc_audience.or(fo.audience),
                username_claim: args
                    .oidc_username_claim
                    .or(fo.username_claim)
                    .unwrap_or_else(|| "preferred_username".into()),
                jwks_url: args
                    .oidc_jwks_url
                    .or(fo.jwks_url)
                    .map(|u| {
                        http_url(
                            &u,
                            "oidc.jwks_url",
                            "--oidc-jwks-url",
                            "DROVER_OIDC_JWKS_URL",
                        )
                    })
                    .transpose()?,
            }),
            None => None,
        };
        Ok(Config {
            data_dir,
            api_addr,
            http_addr,
            https_addr,
            mqtt_addr,
            mqtts_addr,
            integration_mqtt_addr,
            integration_mqtts_addr,
            integration_max_lag,
            tls_cert,
            tls_key,
            http_body_limit,
            event_retention_days,
            event_retention_bytes,
            ws_max_lag,
            instance,
            admin_token,
            public_url,
            api_body_limit,
            shutdown_grace,
            change_retention_days,
            database_url,
            database_schema,
            database_max_connections,
            nats_url,
            nats_prefix,
            nats_replicas,
            limits,
            oidc,
        })
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn layering_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "api_addr = \"127.0.0.1:9000\"\ndata_dir = \"/x\"\n[oidc]\nissuer_url = \"https://sso.example.com/realms/r/\"\n").unwrap();
        let c = Config::load(ServeArgs {
            config: Some(f.clone()),
            data_dir: Some("/y".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data_dir, PathBuf::from("/y"));
        assert_eq!(
            c.oidc.unwrap().issuer_url,
            "https://sso.example.com/realms/r"
        );

        let e = Config::load(ServeArgs {
            api_addr: Some("nope".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("--api-addr / DROVER_API_ADDR"), "{e}");
        std::fs::write(&f, "api_adr = \"x\"\n").unwrap();
        let e = Config::load(ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("unknown field `api_adr`"), "{e}");
        let e = Config::load(ServeArgs {
            admin_token: Some("short".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("admin_token"), "{e}");
    }

    #[test]
    fn print_config_redacts() {
        let c = Config {
            admin_token: Some("supersecretsupersecret".into()),
            ..Default::default()
        };
        let t = c.to_toml();
        assert!(t.contains("admin_token = \"<redacted>\""), "{t}");
        assert!(!t.contains("supersecret"));
        assert!(!format!("{c:?}").contains("supersecret"));
        let c = Config {
            database_url: Some("postgres://drover:hunter2hunter2@db:5432/drover".into()),
            nats_url: Some("nats://user:natspassword@nats:4222".into()),
            ..Default::default()
        };
        let t = c.to_toml();
        assert!(t.contains("postgres://drover:***@db:5432/drover"), "{t}");
        assert_eq!(
            redacted_url("nats://a:pw@n1:4222, nats://n2:4222"),
            "nats://a:***@n1:4222,nats://n2:4222"
        );
        assert!(!t.contains("hunter2") && !t.contains("natspassword"), "{t}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let e = Config::load(ServeArgs {
            cluster: ClusterArgs {
                database_url: Some("mysql://x@y/z".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("--database-url / DROVER_DATABASE_URL"), "{e}");
        let e = Config::load(ServeArgs {
            cluster: ClusterArgs {
                nats_url: Some("http://nats:4222".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("--nats-url / DROVER_NATS_URL"), "{e}");
        let e = Config::load(ServeArgs {
            cluster: ClusterArgs {
                nats_prefix: Some("Bad.Prefix".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("nats_prefix"), "{e}");
        let c = Config::load(ServeArgs {
            cluster: ClusterArgs {
                database_url: Some("postgres://postgres@127.0.0.1/test".into()),
                database_schema: Some("drover_a".into()),
                nats_url: Some("nats://127.0.0.1:4222".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.nats_prefix, "drover");
        assert_eq!(c.database_schema.as_deref(), Some("drover_a"));
    }
}
