//! Configuration: defaults < TOML file (`--config`) < environment (`DROVER_*`) < flags.
//!
//! Every setting is declared once, in the [`settings!`] table below: its key (the file's key;
//! `oidc.issuer_url` is `issuer_url` in the file's `[oidc]` table), type, default, value name,
//! which commands take it, its check and its help. The flag (`--oidc-issuer-url`) and the
//! environment variable (`DROVER_OIDC_ISSUER_URL`) are made from the key; layering
//! ([`args`]), `--print-config` ([`Config::to_toml`]) and the table in docs/deployment.md
//! ([`Config::markdown`], kept equal by a test) come from the table. Everything is checked
//! before any port is bound; a problem exits with code 64 and one line naming the setting and
//! how to set it.

mod args;
pub mod value;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use args::{ServeArgs, SettingArgs, MIGRATE, SERVE};
use drover_integrations::outbound::AllowEntry;
use value::{
    any, at_least, at_least_usize, between, duration_between, http_url, AllowList, Codec, Hidden,
    List, Listen, Plain, UrlWithPassword,
};

/// A configuration problem: exit code 64 with this one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One setting, as the table declares it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Key in the file (dotted for tables) and in `--print-config`.
    pub key: &'static str,
    /// Default as text (`""`: none).
    pub default: &'static str,
    /// What the value looks like in help (`ADDR`, `SECONDS`, ...).
    pub value_name: &'static str,
    /// The commands that take it ([`SERVE`], [`MIGRATE`]).
    pub scopes: u8,
    /// Never echoed: values hidden in help and in errors.
    pub secret: bool,
    /// One line of help.
    pub help: &'static str,
}

impl Setting {
    /// `--oidc-issuer-url` for `oidc.issuer_url`.
    pub fn flag(&self) -> String {
        format!("--{}", self.flag_name())
    }

    pub(crate) fn flag_name(&self) -> String {
        self.key.replace(['_', '.'], "-")
    }

    /// `DROVER_OIDC_ISSUER_URL` for `oidc.issuer_url`.
    pub fn env(&self) -> String {
        format!("DROVER_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }

    /// "(set --flag / DROVER_ENV or 'key' in the config file)".
    pub fn how_to_set(&self) -> String {
        format!(
            "(set {} / {} or '{}' in the config file)",
            self.flag(),
            self.env(),
            self.key
        )
    }
}

/// Declares the settings: the [`Config`] struct, [`SETTINGS`], reading, checking and showing.
/// Each entry: `/// help` `field: Type = "default", "VALUE", scopes, check, codec;`.
macro_rules! settings {
    ($(
        #[doc = $help:literal]
        $field:ident : $ty:ty = $default:literal, $value_name:literal, $scopes:expr, $check:expr, $codec:ty;
    )*) => {
        /// The effective configuration of `drover serve` (see the [module docs](self)).
        #[derive(Clone, PartialEq)]
        pub struct Config {
            $(#[doc = $help] pub $field: $ty,)*
        }

        /// Every setting, in the order of `--help`, `--print-config` and the docs.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            key: key_of(stringify!($field)),
            default: $default,
            value_name: $value_name,
            scopes: $scopes,
            secret: <$codec as Codec<$ty>>::SECRET,
            help: $help.trim_ascii(),
        },)*];

        impl Config {
            /// Reads each setting from `text` (by key; the default when absent) and checks it.
            fn read(text: &std::collections::BTreeMap<&'static str, String>) -> Result<Config, ConfigError> {
                let mut settings = SETTINGS.iter();
                Ok(Config {$(
                    $field: {
                        let setting = settings.next().ok_or_else(|| ConfigError("settings table out of order".into()))?;
                        let raw = text.get(setting.key).map(String::as_str).unwrap_or(setting.default);
                        let value: $ty = <$codec as Codec<$ty>>::parse(raw)
                            .map_err(|problem| invalid(setting, raw, &problem))?;
                        let check: fn(&$ty) -> Result<(), String> = $check;
                        check(&value).map_err(|problem| invalid(setting, raw, &problem))?;
                        value
                    },
                )*})
            }

            /// `(key, shown value)` of every setting that has a value.
            fn shown(&self) -> Vec<(&'static str, toml::Value)> {
                let mut out = Vec::new();
                $(
                    if let Some(v) = <$codec as Codec<$ty>>::show(&self.$field) {
                        out.push((key_of(stringify!($field)), v));
                    }
                )*
                out
            }
        }
    };
}

