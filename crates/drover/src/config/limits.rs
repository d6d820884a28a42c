//! Limits of the listeners: HTTP timeouts, connection caps per listener, the MQTT packet
//! timeout. Each is a file key, a flag and an environment variable of the same name
//! (`http_header_timeout`, `--http-header-timeout`, `DROVER_HTTP_HEADER_TIMEOUT`).

use std::ops::RangeInclusive;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::ConfigError;

/// The listeners' limits as flags and environment variables (each overrides the file).
#[derive(Debug, Default, Args)]
pub struct LimitArgs {
    /// Seconds an HTTP client (device endpoints and API) has to send a request's head
    /// [default: 10].
    #[arg(long, env = "DROVER_HTTP_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub http_header_timeout: Option<u64>,
    /// Seconds an HTTP client has to send a request's whole body [default: 30].
    #[arg(long, env = "DROVER_HTTP_BODY_TIMEOUT", value_name = "SECONDS")]
    pub http_body_timeout: Option<u64>,
    /// Seconds an HTTP connection may stay idle between requests [default: 60].
    #[arg(long, env = "DROVER_HTTP_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub http_idle_timeout: Option<u64>,
    /// Most open connections of the HTTP device endpoint, and of the HTTPS one [default: 10000].
    #[arg(long, env = "DROVER_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Most open connections of the management API (WebSockets included) [default: 1000].
    #[arg(long, env = "DROVER_API_MAX_CONNECTIONS", value_name = "N")]
    pub api_max_connections: Option<usize>,
    /// Most open connections of the MQTT device endpoint, and of the MQTT-over-TLS one
    /// [default: 100000].
    #[arg(long, env = "DROVER_MQTT_MAX_CONNECTIONS", value_name = "N")]
    pub mqtt_max_connections: Option<usize>,
    /// Most open connections of the MQTT integration, and of its TLS listener [default: 1000].
    #[arg(long, env = "DROVER_INTEGRATION_MAX_CONNECTIONS", value_name = "N")]
    pub integration_max_connections: Option<usize>,
    /// Seconds an MQTT packet may take to arrive once its first byte did [default: 30].
    #[arg(long, env = "DROVER_MQTT_PACKET_TIMEOUT", value_name = "SECONDS")]
    pub mqtt_packet_timeout: Option<u64>,
}

/// The same keys in the configuration file.
#[derive(Debug, Default)]
pub(super) struct FileLimits {
    pub http_header_timeout: Option<u64>,
    pub http_body_timeout: Option<u64>,
    pub http_idle_timeout: Option<u64>,
    pub http_max_connections: Option<usize>,
    pub api_max_connections: Option<usize>,
    pub mqtt_max_connections: Option<usize>,
    pub integration_max_connections: Option<usize>,
    pub mqtt_packet_timeout: Option<u64>,
}

/// The effective limits.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Limits {
    #[serde(serialize_with = "seconds")]
    pub http_header_timeout: Duration,
    #[serde(serialize_with = "seconds")]
    pub http_body_timeout: Duration,
    #[serde(serialize_with = "seconds")]
    pub http_idle_timeout: Duration,
    pub http_max_connections: usize,
    pub api_max_connections: usize,
    pub mqtt_max_connections: usize,
    pub integration_max_connections: usize,
    #[serde(serialize_with = "seconds")]
    pub mqtt_packet_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(60),
            http_max_connections: 10_000,
            // Applications, operators and their WebSockets, not devices.
            api_max_connections: 1_000,
            // Devices keep their MQTT connection open: as many as the MQTT server holds
            // sessions by default.
            mqtt_max_connections: 100_000,
            integration_max_connections: 1_000,
            mqtt_packet_timeout: Duration::from_secs(30),
        }
    }
}

/// Largest connection cap accepted (far beyond what one process can hold open).
const MAX_CONNECTIONS: RangeInclusive<usize> = 1..=1_000_000;
const HOUR: RangeInclusive<u64> = 1..=3600;
const DAY: RangeInclusive<u64> = 1..=86_400;

