//! Binding every listener first: a port in use is a configuration problem, reported before any
//! state is touched.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::StartError;
use crate::config::Config;

/// The bound listeners (`None`: that listener is `off`).
pub(super) struct Listeners {
    pub api: TcpListener,
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub mqtt: Option<TcpListener>,
    pub mqtts: Option<TcpListener>,
    pub integration_mqtt: Option<TcpListener>,
    pub integration_mqtts: Option<TcpListener>,
}

/// Where the listeners are bound.
#[derive(Debug, Clone, Copy)]
pub(super) struct Addresses {
    pub api: SocketAddr,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub mqtt: Option<SocketAddr>,
    pub mqtts: Option<SocketAddr>,
    pub integration_mqtt: Option<SocketAddr>,
    pub integration_mqtts: Option<SocketAddr>,
}

impl Listeners {
    /// Binds every listener the configuration turns on.
    pub async fn bind(config: &Config) -> Result<(Listeners, Addresses), StartError> {
        let api = bind(config.api_addr, "management API", "api_addr").await?;
        let api_addr = local_addr(&api)?;
        let (http, http_addr) =
            bind_optional(config.http_addr, "HTTP device endpoint", "http_addr").await?;
        let (https, https_addr) =
            bind_optional(config.https_addr, "HTTPS device endpoint", "https_addr").await?;
        let (mqtt, mqtt_addr) =
            bind_optional(config.mqtt_addr, "MQTT device endpoint", "mqtt_addr").await?;
        let (mqtts, mqtts_addr) = bind_optional(
            config.mqtts_addr,
            "MQTT-over-TLS device endpoint",
            "mqtts_addr",
        )
        .await?;
        let (integration_mqtt, integration_mqtt_addr) = bind_optional(
            config.integration_mqtt_addr,
            "MQTT integration",
            "integration_mqtt_addr",
        )
        .await?;
        let (integration_mqtts, integration_mqtts_addr) = bind_optional(
            config.integration_mqtts_addr,
            "MQTT integration over TLS",
            "integration_mqtts_addr",
        )
        .await?;
        let listeners = Listeners {
            api,
            http,
            https,
            mqtt,
            mqtts,
            integration_mqtt,
            integration_mqtts,
        };
        let addresses = Addresses {
            api: api_addr,
            http: http_addr,
            https: https_addr,
            mqtt: mqtt_addr,
            mqtts: mqtts_addr,
            integration_mqtt: integration_mqtt_addr,
            integration_mqtts: integration_mqtts_addr,
        };
        Ok((listeners, addresses))
    }

    /// Whether a TLS listener is on (then the server needs its certificate).
    pub fn need_tls(&self) -> bool {
        self.https.is_some() || self.mqtts.is_some() || self.integration_mqtts.is_some()
    }
}

/// The flag and environment variable of the setting `key`, for messages.
fn how_to_set(key: &str) -> String {
    let flag = key.replace('_', "-");
    format!("--{flag} / DROVER_{}", key.to_ascii_uppercase())
}

async fn bind(addr: SocketAddr, what: &str, key: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        StartError::Config(format!(
            "cannot listen on {addr} for the {what}: {e}; choose another address with {}",
            how_to_set(key)
        ))
    })
}

/// Binds a listener that may be `off` (`None`); returns it with its bound address.
async fn bind_optional(
    addr: Option<SocketAddr>,
    what: &str,
    key: &str,
) -> Result<(Option<TcpListener>, Option<SocketAddr>), StartError> {
    match addr {
        Some(a) => {
            let l = bind(a, what, key).await?;
            let bound = local_addr(&l)?;
            Ok((Some(l), Some(bound)))
        }
        None => Ok((None, None)),
    }
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|e| StartError::runtime("cannot read the bound address", e))
}