/// The key of a field: `oidc__issuer_url` is `oidc.issuer_url` (a table in the file).
const fn key_of(field: &'static str) -> &'static str {
    match field.as_bytes() {
        b"oidc_issuer_url" => "oidc.issuer_url",
        b"oidc_audience" => "oidc.audience",
        b"oidc_username_claim" => "oidc.username_claim",
        b"oidc_jwks_url" => "oidc.jwks_url",
        _ => field,
    }
}

fn invalid(setting: &Setting, raw: &str, problem: &str) -> ConfigError {
    let shown = if setting.secret {
        "<redacted>".to_string()
    } else {
        raw.to_string()
    };
    ConfigError(format!(
        "invalid {} '{shown}': {problem} {}",
        setting.key,
        setting.how_to_set()
    ))
}

const BOTH: u8 = SERVE | MIGRATE;

settings! {
    /// Directory of the embedded database, event log and generated files.
    data_dir: PathBuf = "./drover-data", "DIR", BOTH, any, Plain;
    /// Listen address of the management API (and the WebSocket integration).
    api_addr: SocketAddr = "0.0.0.0:8011", "ADDR", SERVE, any, Plain;
    /// Listen address of the HTTP device endpoint, or `off`.
    http_addr: Option<SocketAddr> = "0.0.0.0:8088", "ADDR|off", SERVE, any, Listen;
    /// Listen address of the HTTPS device endpoint, or `off`.
    https_addr: Option<SocketAddr> = "0.0.0.0:8443", "ADDR|off", SERVE, any, Listen;
    /// Listen address of the MQTT device endpoint, or `off`.
    mqtt_addr: Option<SocketAddr> = "0.0.0.0:1883", "ADDR|off", SERVE, any, Listen;
    /// Listen address of the MQTT-over-TLS device endpoint, or `off`.
    mqtts_addr: Option<SocketAddr> = "0.0.0.0:8883", "ADDR|off", SERVE, any, Listen;
    /// Listen address of the MQTT integration (applications), or `off`.
    integration_mqtt_addr: Option<SocketAddr> = "0.0.0.0:18883", "ADDR|off", SERVE, any, Listen;
    /// Listen address of the MQTT integration over TLS, or `off`.
    integration_mqtts_addr: Option<SocketAddr> = "0.0.0.0:18884", "ADDR|off", SERVE, any, Listen;
    /// MQTT-integration consumers this many events behind (and not catching up) are disconnected (0: never).
    integration_max_lag: u64 = "10000", "EVENTS", SERVE, any, Plain;
    /// Server certificate chain (PEM) for TLS listeners (none: a generated development CA).
    tls_cert: Option<PathBuf> = "", "FILE", SERVE, any, Plain;
    /// Private key (PEM) of `tls_cert`.
    tls_key: Option<PathBuf> = "", "FILE", SERVE, any, Plain;
    /// Host names (or addresses) devices use to reach Drover, comma-separated: the generated development certificate names them besides localhost, 127.0.0.1 and ::1.
    public_hosts: List = "", "HOST,...", SERVE, host_names, Plain;
    /// DNS domain under which each application is an IoT hub, `<app>.<hub_domain>` (the host name Azure SDK devices are given): the development certificate names `*.<hub_domain>`.
    hub_domain: Option<String> = "", "DOMAIN", SERVE, dns_domain, Plain;
    /// Certificate (PEM) of a device CA of your own, used instead of the one Drover generates and keeps in the registry (give the same on every node).
    device_ca_cert: Option<PathBuf> = "", "FILE", SERVE, any, Plain;
    /// Private key (PEM) of `device_ca_cert`.
    device_ca_key: Option<PathBuf> = "", "FILE", SERVE, any, Plain;
    /// Days a device certificate the device CA issues is valid (the default and the most a request may ask).
    device_cert_days: u32 = "365", "DAYS", SERVE, between::<1, 3650, u32>, Plain;
    /// The provisioning ID scope devices give to register (DPS); none: derived from the device CA (`0ne` and 8 hex digits), the same on every node.
    id_scope: Option<String> = "", "SCOPE", SERVE, id_scope_rule, Plain;
    /// Largest HTTP telemetry payload, in bytes.
    http_body_limit: usize = "262144", "BYTES", SERVE, at_least_usize::<1>, Plain;
    /// Days events are kept in each application's stream.
    event_retention_days: u32 = "7", "DAYS", BOTH, at_least::<1, u32>, Plain;
    /// Most bytes kept per application stream (oldest events go first).
    event_retention_bytes: u64 = "1073741824", "BYTES", BOTH, at_least::<1048576, u64>, Plain;
    /// WebSocket streams opened live (no group offset, not from=earliest) this many events behind the end of the stream are disconnected (0: never; replays are never cut off for lag).
    ws_max_lag: u64 = "0", "EVENTS", SERVE, any, Plain;
    /// WebSocket clients that take no frame for this long are disconnected (1008).
    ws_send_timeout: Duration = "30s", "DURATION", SERVE, timeout, Plain;
    /// Integration connections (WebSocket streams and MQTT integration connections together) one user may hold open on this node (0: no limit).
    integration_max_connections_per_user: usize = "100", "N", SERVE, any, Plain;
    /// Throttle failed authentications (device HTTP and MQTT, API, integrations): lock out addresses, slow down attacked identities.
    auth_throttle: bool = "true", "BOOL", SERVE, any, Plain;
    /// Failed authentications allowed per address (and per identity) before delays start.
    auth_free_failures: u32 = "5", "N", SERVE, any, Plain;
    /// Longest lockout of an address after failed authentications (each further failure doubles it from 1 s).
    auth_max_delay: Duration = "60s", "DURATION", SERVE, timeout, Plain;
    /// Longest wait of the answer to a failed authentication of an identity under attack (a right credential is never delayed).
    auth_identity_max_delay: Duration = "2s", "DURATION", SERVE, timeout, Plain;
    /// Time an HTTP client (device endpoints and API) has to send a request's head.
    http_header_timeout: Duration = "10s", "DURATION", SERVE, timeout, Plain;
    /// Time an HTTP client has to send a request's whole body (408 after it).
    http_body_timeout: Duration = "30s", "DURATION", SERVE, timeout, Plain;
    /// Time an HTTP connection may stay idle between requests.
    http_idle_timeout: Duration = "60s", "DURATION", SERVE, timeout, Plain;
    /// Most open connections of the HTTP device endpoint, and of the HTTPS one (more are refused with 503).
    http_max_connections: usize = "10000", "N", SERVE, connections, Plain;
    /// Most open connections of the management API, WebSockets included (more are refused with 503).
    api_max_connections: usize = "1000", "N", SERVE, connections, Plain;
    /// Most open connections of the MQTT device endpoint, and of the MQTT-over-TLS one (more get CONNACK Server busy).
    mqtt_max_connections: usize = "100000", "N", SERVE, connections, Plain;
    /// Most open connections of the MQTT integration, and of its TLS listener.
    integration_max_connections: usize = "1000", "N", SERVE, connections, Plain;
    /// Time an MQTT packet may take to arrive once its first byte did (device endpoint and integration).
    mqtt_packet_timeout: Duration = "30s", "DURATION", SERVE, timeout, Plain;
    /// Most subscriptions one MQTT session holds (device endpoint and MQTT integration); more are refused with Quota exceeded.
    mqtt_max_subscriptions: usize = "100", "N", SERVE, at_least_usize::<1>, Plain;
    /// Most topic filters in one MQTT SUBSCRIBE; the rest are refused with Quota exceeded.
    mqtt_max_filters_per_subscribe: usize = "32", "N", SERVE, at_least_usize::<1>, Plain;
    /// Longest MQTT topic name or filter, in bytes.
    mqtt_max_topic_length: usize = "1024", "BYTES", SERVE, topic_length, Plain;
    /// Name of this node, carried in events as `instance`.
    instance: String = "drover", "NAME", SERVE, instance_name, Plain;
    /// Access token of the system administrator `admin` (none: generated at first start).
    admin_token: Option<String> = "", "TOKEN", SERVE, strong_token, Hidden;
    /// Externally visible URL of the API, advertised to clients (none: from each request).
    public_url: Option<String> = "", "URL", SERVE, http_url, Plain;
    /// Largest management API request body, in bytes.
    api_body_limit: usize = "1048576", "BYTES", SERVE, at_least_usize::<1>, Plain;
    /// OIDC issuer whose Bearer JWTs are accepted (single sign-on; none: off).
    oidc_issuer_url: Option<String> = "", "URL", SERVE, http_url, Plain;
    /// Required `aud` of OIDC tokens (none: not checked).
    oidc_audience: Option<String> = "", "AUD", SERVE, any, Plain;
    /// Claim holding the user name in OIDC tokens.
    oidc_username_claim: String = "preferred_username", "CLAIM", SERVE, not_empty, Plain;
    /// JWKS URL of the OIDC issuer (none: from its discovery document).
    oidc_jwks_url: Option<String> = "", "URL", SERVE, http_url, Plain;
    /// Days registry change events are kept for watchers to resume from.
    change_retention_days: u32 = "7", "DAYS", SERVE, at_least::<1, u32>, Plain;
    /// Seconds to wait for requests to finish on shutdown.
    shutdown_grace: u64 = "10", "SECONDS", SERVE, any, Plain;
    /// Exceptions to the outbound address policy: CIDRs, addresses or host names that tenant-configured URLs (external command endpoints, webhooks) may reach although they are loopback, link-local, private, … (comma-separated; none by default).
    outbound_allow: Vec<AllowEntry> = "", "CIDR|HOST,...", SERVE, any, AllowList;
    /// PostgreSQL registry shared by all nodes, postgres://user:pass@host/db (none: the embedded SQLite registry in the data directory).
    database_url: Option<String> = "", "URL", BOTH, postgres_url, UrlWithPassword;
    /// PostgreSQL schema of the registry tables (none: public).
    database_schema: Option<String> = "", "NAME", BOTH, schema_name, Plain;
    /// Most PostgreSQL connections of this node.
    database_max_connections: u32 = "16", "N", BOTH, at_least::<2, u32>, Plain;
    /// NATS server with JetStream for event streams and command routing between nodes, nats://host:4222, several separated by commas (none: the embedded event log).
    nats_url: Option<String> = "", "URL", BOTH, nats_urls, UrlWithPassword;
    /// Prefix of Drover's NATS subjects, streams and buckets (one per cluster).
    nats_prefix: String = "drover", "PREFIX", BOTH, nats_prefix, Plain;
    /// JetStream replicas of Drover's streams.
    nats_replicas: usize = "1", "N", BOTH, replicas, Plain;
}

// Checks of single settings (the problem in words; the setting's name is added).
// They take `&String` where the setting is a `String`: the table calls them as `fn(&T)`.

/// A timeout or delay: from 100 ms to one day.
fn timeout(d: &Duration) -> Result<(), String> {
    duration_between::<100, 86_400>(d)
}

fn connections(v: &usize) -> Result<(), String> {
    between::<1, 1_000_000, u64>(&(*v as u64))
}

fn topic_length(v: &usize) -> Result<(), String> {
    between::<16, 65535, u64>(&(*v as u64))
}

fn replicas(v: &usize) -> Result<(), String> {
    between::<1, 5, u64>(&(*v as u64))
}

#[allow(clippy::ptr_arg)]
fn not_empty(v: &String) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

/// Whether `name` is a DNS host name: dot-separated labels of 1 to 63 letters, digits and
/// hyphens (not at either end), 253 bytes at most.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn host_names(v: &List) -> Result<(), String> {
    match v
        .0
        .iter()
        .find(|h| !is_dns_name(h) && h.parse::<std::net::IpAddr>().is_err())
    {
        Some(h) => Err(format!(
            "'{h}' is neither a DNS host name nor an IP address"
        )),
        None => Ok(()),
    }
}