impl Limits {
    /// Layers the file, the environment and the flags over the defaults, and validates.
    pub(super) fn load(args: LimitArgs, file: FileLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let secs = |key, arg: Option<u64>, file: Option<u64>, default: Duration, range| {
            pick(key, arg.or(file), default.as_secs(), range, "seconds").map(Duration::from_secs)
        };
        let count = |key, arg: Option<usize>, file: Option<usize>, default| {
            pick(key, arg.or(file), default, MAX_CONNECTIONS, "connections")
        };
        Ok(Limits {
            http_header_timeout: secs(
                "http_header_timeout",
                args.http_header_timeout,
                file.http_header_timeout,
                d.http_header_timeout,
                HOUR,
            )?,
            http_body_timeout: secs(
                "http_body_timeout",
                args.http_body_timeout,
                file.http_body_timeout,
                d.http_body_timeout,
                HOUR,
            )?,
            http_idle_timeout: secs(
                "http_idle_timeout",
                args.http_idle_timeout,
                file.http_idle_timeout,
                d.http_idle_timeout,
                DAY,
            )?,
            http_max_connections: count(
                "http_max_connections",
                args.http_max_connections,
                file.http_max_connections,
                d.http_max_connections,
            )?,
            api_max_connections: count(
                "api_max_connections",
                args.api_max_connections,
                file.api_max_connections,
                d.api_max_connections,
            )?,
            mqtt_max_connections: count(
                "mqtt_max_connections",
                args.mqtt_max_connections,
                file.mqtt_max_connections,
                d.mqtt_max_connections,
            )?,
            integration_max_connections: count(
                "integration_max_connections",
                args.integration_max_connections,
                file.integration_max_connections,
                d.integration_max_connections,
            )?,
            mqtt_packet_timeout: secs(
                "mqtt_packet_timeout",
                args.mqtt_packet_timeout,
                file.mqtt_packet_timeout,
                d.mqtt_packet_timeout,
                HOUR,
            )?,
        })
    }
}

/// `value` (or `default`) if within `range`, else an error naming the setting's key, flag and
/// environment variable.
fn pick<T>(
    key: &str,
    value: Option<T>,
    default: T,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        return Ok(v);
    }
    Err(ConfigError(format!(
        "{key} must be {} to {} {unit}, not {v} (set --{} / DROVER_{} or '{key}' in the config file)",
        range.start(),
        range.end(),
        key.replace('_', "-"),
        key.to_uppercase(),
    )))
}

/// A duration as whole seconds (fractions for the sub-second values tests use).
fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_u64(d.as_secs())
    } else {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_layering_and_bounds() {
        let l = Limits::load(LimitArgs::default(), FileLimits::default()).unwrap();
        assert_eq!(l, Limits::default());
        let l = Limits::load(
            LimitArgs {
                http_idle_timeout: Some(5),
                ..Default::default()
            },
            FileLimits {
                http_idle_timeout: Some(7),
                http_body_timeout: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.http_idle_timeout, Duration::from_secs(5), "flag wins");
        assert_eq!(l.http_body_timeout, Duration::from_secs(8), "file used");
        for (args, key) in [
            (
                LimitArgs {
                    http_header_timeout: Some(0),
                    ..Default::default()
                },
                "http_header_timeout",
            ),
            (
                LimitArgs {
                    http_body_timeout: Some(3601),
                    ..Default::default()
                },
                "http_body_timeout",
            ),
            (
                LimitArgs {
                    api_max_connections: Some(0),
                    ..Default::default()
                },
                "api_max_connections",
            ),
            (
                LimitArgs {
                    mqtt_max_connections: Some(2_000_000),
                    ..Default::default()
                },
                "mqtt_max_connections",
            ),
            (
                LimitArgs {
                    mqtt_packet_timeout: Some(0),
                    ..Default::default()
                },
                "mqtt_packet_timeout",
            ),
        ] {
            let e = Limits::load(args, FileLimits::default()).unwrap_err();
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(e.0.starts_with(key) && e.0.contains(&flag), "{e}");
        }
    }
}