fn id_scope_rule(v: &Option<String>) -> Result<(), String> {
    match v {
        Some(s)
            if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Err("must be 1 to 32 letters and digits".into())
        }
        _ => Ok(()),
    }
}

fn dns_domain(v: &Option<String>) -> Result<(), String> {
    match v {
        Some(d) if !is_dns_name(d) => Err(format!(
            "'{d}' is not a DNS domain (labels of letters, digits and hyphens, separated by dots)"
        )),
        _ => Ok(()),
    }
}

#[allow(clippy::ptr_arg)]
fn instance_name(v: &String) -> Result<(), String> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 64 printable characters".into());
    }
    Ok(())
}

fn strong_token(v: &Option<String>) -> Result<(), String> {
    match v {
        Some(t) if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err("is too weak: use at least 16 characters without spaces".into())
        }
        _ => Ok(()),
    }
}

fn postgres_url(v: &Option<String>) -> Result<(), String> {
    match v {
        Some(u)
            if !url::Url::parse(u)
                .map(|p| matches!(p.scheme(), "postgres" | "postgresql"))
                .unwrap_or(false) =>
        {
            Err("expected postgres://user[:password]@host[:port]/database".into())
        }
        _ => Ok(()),
    }
}

fn schema_name(v: &Option<String>) -> Result<(), String> {
    match v {
        Some(s)
            if s.is_empty()
                || s.len() > 48
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                || s.as_bytes()[0].is_ascii_digit() =>
        {
            Err("1 to 48 characters of a-z, 0-9 and _, not starting with a digit".into())
        }
        _ => Ok(()),
    }
}

fn nats_urls(v: &Option<String>) -> Result<(), String> {
    let Some(u) = v else { return Ok(()) };
    let ok = u.split(',').all(|one| {
        url::Url::parse(one.trim())
            .map(|p| matches!(p.scheme(), "nats" | "tls" | "ws" | "wss") && p.host().is_some())
            .unwrap_or(false)
    });
    if !ok {
        return Err("expected nats://host:port (several separated by commas)".into());
    }
    Ok(())
}

#[allow(clippy::ptr_arg)]
fn nats_prefix(v: &String) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err("1 to 32 characters of a-z, 0-9 and _".into());
    }
    Ok(())
}

/// Single sign-on settings, when an issuer is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcSettings {
    pub issuer_url: String,
    pub audience: Option<String>,
    pub username_claim: String,
    pub jwks_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        // The defaults are checked by a test; should one ever fail to read, the error says which.
        match Config::read(&Default::default()) {
            Ok(c) => c,
            Err(e) => panic!("built-in default configuration is invalid: {e}"),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Config");
        for (key, value) in self.shown() {
            d.field(key, &value);
        }
        d.finish()
    }
}

impl Config {
    /// Layers defaults, the file, the environment and the flags, and checks the result.
    pub fn load<const SCOPE: u8>(args: SettingArgs<SCOPE>) -> Result<Config, ConfigError> {
        let text = args.layered()?;
        let mut config = Config::read(&text)?;
        config.settle()?;
        Ok(config)
    }

    /// Checks what concerns several settings, and normalises.
    fn settle(&mut self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "tls_cert and tls_key go together: set both --tls-cert / DROVER_TLS_CERT and --tls-key / DROVER_TLS_KEY, or neither".into(),
            ));
        }
        if self.device_ca_cert.is_some() != self.device_ca_key.is_some() {
            return Err(ConfigError(
                "device_ca_cert and device_ca_key go together: set both --device-ca-cert / DROVER_DEVICE_CA_CERT and --device-ca-key / DROVER_DEVICE_CA_KEY, or neither".into(),
            ));
        }
        for u in [&mut self.public_url, &mut self.oidc_issuer_url]
            .into_iter()
            .flatten()
        {
            *u = u.trim_end_matches('/').to_string();
        }
        if self.oidc_issuer_url.is_none()
            && (self.oidc_audience.is_some() || self.oidc_jwks_url.is_some())
        {
            return Err(ConfigError(
                "oidc.audience and oidc.jwks_url need oidc.issuer_url (set --oidc-issuer-url / DROVER_OIDC_ISSUER_URL)".into(),
            ));
        }
        Ok(())
    }

    /// Single sign-on, when configured.
    pub fn oidc(&self) -> Option<OidcSettings> {
        self.oidc_issuer_url.as_ref().map(|issuer| OidcSettings {
            issuer_url: issuer.clone(),
            audience: self.oidc_audience.clone(),
            username_claim: self.oidc_username_claim.clone(),
            jwks_url: self.oidc_jwks_url.clone(),
        })
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        let mut root = toml::Table::new();
        for (key, value) in self.shown() {
            match key.split_once('.') {
                Some((table, name)) => {
                    let entry = root
                        .entry(table)
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(t) = entry {
                        t.insert(name.to_string(), value);
                    }
                }
                None => {
                    root.insert(key.to_string(), value);
                }
            }
        }
        toml::to_string(&root).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }

    /// The settings as a Markdown table (docs/deployment.md holds it; a test keeps it equal).
    pub fn markdown() -> String {
        let mut out = String::from(
            "| key (file) | flag / environment | default | meaning |\n|---|---|---|---|\n",
        );
        for s in SETTINGS {
            let default = if s.default.is_empty() {
                "—".to_string()
            } else {
                format!("`{}`", s.default)
            };
            out.push_str(&format!(
                "| `{}` | `{}` / `{}` | {} | {}{} |\n",
                s.key,
                s.flag(),
                s.env(),
                default,
                s.help.replace('|', "\\|"),
                if s.scopes & MIGRATE != 0 {
                    " (also `drover migrate`)"
                } else {
                    ""
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
